"""DDP on 2 CPU ranks: when one rank fails, every rank stops within seconds with a one-line message (no hang)."""

from __future__ import annotations

import time

import pytest
from conftest import a2ls

TINY_DDP = ["--model.network.hidden_dim=32", "--model.network.feature_dim=16", "--model.network.encoder_hidden_dim=16",
            "--data.batch_size=16",
            "--data.capacity=3000", "--data.warmup_steps=40", "--data.eval_episodes=0", "--trainer.max_steps=200",
            "--trainer.enable_progress_bar=false", "--trainer.logger=false", "--trainer.strategy=ddp",
            "--trainer.devices=2", "--trainer.accelerator=cpu"]


@pytest.mark.parametrize("callback,rank,expected", [
    ("cli_probe.PoisonAt", 1, "non-finite values at update 20"),  # divergence on one rank only
    ("cli_probe.RaiseAt", 0, "injected failure on rank 0 at update 20"),  # any failure of the main rank
])
def test_one_failing_rank_stops_every_rank(tmp_path, callback, rank, expected):
    start = time.monotonic()
    out = a2ls("fit", *TINY_DDP, f"--trainer.default_root_dir={tmp_path}", f"--trainer.callbacks+={callback}",
               "--trainer.callbacks.step=20", f"--trainer.callbacks.rank={rank}", cwd=tmp_path, timeout=180)
    elapsed = time.monotonic() - start
    assert out.returncode != 0
    assert "Traceback" not in out.stderr, out.stderr[-3000:]
    errors = [line for line in out.stderr.splitlines() if line.startswith("a2ls: error:")]
    assert errors and any(expected in line for line in errors), out.stderr[-3000:]
    assert elapsed < 120, f"took {elapsed:.0f} s: a rank hung"
    assert not list(tmp_path.rglob("*.ckpt")) or all("step=20" not in p.name for p in tmp_path.rglob("*.ckpt"))
