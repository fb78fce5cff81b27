"""Checks a run makes before its first env step and at resume, so that it fails early, in one line, losing nothing.

- :func:`check_trainer`: trainer settings SAC relies on (``max_steps``, ``log_every_n_steps``, precision);
- :func:`check_strategy`: model settings the trainer's strategy cannot run (``cudagraphs`` under DDP);
- :func:`preflight`: every folder the run will write to exists and is writable (default root, logs, checkpoints and
  their replay side files), found before any work instead of at the first save;
- :func:`install_crash_safe_checkpoints`: Lightning's checkpoint writer replaced by the crash-safe one;
- :func:`compare_with_checkpoint`: resuming with model or data settings that differ from the checkpoint's is
  refused (Lightning would silently keep the checkpoint's weights with the new settings' meaning);
- :func:`last_checkpoint`: what a failure message names as the state to resume from;
- :class:`RunSetup`: the callback that does the run's share of these (pre-flight, the crash-safe writer, DDP's
  unused-parameter setting) at the start of a fit; :class:`~a2ls_lightning.modules.agent.SACModule` brings it along
  (``configure_callbacks``), so the module itself does no run work and a plain ``Trainer`` still gets it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.pytorch.callbacks import Callback
from lightning.pytorch.strategies import DDPStrategy
from lightning.pytorch.utilities import rank_zero_warn

from a2ls_lightning.files import AtomicCheckpointIO, ensure_writable, forget_created_folders
from a2ls_lightning.lightning_private import allow_unused_parameters
from a2ls_lightning.modules.settings import flatten_model_settings, group_of

#: Settings that may change when a run resumes (they change neither the networks nor the data collected).
RESUMABLE_CHANGES: dict[str, frozenset[str]] = {
    # The runtime group, and the fused Adam step (the same arithmetic up to rounding; the optimizer state is the same).
    "model": frozenset({"nonfinite", "max_nonfinite_skips", "compile", "cudagraphs", "fused_adam"}),
    "data": frozenset({"eval_interval", "eval_episodes", "keep_replay_snapshots", "buffer_device", "video_every"}),
}


def check_trainer(trainer: Any) -> None:
    """One-line ``ValueError`` for trainer settings that cannot work with SAC's manual optimization."""
    max_steps = trainer.max_steps
    if max_steps == 0 or max_steps < -1:
        raise ValueError(f"trainer.max_steps={max_steps} must be >= 1 (gradient updates), or -1 for no limit")
    if trainer.log_every_n_steps < 1:
        raise ValueError(f"trainer.log_every_n_steps={trainer.log_every_n_steps} must be >= 1")
    precision = str(trainer.precision)
    if precision in ("16-mixed", "16", "16-true"):
        raise ValueError(
            f"trainer.precision={precision!r} is not supported by SACModule (fp16's range is too small for the "
            "temperature and the log-probabilities); allowed: 32-true, bf16-mixed, bf16-true"
        )


def check_strategy(trainer: Any, cudagraphs: bool) -> None:
    """One-line ``ValueError`` for ``model.runtime.cudagraphs=true`` under DDP. The ``a2ls`` command calls it before DDP
    starts its processes; ``SACModule.setup`` again, for runs started from Python."""
    from lightning.pytorch.strategies import DDPStrategy

    if cudagraphs and isinstance(trainer.strategy, DDPStrategy):
        raise ValueError("model.runtime.cudagraphs=true captures the update on one device; it is not allowed with "
                         "trainer.strategy=ddp (gradients are all-reduced during the backward pass)")


def preflight(trainer: Any) -> None:
    """Create and prove writable every folder this rank will write to (one line naming the setting if not)."""
    ensure_writable(trainer.default_root_dir, "trainer.default_root_dir")
    if trainer.is_global_zero:
        for logger in trainer.loggers:
            log_dir = getattr(logger, "log_dir", None)
            if log_dir:
                ensure_writable(log_dir, "trainer.logger (its log folder)")
    ckpt = trainer.checkpoint_callback
    dirpath = getattr(ckpt, "dirpath", None)
    if dirpath:
        ensure_writable(dirpath, "the checkpoint folder (ModelCheckpoint.dirpath)")
        ensure_writable(Path(dirpath) / "replay", "the checkpoint folder (ModelCheckpoint.dirpath) replay/")


def install_crash_safe_checkpoints(trainer: Any) -> None:
    """Use :class:`~a2ls_lightning.files.AtomicCheckpointIO` where Lightning's default writer is in place."""
    strategy = trainer.strategy
    current = getattr(strategy, "_checkpoint_io", None)
    if current is None or type(current) is TorchCheckpointIO:
        strategy.checkpoint_io = AtomicCheckpointIO()


