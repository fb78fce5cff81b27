"""A newcomer's first hour: a discoverable command, a truthful progress bar (fresh and resumed), a quiet terminal."""

from __future__ import annotations

import re

import pytest
from conftest import CLI_TINY as TINY
from conftest import a2ls, run_main


def test_top_level_help_lists_every_command(capsys):
    code, stdout, _ = run_main(["--help"], capsys)
    assert code == 0
    for command in ("fit", "evaluate", "losses", "search", "plot", "export"):
        assert re.search(rf"^  {command} +\S", stdout, re.MULTILINE), f"{command} is not listed:\n{stdout}"
    code, stdout, _ = run_main([], capsys)
    assert code == 0 and "usage: a2ls {fit,evaluate,losses,search,plot,export}" in stdout


@pytest.mark.parametrize("args,usage", [
    (["fit", "--help"], "fit [-c CONFIG]"),
    (["losses", "--help"], "usage: a2ls losses"),
    (["search", "--help"], "usage: a2ls search"),
    (["search", "report", "--help"], "usage: a2ls search report"),
    (["plot", "--help"], "usage: a2ls plot"),
    (["evaluate", "--help"], "usage: a2ls evaluate"),
    (["export", "--help"], "usage: a2ls export"),
])
def test_every_command_has_help(capsys, args, usage):
    code, stdout, _ = run_main(args, capsys)
    assert code == 0 and usage in stdout


def _bar_lines(stdout: str) -> list[str]:
    """The progress: the bar's redraws on a terminal, plain lines (``updates 300/300 (100%) | ...``) in a pipe."""
    return [part.strip() for part in re.split(r"[\r\n]", stdout) if part.strip().startswith("updates")]


def test_progress_bar_counts_updates_env_steps_and_eval_fresh_and_after_a_resume(tmp_path):
    tiny = [a for a in TINY if "enable_progress_bar" not in a]
    out = a2ls("fit", *tiny, "--trainer.max_steps=300", f"--trainer.default_root_dir={tmp_path}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    bars = _bar_lines(out.stdout)
    assert bars, out.stdout[-2000:]
    last = bars[-1]
    assert "300/300" in last and "upd/s" in last and "env_steps=1600" in last and "eval/return=" in last, last
    assert "Epoch" not in out.stdout and "/-2" not in out.stdout
    # the terminal shows no third-party noise
    for noise in ("settotalmass", "LeafSpec", "Tip:", "Initialized LazyTensorStorage", "manual optimization"):
        assert noise not in out.stdout + out.stderr, noise
    ckpt = next(tmp_path.rglob("last.ckpt"))
    resumed = a2ls("fit", *tiny, "--trainer.max_steps=600", f"--trainer.default_root_dir={tmp_path}",
                   f"--ckpt_path={ckpt}", cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    bars = _bar_lines(resumed.stdout)
    counts = [tuple(map(int, m.groups())) for line in bars if (m := re.search(r"(\d+)/(\d+) [\[(]", line))]
    assert counts and counts[0][0] >= 300 and all(total == 600 for _, total in counts), bars[:3]
    assert counts[-1] == (600, 600)
    assert "600/600" in bars[-1] and "env_steps=2800" in bars[-1]
    assert "not resumable" not in resumed.stderr
