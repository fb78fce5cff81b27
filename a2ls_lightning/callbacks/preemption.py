"""Graceful preemption: a signal from a scheduler (SIGTERM, SLURM's SIGUSR1) or Ctrl-C (SIGINT) saves the run at the
update in flight and stops it with an exit code that says "preempted, resumable".

The contract (``a2ls fit`` installs this callback; add it to a ``Trainer`` of your own in Python):

- the signal handler only records the signal (no IO in a handler); the update in flight finishes, with its
  evaluation if one is due;
- then every rank agrees to stop at the same update (under DDP, one all-reduce of a flag per update: a signal
  that reached any rank stops all of them, at the same update, so no rank hangs in a collective);
- the checkpoint of that update is written through the trainer's own ``save_checkpoint``: the same content as a
  scheduled save (model, optimizer, weighting state, every rank's replay side file, episode in flight, RNG), the
  same crash-safe writer, and the same refusal of a non-finite state (the divergence guard wins over the signal:
  the run then stops with its divergence message and exit code 1, and nothing is saved). It becomes
  ``<checkpoint folder>/last.ckpt``;
- one line, ``a2ls: stopped by SIGTERM at update N; resume with --ckpt_path <path>``, and the exception
  :class:`Preempted` (a ``SystemExit`` with code ``128 + signal number``, as shells report a death by signal:
  SIGINT 130, SIGUSR1 138, SIGTERM 143), so a script or a scheduler sees a non-zero "stopped by a signal";
- a second signal while the checkpoint is written is recorded and ignored: the save completes (and if the
  process is killed outright, the crash-safe writer leaves the previous checkpoint valid).

Lightning's own SIGTERM handling (``trainer.received_sigterm``, which stops every rank through a broadcast made
*inside* the signal handler, and exits with code 0) is replaced for the duration of training. Under SLURM with
auto-requeue (Lightning's ``SLURMEnvironment``), Lightning's requeue handler keeps its signal (SIGUSR1 by default):
it saves Lightning's ``hpc_ckpt_<n>.ckpt`` and requeues the job, as Lightning documents; this callback then only
handles SIGTERM and SIGINT.
"""

from __future__ import annotations

import signal
import sys
import threading
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from lightning.fabric.plugins.environments import SLURMEnvironment
from lightning.pytorch.callbacks import Callback, Checkpoint, ModelCheckpoint, ProgressBar
from lightning.pytorch.utilities import rank_zero_warn

from a2ls_lightning.lightning_private import cluster_environment

#: The signals that request a save and a stop.
SIGNALS = (signal.SIGTERM, signal.SIGUSR1, signal.SIGINT)


class Preempted(SystemExit):
    """The run was stopped by a signal after saving a resumable checkpoint; ``code`` is ``128 + signal number``.

    Attributes:
        signal_name: ``"SIGTERM"``, ``"SIGUSR1"`` or ``"SIGINT"``.
        update: the update the checkpoint holds.
        checkpoint: the checkpoint written (``last.ckpt``).
    """

    def __init__(self, signum: int, update: int, checkpoint: str) -> None:
        super().__init__(128 + int(signum))
        self.signal_name = signal.Signals(signum).name
        self.update = update
        self.checkpoint = checkpoint

    def __str__(self) -> str:
        return (f"stopped by {self.signal_name} at update {self.update}; resume with --ckpt_path {self.checkpoint}")