def last_checkpoint(trainer: Any) -> str:
    """``last good checkpoint: <path>`` (the newest this run wrote, else the one it resumed from) or a note."""
    paths = []
    ckpt = getattr(trainer, "checkpoint_callback", None)
    for attr in ("_last_checkpoint_saved", "last_model_path", "best_model_path"):
        value = getattr(ckpt, attr, "") if ckpt is not None else ""
        if value and Path(value).is_file():
            paths.append(str(value))
    resumed = getattr(trainer, "ckpt_path", None)
    if not paths and resumed:
        paths.append(str(resumed))
    if not paths:
        return "no checkpoint was written by this run"
    return f"last good checkpoint: {paths[0]} (resume with --ckpt_path)"


def compare_with_checkpoint(checkpoint: Mapping[str, Any], model: Mapping[str, Any], data: Mapping[str, Any] | None,
                            defaults: Mapping[str, Mapping[str, Any]],
                            resolve_data: Callable[[Mapping[str, Any]], Mapping[str, Any]] | None = None) -> None:
    """Refuse a resume whose settings differ from the checkpoint's (those in :data:`RESUMABLE_CHANGES` excepted).

    Args:
        checkpoint: the loaded checkpoint (``hyper_parameters``, ``datamodule_hyper_parameters``).
        model: this run's model settings; data: this run's data settings (``None``: no datamodule to compare).
        defaults: ``{"model": {...}, "data": {...}}`` values of settings that an older checkpoint does not record.
        resolve_data: turns data settings into the values they stand for (``action_repeat: null`` → the task's
            default), applied to both sides, so that only real differences are reported.

    Raises:
        ValueError: one line listing every differing field with both values.
    """
    differing = []
    stored_data = checkpoint.get("datamodule_hyper_parameters")
    if resolve_data is not None and data is not None and stored_data is not None:
        data, stored_data = resolve_data(data), resolve_data(stored_data)
    stored_model = checkpoint.get("hyper_parameters")
    # Model settings in one flat form, whichever way each side spells them (nested groups, or an older flat config).
    model = flatten_model_settings(model) if model is not None else None
    stored_model = flatten_model_settings(stored_model) if stored_model is not None else None
    for section, mine, theirs in (("model", model, stored_model), ("data", data, stored_data)):
        if mine is None or theirs is None:
            continue
        for key, value in mine.items():
            if key.startswith("_") or key in RESUMABLE_CHANGES[section]:
                continue
            stored = theirs.get(key, defaults.get(section, {}).get(key, value))
            if _normalise(stored) != _normalise(value):
                group = group_of(key) if section == "model" else None
                name = f"{section}.{group}.{key}" if group else f"{section}.{key}"
                differing.append(f"{name}={value!r} (checkpoint: {stored!r})")
    if differing:
        raise ValueError(f"ckpt_path: this run's settings differ from the checkpoint's: {'; '.join(differing)}; "
                         "resume with the checkpoint's settings (its config.yaml) or start a new run")


def _normalise(value: Any) -> Any:
    # YAML and Python spell the same setting differently: tuples vs lists, specs vs their text, 1 vs 1.0.
    if isinstance(value, Mapping):
        return {str(k): _normalise(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_normalise(v) for v in value]
    if isinstance(value, bool) or value is None or isinstance(value, str):
        return value
    if isinstance(value, (int, float)):
        return float(value)
    return str(value)


class RunSetup(Callback):
    """What a run needs before its first update, done in ``setup`` (before DDP wraps the model and before the first
    env step): the trainer's settings checked, every folder proved writable, the crash-safe checkpoint writer
    installed, DDP told that the actor and temperature may get no gradient in an update, and strategy-dependent
    model settings (``runtime.cudagraphs``) checked. :class:`SACModule` returns it from ``configure_callbacks``.
    """

    def setup(self, trainer: Any, pl_module: Any, stage: str) -> None:
        check_trainer(trainer)
        preflight(trainer)  # before the first env step: every folder this run writes to is writable
        install_crash_safe_checkpoints(trainer)
        if isinstance(trainer.strategy, DDPStrategy):
            # The actor and the temperature get gradients only every `actor_update_freq` updates; DDP must be told
            # that some parameters may go unused in an iteration (their grads then stay None and Adam skips them).
            allow_unused_parameters(trainer.strategy)
        runtime = getattr(pl_module, "runtime", None)
        cudagraphs = bool(getattr(runtime, "cudagraphs", False))
        check_strategy(trainer, cudagraphs)
        if cudagraphs and trainer.strategy.root_device.type != "cuda":
            rank_zero_warn("model.runtime.cudagraphs=true without a CUDA device: the update runs as one uncaptured "
                           "function (what CUDA would capture)", category=UserWarning)

    def on_train_start(self, trainer: Any, pl_module: Any) -> None:
        forget_created_folders()  # past every check: this run's folders are its own from here on
