"""What a worker does with a trial's candidate: train it on a budget, record its learning curve, score it.

Training: :func:`train_run` trains the base ``a2ls fit`` config with given auxiliary losses, built by
:func:`a2ls_lightning.builder.instantiate` exactly as ``a2ls fit --config base.yaml --model.aux_losses=...``
would, for an env-step :class:`Budget`. The search overrides ``model.aux_losses``, ``seed_everything``,
``trainer.max_steps`` (from the budget), the root folder, no checkpoints (``ModelCheckpoint`` callbacks are
dropped), no progress bar, and the logger unless logs are kept. The learning curve comes from the datamodule's
evaluator (a listener added to it).

Objectives: :class:`CandidateObjective` trains the candidate (one run per seed of its stage, on its stage's budget)
and returns its fitness; a stage's baseline trial trains plain SAC the same way (no auxiliary loss, never pruned).
:class:`FitnessObjective` and :class:`SeedFitnessObjective` call an injected function instead (tests, dry runs).
All skip idle trials.
Fitness of one run (``settings.fitness``): ``aulc``, the mean evaluation return over the evaluation curve
(the area under the learning curve divided by its length: evaluations are evenly spaced), or ``final``, the
last evaluation. No normalisation: a search runs on one task, so raw returns are comparable. A candidate's
fitness is the mean over its seeds (all candidates share the seeds: common random numbers). The pruner gets,
after every evaluation, the running fitness of the current seed at step ``seed_index · budget + env_steps``.
"""

from __future__ import annotations

import copy
import logging
import time
import traceback
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Any

import numpy as np
import optuna

from a2ls_lightning.builder import instantiate
from a2ls_lightning.data.replay_ratio import updates_for
from a2ls_lightning.modules.aux_spec import AuxLossSpec
from a2ls_lightning.search.sampler import (
    ATTR_BASELINE,
    ATTR_CURVES,
    ATTR_ERROR,
    ATTR_IDLE,
    ATTR_SEED_FITNESS,
    ATTR_SLOT,
    ATTR_STAGE,
    candidate_of,
)
from a2ls_lightning.search.settings import SearchSettings
from a2ls_lightning.validation import check, one_line

__all__ = [
    "Budget",
    "CandidateError",
    "CandidateObjective",
    "EvalCallback",
    "FitnessObjective",
    "SeedFitnessObjective",
    "budget_for",
    "curve_fitness",
    "identity_config",
    "quiet",
    "train_run",
]

#: Called after every evaluation with ``(env_steps, eval_return)``; it may raise to stop the run.
EvalCallback = Callable[[int, float], None]

_OPERATIONAL_TRAINER_KEYS = ("default_root_dir", "enable_progress_bar", "enable_model_summary", "log_every_n_steps")


# --- one training run --------------------------------------------------------------------------------------
def identity_config(base: dict[str, Any]) -> dict[str, Any]:
    """``base`` without the keys that do not change training results (folders, progress bar)."""
    out = copy.deepcopy(base)
    for key in _OPERATIONAL_TRAINER_KEYS:
        (out.get("trainer") or {}).pop(key, None)
    return out


def quiet() -> None:
    """Silence the per-run chatter of Lightning, TorchRL and MuJoCo in a worker (warnings and info logs)."""
    for name in ("lightning.pytorch", "lightning.fabric", "lightning", "torchrl"):
        logging.getLogger(name).setLevel(logging.WARNING)
    logging.getLogger("absl").setLevel(logging.ERROR)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    for message in (".*LeafSpec.*", ".*LightningCLI's args parameter.*",
                    ".*settotalmass.*"):
        warnings.filterwarnings("ignore", message=message)


def _run_config(base: dict[str, Any], aux_losses: dict[str, str], seed: int, max_steps: int, root_dir: str,
                keep_logs: bool) -> dict[str, Any]:
    config = copy.deepcopy(base)
    trainer = dict(config.get("trainer") or {})
    callbacks = trainer.get("callbacks") or []
    callbacks = [c for c in callbacks if not str(c.get("class_path", c) if isinstance(c, dict) else c)
                 .endswith("ModelCheckpoint")]
    trainer.update(max_steps=max_steps, default_root_dir=root_dir, enable_checkpointing=False, callbacks=callbacks,
                   enable_progress_bar=False, enable_model_summary=False)
    if not keep_logs:
        trainer["logger"] = False
    config["trainer"] = trainer
    config["model"] = {**(config.get("model") or {}), "aux_losses": dict(aux_losses)}
    config["seed_everything"] = int(seed)
    return config


