"""Argument validation shared by the public classes: one-line ``ValueError`` messages that name the field."""

from __future__ import annotations


def check(condition: bool, message: str) -> None:
    """Raise ``ValueError(message)`` unless ``condition``; ``message`` names the field and what is allowed."""
    if not condition:
        raise ValueError(message)
