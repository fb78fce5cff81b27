"""A progress bar in the units of RL training: gradient updates out of ``trainer.max_steps``, env steps, their
rates, and the last evaluation return.

Lightning's bars count batches of an epoch (``Epoch 0/-2``: our one endless epoch) and estimate the time left
from the last few batches, which swings by orders of magnitude around evaluations. This bar shows
``updates 1200/24000`` (correct after a resume: it starts at the checkpoint's update), and its ETA uses the mean
rate since the bar started, which evaluations shift only a little.

    updates:  5%|▌         | 1200/24000 [00:25<07:58, 47.6upd/s, env_steps=8800, env/s=191, eval/return=41.5]

Where it is drawn depends on the output (``sys.stdout`` when training starts):

* a terminal: the bar above, redrawn in place; it ends with a newline when training ends (or fails), so the
  messages that follow (Lightning's "``Trainer.fit`` stopped", an error) start on a line of their own;
* a Jupyter notebook: tqdm's notebook widget if ``ipywidgets`` can be imported, else plain lines;
* anything else (``nohup``, ``sbatch``, a file, a pipe): no carriage returns, a plain line every
  ``line_percent`` percent of ``max_steps`` and one at the end, which reads well in a log file::

    updates 1200/24000 (5%) | 47.6 upd/s | env_steps=8800 | env/s=191 | eval/return=41.5 | 00:25 elapsed, 07:58 left

The ``a2ls`` command uses it unless ``--trainer.enable_progress_bar false``; in Python add it to the Trainer's
callbacks (which also keeps Lightning from adding its own bar).
"""

from __future__ import annotations

import importlib.util
import math
import os
import sys
import time
from typing import Any, Literal, TextIO

import lightning.pytorch as pl
from lightning.pytorch.callbacks import TQDMProgressBar
from lightning.pytorch.callbacks.progress.tqdm_progress import Tqdm
from tqdm import tqdm

from a2ls_lightning.validation import check_number

#: How the progress is shown: a bar redrawn in place, tqdm's notebook widget, or plain lines.
Mode = Literal["bar", "notebook", "lines"]


def in_jupyter() -> bool:
    """Whether this runs in a Jupyter kernel that shows rich output (a notebook, JupyterLab, VS Code).

    The same test as ``tqdm.autonotebook``: ipykernel's shell, but not the Qt console or Spyder (no widgets).
    """
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None and hasattr(ipython, "get_ipython") else None
    if type(shell).__name__ != "ZMQInteractiveShell":
        return False
    return not any(key == "QT_API" or key.startswith("SPYDER") for key in os.environ)


def ipywidgets_importable() -> bool:
    """Whether ``ipywidgets`` (which tqdm's notebook bar draws with) is installed."""
    try:
        return importlib.util.find_spec("ipywidgets") is not None
    except (ImportError, ValueError):  # a broken or half-imported package
        return False


def choose_mode(stream: TextIO) -> Mode:
    """``"notebook"`` in Jupyter with ``ipywidgets``, ``"bar"`` on a terminal, otherwise ``"lines"``.

    A notebook without ``ipywidgets`` gets plain lines: a text bar there is a cell of carriage returns once
    saved (``nbconvert``), and asking rich or tqdm for a widget prints an "install ipywidgets" warning instead.
    """
    if in_jupyter():
        return "notebook" if ipywidgets_importable() else "lines"
    isatty = getattr(stream, "isatty", None)
    try:
        return "bar" if callable(isatty) and isatty() else "lines"
    except ValueError:  # a closed stream
        return "lines"


