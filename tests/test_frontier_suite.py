"""The frontier benchmark's runs work end to end: each variant (SAC-frontier, + five losses fixed, + five losses
OL-AUX) trains a few updates on cheetah-run and walker-walk through the real ``a2ls fit`` with
``configs/frontier_state.yaml`` and the suite's per-task arguments (action repeat, replay ratio, updates)."""

from __future__ import annotations

import pytest
import torch
from conftest import benchmark_script

from a2ls_lightning.data.replay_ratio import agent_steps_for, parse_replay_ratio
from a2ls_lightning.modules.settings import flatten_model_settings

BENCH = benchmark_script()
CONFIG = BENCH.FRONTIER_CONFIG
SHRINK = ["--data.batch_size=8", "--data.capacity=300", "--data.warmup_steps=10", "--data.eval_episodes=0",
          "--trainer.max_steps=6", "--trainer.log_every_n_steps=2"]
pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter")


def test_the_suite_spends_100k_env_steps_on_each_task():
    for task, (repeat, ratio) in BENCH.FRONTIER_TASKS.items():
        args = dict(a.lstrip("-").split("=", 1) for a in BENCH.task_arguments(task, frontier=True))
        updates = int(args["trainer.max_steps"])
        env_steps = repeat * (BENCH.WARMUP + agent_steps_for(updates, parse_replay_ratio(ratio)))
        assert env_steps == BENCH.ENV_STEPS, (task, env_steps)


@pytest.mark.parametrize("task", list(BENCH.FRONTIER_TASKS))
@pytest.mark.parametrize("variant", BENCH.FRONTIER_VARIANTS)
def test_each_frontier_variant_trains_a_few_updates_through_a2ls_fit(tmp_path, variant, task):
    from a2ls_lightning.cli import main

    main(["fit", f"--config={CONFIG}", "--seed_everything=1", *BENCH.task_arguments(task, frontier=True),
          *BENCH.VARIANTS[variant], *SHRINK, f"--trainer.default_root_dir={tmp_path}"])
    checkpoint = torch.load(next(tmp_path.rglob("last.ckpt")), map_location="cpu", weights_only=False)
    assert checkpoint["global_step"] == 6
    hp, data = flatten_model_settings(checkpoint["hyper_parameters"]), checkpoint["datamodule_hyper_parameters"]
    assert hp["critic_blocks"] == 2 and hp["num_q"] == 1 and hp["obs_norm"] and hp["weight_decay"] > 0
    assert (data["action_repeat"], data["replay_ratio"]) == BENCH.FRONTIER_TASKS[task]
    assert bool(hp["aux_losses"]) == (variant != "frontier_sac")
