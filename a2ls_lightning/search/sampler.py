"""``EvolutionSampler``: the evolutionary search as an Optuna sampler.

Optuna asks the sampler before every trial (``before_trial``); this one turns the new trial into one candidate
of the evolution (see :mod:`a2ls_lightning.search.ledger` for how stages map to trials):

1. claim the lowest free ``(stage, slot)`` (a slot freed by a dead worker first), pause
   ``claim_settle_seconds`` and keep the claim only if no older trial claimed the same slot meanwhile;
2. wait, heartbeating, until the previous stage is done (its survivors are the parents);
3. take the slot's candidate from the stage's population (:func:`stage_population`: survivor selection,
   mutation, crossover, loss rejection; deterministic in ``sampler_seed`` and the stage's results) and store it
   on the trial: ``a2ls_spec`` (text form), ``a2ls_origin``, ``a2ls_parents``.

When every slot is taken and the search is complete, the trial is marked ``a2ls_idle`` and the objective
skips it. The objective reads the candidate with :func:`candidate_of`. ``trial.suggest_*`` calls are answered
by a ``RandomSampler`` (the search itself needs none).
"""

from __future__ import annotations

import os
import socket
import threading
import time
import warnings
from collections.abc import Sequence
from typing import Any

import optuna
from optuna.distributions import BaseDistribution
from optuna.samplers import BaseSampler, RandomSampler
from optuna.study import Study
from optuna.trial import FrozenTrial

from a2ls_lightning.modules.aux_spec import AuxLossSpec
from a2ls_lightning.search.evolution import Candidate, RejectHook, stage_population
from a2ls_lightning.search.ledger import (
    ATTR_ASSIGNED_AT,
    ATTR_IDLE,
    ATTR_ORIGIN,
    ATTR_PARENTS,
    ATTR_SLOT,
    ATTR_SPEC,
    ATTR_STAGE,
    ATTR_WORKER,
    Ledger,
)
from a2ls_lightning.search.settings import SearchSettings

__all__ = ["EvolutionSampler", "candidate_of", "fail_stale", "worker_id"]


def worker_id() -> str:
    """``host:pid`` of this process (stored on each trial it trains)."""
    return f"{socket.gethostname()}:{os.getpid()}"


def candidate_of(trial: optuna.trial.BaseTrial) -> AuxLossSpec | None:
    """The candidate assigned to ``trial`` by :class:`EvolutionSampler`, or ``None`` for an idle trial."""
    text = trial.user_attrs.get(ATTR_SPEC)
    return AuxLossSpec.parse(text) if text else None


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
            ranked = ledger.ranked(stage - 1)[: self.settings.survivors]
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
            ledger = Ledger(study.get_trials(deepcopy=False), settings.population, settings.stages)
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
            if stage == 0 or ledger.stage_done(stage - 1):
                candidate = self.population(stage, ledger)[slot]
                self._write(study, trial, {ATTR_SPEC: str(candidate.spec), ATTR_ORIGIN: candidate.origin,
                                           ATTR_PARENTS: list(candidate.parents), ATTR_ASSIGNED_AT: time.time()})
                return
            self._wait(study, trial)
