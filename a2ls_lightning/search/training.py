"""Training one run of the base config with given auxiliary losses on an env-step budget; its evaluation curve.

The base config is an ``a2ls fit`` config (``seed_everything``, ``trainer``, ``model``, ``data``), parsed by the
same LightningCLI with the same quickstart defaults underneath, so a search candidate trains exactly like
``a2ls fit --config base.yaml --model.aux_losses="{cand: <text>}"`` run for the budget. The search overrides:
``model.aux_losses``, ``seed_everything``, ``trainer.max_steps`` (from the budget), the root folder, no
checkpoints (``ModelCheckpoint`` callbacks are dropped), no progress bar, and the logger unless logs are kept.
"""

from __future__ import annotations

import copy
import logging
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from a2ls_lightning.data.envs import default_action_repeat

__all__ = ["Budget", "EvalCallback", "budget_for", "identity_config", "instantiate", "quiet", "train_run"]

#: Called after every evaluation with ``(env_steps, eval_return)``; it may raise to stop the run.
EvalCallback = Callable[[int, float], None]

_OPERATIONAL_TRAINER_KEYS = ("default_root_dir", "enable_progress_bar", "enable_model_summary", "log_every_n_steps")


def _one_line(err: BaseException) -> str:
    return " ".join(str(err).split())


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
    import optuna

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


def instantiate(config: dict[str, Any]):
    """Model, datamodule and trainer of an ``a2ls fit`` config, as ``a2ls fit`` would build them (no training).

    Raises:
        ValueError: one line naming the bad key or value.
    """
    from argparse import ArgumentError

    from a2ls_lightning.cli import A2LSCLI, QUICKSTART
    from a2ls_lightning.data.datamodule import ReplayDataModule
    from a2ls_lightning.modules.agent import SACModule

    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter.*")  # args given on purpose
            return A2LSCLI(SACModule, ReplayDataModule, run=False, args=config, save_config_callback=None,
                           seed_everything_default=int(config.get("seed_everything", 1)),
                           parser_kwargs={"default_config_files": [str(QUICKSTART)], "exit_on_error": False})
    except ValueError as err:
        raise ValueError(_one_line(err)) from None
    except (ArgumentError, TypeError, KeyError) as err:
        raise ValueError(f"config: {_one_line(err)}") from None


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


def budget_for(base: dict[str, Any], env_steps: int) -> Budget:
    """Check the base config and the budget together (builds nothing heavy: no env, no network).

    Raises:
        ValueError: a bad base config, a budget that does not pass the warm-up, or no evaluation.
    """
    cli = instantiate(_run_config(base, {}, int(base.get("seed_everything", 1)), 1, "/tmp", False))
    data = cli.datamodule
    repeat = data.action_repeat or default_action_repeat(data.task)
    warmup = data.warmup_steps * repeat
    if data.eval_episodes < 1:
        raise ValueError(f"data.eval_episodes={data.eval_episodes} must be >= 1 for a search (the fitness is the "
                         "evaluation curve)")
    if env_steps <= warmup:
        raise ValueError(f"search.budget_env_steps={env_steps} is not above the warm-up (data.warmup_steps="
                         f"{data.warmup_steps} agent steps x action repeat {repeat} = {warmup} env steps)")
    max_steps = math.ceil((env_steps / repeat - data.warmup_steps) / data.env_steps_per_update)
    return Budget(env_steps, max_steps, warmup, data.eval_interval)


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
    data = cli.datamodule
    curve: list[tuple[int, float]] = []
    evaluate = data.evaluate

    def recording_evaluate(policy):
        value = evaluate(policy)
        curve.append((int(data.collector.env_steps), float(value)))
        if on_eval is not None:
            on_eval(*curve[-1])
        return value

    data.evaluate = recording_evaluate
    cli.trainer.fit(cli.model, data)
    return curve
