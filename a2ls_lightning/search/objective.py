"""Objectives: what a worker does with a trial once the sampler gave it a candidate.

:class:`CandidateObjective` trains the candidate (real Lightning runs, one per seed) and returns its fitness;
:class:`FitnessObjective` calls an injected function instead (tests, dry runs). Both skip idle trials.

Fitness of one run (``settings.fitness``): ``aulc``, the mean evaluation return over the evaluation curve
(the area under the learning curve divided by its length: evaluations are evenly spaced); or ``final``, the
last evaluation. No normalisation: a search runs on one task, so raw returns are comparable. A candidate's
fitness is the mean over its seeds (all candidates share the seeds: common random numbers).

Intermediate values for the pruner: after every evaluation, the running fitness of the current seed, at step
``seed_index · budget + env_steps``.
"""

from __future__ import annotations

import time
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from a2ls_lightning.modules.aux_spec import AuxLossSpec
from a2ls_lightning.search.ledger import ATTR_CURVES, ATTR_ERROR, ATTR_IDLE, ATTR_SEED_FITNESS, ATTR_SLOT, ATTR_STAGE
from a2ls_lightning.search.sampler import candidate_of
from a2ls_lightning.search.settings import SearchSettings
from a2ls_lightning.search.training import Budget, train_run

__all__ = ["CandidateError", "CandidateObjective", "FitnessObjective", "curve_fitness"]


class CandidateError(RuntimeError):
    """A candidate's training raised; the trial is recorded as failed with ``a2ls_error`` and not retried."""


class _Prune(Exception):
    """Raised inside training to stop a candidate the pruner gave up on."""


def curve_fitness(curve: Sequence[tuple[int, float]], kind: str = "aulc") -> float:
    """Fitness of one evaluation curve ``[(env_steps, return), ...]``: ``aulc`` (mean return) or ``final``."""
    if not curve:
        raise ValueError("curve: empty; the run made no evaluation")
    returns = [value for _, value in curve]
    return float(returns[-1] if kind == "final" else np.mean(returns))


def _skip_idle(trial: optuna.Trial) -> AuxLossSpec:
    spec = candidate_of(trial)
    if spec is None or trial.user_attrs.get(ATTR_IDLE):
        raise optuna.TrialPruned("idle: every candidate of the search is taken")
    return spec


class FitnessObjective:
    """Score each candidate with ``fitness(spec) -> float`` (no training).

    Args:
        fitness: the injected fitness function.
    """

    def __init__(self, fitness: Callable[[AuxLossSpec], float]) -> None:
        self.fitness = fitness

    def __call__(self, trial: optuna.Trial) -> float:
        return float(self.fitness(_skip_idle(trial)))


class CandidateObjective:
    """Train the trial's candidate with the base config for the budget on each seed; return the mean fitness.

    Args:
        base_config: the base ``a2ls fit`` config.
        settings: fitness kind, seeds per candidate, budget, run folder, ``keep_logs``.
        budget: the budget mapped onto the base config (:func:`~a2ls_lightning.search.training.budget_for`).
        log: where progress lines go (default: ``print``).
    """

    def __init__(self, base_config: dict[str, Any], settings: SearchSettings, budget: Budget,
                 log: Callable[[str], None] = print) -> None:
        self.base_config, self.settings, self.budget, self.log = base_config, settings, budget, log

    def seeds(self) -> list[int]:
        """``seed_everything + k`` for ``k < seeds_per_candidate``."""
        first = int(self.base_config.get("seed_everything", 1))
        return [first + k for k in range(self.settings.seeds_per_candidate)]

    def __call__(self, trial: optuna.Trial) -> float:
        spec = _skip_idle(trial)
        stage, slot = trial.user_attrs[ATTR_STAGE], trial.user_attrs[ATTR_SLOT]
        start = time.time()
        self.log(f"stage {stage} slot {slot} (trial {trial.number}): training {spec}")
        curves, scores = [], []
        try:
            for index, seed in enumerate(self.seeds()):
                curve = self._run(trial, spec, index, seed, f"stage{stage}-slot{slot}/seed{seed}")
                curves.append(curve)
                scores.append(curve_fitness(curve, self.settings.fitness))
        except _Prune:
            self.log(f"stage {stage} slot {slot}: pruned after {time.time() - start:.0f} s")
            raise optuna.TrialPruned() from None
        except KeyboardInterrupt:
            raise
        except Exception as err:
            message = f"{type(err).__name__}: {' '.join(str(err).split())[:500]}"
            trial.set_user_attr(ATTR_ERROR, message)
            trial.set_user_attr("a2ls_traceback", traceback.format_exc()[-4000:])
            self.log(f"stage {stage} slot {slot}: training failed: {message}")
            raise CandidateError(message) from err
        fitness = float(np.mean(scores))
        trial.set_user_attr(ATTR_SEED_FITNESS, scores)
        trial.set_user_attr(ATTR_CURVES, [[list(p) for p in c] for c in curves])
        self.log(f"stage {stage} slot {slot}: fitness {fitness:.1f} in {time.time() - start:.0f} s")
        return fitness

    def _run(self, trial: optuna.Trial, spec: AuxLossSpec, index: int, seed: int, name: str) -> list:
        values: list[float] = []

        def on_eval(env_steps: int, value: float) -> None:
            values.append(value)
            running = values[-1] if self.settings.fitness == "final" else float(np.mean(values))
            trial.report(running, step=index * self.budget.env_steps + env_steps)
            if trial.should_prune():
                raise _Prune()

        root = str(Path(self.settings.run_dir) / "candidates" / name)
        return train_run(self.base_config, {"cand": str(spec)}, seed, self.budget, root, on_eval,
                         keep_logs=self.settings.keep_logs)
