"""The searched loss space and the evolution over it: genomes, loss rejection, mutation, crossover, stages.

A :class:`Genome` is a candidate before validation (any horizon, input/target sets, operator, negatives). It
becomes an :class:`~a2ls_lightning.modules.aux_spec.AuxLossSpec` only through :meth:`SearchSpace.admit`, the
*loss rejection* of A2LS (He et al. 2022, "Reinforcement Learning with Automated Auxiliary Loss Search",
arXiv 2210.06041): a genome that is not a valid loss (empty sets, no input state, a pure copy: see
``AuxLossSpec``) or lies outside the configured space is rejected with the reason and never trained.

:func:`mutate` and :func:`crossover` edit genomes; :func:`stage_population` turns a stage's survivors into the
next stage's candidates, as a pure function of the seed, the stage, its survivors and the history.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from typing import Any, Protocol

import numpy as np

from a2ls_lightning.modules.aux_operators import OPERATORS
from a2ls_lightning.modules.aux_spec import AuxLossSpec, Element
from a2ls_lightning.validation import check, check_integer

__all__ = ["Candidate", "Genome", "RejectHook", "SearchSpace", "crossover", "mutate", "stage_population",
           "universe"]


# --- genomes and the space ---------------------------------------------------------------------------------
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
    allowed negatives flag. Checked on construction (the only check of these settings): a bad value raises a
    one-line ``ValueError`` naming the ``search.`` field.

    Args:
        max_horizon: largest window length ``H``.
        operators: operators a candidate may use (no duplicates).
        negatives: allowed values of the negatives flag: ``(False,)``, ``(True,)`` or both.
    """

    max_horizon: int = 10
    operators: tuple[str, ...] = OPERATORS
    negatives: tuple[bool, ...] = (False, True)

    def __post_init__(self) -> None:
        operators, negatives = tuple(self.operators), tuple(self.negatives)
        object.__setattr__(self, "operators", operators)
        object.__setattr__(self, "negatives", negatives)
        check_integer("search.max_horizon", self.max_horizon, 1)
        allowed = ", ".join(OPERATORS)
        check(len(operators) > 0, f"search.operators={list(operators)} is empty; allowed: {allowed}")
        for op in operators:
            check(op in OPERATORS, f"search.operators: unknown operator {op!r}; allowed: {allowed}")
        check(len(set(operators)) == len(operators), f"search.operators={list(operators)} has a duplicate")
        check(len(negatives) > 0 and all(isinstance(v, bool) for v in negatives)
              and len(set(negatives)) == len(negatives),
              f"search.negatives={list(negatives)} must be [false], [true] or [false, true]")

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


# --- mutation and crossover (validity is checked afterwards, by admit) -------------------------------------
def _flip(genome: Genome, rng: np.random.Generator, max_flips: int) -> Genome:
    bits = [(side, e) for side in ("in", "out") for e in universe(genome.horizon)]
    count = int(rng.integers(1, max_flips + 1))
    chosen = rng.choice(len(bits), size=min(count, len(bits)), replace=False)
    inputs, targets = set(genome.inputs), set(genome.targets)
    for index in chosen:
        side, element = bits[int(index)]
        chosen_set = inputs if side == "in" else targets
        chosen_set.symmetric_difference_update({element})
    return replace(genome, inputs=frozenset(inputs), targets=frozenset(targets))


def _horizon(genome: Genome, rng: np.random.Generator, space: SearchSpace) -> Genome | None:
    options = [h for h in (genome.horizon - 1, genome.horizon + 1) if 1 <= h <= space.max_horizon]
    if not options:
        return None
    horizon = options[int(rng.integers(len(options)))]
    window = set(universe(horizon))
    return replace(genome, horizon=horizon, inputs=frozenset(genome.inputs & window),
                   targets=frozenset(genome.targets & window))


def _operator(genome: Genome, rng: np.random.Generator, space: SearchSpace) -> Genome | None:
    others = [op for op in space.operators if op != genome.operator]
    if not others:
        return None
    return replace(genome, operator=others[int(rng.integers(len(others)))])


def _negatives(genome: Genome, space: SearchSpace) -> Genome | None:
    if (not genome.negatives) not in space.negatives:
        return None
    return replace(genome, negatives=not genome.negatives)


def mutate(genome: Genome, rng: np.random.Generator, space: SearchSpace, weights: dict[str, float],
           max_flips: int) -> tuple[Genome, str]:
    """One mutation of ``genome``: ``(child, kind)``, the kind drawn with ``weights`` among those that apply.

    Kinds (one that cannot change this genome is skipped): ``flip`` flips 1..``max_flips`` bits of the
    input/target masks; ``horizon`` moves ``H`` by ±1 inside ``1..max_horizon`` (elements keep their offsets,
    those beyond the new window are dropped); ``operator`` picks another allowed operator; ``negatives`` toggles
    the flag (when both values are allowed). The child always differs from ``genome``; it may be invalid.
    """
    kinds = [k for k, w in weights.items() if w > 0]
    probabilities = np.array([weights[k] for k in kinds], dtype=float)
    while True:
        kind = kinds[int(rng.choice(len(kinds), p=probabilities / probabilities.sum()))]
        if kind == "flip":
            return _flip(genome, rng, max_flips), kind
        child = (_horizon(genome, rng, space) if kind == "horizon" else
                 _operator(genome, rng, space) if kind == "operator" else _negatives(genome, space))
        if child is not None:
            return child, kind
        if kinds == [kind]:  # the only kind allowed cannot change this genome: fall back to flips
            return _flip(genome, rng, max_flips), "flip"
        keep = [i for i, k in enumerate(kinds) if k != kind]
        kinds, probabilities = [kinds[i] for i in keep], probabilities[keep]


