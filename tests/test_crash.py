"""SIGKILL at random moments, saves included, then resume: every resume succeeds and loses at most one checkpoint
interval, and no temporary file is left behind. The temp folder is put on another filesystem than the run's
(``TMPDIR`` on ``/dev/shm`` where it exists): our saves must not depend on a rename across filesystems.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from conftest import process_env

from a2ls_lightning.data.snapshots import find_snapshot
from a2ls_lightning.files import TEMP_MARK

INTERVAL = 5  # updates between checkpoints
MAX_STEPS = 300
CONFIG = f"""
seed_everything: 3
trainer:
  max_steps: {MAX_STEPS}
  logger: false
  enable_progress_bar: false
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{dirpath: RUN/ckpt, every_n_train_steps: {INTERVAL}, save_last: true, save_top_k: 2,
                   monitor: step, mode: max}}
    - class_path: cli_probe.Progress
      init_args: {{path: RUN/progress}}
model: {{hidden_dim: 32, feature_dim: 16, encoder_hidden_dim: 16, aux_losses: {{fwd: forward_dynamics}}}}
data: {{capacity: 20000, batch_size: 16, warmup_steps: 40, eval_interval: 100000, eval_episodes: 0,
        keep_replay_snapshots: 1}}
"""


def _env(tmp_path: Path) -> dict[str, str]:
    env = process_env()
    shm = Path("/dev/shm")
    if shm.is_dir() and os.access(shm, os.W_OK):
        other = shm / f"a2ls-crash-{os.getpid()}"
        other.mkdir(exist_ok=True)
        env["TMPDIR"] = str(other)
    return env


def _start(run: Path, env: dict[str, str]) -> subprocess.Popen:
    args = [sys.executable, "-m", "a2ls_lightning.cli", "fit", f"--config={run / 'config.yaml'}",
            f"--trainer.default_root_dir={run}"]
    last = run / "ckpt" / "last.ckpt"
    if last.exists():
        args.append(f"--ckpt_path={last}")
    return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)


def _progress(run: Path) -> int:
    try:
        return int((run / "progress").read_text())
    except (FileNotFoundError, ValueError):
        return -1


def _assert_resumable(run: Path, progress_at_kill: int) -> int:
    last = run / "ckpt" / "last.ckpt"
    if not last.exists():  # killed before (or during) the first save: at most the first interval is lost
        assert progress_at_kill <= INTERVAL, f"no checkpoint after {progress_at_kill} updates"
        return 0
    checkpoint = torch.load(last, weights_only=False)
    step = checkpoint["global_step"]
    # the side file it references is there (found next to the checkpoint)
    assert find_snapshot(checkpoint["ReplayDataModule"]["snapshot"], 0, last).is_file()
    assert step >= progress_at_kill - INTERVAL, (
        f"lost more than one interval: killed at {progress_at_kill}, kept {step}")
    return step


def kill_and_resume(tmp_path: Path, kills: int, seed: int) -> list[tuple[int, int]]:
    rng = random.Random(seed)
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.yaml").write_text(CONFIG.replace("RUN", str(run)))
    env = _env(tmp_path)
    history = []
    for _ in range(kills):
        start = _progress(run)
        proc = _start(run, env)
        while _progress(run) <= start and proc.poll() is None:  # training (re)started: kill within the next updates
            time.sleep(0.02)
        time.sleep(rng.uniform(0.0, 1.2))
        at = _progress(run)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        if at >= MAX_STEPS:
            break
        history.append((at, _assert_resumable(run, at)))
    proc = _start(run, env)
    _, stderr = proc.communicate(timeout=600)
    assert proc.returncode == 0, stderr[-3000:]
    assert torch.load(run / "ckpt" / "last.ckpt", weights_only=False)["global_step"] == MAX_STEPS
    leftovers = [p for p in run.rglob("*") if TEMP_MARK in p.name and p.name != "progress.tmp"]
    assert not leftovers, f"temporary files piled up: {leftovers}"
    return history


def test_a_few_random_kills_then_resume(tmp_path):
    history = kill_and_resume(tmp_path, kills=3, seed=1)
    assert history, "no kill landed during training"


@pytest.mark.slow
def test_many_random_kills_then_resume(tmp_path):
    history = kill_and_resume(tmp_path, kills=20, seed=2)
    assert len(history) >= 10
