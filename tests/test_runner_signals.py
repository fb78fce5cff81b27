"""A runner of ``a2ls fit`` processes (``a2ls fit --seeds``, :func:`run_seed`) is safe to stop and to start twice:
its stop signals reach its training processes (no orphan trains on unrecorded), seeds not yet started are not
started, the runner then stops by the same signal, and a seed folder is trained by one process at a time."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch
from conftest import process_env, run_main

from a2ls_lightning.runs import FolderLock, forwarding_signals, run_seed
from a2ls_lightning.runs.supervise import stopped_by, wait_supervised

# Action repeat 8 (125 agent steps per episode, short evaluations) and a checkpoint every 50 updates.
TINY = ["--model.network.hidden_dim=32", "--model.network.feature_dim=16", "--model.network.encoder_hidden_dim=16", "--data.batch_size=16",
        "--data.capacity=3000", "--data.warmup_steps=40", "--data.eval_interval=400", "--data.eval_episodes=1",
        "--data.action_repeat=8", "--trainer.callbacks.every_n_train_steps=50", "--trainer.enable_progress_bar=false"]


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


def test_the_lock_passes_only_to_the_process_given_it(tmp_path):
    """The lock's descriptor is not inherited: a process started with every inheritable descriptor (another seed's
    training) does not hold the lock, the one given it through ``pass_fds`` does."""
    for given, locked_after in ((False, False), (True, True)):
        lock = FolderLock(tmp_path / f"run_{given}")
        assert lock.acquire() and not os.get_inheritable(lock.fds[0])
        passing = {"pass_fds": lock.fds} if given else {"close_fds": False}  # every inheritable one
        child = subprocess.Popen(["sleep", "30"], **passing)
        try:
            lock.release()  # the parent's descriptor is closed: only the child can hold the lock now
            other = FolderLock(tmp_path / f"run_{given}")
            assert other.acquire() is not locked_after
            other.release()
        finally:
            child.kill()
            child.wait()


def _sleeper(on_sigterm_exit: int | None = None) -> subprocess.Popen:
    """A child that sleeps 60 s, printing "ready" once its SIGTERM handler (exit ``on_sigterm_exit``) is in place."""
    handler = (f"signal.signal(signal.SIGTERM, lambda *a: sys.exit({on_sigterm_exit})); "
               if on_sigterm_exit is not None else "")
    child = subprocess.Popen([sys.executable, "-c", f"import signal, sys, time; {handler}print('ready', flush=True); "
                              "time.sleep(60)"], stdout=subprocess.PIPE, text=True)
    assert child.stdout.readline().strip() == "ready"
    return child


def test_a_signal_to_the_runner_reaches_its_processes_then_the_runner_itself(tmp_path):
    before = signal.getsignal(signal.SIGTERM)
    received: list[int] = []
    signal.signal(signal.SIGTERM, lambda signum, _frame: received.append(signum))  # the runner's caller's handler
    try:
        codes: dict[str, int] = {}
        with forwarding_signals() as stop:
            # One child exits 42 on SIGTERM (its handler ran: the signal reached it), one dies of it outright.
            children = {"handled": _sleeper(42), "plain": _sleeper()}
            waiters = [threading.Thread(target=lambda n=n, c=c: codes.__setitem__(n, wait_supervised(c)))
                       for n, c in children.items()]
            for w in waiters:
                w.start()
            os.kill(os.getpid(), signal.SIGTERM)  # to the runner only
            for w in waiters:
                w.join(timeout=30)
            assert codes == {"handled": 42, "plain": 143}  # a death by SIGTERM reads 128 + 15, not Popen's -15
            assert received == [] and stopped_by() is stop and stop.signum == signal.SIGTERM
            result = run_seed(["--config=does-not-matter.yaml"], 2, tmp_path / "later", echo=False)
            assert (result.status, result.exit_code) == ("preempted", 143)
            assert result.message == "not started: the runner was stopped by SIGTERM"
            late = _sleeper()  # started after the signal: it gets it at once instead of sleeping 60 s
            started = time.time()
            assert wait_supervised(late) == 143 and time.time() - started < 10
        assert received == [signal.SIGTERM]  # delivered to the caller once the block has ended
        assert stopped_by() is None  # outside the block nothing is stopped: a later run_seed starts
    finally:
        signal.signal(signal.SIGTERM, before)


def test_ctrl_c_stops_the_runner_with_keyboard_interrupt_after_its_processes():
    # Python's own Ctrl-C handler, as in a terminal: a test worker may have inherited another one (a background
    # shell ignores SIGINT; the runner keeps an ignored signal ignored, which its own test below checks).
    before = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        child = _sleeper()
        with pytest.raises(KeyboardInterrupt):
            with forwarding_signals():
                code = []
                waiter = threading.Thread(target=lambda: code.append(wait_supervised(child)))
                waiter.start()
                os.kill(os.getpid(), signal.SIGINT)
                waiter.join(timeout=30)
        assert code == [128 + signal.SIGINT]
    finally:
        signal.signal(signal.SIGINT, before)


def test_only_the_preemption_callbacks_codes_count_as_preempted(tmp_path):
    from a2ls_lightning.runs.supervise import PREEMPTED_CODES

    assert PREEMPTED_CODES == {130, 138, 143}  # SIGINT, SIGUSR1, SIGTERM: saved, resumable
    assert 137 not in PREEMPTED_CODES and 139 not in PREEMPTED_CODES  # the OOM killer, a crash: failures


def test_a_signal_the_runner_ignores_stays_ignored():
    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)  # as under nohup
    try:
        with forwarding_signals():
            assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
            assert signal.getsignal(signal.SIGTERM) is not signal.SIG_DFL
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN
    finally:
        signal.signal(signal.SIGHUP, before)


def test_stopping_a2ls_fit_seeds_stops_its_seeds_and_a_second_runner_keeps_out(tmp_path, monkeypatch, capsys):
    args = [sys.executable, "-m", "a2ls_lightning.cli", "fit", "--seeds", "1,2", "--jobs", "1", *TINY,
            "--trainer.max_steps=100000", "--trainer.default_root_dir=multi"]
    env = process_env()
    runner = subprocess.Popen(args, cwd=tmp_path, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seed1 = tmp_path / "multi_seeds" / "seed_1"  # beside the single run's folder
    child = 0
    try:
        deadline = time.time() + 240
        while not list(seed1.rglob("last.ckpt")) and time.time() < deadline and runner.poll() is None:
            time.sleep(0.5)
        assert list(seed1.rglob("last.ckpt")), "seed 1 saved no checkpoint in time"
        child = int((seed1 / ".a2ls.lock").read_text())
        assert child != runner.pid and _alive(child)

        # A second runner (in this process: it starts nothing) finds the folder locked.
        monkeypatch.chdir(tmp_path)
        code, stdout, _ = run_main(["fit", "--seeds", "1", *TINY, "--trainer.max_steps=100000",
                                    "--trainer.default_root_dir=multi"], capsys)
        assert code == 1
        assert f"seed 1: not started: {Path('multi_seeds') / 'seed_1'} is being trained by pid {child}" in stdout
        assert "| 1 | busy |" in stdout

        runner.send_signal(signal.SIGTERM)  # the runner alone, as `kill PID` does
        out, _ = runner.communicate(timeout=120)
    finally:
        if runner.poll() is None:
            runner.kill()
            if child and _alive(child):  # what this test is about: no training process left behind
                os.kill(child, signal.SIGKILL)
    assert runner.returncode == -signal.SIGTERM, out[-3000:]  # the table first, then it ends by the signal
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
    seed2 = tmp_path / "multi_seeds" / "seed_2"
    assert not seed2.exists() or not list(seed2.rglob("*.ckpt"))
