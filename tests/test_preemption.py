"""Graceful preemption of a real ``a2ls fit``: SIGTERM, SIGUSR1 and SIGINT at a random update between two scheduled
saves save that update as ``last.ckpt`` and exit 128 + signal number; resuming it ends bit for bit where an
uninterrupted run ends (weights, optimizer, weighting state, replay) with the same evaluations. Also: a second
signal during the save, a non-finite state at the signal (nothing saved), DDP on 2 CPU ranks, and SLURM's
auto-requeue handler left in place.
"""

from __future__ import annotations

import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning.pytorch as pl
import pytest
import torch
from conftest import process_env, tiny_data, tiny_module, tiny_trainer

from a2ls_lightning.callbacks import GracefulPreemption, OLAux
from a2ls_lightning.data.snapshots import find_snapshot, load_snapshot
from a2ls_lightning.modules.guard import NonFiniteError

MAX_STEPS, INTERVAL = 240, 80
# The resumes run in this process and write into the checkpoint folder they resume from, on purpose.
pytestmark = pytest.mark.filterwarnings("ignore:Checkpoint directory .* exists and is not empty:UserWarning")
CONFIG = f"""
seed_everything: 5
trainer:
  max_steps: {MAX_STEPS}
  logger: false
  enable_progress_bar: false
  callbacks:
    - class_path: lightning.pytorch.callbacks.ModelCheckpoint
      init_args: {{dirpath: RUN/ckpt, every_n_train_steps: {INTERVAL}, save_last: true}}
    - class_path: a2ls_lightning.callbacks.OLAux
    - class_path: cli_probe.Progress
      init_args: {{path: RUN/progress}}
    - class_path: cli_probe.EvalLog
      init_args: {{path: RUN/evals}}
model: {{hidden_dim: 32, feature_dim: 16, encoder_hidden_dim: 16, aux_losses: {{fwd: forward_dynamics}}}}
data: {{capacity: 3000, batch_size: 16, warmup_steps: 40, eval_interval: 200, eval_episodes: 1}}
"""


def _env() -> dict[str, str]:
    return process_env()


def _args(run: Path, *extra: str, resume: bool = False) -> list[str]:
    """``a2ls fit`` of the run folder ``run`` (its config written there), resumed from its last.ckpt if asked."""
    run.mkdir(parents=True, exist_ok=True)
    (run / "config.yaml").write_text(CONFIG.replace("RUN", str(run)))
    args = ["fit", f"--config={run / 'config.yaml'}", f"--trainer.default_root_dir={run}", *extra]
    if resume:
        args.append(f"--ckpt_path={run / 'ckpt' / 'last.ckpt'}")
    return args


def _start(run: Path, *extra: str, resume: bool = False) -> subprocess.Popen:
    """The run as a real ``a2ls`` process, for the tests that signal it."""
    args = [sys.executable, "-m", "a2ls_lightning.cli", *_args(run, *extra, resume=resume)]
    # A session of its own: a signal to its process group reaches every rank, as a scheduler's does.
    return subprocess.Popen(args, env=_env(), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)


def _fit_here(run: Path, *extra: str, resume: bool = False) -> int:
    """The same ``a2ls fit`` in this process (the console script's ``main``), for the runs no signal reaches: the
    command's exit code."""
    from a2ls_lightning.cli import main

    try:
        main(_args(run, *extra, resume=resume))
    except SystemExit as exit_:
        return int(exit_.code or 0)
    return 0


def _progress(run: Path) -> int:
    try:
        return int((run / "progress").read_text())
    except (FileNotFoundError, ValueError):
        return -1


def _signal_at(proc: subprocess.Popen, run: Path, update: int, signum: int, group: bool = False) -> int:
    """Send ``signum`` once the run has finished ``update`` updates; returns the update count seen then."""
    while _progress(run) < update:
        assert proc.poll() is None, proc.stderr.read()[-3000:]
        time.sleep(0.005)
    seen = _progress(run)
    if group:
        os.killpg(proc.pid, signum)
    else:
        proc.send_signal(signum)
    return seen


def _evals(run: Path) -> dict[int, float]:
    lines = (run / "evals").read_text().split() if (run / "evals").exists() else []
    return {int(lines[i]): float(lines[i + 1]) for i in range(0, len(lines), 2)}


def _state(run: Path) -> dict:
    """Everything a checkpoint restores: its dict (weights, optimizer, callbacks) and rank 0's side file."""
    last = run / "ckpt" / "last.ckpt"
    ckpt = torch.load(last, map_location="cpu", weights_only=False)
    entry = ckpt["ReplayDataModule"]
    side = load_snapshot(find_snapshot(entry["snapshot"], 0, last), entry["files"]["0"], last)
    return {"global_step": ckpt["global_step"], "state_dict": ckpt["state_dict"],
            "optimizer": ckpt["optimizer_states"], "replay": side["replay"],
            # the weighting rule's state; ModelCheckpoint's holds the run's own paths
            "callbacks": {k: v for k, v in ckpt["callbacks"].items() if not k.startswith("ModelCheckpoint")},
            "collector": side["collector"], "rng": side["rng"]}


