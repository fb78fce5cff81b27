"""Mutation and crossover of genomes (the edits of the evolution; validity is checked afterwards).

Mutation kinds (picked with the configured weights; a kind that cannot change anything is skipped):

- ``flip``: flip 1..``mutation_flips`` bits of the input/target masks (a bit = one element on one side);
- ``horizon``: ``H ± 1`` inside ``1..max_horizon``; elements keep their offsets, those beyond the new
  window are dropped (a longer window adds no element: later flips fill it);
- ``operator``: another allowed operator;
- ``negatives``: toggle the in-batch negatives flag (when both values are allowed).

Crossover: uniform over mask bits. The child's horizon, operator and negatives come from one parent chosen at
random; each bit of its window comes from either parent with probability 1/2 (an element outside a parent's
window is absent there).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from a2ls_lightning.search.space import Genome, SearchSpace, universe

__all__ = ["crossover", "mutate"]


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

    The child always differs from ``genome`` (``flip`` always applies); it may be invalid.
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
    """Uniform crossover; horizon, operator and negatives from one parent (see the module doc)."""
    base = first if rng.random() < 0.5 else second
    inputs, targets = set(), set()
    for element in universe(base.horizon):
        for side, out in (("inputs", inputs), ("targets", targets)):
            donor = first if rng.random() < 0.5 else second
            if element in getattr(donor, side):
                out.add(element)
    return replace(base, inputs=frozenset(inputs), targets=frozenset(targets))
