"""Replay ratio: gradient updates per agent step, and the collection schedule it implies.

The ratio ``r`` is kept as an exact fraction so that schedules never drift by a rounding error (``0.1`` as a float
times 10 is not 1): before update ``u`` (counted from 0 after the warm-up) the collector has taken
``ceil((u + 1) / r)`` policy steps in all, so

- ``r = 1/k`` (``k`` integer): ``k`` agent steps before every update (what ``env_steps_per_update = k`` did);
- ``r = k``: one agent step before every ``k``-th update, none before the others;
- any other ratio of small integers (``2/3``) alternates between the two neighbouring counts.

Env steps after ``max_steps`` updates: ``action_repeat · (warmup_steps + ceil(max_steps / r))``.
"""

from __future__ import annotations

import math
from fractions import Fraction

from a2ls_lightning.validation import check

#: Largest denominator a replay ratio may have (0.001 → 1/1000 is allowed; 1/3 given as 0.3333333 → 1/3).
MAX_DENOMINATOR = 1000


def parse_replay_ratio(value: float | int | str, field: str = "data.replay_ratio") -> Fraction:
    """``value`` as an exact fraction > 0 (``0.5`` → 1/2, ``2`` → 2, ``"1/3"`` → 1/3).

    Raises:
        ValueError: one line naming ``field`` and the allowed values.
    """
    allowed = (f"allowed: a number > 0 that is a ratio of integers with a denominator <= {MAX_DENOMINATOR} "
               "(e.g. 0.25, 0.5, 1, 2, 4, \"1/3\")")
    try:
        exact = Fraction(str(value)) if isinstance(value, str) else Fraction(value)
    except (TypeError, ValueError, ZeroDivisionError, OverflowError):
        raise ValueError(f"{field}={value!r} is not a number; {allowed}") from None
    check(exact > 0, f"{field}={value!r} must be > 0 (updates per agent step); {allowed}")
    ratio = exact.limit_denominator(MAX_DENOMINATOR)
    check(abs(float(ratio) - float(exact)) <= 1e-9 * float(exact),
          f"{field}={value!r} is not a ratio of small integers; {allowed}")
    return ratio


def steps_before_update(update: int, ratio: Fraction) -> int:
    """Agent steps to collect right before update ``update`` (0-based, after the warm-up): ``≥ 0``."""
    return _ceil_div(update + 1, ratio) - _ceil_div(update, ratio)


def agent_steps_for(max_steps: int, ratio: Fraction) -> int:
    """Policy steps (after the warm-up) collected by ``max_steps`` updates."""
    return _ceil_div(max_steps, ratio)


def updates_for(agent_steps: Fraction | int, ratio: Fraction) -> int:
    """The fewest updates whose collection reaches ``agent_steps`` policy steps (a budget in updates)."""
    return max(0, math.ceil(Fraction(agent_steps) * ratio))


def _ceil_div(updates: int, ratio: Fraction) -> int:
    # ceil(updates / ratio) in integers: ratio = p/q, so updates / ratio = updates·q / p
    p, q = ratio.numerator, ratio.denominator
    return -((-updates * q) // p)
