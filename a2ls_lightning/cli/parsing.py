"""Light command-line helpers (a one-line ``argparse`` parser, finding ``--config`` files): they import nothing
heavy, so ``--help`` of our own verbs is instant."""

from __future__ import annotations

import argparse

from typing import Any

from a2ls_lightning.validation import one_line, unknown_option_hint


class OneLineArgumentParser(argparse.ArgumentParser):
    """An ``argparse`` parser whose errors are a one-line ``ValueError`` naming the command (no usage dump), that
    takes no prefix of an option for the option (``--episode`` is an error, not ``--episodes``) and names the
    closest option to an unknown one."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("allow_abbrev", False)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        raise ValueError(f"{self.prog}: {one_line(message)}{unknown_option_hint(message, self)} "
                         f"(see {self.prog} --help)")


def config_paths(argv: list[str]) -> list[str]:
    """The ``--config`` / ``-c`` files among command-line arguments, in order."""
    paths = []
    for i, arg in enumerate(argv):
        if arg.startswith(("--config=", "-c=")):
            paths.append(arg.split("=", 1)[1])
        elif arg in ("--config", "-c") and i + 1 < len(argv):
            paths.append(argv[i + 1])
    return paths
