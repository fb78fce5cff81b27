"""How the evolution is stored in an Optuna study: one trial per candidate, claimed as ``(stage, slot)``.

A stage has ``population`` slots. A trial *claims* a slot by writing the user attributes ``a2ls_stage`` and
``a2ls_slot``; once the stage's parents are known it receives its candidate (``a2ls_spec``, the loss's text
form, plus ``a2ls_origin`` and ``a2ls_parents``), trains it and finishes with the fitness as its value.

A slot's *holder* is the oldest (lowest trial number) live trial claiming it. Live: running, complete, pruned,
or failed with ``a2ls_error`` (the candidate's training raised: recorded, not retried). A trial that failed
without it (its worker died: the heartbeat went stale; or it was interrupted) frees its slot, which the next
worker claims and trains again. A stage is done when every slot has a finished holder.
"""

from __future__ import annotations

from collections.abc import Iterable

from optuna.trial import FrozenTrial, TrialState

__all__ = [
    "ATTR_ASSIGNED_AT",
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
    "Ledger",
]

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
        population: slots per stage.
        stages: number of stages.
    """

    def __init__(self, trials: Iterable[FrozenTrial], population: int, stages: int) -> None:
        self.population, self.stages = population, stages
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
        return all(self.slot_done(stage, slot) for slot in range(self.population))

    @property
    def complete(self) -> bool:
        """Every stage is done: the search is over."""
        return all(self.stage_done(stage) for stage in range(self.stages))

    def first_free(self) -> tuple[int, int] | None:
        """The lowest ``(stage, slot)`` nobody holds, or ``None`` when every slot is held."""
        for stage in range(self.stages):
            for slot in range(self.population):
                if (stage, slot) not in self.holders:
                    return stage, slot
        return None

    def stage_trials(self, stage: int) -> list[FrozenTrial]:
        """The holders of ``stage``'s slots, by slot."""
        return [t for (s, _), t in sorted(self.holders.items()) if s == stage]

    def ranked(self, stage: int) -> list[FrozenTrial]:
        """Finished holders of ``stage`` that have a fitness, best first: complete trials by value, then pruned
        ones by their last reported value; ties by slot. Failed candidates are not ranked."""
        def key(trial: FrozenTrial) -> tuple[int, float, int]:
            if trial.state == TrialState.COMPLETE:
                return 0, -float(trial.value), int(trial.user_attrs[ATTR_SLOT])
            last = trial.intermediate_values[max(trial.intermediate_values)] if trial.intermediate_values else None
            return 1, -float(last) if last is not None else float("inf"), int(trial.user_attrs[ATTR_SLOT])

        return sorted((t for t in self.stage_trials(stage) if t.state in _FINISHED_OK), key=key)
