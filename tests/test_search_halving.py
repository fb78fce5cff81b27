"""Successive halving across stages with a SAC baseline per stage: settings, seeds and budgets per stage, the paired
fitness and its lower confidence bound, promotion of survivors, resume, and the report (injected fitness, no
training; the real thing end to end is in tests/test_search_e2e.py)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import optuna
import pytest
from scipy import stats

from a2ls_lightning.modules.aux_spec import AuxLossSpec
from a2ls_lightning.search import SearchSettings
from a2ls_lightning.search.objective import SeedFitnessObjective
from a2ls_lightning.search.paired import paired_fitness
from a2ls_lightning.search.runner import open_study, run_worker
from a2ls_lightning.search.sampler import (
    ATTR_BASELINE,
    ATTR_ORIGIN,
    ATTR_SEED_FITNESS,
    ATTR_SLOT,
    ATTR_SPEC,
    ATTR_STAGE,
    BASELINE_SPEC,
    Ledger,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)

HALVING = dict(stages=3, stage_populations=[8, 2, 1], stage_seeds=[1, 3, 4], stage_budgets=[5000, 5000, 10000],
               survivor_fraction=0.25, promote=True, baseline=True, fresh_seeds=True, max_horizon=4,
               poll_seconds=0.01, claim_settle_seconds=0.0)


def halving(tmp_path: Path, **overrides) -> SearchSettings:
    values = dict(HALVING, storage=f"sqlite:///{tmp_path / 'search.db'}", study_name="halving")
    values.update(overrides)
    return SearchSettings(**values)


def seed_effect(seed: int) -> float:
    """What every run on ``seed`` shares (its luck): large against the differences between losses."""
    return 50.0 * math.sin(3.7 * seed)


def quality(spec: AuxLossSpec) -> float:
    return 3.0 * len(spec.target_state_offsets) - 4.0 * len(spec.target_reward_offsets) + 0.5 * spec.horizon


def fitness(spec: AuxLossSpec | None, seed: int) -> float:
    """Baseline 100 + luck; a candidate adds its quality and a small seed-by-candidate noise."""
    if spec is None:
        return 100.0 + seed_effect(seed)
    wobble = math.sin(seed * 1.3 + len(str(spec)))
    return 100.0 + seed_effect(seed) + quality(spec) + wobble


def run(config: SearchSettings, calls: list | None = None, max_trials: int | None = None) -> optuna.Study:
    def scored(spec, seed):
        if calls is not None:
            calls.append((None if spec is None else str(spec), seed))
        return fitness(spec, seed)

    study = open_study(config, {}, storage=config.storage)
    run_worker(study, SeedFitnessObjective(scored, config, first_seed=1), config, max_trials=max_trials)
    return study


# --- settings ----------------------------------------------------------------------------------------------
def test_stage_settings_give_populations_seeds_budgets_and_slots(tmp_path):
    config = halving(tmp_path)
    assert config.populations == (8, 2, 1) and config.seed_counts == (1, 3, 4)
    assert config.budgets == (5000, 5000, 10000) and config.slots == (9, 3, 2)
    assert [config.survivors_of(s) for s in range(3)] == [2, 1, 1]
    assert [config.seeds_of(s, 1) for s in range(3)] == [[1], [2, 3, 4], [5, 6, 7, 8]]  # fresh seeds per stage
    shared = halving(tmp_path, fresh_seeds=False)
    assert [shared.seeds_of(s, 1) for s in range(3)] == [[1], [1, 2, 3], [1, 2, 3, 4]]
    plain = SearchSettings(population=4, stages=2, budget_env_steps=700, seeds_per_candidate=2)
    assert plain.populations == (4, 4) and plain.budgets == (700, 700) and plain.seed_counts == (2, 2)
    assert plain.slots == (4, 4)


@pytest.mark.parametrize("overrides, message", [
    ({"stage_populations": [8, 2]}, "search.stage_populations=[8, 2] must be a list of 3 integers (one per stage)"),
    ({"stage_budgets": 500}, "search.stage_budgets=500 must be a list of 3 integers"),
    ({"stage_seeds": [1, 0, 2]}, "search.stage_seeds[1]=0 must be an integer >= 1"),
    ({"stage_populations": [1, 1, 1]}, "search.stage_populations[0]=1 must be an integer >= 2"),
    ({"stage_budgets": [1000, 500, 1000]}, "search.stage_budgets=[1000, 500, 1000] must not decrease"),
    ({"stage_seeds": [3, 1, 5]}, "search.stage_seeds=[3, 1, 5] must not decrease from stage to stage"),
    ({"stage_populations": [8, 1, 1]}, "search.stage_populations[1]=1 must be >= the 2 survivors of stage 0"),
    ({"baseline": "yes"}, "search.baseline='yes' must be true or false"),
    ({"promote": 1}, "search.promote=1 must be true or false"),
    ({"confidence": 1.0}, "search.confidence=1.0 must be in (0, 1)"),
    ({"confidence": 0}, "search.confidence"),
])
def test_bad_stage_settings_fail_in_one_line(tmp_path, overrides, message):
    with pytest.raises(ValueError) as info:
        halving(tmp_path, **overrides)
    text = str(info.value)
    assert "\n" not in text and text.startswith(message.split("=")[0]) and message in text


# --- the paired fitness ------------------------------------------------------------------------------------
def test_paired_fitness_is_the_by_hand_difference_and_t_interval():
    candidate, baseline = [110.0, 135.0, 92.0], [100.0, 120.0, 95.0]
    d = [10.0, 15.0, -3.0]
    mean = sum(d) / 3
    sd = math.sqrt(sum((x - mean) ** 2 for x in d) / 2)
    half = stats.t.ppf(0.95, 2) * sd / math.sqrt(3)
    paired = paired_fitness(candidate, baseline, confidence=0.9)
    assert paired.mean == pytest.approx(mean) and paired.std == pytest.approx(sd) and paired.n == 3
    assert paired.low == pytest.approx(mean - half) and paired.high == pytest.approx(mean + half)
    alone = paired_fitness(candidate, None, 0.9)
    assert alone.mean == pytest.approx(np.mean(candidate)) and not alone.paired
    one = paired_fitness([120.0], [100.0])
    assert one.mean == 20.0 and math.isnan(one.low) and "no interval" in one.interval()
    with pytest.raises(ValueError, match="3 candidate seeds against 2 baseline seeds"):
        paired_fitness(candidate, baseline[:2])


def test_survivors_rank_by_the_lower_bound_not_the_mean():
    study = optuna.create_study(direction="maximize")

    def add(slot: int, seeds: list[float], baseline: bool = False) -> None:
        attrs = {ATTR_STAGE: 0, ATTR_SLOT: slot, ATTR_SEED_FITNESS: seeds,
                 ATTR_SPEC: BASELINE_SPEC if baseline else f"h=1 s0 -> s1,a0 {'mse' if slot == 1 else 'nmse'}"}
        if baseline:
            attrs[ATTR_BASELINE] = True
        study.add_trial(optuna.trial.create_trial(value=float(np.mean(seeds)), user_attrs=attrs))

    add(0, [100.0, 120.0, 80.0], baseline=True)
    add(1, [150.0, 100.0, 90.0])  # paired: +50, -20, +10: mean 13.3, wide
    add(2, [112.0, 131.0, 89.0])  # paired: +12, +11, +9: mean 10.7, narrow
    ledger = Ledger(study.get_trials(), [3], 1)
    ranked = ledger.ranked(0, confidence=0.9)
    assert [t.user_attrs[ATTR_SLOT] for t in ranked] == [2, 1]
    assert ledger.paired(ranked[1]).mean > ledger.paired(ranked[0]).mean
    assert ledger.paired(ranked[0]).low > ledger.paired(ranked[1]).low


# --- a whole halving search --------------------------------------------------------------------------------
def test_halving_search_budgets_seeds_baseline_and_promotion(tmp_path):
    config = halving(tmp_path)
    calls: list = []
    study = run(config, calls)
    ledger = Ledger(study.get_trials(), config.slots, config.stages)
    assert ledger.complete
    for stage in range(config.stages):
        trials = ledger.stage_trials(stage)
        assert len(trials) == config.slots[stage]
        base = ledger.holder(stage, 0)
        assert base.user_attrs[ATTR_BASELINE] and base.user_attrs[ATTR_SPEC] == BASELINE_SPEC
        seeds = config.seeds_of(stage, 1)
        for trial in trials:  # every run of the stage on its seeds, the baseline included (common random numbers)
            assert len(trial.user_attrs[ATTR_SEED_FITNESS]) == len(seeds)
        stage_calls = [c for c in calls if c[1] in seeds]
        assert len(stage_calls) == config.slots[stage] * len(seeds)
    assert len(calls) == sum(p * k for p, k in zip(config.slots, config.seed_counts))
    for stage in (1, 2):  # promotion: the next stage is the previous stage's survivors, ranked by the paired LCB
        top = [t.user_attrs[ATTR_SPEC] for t in ledger.ranked(stage - 1, config.confidence)]
        members = [t for t in ledger.stage_trials(stage) if not t.user_attrs.get(ATTR_BASELINE)]
        assert [t.user_attrs[ATTR_SPEC] for t in members] == top[: config.survivors_of(stage - 1)]
        assert all(t.user_attrs[ATTR_ORIGIN] == "promoted" for t in members)
    # the paired fitness removes the seed's luck: candidate minus baseline, seed by seed
    final = ledger.ranked(2)[0]
    spec = AuxLossSpec.parse(final.user_attrs[ATTR_SPEC])
    expected = [fitness(spec, s) - fitness(None, s) for s in config.seeds_of(2, 1)]
    assert ledger.paired(final).mean == pytest.approx(np.mean(expected))


def test_resume_mid_stage_counts_every_run_once(tmp_path):
    config = halving(tmp_path)
    calls: list = []
    run(config, calls, max_trials=5)  # stops inside stage 0
    ledger = Ledger(optuna.load_study(study_name=config.study_name, storage=config.storage).get_trials(),
                    config.slots, config.stages)
    assert not ledger.stage_done(0) and len(calls) == 5
    study = run(config, calls)  # the same search again: finishes it
    complete = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == sum(config.slots)
    assert len(calls) == sum(p * k for p, k in zip(config.slots, config.seed_counts))
    assert len({(t.user_attrs[ATTR_STAGE], t.user_attrs[ATTR_SLOT]) for t in complete}) == len(complete)


def test_report_ranks_by_the_lower_bound_and_shows_intervals(tmp_path):
    from a2ls_lightning.search.report import load_results, write_report

    config = halving(tmp_path)
    run(config)
    results = load_results(config.storage, config.study_name)
    assert sorted(results.baselines) == [0, 1, 2] and results.baselines[2][1] == 4
    ranked = results.ranked()
    assert [s.stage for s in ranked[:3]] == [2, 1, 1]  # the highest fidelity reached first
    assert ranked[1].score.low >= ranked[2].score.low
    text = write_report(config.storage, config.study_name, tmp_path / "report", top=4)
    assert "improvement over SAC (paired): mean [90% CI]" in text
    assert "| 0 | 8 of 8 | 1 | 5000 |" in text and "| 2 | 1 of 1 | 4 | 10000 |" in text
    assert " (n=4)" in text and "no interval" in text
    assert "stage-0 candidates with and without each pattern" in text
