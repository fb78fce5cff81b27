"""A runner of ``a2ls fit`` processes (``a2ls fit --seeds``, :func:`run_seed`) is safe to stop and to start twice:
its stop signals reach its training processes (no orphan trains on unrecorded), seeds not yet started are not
started, and a seed folder is trained by one process at a time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import torch
from test_cli import a2ls
from test_second_hour import TINY

from a2ls_lightning.runs import FolderLock, forwarding_signals, run_seed
from a2ls_lightning.runs.supervise import stopped_by, wait_supervised

TESTS = Path(__file__).parent


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def test_a_locked_folder_is_left_alone_and_says_by_whom(tmp_path):
    held = FolderLock(tmp_path / "run")
    assert held.acquire()
    held.note(4242)
    try:
        assert not FolderLock(tmp_path / "run").acquire()  # a second open file: flock refuses it, even in-process
        result = run_seed(["--config=does-not-matter.yaml"], 1, tmp_path / "run", echo=False)
        assert result.status == "busy" and result.exit_code == 1
        assert result.message == f"not started: {tmp_path / 'run'} is being trained by pid 4242"
        assert not (tmp_path / "run" / "fit.log").exists()  # nothing was started
    finally:
        held.release()
    assert FolderLock(tmp_path / "run").acquire()  # released with its last holder


def test_a_signal_to_the_runner_reaches_its_process_and_stops_new_ones(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    # A child that exits 143 on SIGTERM (as a2ls fit does after saving), and one that SIGTERM kills outright.
    graceful = "import signal, sys, time; signal.signal(signal.SIGTERM, lambda *a: sys.exit(143)); time.sleep(60)"
    plain = "import time; time.sleep(60)"
    codes: dict[str, int] = {}
    with forwarding_signals():
        assert signal.getsignal(signal.SIGTERM) is not before
        children = {name: subprocess.Popen([sys.executable, "-c", code]) for name, code in
                    (("graceful", graceful), ("plain", plain))}
        waiters = [threading.Thread(target=lambda n=n, p=p: codes.__setitem__(n, wait_supervised(p)))
                   for n, p in children.items()]
        for w in waiters:
            w.start()
        time.sleep(1.0)  # both are running (and have their handler)
        os.kill(os.getpid(), signal.SIGTERM)  # to the runner only
        for w in waiters:
            w.join(timeout=30)
        assert codes == {"graceful": 143, "plain": 143}  # a death by SIGTERM reads 128 + 15, not Popen's -15
        assert stopped_by() == signal.SIGTERM
        result = run_seed(["--config=does-not-matter.yaml"], 2, tmp_path / "later", echo=False)
        assert (result.status, result.exit_code) == ("preempted", 143)
        assert result.message == "not started: the runner was stopped by SIGTERM"
    assert signal.getsignal(signal.SIGTERM) is before  # the handlers are put back
    assert stopped_by() == 0  # outside the block nothing is stopped: a later run_seed starts


def test_a_signal_the_runner_ignores_stays_ignored():
    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
    try:
        with forwarding_signals():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, before)


def test_stopping_a2ls_fit_seeds_stops_its_seeds_and_a_second_runner_keeps_out(tmp_path):
    args = [sys.executable, "-m", "a2ls_lightning.cli", "fit", "--seeds", "1,2", "--jobs", "1", *TINY,
            "--trainer.max_steps=100000", "--trainer.default_root_dir=multi"]
    env = dict(os.environ, PYTHONPATH=str(TESTS), OMP_NUM_THREADS="1", MUJOCO_GL="egl")
    runner = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seed1 = tmp_path / "multi" / "seed_1"
    child = 0
    try:
        deadline = time.time() + 240
        while not list(seed1.rglob("last.ckpt")) and time.time() < deadline and runner.poll() is None:
            time.sleep(0.5)
        assert list(seed1.rglob("last.ckpt")), "seed 1 saved no checkpoint in time"
        child = int((seed1 / ".a2ls.lock").read_text())
        assert child != runner.pid and _alive(child)

        second = a2ls("fit", "--seeds", "1", *TINY, "--trainer.max_steps=100000", "--trainer.default_root_dir=multi",
                      cwd=tmp_path)
        assert second.returncode == 1
        assert f"seed 1: not started: {Path('multi') / 'seed_1'} is being trained by pid {child}" in second.stdout
        assert "| 1 | busy |" in second.stdout

        runner.send_signal(signal.SIGTERM)  # the runner alone, as `kill PID` does
        out, _ = runner.communicate(timeout=120)
    finally:
        if runner.poll() is None:
            runner.kill()
            if child and _alive(child):  # what this test is about: no training process left behind
                os.kill(child, signal.SIGKILL)
    assert runner.returncode == 143, out[-3000:]
    assert "| 1 | preempted |" in out and "| 2 | preempted |" in out
    assert "seed 2: not started: the runner was stopped by SIGTERM" in out
    deadline = time.time() + 30
    while _alive(child) and time.time() < deadline:
        time.sleep(0.2)
    assert not _alive(child), "the training process outlived its runner"
    log = (seed1 / "fit.log").read_text()
    assert "a2ls: stopped by SIGTERM at update" in log  # saved at the update in flight, not killed
    saved = torch.load(next(seed1.rglob("last.ckpt")), weights_only=False)["global_step"]
    assert f"stopped by SIGTERM at update {saved};" in log
    assert not (tmp_path / "multi" / "seed_2").exists() or not list((tmp_path / "multi" / "seed_2").rglob("*.ckpt"))
