"""``UpdateProgressBar`` on a terminal, in a log file and in a notebook, driven by a tiny real Trainer.

The bar reads ``sys.stdout`` when training starts, so each test puts a stream of its own there: a ``StringIO``
(a file: not a terminal) or one that says it is a terminal.
"""

from __future__ import annotations

import io
import logging
import re
import sys
import warnings

import pytest
from conftest import tiny_data, tiny_module, tiny_trainer

from a2ls_lightning.callbacks import progress
from a2ls_lightning.callbacks.progress import UpdateProgressBar, choose_mode

MAX_STEPS = 40
LINE = re.compile(r"^updates (\d+)/40 \(\d+%\) \| [\d.]+ upd/s \| env_steps=\d+ .*\| \S+ elapsed(, \S+ left)?$")


class Terminal(io.StringIO):
    """What a terminal looks like to the bar."""

    def isatty(self) -> bool:
        return True


class FitStopped(logging.Handler):
    """Records, for Lightning's "`Trainer.fit` stopped" message, whether the stream's line had ended then."""

    def __init__(self, stream: io.StringIO) -> None:
        super().__init__(logging.INFO)
        self.stream, self.line_ended = stream, []

    def emit(self, record: logging.LogRecord) -> None:
        if "stopped" in record.getMessage():
            self.line_ended.append(self.stream.getvalue().endswith("\n"))


def _fit(tmp_path, monkeypatch, stream: io.StringIO, bar: UpdateProgressBar | None = None) -> UpdateProgressBar:
    """Train ``MAX_STEPS`` tiny updates with the bar writing to ``stream``; an evaluation after 200 env steps."""
    monkeypatch.setattr(sys, "stdout", stream)
    bar = bar or UpdateProgressBar(refresh_rate=5)
    stopped = FitStopped(stream)
    lightning_log = logging.getLogger("lightning.pytorch")
    level = lightning_log.level  # other test modules silence Lightning's info lines for the whole session
    lightning_log.setLevel(logging.INFO)
    lightning_log.addHandler(stopped)
    try:
        trainer = tiny_trainer(tmp_path, MAX_STEPS, enable_progress_bar=True, callbacks=[bar])
        trainer.fit(tiny_module(encoder="mlp"), datamodule=tiny_data(warmup_steps=20, eval_interval=100))
    finally:
        lightning_log.removeHandler(stopped)
        lightning_log.setLevel(level)
    assert stopped.line_ended == [True], "`Trainer.fit` stopped was written on the bar's line"
    return bar


def test_terminal_bar_ends_its_line_before_lightning_says_fit_stopped(tmp_path, monkeypatch):
    out = Terminal()
    bar = _fit(tmp_path, monkeypatch, out)
    text = out.getvalue()
    assert bar.mode == "bar"
    assert "\r" in text and text.endswith("\n")  # redrawn in place, and its line ended
    last = text.rstrip("\n").split("\r")[-1]  # what is left on the screen
    assert re.search(rf"{MAX_STEPS}/{MAX_STEPS} \[.*upd/s, env_steps=\d+.*eval/return=", last), last


def test_not_a_terminal_prints_plain_lines_every_few_percent(tmp_path, monkeypatch):
    out = io.StringIO()
    bar = _fit(tmp_path, monkeypatch, out, UpdateProgressBar(line_percent=25))
    assert bar.mode == "lines"
    text = out.getvalue()
    assert "\r" not in text and text.endswith("\n")
    lines = [line for line in text.splitlines() if line.startswith("updates ")]
    assert all(LINE.match(line) for line in lines), lines
    assert [int(LINE.match(line)[1]) for line in lines] == [10, 20, 30, 40]  # every 25% of 40, the end once
    assert "eval/return=" in lines[-1] and " left" not in lines[-1]


def test_a_notebook_without_ipywidgets_gets_plain_lines_and_no_warning(tmp_path, monkeypatch):
    monkeypatch.setattr(progress, "in_jupyter", lambda: True)
    monkeypatch.setitem(sys.modules, "ipywidgets", None)  # not importable
    out = io.StringIO()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        bar = _fit(tmp_path, monkeypatch, out)
    assert bar.mode == "lines"
    assert "ipywidgets" not in out.getvalue() and not [w for w in caught if "ipywidgets" in str(w.message)]
    assert out.getvalue().splitlines()[-1].startswith(f"updates {MAX_STEPS}/{MAX_STEPS} (100%)")


@pytest.mark.parametrize("jupyter,widgets,tty,mode", [
    (True, True, False, "notebook"),
    (True, False, False, "lines"),
    (True, False, True, "lines"),
    (False, True, True, "bar"),
    (False, True, False, "lines"),
])
def test_mode_follows_the_output(monkeypatch, jupyter, widgets, tty, mode):
    monkeypatch.setattr(progress, "in_jupyter", lambda: jupyter)
    monkeypatch.setattr(progress, "ipywidgets_importable", lambda: widgets)
    assert choose_mode(Terminal() if tty else io.StringIO()) == mode


def test_outside_a_kernel_is_not_jupyter():
    assert not progress.in_jupyter()


def test_line_percent_is_checked():
    with pytest.raises(ValueError, match=r"UpdateProgressBar.line_percent=0 is not allowed"):
        UpdateProgressBar(line_percent=0)
