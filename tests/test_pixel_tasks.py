"""The pixels benchmark's runs work end to end: each variant (pixel SAC, + CURL, + A2-winner) trains a few updates
on cheetah-run and cartpole-swingup through the real ``a2ls fit`` with ``configs/benchmark_pixels_cpu.yaml`` and
the suite's own per-task arguments (``scripts/benchmark_learning.py``), shrunk in capacity only (renders, crop and
frame stack as in the protocol; rendering costs ~20 ms a frame here, so few frames)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest
import torch
from conftest import benchmark_script

from a2ls_lightning.modules.settings import flatten_model_settings
from a2ls_lightning.plotting import read_scalars

ROOT = Path(__file__).resolve().parents[1]
CONFIG = ROOT / "configs" / "benchmark_pixels_cpu.yaml"
SHRINK = ["--model.network.num_filters=4", "--model.network.hidden_dim=16", "--model.network.feature_dim=8",
          "--data.batch_size=4",
          "--data.capacity=200", "--data.warmup_steps=12", "--data.eval_episodes=0", "--trainer.max_steps=3",
          "--trainer.log_every_n_steps=1", "--trainer.callbacks.every_n_train_steps=3"]


BENCH = benchmark_script()
pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")


@pytest.mark.parametrize("task", ["cheetah-run", "cartpole-swingup"])
@pytest.mark.parametrize("variant", BENCH.PIXEL_VARIANTS)
def test_each_pixel_variant_trains_a_few_updates_through_a2ls_fit(tmp_path, variant, task):
    from a2ls_lightning.cli import main

    main(["fit", f"--config={CONFIG}", "--seed_everything=1", *BENCH.task_arguments(task, pixels=True),
          *BENCH.VARIANTS[variant], *SHRINK, f"--trainer.default_root_dir={tmp_path}"])
    checkpoint = torch.load(next(tmp_path.rglob("last.ckpt")), map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == 3
    obs_shape, action_dim = checkpoint["env_spec"]
    assert tuple(obs_shape) == (9, 64, 64) and action_dim == (6 if task == "cheetah-run" else 1)
    hp = flatten_model_settings(checkpoint["hyper_parameters"])
    assert hp["encoder"] == "pixel" and hp["crop_size"] == 56
    assert checkpoint["datamodule_hyper_parameters"]["action_repeat"] == BENCH.PIXEL_TASKS[task]
    scalars = read_scalars(tmp_path)
    losses = ["train/critic_loss", "train/actor_loss"] + {
        "pixel_sac": [], "pixel_curl": ["train/aux_curl_loss"], "pixel_a2_winner": ["train/aux_a2w_loss"]}[variant]
    for tag in losses:
        assert tag in scalars and all(math.isfinite(v) for _, v in scalars[tag]), tag
    assert not any(t.startswith("train/aux_") for t in scalars if t not in losses)  # pixel SAC: no aux loss


def test_pixel_records_and_commands_leave_the_other_suites_alone(tmp_path):
    runs = BENCH.RUNS
    # Other suites: their records (and commands) where they were.
    assert BENCH.record_path("sac", 1, "full") == runs / "full" / "sac" / "seed1.json"
    assert BENCH.record_path("sac", 2, "full", "walker-walk") == runs / "planet" / "walker-walk" / "sac" / "seed2.json"
    assert BENCH.task_arguments("walker-walk") == ["--data.task=walker-walk", "--data.action_repeat=2",
                                                   "--trainer.max_steps=49000"]
    # Pixels: their own folder; quick --max-steps checks apart (git-ignored steps*/).
    assert BENCH.record_path("pixel_curl", 3, "full", "cheetah-run") == \
        runs / "pixels" / "cheetah-run" / "pixel_curl" / "seed3.json"
    assert BENCH.record_path("pixel_sac", 1, "steps50", "cartpole-swingup") == \
        runs / "steps50" / "pixels" / "cartpole-swingup" / "pixel_sac" / "seed1.json"
    assert BENCH.task_arguments("cheetah-run", pixels=True) == []
    assert BENCH.task_arguments("cartpole-swingup", pixels=True) == [
        "--data.task=cartpole-swingup", "--data.action_repeat=8", "--trainer.max_steps=11500",
        "--model.actor_lr=0.001", "--model.critic_lr=0.001"]
    # Resume (the package's per-seed runner): the last.ckpt of the attempts with the most updates, none when
    # there is none.
    from a2ls_lightning.runs.multirun import last_checkpoint_in

    assert last_checkpoint_in(tmp_path) is None
    for version, step in ((0, 4000), (1, 6000)):
        folder = tmp_path / "lightning_logs" / f"version_{version}" / "checkpoints"
        folder.mkdir(parents=True)
        torch.save({"global_step": step}, folder / "last.ckpt")
    (tmp_path / "lightning_logs" / "version_2" / "checkpoints").mkdir(parents=True)
    (tmp_path / "lightning_logs" / "version_2" / "checkpoints" / "last.ckpt").write_bytes(b"cut short")
    assert last_checkpoint_in(tmp_path) == tmp_path / "lightning_logs" / "version_1" / "checkpoints" / "last.ckpt"
    assert json.loads(json.dumps(BENCH.PUBLISHED[("cheetah-run", "pixel_a2_winner")])) == "449 ± 34"
