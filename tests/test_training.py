"""SACModule in a real Trainer on real dm_control tasks: counting, logging, precision, PhysicsError, pixels."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import tiny_data, tiny_module, tiny_trainer
from dm_control.rl import control

from a2ls_lightning import ReplayDataModule
from a2ls_lightning.modules.agent import check_precision


def test_max_steps_counts_updates_and_everything_is_logged(tmp_path):
    module, data = tiny_module(), tiny_data(eval_interval=200)
    trainer = tiny_trainer(tmp_path, 120)
    before = [p.clone() for p in module.parameters()] if module.learner else None
    trainer.fit(module, data)
    assert before is None and trainer.global_step == 120
    # one optimizer step per update; actor on every 2nd: Adam's step count says so
    opt = module.optimizers().optimizer
    steps = {g["name"]: int(opt.state[g["params"][0]]["step"]) for g in opt.param_groups}
    assert steps == {"encoder": 120, "critic": 120, "actor": 60, "alpha": 60}
    # warm-up 40 agent steps + 1 per update, 4 control steps each
    assert data.collector.env_steps == (40 + 120) * 4
    metrics = trainer.callback_metrics
    for key in ("train/critic_loss", "train/actor_loss", "train/temperature_loss", "train/alpha", "train/entropy",
                "train/env_steps", "train/physics_errors", "eval/return", "env_steps/s", "updates/s"):
        assert key in metrics and math.isfinite(float(metrics[key])), key
    assert {"env_steps/s", "updates/s"} <= set(trainer.progress_bar_metrics)
    assert float(metrics["train/env_steps"]) == 640  # logged at update 120


def test_episode_return_is_logged_after_an_episode(tmp_path):
    module, data = tiny_module(), tiny_data(warmup_steps=240, eval_episodes=0)
    trainer = tiny_trainer(tmp_path, 20)
    trainer.fit(module, data)
    assert data.collector.episodes == 1
    assert float(trainer.callback_metrics["train/episode_return"]) == pytest.approx(data.collector.last_episode_return)


def test_bf16_mixed_trains_with_fp32_temperature_and_log_probs(tmp_path):
    module, data = tiny_module(), tiny_data(eval_episodes=0)
    seen = {}
    trainer = tiny_trainer(tmp_path, 30, precision="bf16-mixed")
    trainer.fit(module, data)
    assert trainer.global_step == 30
    assert module.learner.log_alpha.dtype == torch.float32
    assert all(torch.isfinite(p).all() for p in module.parameters())
    with torch.autocast("cpu", dtype=torch.bfloat16):
        feats = module.learner.actor_head(module.learner.encoder.trunk(torch.randn(4, 17)))
        seen["feats"] = feats.dtype
        _, log_prob = module.learner.actor(feats)
    assert seen["feats"] == torch.bfloat16 and log_prob.dtype == torch.float32


def test_16_mixed_is_refused_with_a_clear_message(tmp_path):
    for precision in ("16-mixed", "16-true"):
        with pytest.raises(ValueError, match=f"precision='{precision}' is not supported.*allowed: 32-true, bf16-mixed"):
            check_precision(precision)
    check_precision("bf16-mixed")
    # on a CPU Lightning itself replaces 16-mixed by bf16-mixed, and training runs
    trainer = tiny_trainer(tmp_path, 5, precision="16-mixed")
    trainer.fit(tiny_module(), tiny_data(eval_episodes=0))
    assert trainer.global_step == 5 and str(trainer.precision) == "bf16-mixed"


class _DivergingData(ReplayDataModule):
    """cheetah-run whose physics raises a PhysicsError on its 50th training-env step after reset."""

    def _make_env(self, seed):
        env = super()._make_env(seed)
        if seed < 1000:  # the training env only
            physics, original, calls = env.adapter.physics, env.adapter.physics.step, {"n": 0}

            def step(*args, **kwargs):
                calls["n"] += 1
                if calls["n"] == 200 + 50:  # 200 settling steps at reset, then 50 control steps
                    raise control.PhysicsError("simulated divergence")
                return original(*args, **kwargs)

            physics.step = step
        return env


def test_physics_error_is_counted_and_training_goes_on(tmp_path):
    data = _DivergingData(batch_size=16, capacity=3000, warmup_steps=20, eval_episodes=0)
    trainer = tiny_trainer(tmp_path, 60)
    trainer.fit(tiny_module(), data)
    assert trainer.global_step == 60
    assert float(trainer.callback_metrics["train/physics_errors"]) == 1.0
    assert data.collector.episodes == 1


def test_tiny_pixel_run(tmp_path):
    module = tiny_module(encoder="pixel", crop_size=28, encoder_layers=2)
    data = tiny_data(task="cartpole-swingup", from_pixels=True, image_size=32, warmup_steps=10, batch_size=8,
                     eval_episodes=0, capacity=500)
    trainer = tiny_trainer(tmp_path, 10)
    trainer.fit(module, data)
    assert trainer.global_step == 10
    assert data.replay.buffer.storage._storage["observation"].dtype == torch.uint8
    assert all(torch.isfinite(p).all() for p in module.parameters())


def test_auxiliary_losses_train_and_set_the_slice_length(tmp_path):
    module = tiny_module(aux_losses={"fwd": "forward_dynamics", "v": "a2_winner_v"})
    data = tiny_data(eval_episodes=0)
    trainer = tiny_trainer(tmp_path, 20)
    trainer.fit(module, data)
    assert module.required_slice_length == 10 and data.replay.sampler.slice_length == 10
    for name in ("train/aux_fwd_loss", "train/aux_v_loss"):
        assert math.isfinite(float(trainer.callback_metrics[name]))


def test_embedded_actions_and_rewards_are_trained_through_the_module(tmp_path):
    module = tiny_module(aux_losses={"v": "a2_winner_v"}, aux_embed_actions_rewards=True)
    data = tiny_data(eval_episodes=0)
    trainer = tiny_trainer(tmp_path, 6)
    trainer.fit(module, data)
    aux = module.learner.aux_losses["v"]
    assert aux.action_embedding is not None and aux.reward_embedding is not None
    before = {n: p.detach().clone() for n, p in aux.named_parameters() if "embedding" in n}
    trainer = tiny_trainer(tmp_path, 12)
    trainer.fit(module, data)
    moved = [n for n, p in aux.named_parameters() if "embedding" in n and not torch.equal(p, before[n])]
    assert moved, "the embedders received no update"
