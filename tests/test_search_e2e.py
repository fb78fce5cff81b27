"""Real tiny searches end to end: real Lightning training of every candidate, tiny networks and budgets.

Two worker processes share the embedded SQLite study; a worker killed mid-candidate loses only that candidate
and running the same command again finishes the search without repeating finished candidates.
"""

from __future__ import annotations

import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import optuna
import pytest
import yaml

from a2ls_lightning.search.objective import budget_for
from a2ls_lightning.search.runner import open_storage
from a2ls_lightning.search.sampler import (
    ATTR_CURVES,
    ATTR_SPEC,
    ATTR_STAGE,
    ATTR_WORKER,
    Ledger,
    claim_of,
)
from a2ls_lightning.search.settings import load_search_config

ROOT = Path(__file__).resolve().parents[1]
optuna.logging.set_verbosity(optuna.logging.WARNING)


def tiny_config(tmp_path: Path, **search) -> Path:
    """``configs/search_smoke.yaml`` shrunk further (1200 env steps per candidate), run folder in ``tmp_path``."""
    config = yaml.safe_load((ROOT / "configs" / "search_smoke.yaml").read_text())
    config["data"].update(warmup_steps=50, eval_interval=600, capacity=3000)
    config["search"].update(budget_env_steps=1200, run_dir=str(tmp_path / "run"), heartbeat_interval=1,
                            grace_period=3, poll_seconds=0.2, **search)
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def trials_of(path: Path) -> tuple[list[optuna.trial.FrozenTrial], Ledger]:
    _, settings = load_search_config(path)
    study = optuna.load_study(study_name=settings.study_name, storage=open_storage(settings.storage_url))
    trials = study.get_trials()
    return trials, Ledger(trials, settings.slots, settings.stages)


def test_shipped_search_configs_are_valid():
    for name, updates in (("search_smoke.yaml", 400), ("search_cheetah_state.yaml", 24000)):
        base, settings = load_search_config(ROOT / "configs" / name)
        assert budget_for(base, settings.budget_env_steps).max_steps == updates
    _, smoke = load_search_config(ROOT / "configs" / "search_smoke.yaml")
    assert (smoke.population, smoke.stages, smoke.survivor_fraction) == (4, 2, 0.25)
    _, real = load_search_config(ROOT / "configs" / "search_cheetah_state.yaml")
    assert real.population >= 16 and real.stages >= 5 and real.budget_env_steps == 100_000
    base, halving = load_search_config(ROOT / "configs" / "search_cheetah_state_halving.yaml")
    assert halving.populations == (24, 6, 2) and halving.seed_counts == (1, 3, 5) and halving.slots == (25, 7, 3)
    assert [budget_for(base, b).max_steps for b in halving.budgets] == [11500, 11500, 24000]
    assert halving.baseline and halving.promote and halving.fresh_seeds
    assert {"a2_winner_v", "forward_dynamics"} <= set(halving.seed_presets)


def test_tiny_search_with_two_worker_processes(tmp_path):
    from a2ls_lightning.cli.search import main

    config = tiny_config(tmp_path, population=4, stages=2)
    main(["--config", str(config), "--workers", "2"])
    _, ledger = trials_of(config)
    assert ledger.complete
    holders = [ledger.holders[key] for key in sorted(ledger.holders)]
    assert len(holders) == 8 and all(t.state == optuna.trial.TrialState.COMPLETE for t in holders)
    assert len({t.user_attrs[ATTR_SPEC] for t in holders}) == 8
    assert len({t.user_attrs[ATTR_WORKER] for t in holders}) == 2, "both worker processes trained candidates"
    for trial in holders:
        curve = trial.user_attrs[ATTR_CURVES][0]
        assert [steps for steps, _ in curve] == [600, 1200]  # every eval_interval and at the end of the budget
        assert math.isfinite(trial.value) and trial.value == pytest.approx(sum(v for _, v in curve) / len(curve))
    report = (tmp_path / "run" / "report" / "report.md").read_text()
    assert "8 candidates scored" in report and "| forward dynamics |" in report
    assert (tmp_path / "run" / "report" / "stages.png").exists()
    # base.yaml is the search's own training run: its budget and a root folder under the report
    base = yaml.safe_load((tmp_path / "run" / "report" / "base.yaml").read_text())
    assert base["trainer"]["max_steps"] == budget_for(*_base_and_budget(config)).max_steps
    assert base["trainer"]["default_root_dir"] == str(tmp_path / "run" / "report" / "winner")
    assert base["model"]["network"]["hidden_dim"] == 32 and base["data"]["eval_interval"] == 600
    # `a2ls search report` with only the storage writes next to the SQLite database of the study
    (tmp_path / "run" / "report" / "report.md").unlink()
    _, settings = load_search_config(config)
    main(["report", "--storage", settings.storage_url, "--study", settings.study_name])
    assert (tmp_path / "run" / "report" / "report.md").exists()


