"""Patterns of auxiliary losses (the paper's Table 5) as predicates on a spec, and their statistics.

A pattern holds for a loss when (``∈ in``: an input element, ``∈ out``: a target element):

- forward dynamics: some ``i`` with ``s_i, a_i ∈ in`` and ``s_{i+1} ∈ out``;
- inverse dynamics: some ``i`` with ``s_i, s_{i+1} ∈ in`` and ``a_i ∈ out``;
- reward prediction: some reward ``∈ out``;
- action inference: some action ``∈ out``;
- state reconstruction: some state both ``∈ in`` and ``∈ out``;
- more target states than input states: ``|states ∈ out| > |states ∈ in|``;
- in-batch negatives: the loss contrasts against the batch.

For each pattern the table gives the mean fitness of the candidates with and without it, the difference, and
Welch's two-sided t-test p-value (scipy; ``nan`` when a group has fewer than two candidates).
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from a2ls_lightning.modules.aux_spec import AuxLossSpec

__all__ = ["PATTERNS", "PatternRow", "pattern_table", "patterns_markdown"]


def _forward(spec: AuxLossSpec) -> bool:
    ins, outs = set(spec.inputs), set(spec.targets)
    return any(("s", i) in ins and ("a", i) in ins and ("s", i + 1) in outs for i in range(spec.horizon))


def _inverse(spec: AuxLossSpec) -> bool:
    ins, outs = set(spec.inputs), set(spec.targets)
    return any(("s", i) in ins and ("s", i + 1) in ins and ("a", i) in outs for i in range(spec.horizon))


#: Pattern name → predicate.
PATTERNS: dict[str, Callable[[AuxLossSpec], bool]] = {
    "forward dynamics": _forward,
    "inverse dynamics": _inverse,
    "reward prediction": lambda spec: bool(spec.target_reward_offsets),
    "action inference": lambda spec: bool(spec.target_action_offsets),
    "state reconstruction": lambda spec: bool(set(spec.input_state_offsets) & set(spec.target_state_offsets)),
    "more target states than input states":
        lambda spec: len(spec.target_state_offsets) > len(spec.input_state_offsets),
    "in-batch negatives": lambda spec: spec.negatives,
}


@dataclass(frozen=True)
class PatternRow:
    """Statistics of one pattern over the scored candidates."""

    pattern: str
    n_with: int
    n_without: int
    mean_with: float
    mean_without: float
    p_value: float

    @property
    def difference(self) -> float:
        """Mean fitness with the pattern minus without."""
        return self.mean_with - self.mean_without


def pattern_table(candidates: Sequence[tuple[AuxLossSpec, float]]) -> list[PatternRow]:
    """One :class:`PatternRow` per pattern of :data:`PATTERNS` over ``(spec, fitness)`` pairs."""
    from scipy import stats

    rows = []
    for name, holds in PATTERNS.items():
        with_ = np.array([f for spec, f in candidates if holds(spec)], dtype=float)
        without = np.array([f for spec, f in candidates if not holds(spec)], dtype=float)
        p_value = float("nan")
        if len(with_) >= 2 and len(without) >= 2 and (with_.std() > 0 or without.std() > 0):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # near-identical groups: scipy warns, the p-value still stands
                p_value = float(stats.ttest_ind(with_, without, equal_var=False).pvalue)
        rows.append(PatternRow(name, len(with_), len(without),
                               float(with_.mean()) if len(with_) else float("nan"),
                               float(without.mean()) if len(without) else float("nan"), p_value))
    return rows


def _fmt(value: float, digits: int = 1) -> str:
    return "–" if math.isnan(value) else f"{value:.{digits}f}"


def patterns_markdown(rows: Sequence[PatternRow]) -> str:
    """The rows as a markdown table."""
    lines = ["| pattern | n with | n without | mean with | mean without | difference | p (Welch t-test) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        p = "–" if math.isnan(r.p_value) else f"{r.p_value:.3g}"
        lines.append(f"| {r.pattern} | {r.n_with} | {r.n_without} | {_fmt(r.mean_with)} | {_fmt(r.mean_without)} "
                     f"| {_fmt(r.difference)} | {p} |")
    return "\n".join(lines)
