"""The population of each stage, as a pure function of the seed, the stage, its survivors and the history.

Stage 0: the seed presets, then random candidates. Stage ``s > 0``: child ``i`` comes from survivor
``i mod k`` (round robin, so every survivor gets the same number of children) by one mutation, or with
``crossover_probability`` by crossover with another survivor. Every child goes through loss rejection
(:meth:`SearchSpace.admit`) and duplicate rejection (never a candidate of an earlier stage, parents included,
nor one already in this stage); a rejected child is redrawn. The random generator is seeded by
``(sampler_seed, stage)`` only, so every worker that computes a stage gets the same list.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

import numpy as np

from a2ls_lightning.modules.aux_spec import AuxLossSpec
from a2ls_lightning.search.mutation import crossover, mutate
from a2ls_lightning.search.settings import SearchSettings
from a2ls_lightning.search.space import Genome, SearchSpace

__all__ = ["Candidate", "RejectHook", "search_space", "stage_population"]

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


def search_space(settings: SearchSettings) -> SearchSpace:
    """The space described by ``settings``."""
    return SearchSpace(settings.max_horizon, settings.operators, settings.negatives)


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


def stage_population(stage: int, settings: SearchSettings, survivors: Sequence[AuxLossSpec],
                     history: Iterable[AuxLossSpec], on_reject: RejectHook | None = None) -> list[Candidate]:
    """The ``settings.population`` candidates of ``stage``.

    Args:
        stage: stage index (0: presets and random candidates).
        settings: population, space, mutation settings and ``sampler_seed``.
        survivors: parents for ``stage > 0``, best first (ignored in stage 0).
        history: every candidate of the earlier stages (never generated again).
        on_reject: told about every rejected child.
    """
    space = search_space(settings)
    rng = np.random.default_rng([settings.sampler_seed, stage])
    out = _Stage(stage, space, history, settings.max_rejections, on_reject)
    if stage == 0:
        presets = AuxLossSpec.presets()
        for name in settings.seed_presets[: settings.population]:
            out.offer(Genome.of(presets[name]), f"preset:{name}")
        while len(out.members) < settings.population:
            out.offer(space.random_genome(rng, settings.init_density), "random")
        return out.members
    if not survivors:
        raise RuntimeError(f"stage {stage}: no survivor of stage {stage - 1} to breed from")
    genomes = [Genome.of(spec) for spec in survivors]
    while len(out.members) < settings.population:
        index = len(out.members) % len(genomes)
        parent = genomes[index]
        if len(genomes) > 1 and rng.random() < settings.crossover_probability:
            other = int(rng.choice([i for i in range(len(genomes)) if i != index]))
            child = crossover(parent, genomes[other], rng)
            out.offer(child, "crossover", (str(survivors[index]), str(survivors[other])))
        else:
            child, kind = mutate(parent, rng, space, settings.mutation_weights, settings.mutation_flips)
            out.offer(child, f"mutation:{kind}", (str(survivors[index]),))
    return out.members
