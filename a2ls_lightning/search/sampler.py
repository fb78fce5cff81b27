"""How the evolution lives in an Optuna study: the ledger of stages and slots, and the sampler that fills it.

One trial per candidate. A stage has ``population`` slots; a trial *claims* a slot by writing the user
attributes ``a2ls_stage`` and ``a2ls_slot``; once the stage's parents are known it receives its candidate
(``a2ls_spec``, the loss's text form, plus ``a2ls_origin`` and ``a2ls_parents``), trains it and finishes with
the fitness as its value. A slot's *holder* is the oldest (lowest trial number) live trial claiming it. Live:
running, complete, pruned, or failed with ``a2ls_error`` (the candidate's training raised: recorded, not
retried). A trial that failed without it (its worker died: the heartbeat went stale; or it was interrupted)
frees its slot, which the next worker claims and trains again. A stage is done when every slot has a finished
holder (:class:`Ledger`).

:class:`EvolutionSampler` turns each new trial (Optuna's ``before_trial``) into one candidate:

1. claim the lowest free ``(stage, slot)`` (a slot freed by a dead worker first), pause
   ``claim_settle_seconds`` and keep the claim only if no older trial claimed the same slot meanwhile;
2. wait, heartbeating, until the previous stage is done (its survivors are the parents);
3. take the slot's candidate from the stage's population (:func:`~a2ls_lightning.search.space.stage_population`,
   deterministic in ``sampler_seed`` and the stage's results) and store it on the trial.

With ``search.baseline`` slot 0 of every stage is plain SAC (``a2ls_baseline``; it needs no parents, so it is
assigned at once) and candidate ``i`` sits in slot ``i + 1``; survivors rank by the paired fitness over the stage's
baseline (:mod:`.paired`). When every slot is taken and the search is complete, the trial is marked ``a2ls_idle``
and the objective skips it; the objective reads the candidate with :func:`candidate_of`. ``trial.suggest_*``
calls are answered by a ``RandomSampler`` (the search itself needs none).
"""

from __future__ import annotations

import os
import socket
import threading
import time
import warnings
from collections.abc import Iterable, Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.study import Study
from optuna.trial import FrozenTrial, TrialState

from a2ls_lightning.modules.aux_spec import AuxLossSpec
from a2ls_lightning.search.paired import Paired, paired_fitness, rank_key
from a2ls_lightning.search.settings import SearchSettings
from a2ls_lightning.search.space import Candidate, RejectHook, stage_population

__all__ = [
    "ATTR_ASSIGNED_AT",
    "ATTR_BASELINE",
    "BASELINE_SPEC",
    "ATTR_CURVES",
    "ATTR_ERROR",
    "ATTR_IDLE",
    "ATTR_ORIGIN",
    "ATTR_PARENTS",
    "ATTR_SEED_FITNESS",
    "ATTR_SLOT",
    "ATTR_SPEC",
    "ATTR_STAGE",
    "ATTR_WORKER",
    "STUDY_ATTR_SETTINGS",
    "EvolutionSampler",
    "Ledger",
    "candidate_of",
    "claim_of",
    "fail_stale",
    "is_baseline",
    "worker_id",
]

# --- the ledger: trials as stages and slots ----------------------------------------------------------------
ATTR_STAGE = "a2ls_stage"
ATTR_SLOT = "a2ls_slot"
ATTR_SPEC = "a2ls_spec"
ATTR_ORIGIN = "a2ls_origin"
ATTR_PARENTS = "a2ls_parents"
ATTR_ASSIGNED_AT = "a2ls_assigned_at"
ATTR_WORKER = "a2ls_worker"
ATTR_ERROR = "a2ls_error"
ATTR_IDLE = "a2ls_idle"
ATTR_SEED_FITNESS = "a2ls_seed_fitness"
ATTR_CURVES = "a2ls_curves"
ATTR_BASELINE = "a2ls_baseline"
#: ``a2ls_spec`` of a stage's baseline trial (plain SAC).
BASELINE_SPEC = "sac (no auxiliary loss)"
#: Study user attribute holding the settings that define the study (``SearchSettings.identity()``) and the base
#: training config.
STUDY_ATTR_SETTINGS = "a2ls_settings"

_FINISHED_OK = (TrialState.COMPLETE, TrialState.PRUNED)


def claim_of(trial: FrozenTrial) -> tuple[int, int] | None:
    """The ``(stage, slot)`` a trial claims, or ``None``."""
    attrs = trial.user_attrs
    if ATTR_STAGE in attrs and ATTR_SLOT in attrs and attrs[ATTR_STAGE] is not None:
        return int(attrs[ATTR_STAGE]), int(attrs[ATTR_SLOT])
    return None


def is_baseline(trial: FrozenTrial) -> bool:
    """The trial trains its stage's SAC baseline, not a candidate."""
    return bool(trial.user_attrs.get(ATTR_BASELINE))


def is_live(trial: FrozenTrial) -> bool:
    """Running, or finished with a result that stands (complete, pruned, or failed by its own training)."""
    return trial.state in (TrialState.RUNNING, *_FINISHED_OK) or (
        trial.state == TrialState.FAIL and ATTR_ERROR in trial.user_attrs)


