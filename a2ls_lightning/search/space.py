"""The searched part of the A2LS loss space, and the genome the evolution edits.

A :class:`Genome` is a candidate before validation: any horizon, any input/target sets, operator and
negatives. It becomes an :class:`~a2ls_lightning.modules.aux_spec.AuxLossSpec` only through
:meth:`SearchSpace.admit`, which is the *loss rejection* of the paper: a genome that is not a valid loss (empty
sets, no input state, a pure copy: see ``AuxLossSpec``), or that lies outside the configured space, is
rejected with the reason, and is never trained.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from a2ls_lightning.modules.aux_operators import OPERATORS
from a2ls_lightning.modules.aux_spec import AuxLossSpec, Element

__all__ = ["Genome", "SearchSpace", "universe"]


def universe(horizon: int) -> tuple[Element, ...]:
    """The ``3H + 1`` elements of a window of ``horizon`` steps: ``s0..sH``, ``a0..aH-1``, ``r0..rH-1``."""
    return (*(("s", i) for i in range(horizon + 1)), *(("a", i) for i in range(horizon)),
            *(("r", i) for i in range(horizon)))


@dataclass(frozen=True)
class Genome:
    """An unvalidated candidate: what mutation and crossover produce.

    Args:
        horizon: window length ``H``.
        inputs: selected input elements ``(kind, offset)``.
        targets: selected target elements.
        operator: similarity operator name.
        negatives: in-batch negatives.
    """

    horizon: int
    inputs: frozenset[Element]
    targets: frozenset[Element]
    operator: str
    negatives: bool

    @classmethod
    def of(cls, spec: AuxLossSpec) -> Genome:
        """The genome of an existing spec."""
        return cls(spec.horizon, frozenset(spec.inputs), frozenset(spec.targets), spec.operator, spec.negatives)

    def text(self) -> str:
        """The text form even when invalid (for logs of rejected candidates)."""
        def fmt(elements: frozenset[Element]) -> str:
            order = {"s": 0, "a": 1, "r": 2}
            return ",".join(f"{k}{i}" for k, i in sorted(elements, key=lambda e: (order[e[0]], e[1]))) or "-"

        neg = " +neg" if self.negatives else ""
        return f"h={self.horizon} {fmt(self.inputs)} -> {fmt(self.targets)} {self.operator}{neg}"


@dataclass(frozen=True)
class SearchSpace:
    """Bounds of the search: every trained candidate has ``1 <= H <= max_horizon``, an allowed operator and an
    allowed negatives flag.

    Args:
        max_horizon: largest window length ``H``.
        operators: operators a candidate may use.
        negatives: allowed values of the negatives flag.
    """

    max_horizon: int = 10
    operators: tuple[str, ...] = OPERATORS
    negatives: tuple[bool, ...] = (False, True)

    def __post_init__(self) -> None:
        if not isinstance(self.max_horizon, int) or self.max_horizon < 1:
            raise ValueError(f"max_horizon={self.max_horizon!r} must be an integer >= 1")
        if not self.operators:
            raise ValueError(f"operators: empty; allowed: {', '.join(OPERATORS)}")
        unknown = [op for op in self.operators if op not in OPERATORS]
        if unknown:
            raise ValueError(f"operators: unknown {unknown[0]!r}; allowed: {', '.join(OPERATORS)}")
        if not self.negatives or any(not isinstance(v, bool) for v in self.negatives):
            raise ValueError(f"negatives={list(self.negatives)} must be [false], [true] or [false, true]")
        object.__setattr__(self, "operators", tuple(self.operators))
        object.__setattr__(self, "negatives", tuple(self.negatives))

    def admit(self, genome: Genome) -> tuple[AuxLossSpec | None, str]:
        """Loss rejection: ``(spec, "")`` for a trainable candidate inside the space, else ``(None, reason)``.

        Reasons start with a category: ``outside:`` (horizon, operator or negatives not allowed), ``invalid:``
        (not a loss: empty set, no input state, an element outside the window) or ``pure copy:``.
        """
        if not 1 <= genome.horizon <= self.max_horizon:
            return None, f"outside: horizon {genome.horizon} not in 1..{self.max_horizon}"
        if genome.operator not in self.operators:
            return None, f"outside: operator {genome.operator} not in {list(self.operators)}"
        if genome.negatives not in self.negatives:
            return None, f"outside: negatives={genome.negatives} not allowed"
        try:
            spec = AuxLossSpec(genome.horizon, tuple(genome.inputs), tuple(genome.targets), genome.operator,
                               genome.negatives)
        except ValueError as err:
            category = "pure copy" if "pure copy" in str(err) else "invalid"
            return None, f"{category}: {err}"
        return spec, ""

    def contains(self, spec: AuxLossSpec) -> bool:
        """Whether an existing spec lies inside this space."""
        return self.admit(Genome.of(spec))[0] is not None

    def random_genome(self, rng: np.random.Generator, density: float) -> Genome:
        """A uniformly random horizon, operator and negatives flag; each element an input (and independently a
        target) with probability ``density``. May be invalid: pass it through :meth:`admit`."""
        horizon = int(rng.integers(1, self.max_horizon + 1))
        elements = universe(horizon)
        inputs = frozenset(e for e, pick in zip(elements, rng.random(len(elements)) < density) if pick)
        targets = frozenset(e for e, pick in zip(elements, rng.random(len(elements)) < density) if pick)
        operator = self.operators[int(rng.integers(len(self.operators)))]
        negatives = self.negatives[int(rng.integers(len(self.negatives)))]
        return Genome(horizon, inputs, targets, operator, negatives)
