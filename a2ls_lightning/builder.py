"""Building a configured ``Trainer``, :class:`SACModule` and :class:`ReplayDataModule` from an ``a2ls fit`` config.

What the ``a2ls`` command and the loss search share: one LightningCLI class (one seed for everything, the CPU
thread count, checks before any work), the quickstart config underneath every run, and :func:`instantiate`,
which builds the three objects of a config dict exactly as ``a2ls fit`` would, without training. Nothing here
imports the command line.
"""

from __future__ import annotations

import os
import re
import sys
import time
import warnings
from argparse import ArgumentError
from pathlib import Path
from typing import Any

import torch
from jsonargparse import Namespace
from lightning.pytorch.callbacks import ProgressBar
from lightning.pytorch.cli import LightningCLI

from a2ls_lightning.callbacks.preemption import GracefulPreemption
from a2ls_lightning.callbacks.progress import UpdateProgressBar
from a2ls_lightning.data.datamodule import ReplayDataModule
from a2ls_lightning.data.snapshots import verify_checkpoint_files
from a2ls_lightning.files import ensure_writable
from a2ls_lightning.modules.agent import SACModule, init_defaults, model_defaults
from a2ls_lightning.modules.run_checks import check_strategy, compare_with_checkpoint
from a2ls_lightning.modules.settings_legacy import upgrade_args, upgrade_config
from a2ls_lightning.validation import RunComplete, one_line, unknown_option_hint

__all__ = ["A2LSCLI", "QUICKSTART", "default_threads", "instantiate", "read_checkpoint"]

#: The defaults under every run: state cheetah-run with CPU-sized networks (``a2ls fit`` with no ``--config``).
QUICKSTART = Path(__file__).parent / "configs" / "quickstart.yaml"

#: The largest seed numpy (and so ``seed_everything``) accepts.
_MAX_SEED = 2**32 - 1

#: Lightning's symbolic ``--ckpt_path`` values (resolved by the Trainer itself).
_SYMBOLIC_CKPT = ("last", "best", "hpc", "registry")


