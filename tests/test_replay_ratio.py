"""Replay ratio (``data.replay_ratio``: updates per agent step): the schedule, the env-step counts through
``a2ls fit`` and exact resume between two updates that share an agent step."""

from __future__ import annotations

import re
from fractions import Fraction

import pytest
from test_cli import a2ls
from test_resume import _assert_same_state

from a2ls_lightning.data.replay_ratio import agent_steps_for, parse_replay_ratio, steps_before_update, updates_for

TINY = ["--model.hidden_dim=32", "--model.feature_dim=16", "--model.encoder_hidden_dim=16", "--data.batch_size=16",
        "--data.capacity=3000", "--data.warmup_steps=20", "--data.eval_episodes=0", "--data.action_repeat=4",
        "--trainer.enable_progress_bar=false", "--trainer.max_steps=8"]


@pytest.mark.parametrize("value, exact", [(0.5, Fraction(1, 2)), (1, Fraction(1)), (2, Fraction(2)), (4, Fraction(4)),
                                          (0.1, Fraction(1, 10)), ("1/3", Fraction(1, 3)), (2 / 3, Fraction(2, 3))])
def test_ratios_are_exact_fractions(value, exact):
    assert parse_replay_ratio(value) == exact


@pytest.mark.parametrize("ratio", ["1/4", "1/2", "2/3", "1", "2", "4", "3/2"])
def test_the_schedule_collects_exactly_updates_over_ratio(ratio):
    r = parse_replay_ratio(ratio)
    for updates in range(0, 41):
        collected = sum(steps_before_update(u, r) for u in range(updates))
        assert collected == agent_steps_for(updates, r) == -(-updates // r)  # ceil(updates / r)
        # and the budget's inverse: that many agent steps need no fewer updates
        assert agent_steps_for(updates_for(collected, r), r) >= collected
    if r >= 1:  # one agent step before every r-th update (r integer), and never two
        assert max(steps_before_update(u, r) for u in range(40)) == 1


@pytest.mark.parametrize("value", [0, -1, float("nan"), float("inf"), "abc", 0.31831])
def test_bad_ratios_give_one_line_naming_the_field(value):
    with pytest.raises(ValueError, match=r"^data\.replay_ratio=.*allowed: a number > 0") as err:
        parse_replay_ratio(value)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize("ratio, env_steps", [(0.5, 4 * (20 + 16)), (1, 4 * (20 + 8)), (2, 4 * (20 + 4)),
                                              (4, 4 * (20 + 2))])
def test_a2ls_fit_counts_updates_and_env_steps(tmp_path, ratio, env_steps):
    """env_steps = action_repeat · (warmup_steps + ceil(max_steps / replay_ratio)), max_steps updates."""
    out = a2ls("fit", *TINY, f"--data.replay_ratio={ratio}", "--trainer.default_root_dir=run", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    done = re.search(r"a2ls: done: update (\d+), no evaluation, (\d+) env steps", out.stderr)
    assert done and (int(done[1]), int(done[2])) == (8, env_steps), out.stderr[-1000:]


def test_replay_ratio_and_env_steps_per_update_together_are_refused(tmp_path):
    out = a2ls("fit", *TINY, "--data.replay_ratio=2", "--data.env_steps_per_update=2", cwd=tmp_path)
    assert out.returncode != 0
    assert "data.env_steps_per_update=2 and data.replay_ratio=2.0 both set the collection" in out.stderr
    assert not (tmp_path / "lightning_logs").exists()


def test_resume_at_ratio_2_between_two_updates_of_one_agent_step(tmp_path):
    """A checkpoint after update 151 (odd: the next update collects nothing) resumes exactly."""
    from test_resume import _run

    straight, d_straight, _ = _run(tmp_path / "a", 300, replay_ratio=2)
    ckpt = tmp_path / "b" / "half.ckpt"
    _run(tmp_path / "b", 151, ckpt_out=ckpt, replay_ratio=2)
    resumed, d_resumed, trainer = _run(tmp_path / "b", 300, ckpt_in=str(ckpt), replay_ratio=2)
    assert trainer.global_step == 300
    # 40 warm-up agent steps, then one per 2 updates: 150 policy steps, at action repeat 4
    assert d_straight.collector.env_steps == 4 * (40 + 150) == d_resumed.collector.env_steps
    _assert_same_state(straight, resumed, d_straight, d_resumed)
