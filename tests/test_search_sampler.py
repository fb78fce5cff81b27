"""The evolutionary sampler without training: an injected fitness function scores the candidates.

Survivor selection, mutation, loss rejection, determinism, the configured space, stage barriers, dead-worker
slots, pruning, the report, and settings that must fail before any training.
"""

from __future__ import annotations

import math
import threading
import time
import warnings
from pathlib import Path

import optuna
import pytest

from a2ls_lightning.modules.aux_spec import AuxLossSpec
from a2ls_lightning.search import FitnessObjective, SearchSettings
from a2ls_lightning.search.report import PATTERNS, pattern_table
from a2ls_lightning.search.runner import open_storage, open_study, run_worker
from a2ls_lightning.search.sampler import (
    ATTR_ASSIGNED_AT,
    ATTR_ERROR,
    ATTR_IDLE,
    ATTR_ORIGIN,
    ATTR_PARENTS,
    ATTR_SLOT,
    ATTR_SPEC,
    ATTR_STAGE,
    Ledger,
    claim_of,
)
from a2ls_lightning.search.space import Genome, SearchSpace

optuna.logging.set_verbosity(optuna.logging.WARNING)

FAST = {"poll_seconds": 0.01, "claim_settle_seconds": 0.0}


def settings(tmp_path: Path, **overrides) -> SearchSettings:
    values = dict(population=8, stages=3, max_horizon=4, storage=f"sqlite:///{tmp_path / 'search.db'}",
                  study_name="test", **FAST)
    values.update(overrides)
    return SearchSettings(**values)


def fitness(spec: AuxLossSpec) -> float:
    """A deterministic landscape: more target states and a longer horizon are better; rewards in the target hurt."""
    return len(spec.target_state_offsets) + 0.3 * spec.horizon - 2.0 * len(spec.target_reward_offsets)


def search(config: SearchSettings, score=fitness, on_reject=None, storage=None) -> optuna.Study:
    """Run a whole search in this process; in memory unless a storage is given (the logic is the same)."""
    storage = optuna.storages.InMemoryStorage() if storage is None else storage
    study = open_study(config, {}, storage=storage, on_reject=on_reject)
    run_worker(study, FitnessObjective(score), config)
    return study


def holders(study: optuna.Study, config: SearchSettings) -> list[optuna.trial.FrozenTrial]:
    ledger = Ledger(study.get_trials(), config.population, config.stages)
    assert ledger.complete
    return [ledger.holders[key] for key in sorted(ledger.holders)]


def test_survivors_are_the_top_fraction_and_share_the_children(tmp_path):
    config = settings(tmp_path, survivor_fraction=0.25)
    trials = holders(search(config), config)
    assert config.survivors == 2
    for stage in range(1, config.stages):
        previous = [t for t in trials if t.user_attrs[ATTR_STAGE] == stage - 1]
        ranked = sorted(previous, key=lambda t: (-t.value, t.user_attrs[ATTR_SLOT]))
        top = {t.user_attrs[ATTR_SPEC] for t in ranked[: config.survivors]}
        children = [t for t in trials if t.user_attrs[ATTR_STAGE] == stage]
        parents = [p for t in children for p in t.user_attrs[ATTR_PARENTS]]
        assert set(parents) == top, f"stage {stage}: parents {set(parents)} are not the top {top}"
        assert sorted(parents.count(p) for p in top) == [4, 4]  # round robin: 8 children for 2 survivors


def test_children_differ_from_parents_and_no_candidate_is_trained_twice(tmp_path):
    config = settings(tmp_path, crossover_probability=0.3)
    trials = holders(search(config), config)
    specs = [t.user_attrs[ATTR_SPEC] for t in trials]
    assert len(specs) == len(set(specs)) == config.population * config.stages
    origins = {t.user_attrs[ATTR_ORIGIN].split(":")[0] for t in trials}
    assert {"random", "mutation", "crossover"} <= origins
    for t in trials:
        for parent in t.user_attrs[ATTR_PARENTS]:
            assert AuxLossSpec.parse(parent) != AuxLossSpec.parse(t.user_attrs[ATTR_SPEC])