def is_finished(trial: FrozenTrial) -> bool:
    """Finished with a result that stands (the slot needs no other trial)."""
    return is_live(trial) and trial.state != TrialState.RUNNING


class Ledger:
    """A snapshot of the study as stages and slots.

    Args:
        trials: all trials of the study.
        population: slots per stage: one number for every stage, or one per stage (``SearchSettings.slots``).
        stages: number of stages.
    """

    def __init__(self, trials: Iterable[FrozenTrial], population: int | Sequence[int], stages: int) -> None:
        self.sizes = (population,) * stages if isinstance(population, int) else tuple(population)
        self.population, self.stages = max(self.sizes), stages
        self.trials = list(trials)
        self.holders: dict[tuple[int, int], FrozenTrial] = {}
        for trial in sorted(self.trials, key=lambda t: t.number):
            claim = claim_of(trial)
            if claim is not None and is_live(trial) and claim not in self.holders:
                self.holders[claim] = trial

    def holder(self, stage: int, slot: int) -> FrozenTrial | None:
        """The trial holding ``(stage, slot)``, if any."""
        return self.holders.get((stage, slot))

    def slot_done(self, stage: int, slot: int) -> bool:
        holder = self.holder(stage, slot)
        return holder is not None and is_finished(holder)

    def stage_done(self, stage: int) -> bool:
        """Every slot of ``stage`` has a finished holder."""
        return all(self.slot_done(stage, slot) for slot in range(self.sizes[stage]))

    @property
    def complete(self) -> bool:
        """Every stage is done: the search is over."""
        return all(self.stage_done(stage) for stage in range(self.stages))

    def first_free(self) -> tuple[int, int] | None:
        """The lowest ``(stage, slot)`` nobody holds, or ``None`` when every slot is held."""
        for stage in range(self.stages):
            for slot in range(self.sizes[stage]):
                if (stage, slot) not in self.holders:
                    return stage, slot
        return None

    def stage_trials(self, stage: int) -> list[FrozenTrial]:
        """The holders of ``stage``'s slots, by slot."""
        return [t for (s, _), t in sorted(self.holders.items()) if s == stage]

    def baseline(self, stage: int) -> FrozenTrial | None:
        """The complete SAC baseline trial of ``stage``, if any."""
        found = [t for t in self.stage_trials(stage) if is_baseline(t) and t.state == TrialState.COMPLETE]
        return found[0] if found else None

    def paired(self, trial: FrozenTrial, confidence: float = 0.9) -> Paired:
        """A complete candidate's fitness over its seeds, paired with its stage's complete baseline when there is
        one on as many seeds (:func:`~a2ls_lightning.search.paired.paired_fitness`)."""
        seeds = trial.user_attrs.get(ATTR_SEED_FITNESS) or [trial.value]
        base = self.baseline(int(trial.user_attrs[ATTR_STAGE]))
        base_seeds = None if base is None else base.user_attrs.get(ATTR_SEED_FITNESS) or [base.value]
        return paired_fitness(seeds, base_seeds if base_seeds is not None and len(base_seeds) == len(seeds) else None,
                              confidence)

    def ranked(self, stage: int, confidence: float = 0.9) -> list[FrozenTrial]:
        """Finished candidate holders of ``stage`` that have a fitness, best first: complete trials by the lower
        bound of their (paired) fitness interval, or by its mean with one seed; then pruned ones by their last
        reported value; ties by slot. Failed candidates and the baseline are not ranked."""
        def key(trial: FrozenTrial) -> tuple[int, int, float, float, int]:
            if trial.state == TrialState.COMPLETE:
                return (0, *rank_key(self.paired(trial, confidence)), int(trial.user_attrs[ATTR_SLOT]))
            last = trial.intermediate_values[max(trial.intermediate_values)] if trial.intermediate_values else None
            return 1, 0, -float(last) if last is not None else float("inf"), 0.0, int(trial.user_attrs[ATTR_SLOT])

        return sorted((t for t in self.stage_trials(stage) if t.state in _FINISHED_OK and not is_baseline(t)),
                      key=key)


# --- the sampler ------------------------------------------------------------------------------------------
def worker_id() -> str:
    """``host:pid`` of this process (stored on each trial it trains)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def candidate_of(trial: optuna.trial.BaseTrial) -> AuxLossSpec | None:
    """The candidate assigned to ``trial`` by :class:`EvolutionSampler`, or ``None`` for an idle trial."""
    text = trial.user_attrs.get(ATTR_SPEC)
    return AuxLossSpec.parse(text) if text and not trial.user_attrs.get(ATTR_BASELINE) else None


def fail_stale(study: Study) -> None:
    """Mark running trials whose heartbeat is older than the grace period as failed (their slots free up)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna flags the heartbeat API as experimental
        optuna.storages.fail_stale_trials(study)