def _base_and_budget(config: Path):
    base, settings = load_search_config(config)
    return base, settings.budget_env_steps


def test_killed_worker_loses_only_its_candidate_and_a_rerun_resumes(tmp_path):
    from a2ls_lightning.cli.search import main

    config = tiny_config(tmp_path, population=2, stages=2, workers=1)
    env = dict(os.environ, OMP_NUM_THREADS="1")
    worker = subprocess.Popen([sys.executable, "-m", "a2ls_lightning.cli", "search", "--config", str(config)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:  # wait until one candidate is finished and the next one is training, then kill the worker
        deadline = time.time() + 150
        while time.time() < deadline:
            time.sleep(0.5)
            try:
                trials, _ = trials_of(config)
            except (KeyError, ValueError):  # database or study not created yet
                continue
            finished = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
            running = [t for t in trials if t.state == optuna.trial.TrialState.RUNNING and ATTR_SPEC in t.user_attrs]
            if finished and running:  # kill at once: on an idle machine a tiny candidate trains in ~1 s
                break
        else:
            pytest.fail("the worker never reached its second candidate")
        worker.send_signal(signal.SIGKILL)
    finally:
        worker.kill()
        worker.wait()
    trials, _ = trials_of(config)
    before = {t.number: t.user_attrs[ATTR_SPEC] for t in trials if t.state == optuna.trial.TrialState.COMPLETE}
    # the candidate in training when killed (a trial that had not claimed a candidate yet holds no spec)
    killed = [t for t in trials if t.state == optuna.trial.TrialState.RUNNING and ATTR_SPEC in t.user_attrs]
    assert before and len(killed) == 1

    main(["--config", str(config)])  # the same command again: fails the stale trial, retrains its slot only

    trials, ledger = trials_of(config)
    assert ledger.complete
    assert trials[killed[0].number].state == optuna.trial.TrialState.FAIL
    redo = ledger.holder(*claim_of(killed[0]))
    assert redo.number > killed[0].number and redo.user_attrs[ATTR_SPEC] == killed[0].user_attrs[ATTR_SPEC]
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 4, "each of the 4 slots was trained exactly once to completion"
    for number, spec in before.items():  # finished candidates kept, never repeated
        assert trials[number].state == optuna.trial.TrialState.COMPLETE
        assert [t.number for t in complete if t.user_attrs[ATTR_SPEC] == spec] == [number]
    assert {t.user_attrs[ATTR_STAGE] for t in complete} == {0, 1}


def test_tiny_halving_search_with_a_sac_baseline_per_stage(tmp_path, capsys):
    """Successive halving for real: 3 candidates x 1 seed x 600 env steps, then the survivor x 2 fresh seeds x 1200,
    each stage beside plain SAC on the same seeds; the report ranks by the paired lower bound."""
    from a2ls_lightning.cli.search import main
    from a2ls_lightning.search.sampler import ATTR_BASELINE, ATTR_SEED_FITNESS

    config = tiny_config(tmp_path, stages=2, stage_populations=[3, 1], stage_budgets=[600, 1200], stage_seeds=[1, 2],
                         promote=True, baseline=True, fresh_seeds=True, workers=1)
    main(["--config", str(config)])
    trials, ledger = trials_of(config)
    assert ledger.complete and len(ledger.holders) == 4 + 2
    for stage, (steps, seeds) in enumerate([([600], 1), ([600, 1200], 2)]):
        for trial in ledger.stage_trials(stage):
            assert trial.state == optuna.trial.TrialState.COMPLETE
            curves = trial.user_attrs[ATTR_CURVES]
            assert len(curves) == len(trial.user_attrs[ATTR_SEED_FITNESS]) == seeds
            assert all([s for s, _ in curve] == steps for curve in curves)
        assert ledger.holder(stage, 0).user_attrs[ATTR_BASELINE]
    assert not ledger.holder(0, 0).intermediate_values, "the baseline feeds no pruner"
    assert sorted(ledger.holder(0, 1).intermediate_values) == [600]
    log = capsys.readouterr().out
    assert "stage0-slot0/seed1: 600 of 600 env steps, eval return" in log
    assert "stage1-slot1/seed3: 1200 of 1200 env steps, eval return" in log
    survivor = ledger.ranked(0)[0].user_attrs[ATTR_SPEC]
    assert ledger.holder(1, 1).user_attrs[ATTR_SPEC] == survivor
    report = (tmp_path / "run" / "report" / "report.md").read_text()
    assert "improvement over SAC (paired)" in report and "(n=2)" in report
