"""One-line errors for bad settings, shared by every layer: each message names the field and what is allowed.

All checks raise ``ValueError`` with a single line; the ``a2ls`` command prints it as ``a2ls: error: ...``
(``A2LS_DEBUG=1`` shows the traceback).
"""

from __future__ import annotations

import difflib
import math
import re
from collections.abc import Iterable, Sequence
from typing import Any


def check(condition: bool, message: str) -> None:
    """Raise ``ValueError(message)`` unless ``condition``; ``message`` names the field and what is allowed."""
    if not condition:
        raise ValueError(message)


def check_number(field: str, value: Any, low: float | None = None, strict: bool = False,
                 high: float | None = None) -> float:
    """``float(value)`` if it is a finite number within the bounds, else a ``ValueError`` naming ``field``.

    Args:
        field: the setting's name as the user writes it (``FixedWeights.weights``, ``model.actor_lr``).
        value: what was given; booleans, ``inf`` and ``nan`` are refused.
        low: smallest allowed value (``>= low``; ``> low`` when ``strict``), or ``None``.
        strict: the lower bound is exclusive.
        high: largest allowed value (inclusive), or ``None``.
    """
    ok = not isinstance(value, bool) and isinstance(value, (int, float)) and math.isfinite(value)
    if ok and low is not None:
        ok = value > low if strict else value >= low
    if ok and high is not None:
        ok = value <= high
    if not ok:
        bounds = [f"{'>' if strict else '>='} {low}"] if low is not None else []
        bounds += [f"<= {high}"] if high is not None else []
        raise ValueError(f"{field}={value!r} is not allowed; allowed: a finite number{' ' if bounds else ''}"
                         f"{' and '.join(bounds)}")
    return float(value)


def check_integer(field: str, value: Any, low: int) -> int:
    """``value`` if it is an integer ``>= low`` (not a bool), else a ``ValueError`` naming ``field``."""
    check(isinstance(value, int) and not isinstance(value, bool) and value >= low,
          f"{field}={value!r} must be an integer >= {low}")
    return value


def check_choice(field: str, value: Any, allowed: Sequence[Any]) -> Any:
    """``value`` if it is one of ``allowed``, else a ``ValueError`` listing them."""
    if value not in allowed:
        raise ValueError(f"{field}={value!r} is not allowed; allowed: {', '.join(map(str, allowed))}")
    return value


def one_line(error: BaseException | str) -> str:
    """The text of ``error`` on one line (third-party messages often span several)."""
    return " ".join(str(error).split())


class RunComplete(Exception):
    """Nothing to do: e.g. a resumed run is already at ``trainer.max_steps``. The ``a2ls`` command prints the
    message in one line and exits 0, creating nothing."""


def closest(value: Any, allowed: Iterable[Any]) -> str | None:
    """The one of ``allowed`` closest to a mistyped ``value``, or ``None`` if none is close.

    Closeness is :func:`difflib.get_close_matches` on lower-cased text (``olaux`` finds ``OLAux``); the result
    keeps its own spelling.
    """
    names = {str(name).lower(): str(name) for name in allowed}
    close = difflib.get_close_matches(str(value).lower(), list(names), n=1)
    return names[close[0]] if close else None


def did_you_mean(value: Any, allowed: Iterable[Any]) -> str:
    """``"; did you mean 'x'?"`` with the :func:`closest` of ``allowed`` to ``value``, ``""`` if none is close.

    Appended to a one-line error, after the list of what is allowed.

    Examples:
        >>> did_you_mean("cheeta-run", ["cheetah-run", "walker-walk"])
        "; did you mean 'cheetah-run'?"
        >>> did_you_mean("banana", ["cheetah-run"])
        ''
    """
    close = closest(value, allowed)
    return f"; did you mean {close!r}?" if close is not None else ""


def unknown_option_hint(message: str, parser: Any) -> str:
    """``"; did you mean --trainer.max_steps?"`` for an unrecognised ``--trainer.max_step``, searched among the
    options of an ``argparse`` (or jsonargparse) ``parser`` and of its subcommands' parsers; ``""`` when the message
    names no unknown option or none is close."""
    found = re.search(r"[Uu]nrecognized arguments?: (--[\w.\-]+)", message)
    if found is None:
        return ""
    options: set[str] = set()
    parsers = [parser]
    while parsers:
        current = parsers.pop()
        options.update(o for o in getattr(current, "_option_string_actions", {}) if o.startswith("--"))
        for action in getattr(current, "_actions", []):
            parsers.extend(getattr(action, "_name_parser_map", {}).values())
    # Compared without the dashes, which every option shares (they made `--bogus` look close to `--out`).
    close = closest(found[1].partition("=")[0][2:], sorted(o[2:] for o in options))
    return f"; did you mean --{close}?" if close is not None else ""
