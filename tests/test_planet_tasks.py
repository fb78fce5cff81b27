"""The six PlaNet-benchmark tasks train with A2-winner-v without special cases: the auxiliary losses' shapes
follow each task's observation and action sizes."""

from __future__ import annotations

import math

import pytest
from conftest import tiny_data, tiny_module, tiny_trainer

PLANET = {"cartpole-swingup": 8, "reacher-easy": 4, "cheetah-run": 4, "finger-spin": 2, "ball_in_cup-catch": 4,
          "walker-walk": 2}


@pytest.mark.parametrize("task", sorted(PLANET))
def test_each_planet_task_trains_a_few_updates_with_a2_winner_v(tmp_path, task):
    module = tiny_module(aux_losses={"a2v": "a2_winner_v"})
    data = tiny_data(task=task, action_repeat=PLANET[task], eval_episodes=0, warmup_steps=30)
    trainer = tiny_trainer(tmp_path, 4, log_every_n_steps=2)
    trainer.fit(module, data)
    assert trainer.global_step == 4
    obs_dim, action_dim = data.observation_shape[0], data.action_dim
    aux = module.learner.aux_losses["a2v"]
    assert aux.action_dim == action_dim and module._env_spec == ((obs_dim,), action_dim)
    assert math.isfinite(float(trainer.callback_metrics["train/aux_a2v_loss"]))