def test_rejected_candidates_are_never_evaluated(tmp_path):
    # A tiny space (H = 1, mse only, no negatives) makes invalid children, pure copies and duplicates common.
    config = settings(tmp_path, population=6, max_horizon=1, operators=["mse"], negatives=[False],
                      init_density=0.5, mutation_flips=1)
    rejected: list[tuple[int, str, str]] = []
    evaluated: list[str] = []

    def score(spec: AuxLossSpec) -> float:
        evaluated.append(str(spec))
        return fitness(spec)

    search(config, score, on_reject=lambda *r: rejected.append(r))
    categories = {reason.split(":")[0] for _, _, reason in rejected}
    assert {"invalid", "duplicate"} <= categories, categories
    assert len(evaluated) == len(set(evaluated)) == config.population * config.stages
    rejected_texts = {text for _, text, reason in rejected if not reason.startswith("duplicate")}
    evaluated_texts = {Genome.of(AuxLossSpec.parse(t)).text() for t in evaluated}
    assert not evaluated_texts & rejected_texts
    for text in evaluated:  # every evaluated loss is valid and no pure copy of raw elements
        spec = AuxLossSpec.parse(text)
        raw_targets = spec.target_action_offsets or spec.target_reward_offsets
        assert not (set(spec.targets) <= set(spec.inputs) and raw_targets)


def test_loss_rejection_reasons():
    space = SearchSpace(max_horizon=2, operators=("mse", "nmse"), negatives=(False,))
    s0, s1, a0, r0 = ("s", 0), ("s", 1), ("a", 0), ("r", 0)
    cases = {
        Genome(1, frozenset({s0, a0}), frozenset({a0}), "mse", False): "pure copy",
        Genome(1, frozenset({a0}), frozenset({s1}), "mse", False): "invalid",  # no input state
        Genome(1, frozenset({s0}), frozenset(), "mse", False): "invalid",
        Genome(3, frozenset({s0}), frozenset({s1}), "mse", False): "outside",
        Genome(1, frozenset({s0}), frozenset({s1}), "cosine", False): "outside",
        Genome(1, frozenset({s0}), frozenset({s1}), "mse", True): "outside",
    }
    for genome, category in cases.items():
        spec, reason = space.admit(genome)
        assert spec is None and reason.startswith(category), (genome.text(), reason)
    spec, reason = space.admit(Genome(1, frozenset({s0}), frozenset({s0}), "mse", False))
    assert spec == AuxLossSpec.preset("state_reconstruction") and reason == ""  # state-only copies are allowed
    assert space.admit(Genome(2, frozenset({s0, a0, r0}), frozenset({s1}), "nmse", False))[0] is not None


def _candidates(study: optuna.Study, config: SearchSettings) -> list[tuple[int, int, str]]:
    return [(t.user_attrs[ATTR_STAGE], t.user_attrs[ATTR_SLOT], t.user_attrs[ATTR_SPEC])
            for t in holders(study, config)]


def test_same_study_and_seed_give_the_same_candidates(tmp_path):
    first = settings(tmp_path, sampler_seed=7, crossover_probability=0.2)
    other = settings(tmp_path, sampler_seed=8, crossover_probability=0.2)
    a = _candidates(search(first), first)
    assert a == _candidates(search(first, storage=first.storage), first)  # a fresh study, in a database this time
    assert a != _candidates(search(other), other)


def test_horizon_operator_and_negatives_stay_inside_the_space(tmp_path):
    config = settings(tmp_path, max_horizon=2, operators=["nmse", "cosine"], negatives=[True],
                      mutation_weights={"flip": 0.2, "horizon": 0.4, "operator": 0.4}, init_density=0.5,
                      seed_presets=[])
    specs = [AuxLossSpec.parse(t.user_attrs[ATTR_SPEC]) for t in holders(search(config), config)]
    assert {s.horizon for s in specs} == {1, 2}
    assert {s.operator for s in specs} == {"nmse", "cosine"}
    assert all(s.negatives for s in specs)


def test_presets_seed_the_first_stage(tmp_path):
    config = settings(tmp_path, stages=1, seed_presets=["forward_dynamics", "inverse_dynamics"])
    trials = holders(search(config), config)
    assert [t.user_attrs[ATTR_SPEC] for t in trials[:2]] == [
        str(AuxLossSpec.preset("forward_dynamics")), str(AuxLossSpec.preset("inverse_dynamics"))]
    assert trials[0].user_attrs[ATTR_ORIGIN] == "preset:forward_dynamics"