class UpdateProgressBar(TQDMProgressBar):
    """Training progress in gradient updates, with env steps, env steps/s and the last ``eval/return``.

    Args:
        refresh_rate: redraw the bar every this many updates.
        process_position: line of the bar (several trainers in one terminal).
        line_percent: when the output is not a terminal, print a plain line every this many percent of
            ``trainer.max_steps`` (every ``20 * refresh_rate`` updates when there is no ``max_steps``).
    """

    def __init__(self, refresh_rate: int = 50, process_position: int = 0, line_percent: float = 5.0) -> None:
        super().__init__(refresh_rate=refresh_rate, process_position=process_position, leave=True)
        self.line_percent = check_number("UpdateProgressBar.line_percent", line_percent, 0, strict=True, high=100)
        self.mode: Mode = "bar"
        self._stream: TextIO | None = None  # sys.stdout when training starts
        self._finished = False  # the bar was closed (or the last line printed) at the end of an epoch
        self._start_time = 0.0
        self._start_step = 0
        self._line_every = 1
        self._next_line = 0
        self._last_line_step: int | None = None

    def __getstate__(self) -> dict:
        return {**super().__getstate__(), "_stream": None}  # a stream cannot be pickled (ddp_spawn); set at start

    def init_train_tqdm(self) -> Tqdm:
        trainer = self.trainer
        total = trainer.max_steps if trainer.max_steps and trainer.max_steps > 0 else None
        self._stream = sys.stdout  # read now: a notebook kernel or a test may have replaced it since import
        self.mode = choose_mode(self._stream)
        self._finished = False
        self._start_time, self._start_step = time.monotonic(), trainer.global_step
        self._line_every = max(1, round(total * self.line_percent / 100)) if total else 20 * self.refresh_rate
        self._next_line = (trainer.global_step // self._line_every + 1) * self._line_every
        self._last_line_step = None
        # A resumed run starts where its checkpoint stopped (`initial`): the rate and ETA count this session only.
        kwargs = dict(desc="updates", total=total, initial=trainer.global_step, position=2 * self.process_position,
                      leave=True, dynamic_ncols=True, file=self._stream, unit="upd",
                      smoothing=0)  # mean rate since the start: a stable ETA
        if self.mode == "notebook":
            try:
                from tqdm.notebook import tqdm as notebook_tqdm

                return notebook_tqdm(disable=self.is_disabled, **kwargs)
            except ImportError:  # ipywidgets is there but unusable (tqdm.notebook found no IProgress)
                self.mode = "lines"
        # In "lines" mode a disabled bar keeps the parent class's hooks (close, postfix) harmless.
        return Tqdm(disable=self.is_disabled or self.mode == "lines", **kwargs)

    def on_train_epoch_start(self, trainer: pl.Trainer, *_: Any) -> None:
        # One bar for the whole run (Lightning's resets it per epoch and labels it "Epoch N"); a new one only if
        # training goes on after an epoch ended (several finite epochs).
        if self._finished:
            self.train_progress_bar = self.init_train_tqdm()

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        bar, step = self.train_progress_bar, trainer.global_step
        if self.mode == "lines":
            if not self.is_disabled and step >= self._next_line:
                self._print_line(trainer, pl_module)
        elif bar is not None and not bar.disable and (step % self.refresh_rate == 0 or step == bar.total):
            bar.n = step
            bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
            bar.refresh()

    def on_train_epoch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        # Our epoch ends only when training does, and Lightning logs "`Trainer.fit` stopped: ..." right after
        # this hook, before `on_train_end`: end the bar's line now so the message starts on its own.
        self._finish(trainer, pl_module)

    def on_exception(self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException) -> None:
        self._finish(trainer, pl_module)  # the error message that follows starts on a line of its own

    def _finish(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """Show the final state and end the line: close the bar (it writes a newline), or print the last line."""
        bar = self._train_progress_bar
        if bar is None or self._finished:
            return
        self._finished = True
        if self.mode == "lines":
            if not self.is_disabled and self._last_line_step != trainer.global_step:
                self._print_line(trainer, pl_module)
        elif not bar.disable:
            bar.n = trainer.global_step
            bar.set_postfix(self.get_metrics(trainer, pl_module), refresh=False)
            bar.close()

    def _print_line(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        """One plain line: updates (of max_steps), updates/s since the start, the metrics, elapsed and left."""
        step, total = trainer.global_step, self.train_progress_bar.total
        elapsed = time.monotonic() - self._start_time
        rate = (step - self._start_step) / elapsed if elapsed > 0 else 0.0
        parts = [f"updates {step}/{total} ({100 * step / total:.0f}%)" if total else f"updates {step}",
                 f"{rate:.1f} upd/s"]
        parts += [f"{key}={value}" for key, value in self.get_metrics(trainer, pl_module).items()]
        timing = f"{tqdm.format_interval(elapsed)} elapsed"
        if total and rate > 0 and step < total:
            timing += f", {tqdm.format_interval(max(0, total - step) / rate)} left"
        print(" | ".join([*parts, timing]), file=self._stream or sys.stdout, flush=True)
        self._last_line_step = step
        self._next_line = (step // self._line_every + 1) * self._line_every

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