def _assert_equal(a, b, where: str = "") -> None:
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and torch.equal(a, b), where
    elif isinstance(a, dict):
        assert set(a) == set(b), where
        for key in a:
            _assert_equal(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_equal(x, y, f"{where}[{i}]")
    elif hasattr(a, "shape"):  # numpy arrays
        assert (a == b).all(), where
    elif a != a and b != b:  # nan
        return
    else:
        assert a == b, f"{where}: {a!r} != {b!r}"


@pytest.fixture(scope="module")
def straight(tmp_path_factory) -> Path:
    run = tmp_path_factory.mktemp("straight") / "run"
    assert _fit_here(run) == 0
    return run


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGUSR1, signal.SIGINT], ids=lambda s: s.name)
def test_signal_saves_the_update_in_flight_and_the_resume_equals_an_uninterrupted_run(tmp_path, straight, signum):
    target = random.Random(int(signum)).randrange(INTERVAL + 10, 2 * INTERVAL - 30)  # between two scheduled saves
    run = tmp_path / "run"
    proc = _start(run)
    seen = _signal_at(proc, run, target, signum)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signum, stderr[-3000:]
    saved = torch.load(run / "ckpt" / "last.ckpt", weights_only=False)["global_step"]
    assert seen <= saved <= seen + 1 and saved == _progress(run), (seen, saved)  # the update in flight, no more
    line = f"a2ls: stopped by {signum.name} at update {saved}; resume with --ckpt_path {run / 'ckpt' / 'last.ckpt'}"
    assert line in stderr.splitlines(), stderr[-2000:]
    assert "Traceback" not in stderr

    assert _fit_here(run, resume=True) == 0
    _assert_equal(_state(straight), _state(run), "checkpoint")
    straight_evals, cut_evals = _evals(straight), _evals(run)
    assert set(cut_evals) == set(straight_evals)  # no extra evaluation at the cut
    assert cut_evals == straight_evals


def test_a_second_signal_during_the_save_keeps_everything_valid(tmp_path):
    run = tmp_path / "run"
    proc = _start(run, "--trainer.callbacks+=cli_probe.SignalDuringSave", "--trainer.callbacks.signum=2")
    _signal_at(proc, run, INTERVAL + 5, signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    assert "SIGINT again: the checkpoint is being written" in stderr
    state = _state(run)  # loads and verifies the side file against the recorded checksum
    assert state["global_step"] == _progress(run)
    assert _fit_here(run, "--trainer.callbacks+=cli_probe.SignalDuringSave", resume=True) == 0


def test_ddp_sigterm_to_the_process_group_saves_every_rank_and_stops_all(tmp_path):
    run = tmp_path / "run"
    ddp = ["--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu", "--data.eval_episodes=0"]
    proc = _start(run, *ddp)
    start = time.monotonic()
    seen = _signal_at(proc, run, INTERVAL + 20, signal.SIGTERM, group=True)
    _, stderr = proc.communicate(timeout=120)
    assert time.monotonic() - start < 90, "a rank hung"
    assert proc.returncode == 128 + signal.SIGTERM, stderr[-3000:]
    last = run / "ckpt" / "last.ckpt"
    ckpt = torch.load(last, weights_only=False)
    assert seen <= ckpt["global_step"] <= seen + 2
    entry = ckpt["ReplayDataModule"]
    for rank in (0, 1):  # each rank wrote its side file; both are recorded and verify
        load_snapshot(find_snapshot(entry["snapshot"], rank, last), entry["files"][str(rank)], last)
    proc = _start(run, *ddp, resume=True)
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 0, stderr[-3000:]
    assert torch.load(last, weights_only=False)["global_step"] == MAX_STEPS


class _PoisonThenSignal(pl.Callback):
    """After update 10 (after the module's guard looked): a NaN weight, and a SIGTERM recorded."""

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == 10:
            with torch.no_grad():
                next(pl_module.learner.critic.parameters()).view(-1)[0] = float("nan")
            os.kill(os.getpid(), signal.SIGTERM)


def test_a_non_finite_state_is_never_saved_on_a_signal(tmp_path):
    preemption = GracefulPreemption()
    trainer = tiny_trainer(tmp_path, 50, enable_checkpointing=True, callbacks=[_PoisonThenSignal(), preemption])
    with pytest.raises(NonFiniteError):
        trainer.fit(tiny_module(), tiny_data(eval_episodes=0))
    assert trainer.global_step == 10  # refused by the save on the signal, not by a later update's guard
    assert not list(tmp_path.rglob("*.ckpt")) and not list(tmp_path.rglob("step*-rank0.pt"))
    assert signal.getsignal(signal.SIGTERM) is not preemption._handle  # handlers restored


def test_slurm_auto_requeue_keeps_lightnings_handler(tmp_path, monkeypatch):
    # Lightning's SLURMEnvironment is detected from these variables; its SIGUSR1 handler saves hpc_ckpt_<n>.ckpt
    # (and would requeue with scontrol, which is absent here).
    for key, value in {"SLURM_NTASKS": "1", "SLURM_JOB_NAME": "a2ls", "SLURM_JOB_ID": "123", "SLURM_PROCID": "0",
                       "SLURM_LOCALID": "0", "SLURM_NODEID": "0", "SLURM_NTASKS_PER_NODE": "1"}.items():
        monkeypatch.setenv(key, value)
    seen = {}

    class SendUsr1(pl.Callback):
        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
            if trainer.global_step == 10:
                seen["handler"] = signal.getsignal(signal.SIGUSR1)
                os.kill(os.getpid(), signal.SIGUSR1)

    preemption = GracefulPreemption()
    trainer = tiny_trainer(tmp_path, 20, callbacks=[OLAux(), SendUsr1(), preemption])
    trainer.fit(tiny_module(aux_losses={"fwd": "forward_dynamics"}), tiny_data(eval_episodes=0))
    assert trainer.global_step == 20  # not stopped by SIGUSR1: Lightning's requeue handler ran instead
    assert seen["handler"] is not preemption._handle
    assert list(tmp_path.glob("hpc_ckpt_*.ckpt")), "Lightning's auto-requeue checkpoint was not written"
