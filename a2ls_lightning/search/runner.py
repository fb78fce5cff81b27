"""Workers: processes that train candidates until the search is complete.

A worker loops: fail stale trials (dead workers' candidates), stop when every stage is done, wait while every
remaining slot is held by another worker, else run one Optuna trial (``study.optimize(n_trials=1)``: the
sampler claims a slot and assigns a candidate, the heartbeat thread runs while it trains). A worker that dies
loses only its running candidate: the heartbeat goes stale, another worker (or the next run of the same command)
fails the trial and trains the slot again. Finished candidates are never repeated.

``--workers N`` starts N such processes on this machine (spawned, each with its own torch threads); on a
cluster start the same command on every machine with one database URL.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import optuna

from a2ls_lightning.search.ledger import Ledger
from a2ls_lightning.search.objective import CandidateError, CandidateObjective
from a2ls_lightning.search.sampler import fail_stale, worker_id
from a2ls_lightning.search.settings import SearchSettings
from a2ls_lightning.search.storage import open_study
from a2ls_lightning.search.training import Budget, identity_config, quiet

__all__ = ["run_search", "run_worker"]


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
        ledger = Ledger(study.get_trials(deepcopy=False), settings.population, settings.stages)
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


def _worker_main(base_config: dict[str, Any], settings_dict: dict[str, Any], budget: Budget, index: int) -> None:
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


def run_search(base_config: dict[str, Any], settings: SearchSettings, budget: Budget) -> list[int]:
    """Run ``settings.workers`` workers on this machine until the search is complete; return their exit codes.

    With one worker it runs in this process; with more, each is a spawned process. The study must exist (see
    :func:`~a2ls_lightning.search.storage.open_study`).
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