@dataclass(frozen=True)
class Budget:
    """How an env-step budget maps onto the base config.

    Args:
        env_steps: the budget (control steps, action repeats included).
        max_steps: gradient updates that spend it: ``ceil((env_steps / action_repeat - warmup) / per_update)``.
        warmup_env_steps: env steps of the random warm-up.
        eval_interval: env steps between evaluations.
    """

    env_steps: int
    max_steps: int
    warmup_env_steps: int
    eval_interval: int


def budget_for(base: dict[str, Any], env_steps: int, field: str = "search.budget_env_steps") -> Budget:
    """Check the base config and the budget together (builds nothing heavy: no env, no network); ``field`` names
    the budget in messages.

    Raises:
        ValueError: a bad base config, a budget that does not pass the warm-up, or no evaluation.
    """
    cli = instantiate(_run_config(base, {}, int(base.get("seed_everything", 1)), 1, "/tmp", False))
    hp, repeat = cli.datamodule.hparams, cli.datamodule.action_repeat
    warmup = hp.warmup_steps * repeat
    check(hp.eval_episodes >= 1, f"data.eval_episodes={hp.eval_episodes} must be >= 1 for a search (the fitness is "
          "the evaluation curve)")
    check(env_steps > warmup, f"{field}={env_steps} is not above the warm-up (data.warmup_steps="
          f"{hp.warmup_steps} agent steps x action repeat {repeat} = {warmup} env steps)")
    # the fewest updates whose collection (replay ratio: updates per agent step) reaches the budget
    max_steps = updates_for(Fraction(env_steps, repeat) - hp.warmup_steps, cli.datamodule.replay_ratio)
    return Budget(env_steps, max_steps, warmup, hp.eval_interval)


def train_run(base: dict[str, Any], aux_losses: dict[str, str], seed: int, budget: Budget, root_dir: str,
              on_eval: EvalCallback | None = None, keep_logs: bool = False) -> list[tuple[int, float]]:
    """Train the base config with ``aux_losses`` (name → text or preset; empty: plain SAC) for the budget.

    Args:
        base: the base training config.
        aux_losses: the auxiliary losses (replacing any in the base config).
        seed: ``seed_everything`` of this run.
        budget: from :func:`budget_for`.
        root_dir: the run's folder (logs when ``keep_logs``).
        on_eval: told ``(env_steps, return)`` after every evaluation; may raise to stop the run.
        keep_logs: keep the base config's logger (TensorBoard) instead of none.

    Returns:
        The evaluation curve ``[(env_steps, mean eval return), ...]``, the end of training included.
    """
    cli = instantiate(_run_config(base, aux_losses, seed, budget.max_steps, root_dir, keep_logs))
    curve: list[tuple[int, float]] = []

    def record(env_steps: int, value: float) -> None:
        curve.append((int(env_steps), float(value)))
        if on_eval is not None:
            on_eval(*curve[-1])

    cli.datamodule.add_eval_listener(record)
    cli.trainer.fit(cli.model, cli.datamodule)
    return curve


# --- fitness and objectives -------------------------------------------------------------------------------
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


def _skip_idle(trial: optuna.Trial) -> AuxLossSpec | None:
    """The trial's candidate, ``None`` for a baseline trial; an idle trial is pruned (skipped)."""
    if trial.user_attrs.get(ATTR_BASELINE):
        return None
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