def default_threads() -> int:
    """Intra-op CPU threads when ``--threads`` is not given: half the cores, at least 1, at most 8.

    Measured on a 2-core machine (``scripts/benchmark_threads.py``): with torch's default (2 threads) the
    quickstart ran 10x slower beside one other busy process, with 1 thread it lost nothing; the small SAC
    networks gain little from more threads, and the environment and collection run on one core anyway.
    """
    return max(1, min(8, (os.cpu_count() or 2) // 2))


def read_checkpoint(path: str | os.PathLike) -> dict[str, Any]:
    """Load a checkpoint for a check (tensors memory-mapped, not read).

    Raises:
        ValueError: one line: ``ckpt_path: <path> does not exist`` / ``... is not a readable checkpoint (...)``.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"ckpt_path: {path} does not exist" + (" (it is a folder)" if path.is_dir() else ""))
    try:
        checkpoint = torch.load(path, map_location="cpu", weights_only=False, mmap=True)
    except Exception as err:  # noqa: BLE001 - torch raises several types for a truncated or foreign file
        raise ValueError(f"ckpt_path: {path} is not a readable checkpoint (truncated or not a checkpoint: "
                         f"{one_line(err)[:160]})") from None
    if not isinstance(checkpoint, dict) or "state_dict" not in checkpoint:
        raise ValueError(f"ckpt_path: {path} is not a Lightning checkpoint (no state_dict)")
    return checkpoint


class A2LSCLI(LightningCLI):
    """LightningCLI with one seed for everything (``seed_everything`` feeds ``data.seed``), a ``--threads``
    setting, and checks before any work: a resume must match the checkpoint's settings, and
    ``--trainer.enable_checkpointing false`` drops the config's ``ModelCheckpoint``."""

    def init_parser(self, **kwargs: Any) -> Any:
        # No prefix matching: `--trainer.max_step 2000` must be an error, not `--trainer.max_steps 2000`.
        kwargs.setdefault("allow_abbrev", False)
        return super().init_parser(**kwargs)

    @staticmethod
    def subcommands() -> dict[str, set[str]]:
        # Only `fit`: SACModule evaluates inside `fit` (its Evaluator) and defines no validation, test or predict
        # step, so Lightning's other verbs could only fail.
        return {"fit": {"model", "train_dataloaders", "val_dataloaders", "datamodule"}}

    def add_arguments_to_parser(self, parser) -> None:
        parser.link_arguments("seed_everything", "data.seed")
        parser.add_argument(
            "--threads", type=int | None, default=None,
            help="Intra-op CPU threads of torch (torch.set_num_threads); null: half the cores, at least 1. "
                 "More threads than free cores make every op wait: beside other busy processes keep it low.")

    def parse_arguments(self, parser: Any, args: Any) -> None:
        # Older flat model settings (model.hidden_dim) are read as today's grouped ones (modules/settings_legacy.py).
        if isinstance(args, dict):
            args = upgrade_config(args)
        elif not isinstance(args, Namespace):
            args = upgrade_args(list(sys.argv[1:] if args is None else args))
        try:
            if isinstance(args, (dict, Namespace)):
                self.config = parser.parse_object(args)
            else:
                self.config = parser.parse_args(args)
        except ArgumentError as err:  # an unknown option: name the closest known one
            raise ArgumentError(None, str(err) + unknown_option_hint(str(err), parser)) from None

    def _config_section(self) -> Any:
        sub = self.config.get("subcommand")
        return self.config[sub] if sub else self.config

    def _parse_ckpt_path(self) -> None:
        # Lightning would overwrite the given model settings with the checkpoint's, silently; we compare instead
        # (before anything is built) and refuse a resume whose model or data settings differ.
        config = self._config_section()
        path = config.get("ckpt_path") if self.config.get("subcommand") else None
        if not path or str(path) in _SYMBOLIC_CKPT:
            return
        checkpoint = read_checkpoint(path)
        # Before anything is built: every rank's side file exists and is the file the checkpoint recorded.
        verify_checkpoint_files(checkpoint, path)
        model, data = config.get("model"), config.get("data")
        compare_with_checkpoint(
            checkpoint, _as_dict(model), _as_dict(data),
            {"model": model_defaults(), "data": init_defaults(ReplayDataModule)},
            resolve_data=ReplayDataModule.resolve_settings)
        trainer = config.get("trainer") or {}
        max_steps, done = trainer.get("max_steps") or -1, int(checkpoint.get("global_step", 0))
        if 0 < max_steps <= done:
            raise RunComplete(f"{path} is already at update {done} >= trainer.max_steps={max_steps}; nothing to do "
                              "(raise --trainer.max_steps to continue)")
        self._resume_logger_version = _version_folder(Path(path), _recorded_dirpath(checkpoint))
        self._resumed_step = done

    def _set_seed(self) -> None:
        # Lightning's own message for an out-of-range seed does not name the setting.
        seed = self._get(self.config, "seed_everything")
        if not isinstance(seed, bool) and isinstance(seed, int) and not 0 <= seed <= _MAX_SEED:
            raise ValueError(f"seed_everything={seed} is out of range; allowed: an integer from 0 to {_MAX_SEED} "
                             "(numpy's seed range), true (a random seed) or false")
        super()._set_seed()

    def before_instantiate_classes(self) -> None:
        config = self._config_section()
        if self.config.get("subcommand") and config.get("ckpt_path") and config.get("weights_only") is None:
            # Our checkpoints hold the loops', callbacks' and optimizer's state; the file was checked before this
            # (read_checkpoint, verify_checkpoint_files). Said explicitly, as Lightning asks.
            config["weights_only"] = False
        threads = config.get("threads")
        if threads is not None and threads < 1:
            raise ValueError(f"threads={threads} must be >= 1 or null")
        if self.config.get("subcommand") or threads is not None:  # a search worker sets its own count
            torch.set_num_threads(threads or default_threads())
        trainer = config.get("trainer")
        version = getattr(self, "_resume_logger_version", None)
        if trainer is not None and version is not None and trainer.get("logger") in (None, True):
            # One folder per run: a resume keeps writing into the checkpoint's own `version_N` (TensorBoard shows
            # one continuous curve, the checkpoints stay in one folder, `a2ls plot` reads one run).

            save_dir, name, number = version
            trainer["logger"] = Namespace(class_path="lightning.pytorch.loggers.TensorBoardLogger",
                                          init_args=Namespace(save_dir=str(save_dir), name=name, version=number))
        if trainer is not None and self.config.get("subcommand") and trainer.get("default_root_dir"):
            # Before anything is built: the run's folder exists and is writable (one line naming the setting).
            ensure_writable(trainer["default_root_dir"], "trainer.default_root_dir")
        if trainer is not None and trainer.get("enable_checkpointing") is False and trainer.get("callbacks"):
            trainer["callbacks"] = [c for c in trainer["callbacks"]
                                    if not str(_class_path(c)).endswith("ModelCheckpoint")]

    def before_fit(self) -> None:
        # In this process, before DDP starts the others: a refusal there would come once per rank.
        check_strategy(self.trainer, self.model.runtime.cudagraphs)
        if getattr(self, "_resume_logger_version", None) is not None:
            # A resume writes into the checkpoint's own folder on purpose: ModelCheckpoint's warning that it "exists
            # and is not empty" is expected there (this process trains one run; a fresh run still gets it).
            warnings.filterwarnings("ignore", message=r"Checkpoint directory .* exists and is not empty")
        if self.trainer.is_global_zero:  # first, as CleanRL does: where to look while it trains
            print(f"a2ls: run folder {run_folder(self.trainer)}", file=sys.stderr, flush=True)
        self._fit_started = time.perf_counter()

    def after_fit(self) -> None:
        """One summary line at the end of a run: folder, last checkpoint, final ``eval/return``, env steps, time,
        rate."""
        trainer = self.trainer
        if not trainer.is_global_zero:
            return
        seconds = time.perf_counter() - getattr(self, "_fit_started", time.perf_counter())
        resumed_at = int(getattr(self, "_resumed_step", 0))
        value = trainer.callback_metrics.get("eval/return")
        shown = f"final eval/return {float(value):.1f}" if value is not None else "no evaluation"
        counters = getattr(trainer.datamodule, "counters", None)
        if counters is not None and getattr(trainer.datamodule, "collector", None) is not None:
            shown += f", {int(counters()['env_steps'])} env steps"  # rank 0's: each rank collects its own
        callback = trainer.checkpoint_callback
        last = getattr(callback, "last_model_path", "") or getattr(callback, "best_model_path", "") or "none"
        rate = (trainer.global_step - resumed_at) / max(seconds, 1e-9)
        print(f"a2ls: done: update {trainer.global_step}, {shown}, {seconds / 60:.1f} min ({rate:.1f} updates/s); "
              f"run folder {run_folder(trainer)}; last checkpoint {last}", file=sys.stderr,
              flush=True)

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Any]) -> Any:
        # Our bar (updates out of max_steps, env steps, eval return) unless the bar is off or one is configured.
        configured = [*(config.get("callbacks") or []), *callbacks]
        if config.get("enable_progress_bar", True) is not False and not any(
                isinstance(c, ProgressBar) for c in configured):
            callbacks = [*callbacks, UpdateProgressBar()]
        if not any(isinstance(c, GracefulPreemption) for c in configured):
            # Last: a signal's save then sees the update after every other callback (weighting rules) handled it.
            callbacks = [*callbacks, GracefulPreemption()]
        return super()._instantiate_trainer(config, callbacks)

    def instantiate_trainer(self, **kwargs: Any) -> Any:
        try:
            return super().instantiate_trainer(**kwargs)
        except ImportError as err:  # Lightning names the missing package, not the setting that needs it
            trainer = self._config_section().get("trainer") or {}
            raise ValueError(f"trainer.accelerator={trainer.get('accelerator')!r} (or trainer.strategy="
                             f"{trainer.get('strategy')!r}) needs a package that is not installed: "
                             f"{one_line(err)}") from None


