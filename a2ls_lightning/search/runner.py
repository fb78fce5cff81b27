"""Running a search: the study's database and the study, and the worker processes that train candidates.

Storage: embedded SQLite by default, any SQLAlchemy URL (PostgreSQL) to let workers on many machines join one
study. Heartbeats are on, so a dead worker's candidate is detected.

A worker loops: fail stale trials (dead workers' candidates), stop when every stage is done, wait while every
remaining slot is held by another worker, else run one Optuna trial (``study.optimize(n_trials=1)``: the
sampler claims a slot and assigns a candidate, the heartbeat thread runs while it trains). A worker that dies
loses only its running candidate: the heartbeat goes stale, another worker (or the next run of the same command)
fails the trial and trains the slot again. Finished candidates are never repeated. ``--workers N`` starts N
such processes on this machine (spawned, each with its own torch threads); on a cluster start the same command
on every machine with one database URL.
"""

from __future__ import annotations

import json
import multiprocessing
import os
import re
import sys
import time
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage

from a2ls_lightning.search.objective import (
    Budget,
    CandidateError,
    CandidateObjective,
    identity_config,
    quiet,
)
from a2ls_lightning.search.sampler import (
    STUDY_ATTR_SETTINGS,
    EvolutionSampler,
    Ledger,
    fail_stale,
    worker_id,
)
from a2ls_lightning.search.settings import SearchSettings
from a2ls_lightning.search.space import RejectHook
from a2ls_lightning.validation import one_line

__all__ = ["describe_url", "make_pruner", "open_storage", "open_study", "run_search", "run_worker"]


# --- storage and study -------------------------------------------------------------------------------------
def describe_url(url: str) -> str:
    """The URL with any password masked (for messages)."""
    return re.sub(r"://([^:/@]+):[^@/]*@", r"://\1:***@", url)


def _with_driver(url: str) -> str:
    """``postgresql://`` with the driver that is installed: SQLAlchemy 2.1 defaults to psycopg 3, 2.0 to psycopg2;
    we depend on ``psycopg2-binary`` and use psycopg 3 only where it is installed."""
    if not url.startswith("postgresql://"):
        return url
    import importlib.util

    if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
        return "postgresql+psycopg2://" + url[len("postgresql://"):]
    return url


def open_storage(url: str, heartbeat_interval: int | None = None, grace_period: int | None = None) -> RDBStorage:
    """Connect to (and if needed create the tables of) the database at ``url``.

    Args:
        url: SQLAlchemy URL; for ``sqlite:///path`` the parent folder is created.
        heartbeat_interval: seconds between heartbeats of running trials (``None``: no heartbeat).
        grace_period: seconds without a heartbeat before a running trial is failed.

    Raises:
        ValueError: ``storage: cannot open ...`` in one line when the database cannot be reached.
    """
    engine_kwargs: dict[str, Any] = {}
    if url.startswith("sqlite:///"):
        path = url[len("sqlite:///"):]
        if path and path != ":memory:":
            Path(path).parent.mkdir(parents=True, exist_ok=True)
        engine_kwargs["connect_args"] = {"timeout": 60}  # several worker processes write to one file
    elif url.startswith("postgresql"):
        engine_kwargs["connect_args"] = {"connect_timeout": 10}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # heartbeat_interval is "experimental" in Optuna
            return RDBStorage(_with_driver(url), engine_kwargs=engine_kwargs, heartbeat_interval=heartbeat_interval,
                              grace_period=grace_period)
    except Exception as err:  # noqa: BLE001 - any driver error means the same thing to the user
        reason = one_line(getattr(err, "orig", None) or err)[:300]  # the driver's error, not SQLAlchemy's wrapper
        raise ValueError(f"storage: cannot open {describe_url(url)}: {reason}") from None


def make_pruner(name: str) -> optuna.pruners.BasePruner:
    """The Optuna pruner called ``name`` (``none``: never prune)."""
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=0)
    if name == "successive_halving":
        return optuna.pruners.SuccessiveHalvingPruner()
    return optuna.pruners.NopPruner()


def _first_difference(stored: dict[str, Any], mine: dict[str, Any], prefix: str = "") -> str | None:
    for key in sorted(set(stored) | set(mine)):
        a, b = stored.get(key), mine.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            found = _first_difference(a, b, f"{prefix}{key}.")
            if found:
                return found
        elif a != b:
            return f"{prefix}{key}: study has {a!r}, this config {b!r}"
    return None