class SeedFitnessObjective:
    """Score each trial with ``fitness(spec, seed) -> float`` per seed of its stage (``spec`` is ``None`` for the
    baseline); records the per-seed values as training does (no training: tests of the paired fitness).

    Args:
        fitness: the injected per-seed fitness function.
        settings: the stages' seeds.
        first_seed: ``seed_everything``.
    """

    def __init__(self, fitness: Callable[[AuxLossSpec | None, int], float], settings: SearchSettings,
                 first_seed: int = 1) -> None:
        self.fitness, self.settings, self.first_seed = fitness, settings, first_seed

    def __call__(self, trial: optuna.Trial) -> float:
        spec = _skip_idle(trial)
        seeds = self.settings.seeds_of(int(trial.user_attrs[ATTR_STAGE]), self.first_seed)
        scores = [float(self.fitness(spec, seed)) for seed in seeds]
        trial.set_user_attr(ATTR_SEED_FITNESS, scores)
        return float(np.mean(scores))


class CandidateObjective:
    """Train the trial's candidate with the base config on each seed of its stage for the stage's budget; return
    the mean fitness.

    Args:
        base_config: the base ``a2ls fit`` config.
        settings: fitness kind, seeds per stage, run folder, ``keep_logs``.
        budget: the budget mapped onto the base config (:func:`budget_for`): one for every stage, or one per stage.
        log: where progress lines go (default: ``print``).
    """

    def __init__(self, base_config: dict[str, Any], settings: SearchSettings, budget: Budget | Sequence[Budget],
                 log: Callable[[str], None] = print) -> None:
        self.base_config, self.settings, self.log = base_config, settings, log
        self.budgets = [budget] * settings.stages if isinstance(budget, Budget) else list(budget)

    def seeds(self, stage: int = 0) -> list[int]:
        """The seeds of ``stage`` (:meth:`SearchSettings.seeds_of`, from ``seed_everything``)."""
        return self.settings.seeds_of(stage, int(self.base_config.get("seed_everything", 1)))

    def __call__(self, trial: optuna.Trial) -> float:
        spec = _skip_idle(trial)
        stage, slot = trial.user_attrs[ATTR_STAGE], trial.user_attrs[ATTR_SLOT]
        start = time.time()
        budget = self.budgets[stage]
        what = "the SAC baseline" if spec is None else str(spec)
        self.log(f"stage {stage} slot {slot} (trial {trial.number}): training {what}, seeds {self.seeds(stage)}, "
                 f"{budget.env_steps} env steps each")
        curves, scores = [], []
        try:
            for index, seed in enumerate(self.seeds(stage)):
                curve = self._run(trial, spec, budget, index, seed, f"stage{stage}-slot{slot}/seed{seed}")
                curves.append(curve)
                scores.append(curve_fitness(curve, self.settings.fitness))
        except _Prune:
            self.log(f"stage {stage} slot {slot}: pruned after {time.time() - start:.0f} s")
            raise optuna.TrialPruned() from None
        except KeyboardInterrupt:
            raise
        except Exception as err:
            message = f"{type(err).__name__}: {one_line(err)[:500]}"
            trial.set_user_attr(ATTR_ERROR, message)
            trial.set_user_attr("a2ls_traceback", traceback.format_exc()[-4000:])
            self.log(f"stage {stage} slot {slot}: training failed: {message}")
            raise CandidateError(message) from err
        fitness = float(np.mean(scores))
        trial.set_user_attr(ATTR_SEED_FITNESS, scores)
        trial.set_user_attr(ATTR_CURVES, [[list(p) for p in c] for c in curves])
        self.log(f"stage {stage} slot {slot}: fitness {fitness:.1f} in {time.time() - start:.0f} s")
        return fitness

    def _run(self, trial: optuna.Trial, spec: AuxLossSpec | None, budget: Budget, index: int, seed: int,
             name: str) -> list:
        values: list[float] = []

        def on_eval(env_steps: int, value: float) -> None:
            values.append(value)
            running = values[-1] if self.settings.fitness == "final" else float(np.mean(values))
            # one line per evaluation: a long search shows its progress in its log
            self.log(f"{name}: {env_steps} of {budget.env_steps} env steps, eval return {value:.1f}")
            if spec is None:  # the baseline is never pruned (its stage's candidates pair with it), feeds no pruner
                return
            trial.report(running, step=index * budget.env_steps + env_steps)
            if trial.should_prune():
                raise _Prune()

        root = str(Path(self.settings.run_dir) / "candidates" / name)
        return train_run(self.base_config, {} if spec is None else {"cand": str(spec)}, seed, budget, root,
                         on_eval, keep_logs=self.settings.keep_logs)