def test_concurrent_workers_wait_for_the_previous_stage(tmp_path):
    # Two workers (threads, each with its own connection) on one SQLite study, uneven scoring times.
    config = settings(tmp_path, population=4, stages=3, claim_settle_seconds=0.05)
    open_study(config, {})

    def slow(spec: AuxLossSpec) -> float:
        time.sleep(0.05 + 0.02 * (len(str(spec)) % 5))
        return fitness(spec)

    threads = [threading.Thread(target=lambda: run_worker(open_study(config, {}), FitnessObjective(slow), config))
               for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    study = open_study(config, {})
    trials = holders(study, config)
    assert len({t.user_attrs[ATTR_SPEC] for t in trials}) == config.population * config.stages
    for stage in range(1, config.stages):
        finished = max(t.datetime_complete.timestamp() for t in trials if t.user_attrs[ATTR_STAGE] == stage - 1)
        assigned = min(t.user_attrs[ATTR_ASSIGNED_AT] for t in trials if t.user_attrs[ATTR_STAGE] == stage)
        assert assigned >= finished - 1e-3, f"stage {stage} got candidates before stage {stage - 1} finished"
    assert len(study.get_trials(states=[optuna.trial.TrialState.COMPLETE])) == config.population * config.stages


def test_a_dead_workers_slot_is_trained_again_and_nothing_else_repeats(tmp_path):
    config = settings(tmp_path, population=3, stages=2, heartbeat_interval=1, grace_period=2)
    study = open_study(config, {})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # Optuna: heartbeats are meant for optimize(); here we play a dying worker
        done = study.ask()  # a candidate that finishes
        study.tell(done, fitness(AuxLossSpec.parse(done.user_attrs[ATTR_SPEC])))
        dead = study.ask()  # a candidate whose worker dies: claimed, heartbeat recorded, never told
    dead_claim = (dead.user_attrs[ATTR_STAGE], dead.user_attrs[ATTR_SLOT])
    seen: list[str] = []

    def score(spec: AuxLossSpec) -> float:
        seen.append(str(spec))
        return fitness(spec)

    run_worker(study, FitnessObjective(score), config)  # waits out the grace period, then retrains the slot
    assert study.get_trials()[dead.number].state == optuna.trial.TrialState.FAIL
    ledger = Ledger(study.get_trials(), config.population, config.stages)
    assert ledger.complete
    redo = ledger.holder(*dead_claim)
    assert redo.number != dead.number and redo.user_attrs[ATTR_SPEC] == dead.user_attrs[ATTR_SPEC]
    assert done.user_attrs[ATTR_SPEC] not in seen  # the finished candidate is not trained again
    assert len(seen) == len(set(seen)) == config.population * config.stages - 1


def test_intermediate_values_feed_the_pruner(tmp_path, monkeypatch):
    from a2ls_lightning.search import objective as objective_module
    from a2ls_lightning.search.objective import Budget

    class AlwaysPrune(optuna.pruners.BasePruner):
        def prune(self, study, trial) -> bool:
            return True

    def fake_train_run(base, aux, seed, budget, root, on_eval=None, keep_logs=False):
        curve = []
        for steps, value in ((1000, 1.0), (2000, 3.0), (3000, 5.0)):
            curve.append((steps, value))
            on_eval(steps, value)
        return curve

    monkeypatch.setattr(objective_module, "train_run", fake_train_run)
    config = settings(tmp_path, population=2, stages=1)
    study = open_study(config, {})
    budget = Budget(env_steps=3000, max_steps=10, warmup_env_steps=100, eval_interval=1000)
    study.pruner = AlwaysPrune()
    objective = objective_module.CandidateObjective({}, config, budget, log=lambda _: None)
    study.optimize(objective, n_trials=1)
    trial = study.get_trials()[0]
    assert trial.state == optuna.trial.TrialState.PRUNED
    assert trial.intermediate_values == {1000: 1.0}  # stopped at the first evaluation
    study.pruner = optuna.pruners.NopPruner()
    study.optimize(objective, n_trials=1)
    trial = study.get_trials()[1]
    assert trial.state == optuna.trial.TrialState.COMPLETE and trial.value == pytest.approx(3.0)  # AULC
    assert trial.intermediate_values == {1000: 1.0, 2000: 2.0, 3000: 3.0}  # the running AULC


def test_pattern_predicates_and_table():
    preset = AuxLossSpec.preset
    assert PATTERNS["forward dynamics"](preset("forward_dynamics"))
    assert PATTERNS["forward dynamics"](preset("a2_winner"))
    assert not PATTERNS["forward dynamics"](preset("inverse_dynamics"))
    assert PATTERNS["inverse dynamics"](preset("inverse_dynamics"))
    assert PATTERNS["reward prediction"](preset("reward_prediction"))
    assert PATTERNS["action inference"](preset("action_inference"))
    assert PATTERNS["state reconstruction"](preset("state_reconstruction"))
    assert PATTERNS["more target states than input states"](preset("a2_winner_v"))
    assert not PATTERNS["more target states than input states"](preset("forward_dynamics"))
    rows = {r.pattern: r for r in pattern_table(
        [(preset("forward_dynamics"), 10.0), (preset("spr"), 12.0), (preset("reward_prediction"), 1.0),
         (preset("inverse_dynamics"), 2.0), (preset("action_inference"), 3.0)])}
    row = rows["forward dynamics"]
    assert (row.n_with, row.n_without) == (2, 3) and row.difference == pytest.approx(11.0 - 2.0)
    assert 0 < row.p_value < 0.05
    assert math.isnan(rows["state reconstruction"].p_value)  # nobody has it


def test_report_of_an_injected_search(tmp_path):
    from a2ls_lightning.search.report import write_report

    config = settings(tmp_path, population=6, stages=3)
    search(config, storage=config.storage)
    text = write_report(config.storage, config.study_name, tmp_path / "report", top=5)
    assert (tmp_path / "report" / "stages.png").stat().st_size > 1000
    assert (tmp_path / "report" / "report.md").read_text() == text
    assert "18 candidates scored" in text and "3 of 3 stages done" in text
    assert "| forward dynamics |" in text and "| more target states than input states |" in text
    assert text.count("| h=") == 5 or text.count("`h=") >= 5
    assert "a2ls fit --config" in text
    # olaux.yaml: the 5 best distinct candidates under OL-AUX, and it trains through the real command
    import yaml

    olaux = yaml.safe_load((tmp_path / "report" / "olaux.yaml").read_text())
    losses = olaux["model"]["aux_losses"]
    assert len(losses) == 5 and len(set(losses.values())) == 5
    assert olaux["trainer"]["callbacks"][-1] == {"class_path": "a2ls_lightning.callbacks.OLAux"}
    assert olaux["trainer"]["default_root_dir"] == str(tmp_path / "report" / "olaux")
    from a2ls_lightning.cli import main

    main(["fit", f"--config={tmp_path / 'report' / 'olaux.yaml'}", "--trainer.max_steps=6", "--data.warmup_steps=40",
          "--model.network.hidden_dim=32", "--data.batch_size=16", "--data.capacity=500", "--data.eval_episodes=0",
          "--trainer.enable_progress_bar=false", "--trainer.logger=false"])
    import torch

    checkpoint = torch.load(next((tmp_path / "report" / "olaux").rglob("*.ckpt")), weights_only=False)
    assert checkpoint["global_step"] == 6
    weights = next(v for k, v in checkpoint["callbacks"].items() if k.startswith("OLAux"))["weights"]
    assert sorted(weights) == sorted(losses)


# --- settings that fail before any training ------------------------------------------------------------------
@pytest.mark.parametrize("overrides, field", [
    ({"population": 1}, "search.population"),
    ({"survivor_fraction": 0.0}, "search.survivor_fraction"),
    ({"survivor_fraction": 1.5}, "search.survivor_fraction"),
    ({"operators": []}, "search.operators"),
    ({"operators": ["l1"]}, "search.operators"),
    ({"negatives": []}, "search.negatives"),
    ({"max_horizon": 0}, "search.max_horizon"),
    ({"seed_presets": ["a2_winner_v"], "max_horizon": 4}, "search.seed_presets"),
    ({"mutation_weights": {"swap": 1.0}}, "search.mutation_weights"),
    ({"fitness": "best"}, "search.fitness"),
    ({"workers": 0}, "search.workers"),
    ({"storage": "not a url"}, "search.storage"),
])
def test_bad_settings_fail_with_one_line_naming_the_field(overrides, field):
    with pytest.raises(ValueError) as info:
        SearchSettings(**overrides)
    assert str(info.value).startswith(field) and "\n" not in str(info.value)


def test_unknown_setting_and_unreachable_storage_fail_with_one_line():
    with pytest.raises(ValueError, match=r"^search\.populaton: unknown setting"):
        SearchSettings.from_mapping({"populaton": 4})
    with pytest.raises(ValueError) as info:
        open_storage("postgresql://nobody@127.0.0.1:1/none")
    assert str(info.value).startswith("storage: cannot open postgresql://nobody@127.0.0.1:1/none")
    assert "\n" not in str(info.value)


def _write_config(tmp_path: Path, search: dict, data: dict | None = None) -> Path:
    import yaml

    config = {"seed_everything": 1, "model": {"hidden_dim": 32},
              "data": {"warmup_steps": 100, "batch_size": 16, **(data or {})},
              "search": {"population": 2, "stages": 1, "budget_env_steps": 2000, "run_dir": str(tmp_path / "run"),
                         **search}}
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


@pytest.mark.parametrize("search, data, message", [
    ({"budget_env_steps": 400}, None, "search.budget_env_steps=400 is not above the warm-up"),
    ({"stages": 2, "stage_budgets": [400, 2000]}, None, "search.stage_budgets=400 is not above the warm-up"),
    ({"stages": 2, "stage_seeds": [2, 1]}, None, "search.stage_seeds=[2, 1] must not decrease"),
    ({"population": 1}, None, "search.population=1"),
    ({"survivor_fraction": 2}, None, "search.survivor_fraction=2"),
    ({"operators": []}, None, "search.operators=[] is empty"),
    ({"storage": "postgresql://nobody@127.0.0.1:1/none"}, None, "storage: cannot open"),
    ({}, {"eval_episodes": 0}, "data.eval_episodes=0"),
    ({}, {"batch_size": 0}, "batch_size=0 must be >= 1"),
])
def test_the_command_fails_before_any_training(tmp_path, search, data, message):
    from a2ls_lightning.cli.search import main

    with pytest.raises(ValueError) as info:
        main(["--config", str(_write_config(tmp_path, search, data))])
    assert message in str(info.value) and "\n" not in str(info.value)
    assert not (tmp_path / "run" / "candidates").exists()


def test_joining_a_study_with_other_settings_fails(tmp_path):
    open_study(settings(tmp_path), {"model": {"hidden_dim": 32}})
    with pytest.raises(ValueError, match="population: study has 8, this config 6"):
        open_study(settings(tmp_path, population=6), {"model": {"hidden_dim": 32}})
    with pytest.raises(ValueError, match="hidden_dim: study has 32, this config 64"):
        open_study(settings(tmp_path), {"model": {"hidden_dim": 64}})
    open_study(settings(tmp_path, workers=3, poll_seconds=1.0), {"model": {"hidden_dim": 32}})  # operational: fine


def test_a_trial_asked_after_the_end_is_idle_and_claims_nothing(tmp_path):
    config = settings(tmp_path, population=2, stages=1)
    study = search(config)
    study.optimize(FitnessObjective(fitness), n_trials=1)  # e.g. a worker that started as the search finished
    idle = study.get_trials()[-1]
    assert idle.state == optuna.trial.TrialState.PRUNED and idle.user_attrs[ATTR_IDLE] is True
    assert claim_of(idle) is None and ATTR_SPEC not in idle.user_attrs
    assert len(Ledger(study.get_trials(), 2, 1).holders) == 2


def test_a_candidate_whose_training_raises_is_recorded_and_not_retried(tmp_path, monkeypatch):
    from a2ls_lightning.search import objective as objective_module
    from a2ls_lightning.search.objective import Budget

    calls: list[str] = []

    def fake_train_run(base, aux, seed, budget, root, on_eval=None, keep_logs=False):
        calls.append(aux["cand"])
        if len(calls) == 2:
            raise RuntimeError("physics exploded")
        return [(1000, float(len(calls)))]

    monkeypatch.setattr(objective_module, "train_run", fake_train_run)
    config = settings(tmp_path, population=3, stages=2)
    study = open_study(config, {}, storage=optuna.storages.InMemoryStorage())
    budget = Budget(env_steps=1000, max_steps=10, warmup_env_steps=100, eval_interval=1000)
    run_worker(study, objective_module.CandidateObjective({}, config, budget, log=lambda _: None), config)
    failed = [t for t in study.get_trials() if t.state == optuna.trial.TrialState.FAIL]
    assert len(failed) == 1 and failed[0].user_attrs[ATTR_ERROR] == "RuntimeError: physics exploded"
    assert len(calls) == len(set(calls)) == 6  # the failed candidate was not trained again
    ledger = Ledger(study.get_trials(), 3, 2)
    assert ledger.complete and failed[0] not in ledger.ranked(claim_of(failed[0])[0])