def crossover(first: Genome, second: Genome, rng: np.random.Generator) -> Genome:
    """Uniform crossover over mask bits: horizon, operator and negatives from one parent chosen at random; each
    bit of its window from either parent with probability 1/2 (an element outside a parent's window is absent
    there)."""
    base = first if rng.random() < 0.5 else second
    inputs, targets = set(), set()
    for element in universe(base.horizon):
        for side, out in (("inputs", inputs), ("targets", targets)):
            donor = first if rng.random() < 0.5 else second
            if element in getattr(donor, side):
                out.add(element)
    return replace(base, inputs=frozenset(inputs), targets=frozenset(targets))


# --- a stage's population ----------------------------------------------------------------------------------
#: Called for every rejected child with ``(stage, genome text, reason)``.
RejectHook = Callable[[int, str, str], None]


@dataclass(frozen=True)
class Candidate:
    """One slot of a stage.

    Args:
        spec: the loss to train.
        origin: ``preset:<name>``, ``random``, ``mutation:<kind>`` or ``crossover``.
        parents: text forms of the parent(s) (empty in stage 0).
    """

    spec: AuxLossSpec
    origin: str
    parents: tuple[str, ...] = ()


class _Stage:
    """Collects admitted, unique candidates for one stage and counts rejections."""

    def __init__(self, stage: int, space: SearchSpace, history: Iterable[AuxLossSpec], limit: int,
                 on_reject: RejectHook | None) -> None:
        self.stage, self.space, self.limit, self.on_reject = stage, space, limit, on_reject
        self.seen = set(history)
        self.members: list[Candidate] = []
        self.rejections = 0

    def offer(self, genome: Genome, origin: str, parents: tuple[str, ...] = ()) -> bool:
        spec, reason = self.space.admit(genome)
        if spec is not None and spec in self.seen:
            spec, reason = None, "duplicate: already a candidate of this search"
        if spec is None:
            self.rejections += 1
            if self.on_reject is not None:
                self.on_reject(self.stage, genome.text(), reason)
            if self.rejections > self.limit:
                raise RuntimeError(
                    f"stage {self.stage}: {self.rejections} children rejected (last: {reason}); the search "
                    "space is too small for this population (raise max_horizon, allow more operators, or lower "
                    "population)")
            return False
        self.seen.add(spec)
        self.members.append(Candidate(spec, origin, parents))
        return True


class PopulationSettings(Protocol):
    """What :func:`stage_population` reads of the search's settings (``SearchSettings`` has all of it); declared
    here so that the space does not depend on the settings module, which builds on the space."""

    @property
    def space(self) -> SearchSpace: ...

    population: int
    populations: tuple[int, ...]
    promote: bool
    sampler_seed: int
    max_rejections: int
    seed_presets: Sequence[str]
    init_density: float
    crossover_probability: float
    mutation_weights: Any
    mutation_flips: int


def stage_population(stage: int, settings: PopulationSettings, survivors: Sequence[AuxLossSpec],
                     history: Iterable[AuxLossSpec], on_reject: RejectHook | None = None) -> list[Candidate]:
    """The ``settings.populations[stage]`` candidates of ``stage``, the same in every worker.

    Stage 0: the seed presets, then random candidates. Stage ``s > 0`` with ``promote``: the survivors themselves
    first (origin ``promoted``, retrained at this stage's budget and seeds), then children. Child ``i`` comes from
    survivor ``i mod k`` (round robin: every survivor gets as many children) by one mutation, or with
    ``crossover_probability`` by crossover with another survivor. Every child goes through loss rejection
    (:meth:`SearchSpace.admit`) and duplicate rejection (never a candidate of an earlier stage, parents included,
    nor one already in this stage); a rejected child is redrawn. The random generator is seeded by
    ``(sampler_seed, stage)`` only.

    Args:
        stage: stage index (0: presets and random candidates).
        settings: population, space, mutation settings and ``sampler_seed``.
        survivors: parents for ``stage > 0``, best first (ignored in stage 0).
        history: every candidate of the earlier stages (never generated again).
        on_reject: told about every rejected child.
    """
    space = settings.space
    rng = np.random.default_rng([settings.sampler_seed, stage])
    out = _Stage(stage, space, history, settings.max_rejections, on_reject)
    size = settings.populations[stage]
    if stage == 0:
        presets = AuxLossSpec.presets()
        for name in settings.seed_presets[:size]:
            out.offer(Genome.of(presets[name]), f"preset:{name}")
        while len(out.members) < size:
            out.offer(space.random_genome(rng, settings.init_density), "random")
        return out.members
    if not survivors:
        raise RuntimeError(f"stage {stage}: no survivor of stage {stage - 1} to breed from")
    genomes = [Genome.of(spec) for spec in survivors]
    promoted = [Candidate(spec, "promoted", (str(spec),)) for spec in survivors][:size] if settings.promote else []
    out.members.extend(promoted)  # not offered: they are in the history on purpose
    while len(out.members) < size:
        index = (len(out.members) - len(promoted)) % len(genomes)
        parent = genomes[index]
        if len(genomes) > 1 and rng.random() < settings.crossover_probability:
            other = int(rng.choice([i for i in range(len(genomes)) if i != index]))
            child = crossover(parent, genomes[other], rng)
            out.offer(child, "crossover", (str(survivors[index]), str(survivors[other])))
        else:
            child, kind = mutate(parent, rng, space, settings.mutation_weights, settings.mutation_flips)
            out.offer(child, f"mutation:{kind}", (str(survivors[index]),))
    return out.members