def _heartbeat(study: Study, trial_id: int) -> None:
    storage = study._storage
    interval = getattr(storage, "get_heartbeat_interval", lambda: None)()
    if interval is not None:
        storage.record_heartbeat(trial_id)


class EvolutionSampler(BaseSampler):
    """Survivor selection, mutation, crossover and loss rejection over the A2LS space, stage by stage.

    Args:
        settings: population, stages, survivor fraction, space, mutation settings, ``sampler_seed``, and the
            claim timings (``poll_seconds``, ``claim_settle_seconds``).
        on_reject: called with ``(stage, genome text, reason)`` for every rejected child (never trained).
    """

    def __init__(self, settings: SearchSettings, on_reject: RejectHook | None = None) -> None:
        self.settings = settings
        self.on_reject = on_reject
        self._fallback = RandomSampler(seed=settings.sampler_seed)
        self._lock = threading.Lock()
        self._populations: dict[int, tuple[tuple[str, ...], list[Candidate]]] = {}

    # --- Optuna's sampler interface: the search suggests no parameters ---------------------------------
    def infer_relative_search_space(self, study: Study, trial: FrozenTrial) -> dict[str, BaseDistribution]:
        return {}

    def sample_relative(self, study: Study, trial: FrozenTrial,
                        search_space: dict[str, BaseDistribution]) -> dict[str, Any]:
        return {}

    def sample_independent(self, study: Study, trial: FrozenTrial, param_name: str,
                           param_distribution: BaseDistribution) -> Any:
        return self._fallback.sample_independent(study, trial, param_name, param_distribution)

    def reseed_rng(self) -> None:
        self._fallback.reseed_rng()

    def before_trial(self, study: Study, trial: FrozenTrial) -> None:
        if ATTR_SPEC not in trial.user_attrs:
            self._assign(study, trial)

    # --- populations ------------------------------------------------------------------------------
    def population(self, stage: int, ledger: Ledger) -> list[Candidate]:
        """The candidates of ``stage``; stage ``s > 0`` needs stage ``s - 1`` done in ``ledger``."""
        survivors: Sequence[AuxLossSpec] = ()
        if stage > 0:
            ranked = ledger.ranked(stage - 1, self.settings.confidence)[: self.settings.survivors_of(stage - 1)]
            survivors = [AuxLossSpec.parse(t.user_attrs[ATTR_SPEC]) for t in ranked]
        key = tuple(str(s) for s in survivors)
        with self._lock:
            cached = self._populations.get(stage)
        if cached is not None and cached[0] == key:
            return cached[1]
        history = [c.spec for earlier in range(stage) for c in self.population(earlier, ledger)]
        members = stage_population(stage, self.settings, survivors, history, self.on_reject)
        with self._lock:
            self._populations[stage] = (key, members)
        return members

    # --- claiming a slot --------------------------------------------------------------------------
    def _write(self, study: Study, trial: FrozenTrial, values: dict[str, Any]) -> None:
        for key, value in values.items():
            study._storage.set_trial_user_attr(trial._trial_id, key, value)
            trial.set_user_attr(key, value)  # the objective's Trial reads this cached copy

    def _wait(self, study: Study, trial: FrozenTrial) -> None:
        _heartbeat(study, trial._trial_id)
        time.sleep(self.settings.poll_seconds)

    def _assign(self, study: Study, trial: FrozenTrial) -> None:
        settings = self.settings
        claim: tuple[int, int] | None = None
        while True:
            fail_stale(study)
            ledger = Ledger(study.get_trials(deepcopy=False), settings.slots, settings.stages)
            if claim is not None:
                holder = ledger.holder(*claim)
                if holder is None or holder.number != trial.number:
                    claim = None  # an older trial claimed the same slot: pick again
            free = ledger.first_free()
            if claim is None or (free is not None and free[0] < claim[0]):
                if free is None:
                    if ledger.complete:
                        self._write(study, trial, {ATTR_IDLE: True, ATTR_STAGE: None, ATTR_SLOT: None})
                        return
                    self._wait(study, trial)  # every slot is held; a dead worker's may free up
                    continue
                claim = free
                self._write(study, trial, {ATTR_STAGE: claim[0], ATTR_SLOT: claim[1], ATTR_WORKER: worker_id()})
                _heartbeat(study, trial._trial_id)
                time.sleep(settings.claim_settle_seconds)
                continue
            stage, slot = claim
            if settings.baseline and slot == 0:  # plain SAC on the stage's seeds: no parents needed
                self._write(study, trial, {ATTR_SPEC: BASELINE_SPEC, ATTR_BASELINE: True, ATTR_ORIGIN: "baseline",
                                           ATTR_PARENTS: [], ATTR_ASSIGNED_AT: time.time()})
                return
            if stage == 0 or ledger.stage_done(stage - 1):
                candidate = self.population(stage, ledger)[slot - int(settings.baseline)]
                self._write(study, trial, {ATTR_SPEC: str(candidate.spec), ATTR_ORIGIN: candidate.origin,
                                           ATTR_PARENTS: list(candidate.parents), ATTR_ASSIGNED_AT: time.time()})
                return
            self._wait(study, trial)
