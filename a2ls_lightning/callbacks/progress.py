"""A progress bar in the units of RL training: gradient updates out of ``trainer.max_steps``, env steps, their
rates, and the last evaluation return.

Lightning's bars count batches of an epoch (``Epoch 0/-2``: our one endless epoch) and estimate the time left
from the last few batches, which swings by orders of magnitude around evaluations. This bar shows
``updates 1200/24000`` (correct after a resume: it starts at the checkpoint's update), and its ETA uses the mean
rate since the bar started, which evaluations shift only a little.

    updates:  5%|▌         | 1200/24000 [00:25<07:58, 47.6upd/s, env_steps=8800, env/s=191, eval/return=41.5]

The ``a2ls`` command uses it unless ``--trainer.enable_progress_bar false``; in Python add it to the Trainer's
callbacks.
"""

from __future__ import annotations

import math
import sys
from typing import Any

import lightning.pytorch as pl
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm


class UpdateProgressBar(TQDMProgressBar):
    """Training progress in gradient updates, with env steps, env steps/s and the last ``eval/return``.

    Args:
        refresh_rate: redraw every this many updates.
        process_position: line of the bar (several trainers in one terminal).
    """

    def __init__(self, refresh_rate: int = 50, process_position: int = 0) -> None:
        super().__init__(refresh_rate=refresh_rate, process_position=process_position, leave=True)

    def init_train_tqdm(self) -> Tqdm:
        trainer = self.trainer
        total = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None
        # A resumed run starts where its checkpoint stopped (`initial`): the rate and ETA count this session only.
        return Tqdm(desc="updates", total=total, initial=trainer.global_step, position=2 * self.process_position,
                    disable=self.is_disabled, leave=True, dynamic_ncols=True, file=sys.stdout, unit="upd",
                    smoothing=0)  # mean rate since the start: a stable ETA

    def on_train_epoch_start(self, trainer: pl.Trainer, *_: Any) -> None:
        pass  # one bar for the whole run (Lightning's resets it per epoch and labels it "Epoch N")

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        bar, step = self.train_progress_bar, trainer.global_step
        if bar is not None and not bar.disable and (step % self.refresh_rate == 0 or step == bar.total):
            bar.n = step
            bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
            bar.refresh()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        if not self.train_progress_bar.disable:
            self.train_progress_bar.n = trainer.global_step
            self.train_progress_bar.set_postfix(self.get_metrics(trainer, pl_module))

    def get_metrics(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> dict[str, Any]:
        """``env_steps``, ``env/s`` and ``eval/return`` (the update rate is the bar's own)."""
        shown: dict[str, Any] = {}
        counters = getattr(trainer.datamodule, "counters", None)
        if callable(counters):
            try:
                shown["env_steps"] = str(int(counters()["env_steps"]))  # a string: tqdm writes 100000 as 1e+5
            except (AssertionError, KeyError, TypeError):  # before setup: nothing collected yet
                pass
        metrics = trainer.progress_bar_metrics
        for key, label, fmt in (("env_steps/s", "env/s", "{:.0f}"), ("eval/return", "eval/return", "{:.1f}")):
            value = metrics.get(key)
            if value is not None and math.isfinite(float(value)):
                shown[label] = fmt.format(float(value))
        return shown