class GracefulPreemption(Callback):
    """Save at the update in flight and stop on SIGTERM, SIGUSR1 or SIGINT (see the module docstring).

    Args:
        signals: names of the signals to handle (default: SIGTERM, SIGUSR1, SIGINT).
    """

    def __init__(self, signals: tuple[str, ...] = ("SIGTERM", "SIGUSR1", "SIGINT")) -> None:
        allowed = {s.name for s in SIGNALS}
        for name in signals:
            if name not in allowed:
                raise ValueError(f"GracefulPreemption.signals: {name!r} is not allowed; allowed: "
                                 f"{', '.join(sorted(allowed))}")
        self.signals = tuple(signal.Signals[name] for name in signals)
        self.received: int = 0  # the first signal received (0: none)
        self.saving = False
        self._previous: dict[int, Any] = {}

    # --- the handler: record only -------------------------------------------------------------------------------
    def _handle(self, signum: int, _frame: Any) -> None:
        if self.received:
            if self.saving:
                print(f"a2ls: {signal.Signals(signum).name} again: the checkpoint is being written; waiting for it "
                      "(killing the process now would keep the previous checkpoint valid)", file=sys.stderr,
                      flush=True)
            return
        self.received = int(signum)

    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        later = [type(c).__name__ for c in trainer.callbacks[trainer.callbacks.index(self) + 1:]
                 if type(c).on_train_batch_end is not Callback.on_train_batch_end
                 and not isinstance(c, (Checkpoint, ProgressBar))]
        if later:
            rank_zero_warn(f"GracefulPreemption comes before {', '.join(later)} in the trainer's callbacks: a save on "
                           "a signal would not see what they do at the end of that update (e.g. a weighting rule's "
                           "step), and the resumed run would differ; put GracefulPreemption last", category=UserWarning)

    def on_train_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # After Lightning registered its own handlers (Trainer._run), so ours win for the time of training.
        if threading.current_thread() is not threading.main_thread():
            return  # signals reach the main thread only
        environment = cluster_environment(trainer)
        keep = set()
        if isinstance(environment, SLURMEnvironment) and environment.auto_requeue:
            keep.add(environment.requeue_signal or signal.SIGUSR1)  # Lightning's requeue handler stays
        self.received, self.saving = 0, False
        for signum in self.signals:
            if signum in keep:
                continue
            self._previous[signum] = signal.getsignal(signum)
            signal.signal(signum, self._handle)

    def _restore(self) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        self._previous = {}

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self._restore()

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._restore()

    # --- the decision and the save, after the update (and its evaluation) -----------------------------------------
    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        signum = self._agreed_signal(trainer)
        if not signum:
            return
        if trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps:
            return  # the run is complete anyway: it ends as usual
        self.saving = True
        try:
            path = self._checkpoint_path(trainer)
            # every rank: side files; rank 0: the checkpoint; then a barrier. A full checkpoint (optimizer, loops,
            # callbacks), said explicitly: Lightning otherwise logs that weights_only was not set, amid the bar.
            trainer.save_checkpoint(path, weights_only=False)
        finally:
            self.saving = False
        callback = trainer.checkpoint_callback
        if isinstance(callback, ModelCheckpoint):
            callback.last_model_path = str(path)
        stop = Preempted(signum, trainer.global_step, str(path))
        if trainer.is_global_zero:
            print(f"a2ls: {stop}", file=sys.stderr, flush=True)
        raise stop

    def _agreed_signal(self, trainer: pl.Trainer) -> int:
        """The signal to stop for, the same on every rank (the largest number any rank received; 0: none)."""
        if trainer.world_size <= 1:
            return self.received
        flag = torch.tensor([float(self.received)], device=trainer.strategy.root_device)
        return int(trainer.strategy.reduce(flag, reduce_op="max").item())

    @staticmethod
    def _checkpoint_path(trainer: pl.Trainer) -> Path:
        """``last.ckpt`` where the run's ``ModelCheckpoint`` writes, else in the default root folder (where the
        replay side files then go: a side file is found next to its checkpoint)."""
        callback = trainer.checkpoint_callback
        if isinstance(callback, ModelCheckpoint) and callback.dirpath:
            return Path(callback.dirpath) / f"{callback.CHECKPOINT_NAME_LAST}{callback.FILE_EXTENSION}"
        return Path(trainer.default_root_dir) / "last.ckpt"
