"""Replay ratio (``data.replay_ratio``: updates per agent step): the schedule, the env-step counts through
``a2ls fit`` and exact resume between two updates that share an agent step."""

from __future__ import annotations

import re
from fractions import Fraction

import pytest
from conftest import assert_same_state, resume_run, run

from a2ls_lightning.data.replay_ratio import agent_steps_for, parse_replay_ratio, steps_before_update, updates_for

TINY = ["--model.network.hidden_dim=32", "--model.network.feature_dim=16", "--model.network.encoder_hidden_dim=16",
        "--data.batch_size=16",
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


# 8 updates, fewer than one logging interval: nothing is logged, on purpose (the counts are read from the done line).
@pytest.mark.filterwarnings("ignore:The number of training batches .* is smaller than the logging interval")
@pytest.mark.parametrize("ratio, env_steps", [(0.5, 4 * (20 + 16)), (1, 4 * (20 + 8)), (2, 4 * (20 + 4)),
                                              (4, 4 * (20 + 2))])
def test_a2ls_fit_counts_updates_and_env_steps(tmp_path, monkeypatch, capsys, ratio, env_steps):
    """env_steps = action_repeat · (warmup_steps + ceil(max_steps / replay_ratio)), max_steps updates."""
    monkeypatch.chdir(tmp_path)
    code, stderr = run(["fit", *TINY, f"--data.replay_ratio={ratio}", "--trainer.default_root_dir=run"], capsys)
    assert code == 0, stderr[-3000:]
    done = re.search(r"a2ls: done: update (\d+), no evaluation, (\d+) env steps", stderr)
    assert done and (int(done[1]), int(done[2])) == (8, env_steps), stderr[-1000:]


def test_replay_ratio_and_env_steps_per_update_together_are_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)  # the default root folder is the working directory
    code, stderr = run(["fit", *TINY, "--data.replay_ratio=2", "--data.env_steps_per_update=2"], capsys)
    assert code != 0
    assert "data.env_steps_per_update=2 and data.replay_ratio=2.0 both set the collection" in stderr
    assert not (tmp_path / "lightning_logs").exists()


@pytest.mark.parametrize("module_settings", [None, {"obs_norm": True}])
def test_resume_at_ratio_2_between_two_updates_of_one_agent_step(tmp_path, module_settings):
    """A checkpoint after update 151 (odd: mid-group, the next update collects nothing) resumes exactly, with and
    without observation normalisation (its running statistics are module buffers: compared too)."""
    kw = {"module_settings": module_settings, "replay_ratio": 2}
    straight, d_straight, _ = resume_run(tmp_path / "a", 300, **kw)
    ckpt = tmp_path / "b" / "half.ckpt"
    resume_run(tmp_path / "b", 151, ckpt_out=ckpt, **kw)
    resumed, d_resumed, trainer = resume_run(tmp_path / "b", 300, ckpt_in=str(ckpt), **kw)
    assert trainer.global_step == 300
    # 40 warm-up agent steps, then one per 2 updates: 150 policy steps, at action repeat 4
    assert d_straight.collector.env_steps == 4 * (40 + 150) == d_resumed.collector.env_steps
    assert_same_state(straight, resumed, d_straight, d_resumed)
    if module_settings:  # the statistics were updated (by every training batch) and match (compared above)
        counts = [v for name, v in straight.state_dict().items() if name.endswith(".count")]
        assert counts and all(float(c) > 0 for c in counts)


@pytest.mark.parametrize("ratio, log_every, group", [(2, 10, 2), (4, 20, 4), (4, 10, 2)])
def test_grouped_updates_equal_one_update_per_step(tmp_path, monkeypatch, ratio, log_every, group):
    """At an integer ratio the updates that share an agent step run in one training_step (the group: the ratio,
    or its largest divisor that log_every_n_steps is a multiple of): the same parameters, weighting state,
    replay, evaluations and logged steps as one update per training_step."""
    import csv

    import lightning.pytorch as pl
    from conftest import tiny_data, tiny_module, tiny_trainer

    from a2ls_lightning.callbacks import OLAux
    from a2ls_lightning.data.datamodule import ReplayDataModule

    def run(folder):
        pl.seed_everything(7)
        module = tiny_module(aux_losses={"fwd": "forward_dynamics", "inv": "inverse_dynamics"})
        data = tiny_data(seed=7, eval_interval=300, replay_ratio=ratio)
        rule = OLAux()
        trainer = tiny_trainer(folder, 120, callbacks=[rule], log_every_n_steps=log_every,
                               logger=pl.loggers.CSVLogger(folder, name="", version=""))
        trainer.fit(module, data)
        with open(folder / "metrics.csv") as f:
            logged = [(row["step"], row.get("train/critic_loss"), row.get("eval/return")) for row in csv.DictReader(f)]
        return module, data, rule, trainer, logged

    grouped = run(tmp_path / "grouped")
    assert grouped[1].updates_per_batch == group
    assert grouped[3].fit_loop.epoch_loop.batch_progress.total.completed == 120 // group  # training_steps
    monkeypatch.setattr(ReplayDataModule, "updates_per_batch", property(lambda self: 1))
    single = run(tmp_path / "single")
    assert single[3].fit_loop.epoch_loop.batch_progress.total.completed == 120
    (a, da, ra, ta, la), (b, db, rb, tb, lb) = grouped, single
    assert ta.global_step == tb.global_step == 120
    assert_same_state(a, b, da, db)
    assert ra.weights == rb.weights
    assert la == lb and any(c for _, c, _ in la) and any(e for _, _, e in la)  # train and eval rows, same steps


def test_the_final_evaluation_is_not_repeated_when_the_last_updates_collect_nothing(tmp_path):
    """Ratio 2, 120 updates after 40 warm-up steps: 400 env steps, reached before update 119; the scheduled
    evaluation at 400 is the run's last (the final one would score the same env steps again)."""
    import lightning.pytorch as pl
    from conftest import tiny_data, tiny_module, tiny_trainer

    pl.seed_everything(3)
    data = tiny_data(replay_ratio=2, eval_interval=200, eval_episodes=1)
    calls = []
    data.add_eval_listener(lambda env_steps, value: calls.append(env_steps))
    tiny_trainer(tmp_path, 120).fit(tiny_module(aux_losses=None), data)
    assert data.collector.env_steps == 400 and calls == [200, 400]
    assert data.evaluator.state_dict() == {"next_eval": 600, "last_eval": 400}
