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


def _benchmark_script():
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "benchmark_learning.py"
    spec = importlib.util.spec_from_file_location("benchmark_learning", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_planet_report_marks_a_difference_to_sac_beyond_the_spread_only_where_the_ranges_do_not_overlap():
    versus = _benchmark_script()._versus_sac
    sac = [95.0, 100.0, 105.0]  # mean 100, population std 4.08
    diff, p = versus([110.0, 120.0, 130.0], sac, "fwd")  # std 8.16: 100 + 4.08 < 120 - 8.16
    assert diff == "+20.0 beyond spread" and 0 < float(p) < 0.1
    assert versus([100.0, 114.0, 128.0], sac, "fwd")[0] == "+14.0"  # 100 + 4.08 overlaps 114 - 11.43
    assert versus([79.0, 81.0], sac, "fwd")[0] == "-20.0 beyond spread"
    assert versus([150.0], sac, "fwd") == ("+50.0 (1 seed)", "–")
    assert versus(sac, sac, "sac") == ("–", "–") and versus(sac, [], "fwd") == ("–", "–")