def open_study(settings: SearchSettings, base_config: dict[str, Any] | None = None,
               storage: optuna.storages.BaseStorage | str | None = None,
               on_reject: RejectHook | None = None) -> optuna.Study:
    """Create the study or join an existing one with the same settings.

    Args:
        settings: the search settings (storage URL, study name, heartbeat, sampler and pruner settings).
        base_config: the base training config; stored with the settings so that every worker trains alike.
        storage: an open storage or a URL (default: :func:`open_storage` of ``settings.storage_url``).
        on_reject: passed to the :class:`EvolutionSampler`.

    Raises:
        ValueError: the storage cannot be reached, or the study exists with other settings (one line naming the
            first differing field).
    """
    if storage is None or isinstance(storage, str):
        url = settings.storage_url if storage is None else storage
        storage = open_storage(url, settings.heartbeat_interval, settings.grace_period)
    identity = json.loads(json.dumps({"search": settings.identity(), "base": base_config or {}}))
    sampler = EvolutionSampler(settings, on_reject=on_reject)
    study = optuna.create_study(storage=storage, study_name=settings.study_name, direction="maximize",
                                sampler=sampler, pruner=make_pruner(settings.pruner), load_if_exists=True)
    stored = study.user_attrs.get(STUDY_ATTR_SETTINGS)
    if stored is None:
        study.set_user_attr(STUDY_ATTR_SETTINGS, identity)
    else:
        difference = _first_difference(stored, identity)
        if difference is not None:
            raise ValueError(f"study {settings.study_name!r} exists with other settings ({difference}); "
                             "use the same config to resume, or another study_name")
    return study


# --- workers ----------------------------------------------------------------------------------------------
def run_worker(study: optuna.Study, objective: Callable[[optuna.Trial], float], settings: SearchSettings,
               max_trials: int | None = None) -> int:
    """Train candidates of ``study`` until the search is complete; return the number of trials this worker ran.

    Args:
        study: the study, opened with an :class:`~a2ls_lightning.search.sampler.EvolutionSampler`.
        objective: trains (or scores) the candidate of a trial.
        settings: population, stages and ``poll_seconds``.
        max_trials: stop after this many trials (tests; ``None``: until complete).
    """
    ran = 0
    while max_trials is None or ran < max_trials:
        fail_stale(study)
        ledger = Ledger(study.get_trials(deepcopy=False), settings.slots, settings.stages)
        if ledger.complete:
            break
        if ledger.first_free() is None:  # the rest is being trained elsewhere; a dead worker's slot may free up
            time.sleep(settings.poll_seconds)
            continue
        study.optimize(objective, n_trials=1, catch=(CandidateError,), gc_after_trial=False)
        ran += 1
    return ran


def _log(prefix: str) -> Callable[[str], None]:
    def log(message: str) -> None:
        print(f"[{prefix}] {message}", flush=True)

    return log


def _worker_main(base_config: dict[str, Any], settings_dict: dict[str, Any], budget: Budget | list[Budget],
                 index: int) -> None:
    """Body of one worker process (also used in-process when ``workers == 1``)."""
    import torch

    settings = SearchSettings.from_mapping(settings_dict)
    torch.set_num_threads(settings.threads_per_worker)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    quiet()
    study = open_study(settings, identity_config(base_config))
    log = _log(f"worker {index} {worker_id()}")
    objective = CandidateObjective(base_config, settings, budget, log=log)
    ran = run_worker(study, objective, settings)
    log(f"done ({ran} trials)")


def run_search(base_config: dict[str, Any], settings: SearchSettings, budget: Budget | list[Budget]) -> list[int]:
    """Run ``settings.workers`` workers on this machine until the search is complete; return their exit codes.

    ``budget``: one for every stage, or one per stage.

    With one worker it runs in this process; with more, each is a spawned process. The study must exist (see
    :func:`open_study`).
    """
    if settings.workers == 1:
        _worker_main(base_config, settings.to_dict(), budget, 0)
        return [0]
    context = multiprocessing.get_context("spawn")
    env_threads = os.environ.get("OMP_NUM_THREADS")
    os.environ["OMP_NUM_THREADS"] = str(settings.threads_per_worker)  # inherited by the spawned interpreters
    try:
        processes = [context.Process(target=_worker_main, args=(base_config, settings.to_dict(), budget, i),
                                     name=f"a2ls-search-worker-{i}") for i in range(settings.workers)]
        for process in processes:
            process.start()
            time.sleep(0.2)  # staggered starts: fewer simultaneous first claims
    finally:
        if env_threads is None:
            os.environ.pop("OMP_NUM_THREADS", None)
        else:
            os.environ["OMP_NUM_THREADS"] = env_threads
    try:
        for process in processes:
            process.join()
    except KeyboardInterrupt:
        for process in processes:
            process.join(timeout=30)
        raise
    codes = [p.exitcode if p.exitcode is not None else -1 for p in processes]
    for i, code in enumerate(codes):
        if code != 0:
            print(f"a2ls search: worker {i} exited with code {code}; its candidate is retried by the next run",
                  file=sys.stderr)
    return codes