def run_folder(trainer: Any) -> str:
    """The run's folder (the logger's ``version_N``, else the default root), without a collective: Lightning's
    ``trainer.log_dir`` broadcasts from rank 0, which only one rank may not call under DDP."""
    logger = trainer.logger
    return str(getattr(logger, "log_dir", None) or trainer.default_root_dir)


def _version_folder(ckpt: Path, recorded_dirpath: str | None = None) -> tuple[Path, str, int] | None:
    """``(save_dir, name, N)`` of a checkpoint at ``<save_dir>/<name>/version_<N>/checkpoints/<file>``, else None.

    Spelled as the run recorded its checkpoint folder when that is the same folder (relative or absolute), so that
    Lightning's ``ModelCheckpoint`` sees the same folder and keeps writing ``last.ckpt`` (not ``last-v1.ckpt``).
    """
    folder = ckpt.parent
    if recorded_dirpath and Path(recorded_dirpath).resolve() == folder.resolve():
        folder = Path(recorded_dirpath)
    elif not folder.is_absolute():
        folder = folder.absolute()
    parts = folder.parts
    match = re.fullmatch(r"version_(\d+)", parts[-2]) if len(parts) >= 4 and parts[-1] == "checkpoints" else None
    if match is None:
        return None
    return Path(*parts[:-3]), parts[-3], int(match.group(1))


def _recorded_dirpath(checkpoint: dict[str, Any]) -> str | None:
    """The folder the run's ``ModelCheckpoint`` wrote to, as it spelled it (from its state in the checkpoint)."""
    for key, state in (checkpoint.get("callbacks") or {}).items():
        if str(key).startswith("ModelCheckpoint") and isinstance(state, dict) and state.get("dirpath"):
            return str(state["dirpath"])
    return None


def _as_dict(section: Any) -> dict[str, Any] | None:
    if section is None:
        return None
    values = section.as_dict() if hasattr(section, "as_dict") else dict(section)
    return values.get("init_args", values) if "class_path" in values else values


def _class_path(callback: Any) -> str:
    if hasattr(callback, "get"):
        return str(callback.get("class_path", ""))
    return type(callback).__module__ + "." + type(callback).__qualname__


def instantiate(config: dict[str, Any]) -> A2LSCLI:
    """Model, datamodule and trainer of an ``a2ls fit`` config, as ``a2ls fit`` would build them (no training).

    Args:
        config: ``{"seed_everything": ..., "trainer": {...}, "model": {...}, "data": {...}}``; what it leaves
            out comes from the quickstart config.

    Returns:
        The CLI object: ``.model``, ``.datamodule`` and ``.trainer``.

    Raises:
        ValueError: one line naming the bad key or value.
    """
    try:
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*LightningCLI's args parameter.*")  # args given on purpose
            return A2LSCLI(SACModule, ReplayDataModule, run=False, args=config, save_config_callback=None,
                           seed_everything_default=int(config.get("seed_everything", 1)),
                           parser_kwargs={"default_config_files": [str(QUICKSTART)], "exit_on_error": False})
    except ValueError as err:
        raise ValueError(one_line(err)) from None
    except (ArgumentError, TypeError, KeyError) as err:
        raise ValueError(f"config: {one_line(err)}") from None
