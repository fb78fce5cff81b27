"""Workers joining one study in a real PostgreSQL server, started by the test on 127.0.0.1 and a free port.

Skipped, with the reason, where the server binaries (Debian: ``apt-get install postgresql``) or the driver
(``psycopg2``) are missing. As root, the server runs as the ``postgres`` user (``runuser``), since PostgreSQL
refuses to run as root.
"""

from __future__ import annotations

import glob
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import optuna
import pytest
import yaml

from a2ls_lightning.search import FitnessObjective, SearchSettings
from a2ls_lightning.search.runner import open_storage, open_study, run_worker
from a2ls_lightning.search.sampler import ATTR_SPEC, ATTR_WORKER, Ledger

ROOT = Path(__file__).resolve().parents[1]
optuna.logging.set_verbosity(optuna.logging.WARNING)


def _server_binaries() -> Path | None:
    found = shutil.which("pg_ctl")
    if found and shutil.which("initdb"):
        return Path(found).resolve().parent
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))
    return Path(candidates[-1]).parent if candidates else None


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def postgres_url():
    pytest.importorskip("psycopg2", reason="the PostgreSQL driver psycopg2 is not installed (pip psycopg2-binary)")
    bindir = _server_binaries()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found; Debian: apt-get install postgresql")
    prefix: list[str] = []
    home = Path(tempfile.mkdtemp(prefix="a2ls-postgres-"))  # directly under /tmp: reachable by the server user
    if os.geteuid() == 0:  # the server refuses to run as root
        if shutil.which("runuser") is None:
            pytest.skip("running as root without runuser: cannot start PostgreSQL as another user")
        try:
            import pwd

            user = pwd.getpwnam("postgres")
        except KeyError:
            pytest.skip("running as root and there is no 'postgres' user to run the server")
        prefix = ["runuser", "-u", "postgres", "--"]
        os.chown(home, user.pw_uid, user.pw_gid)
    data, port = home / "data", _free_port()

    def run(*args: str) -> None:
        subprocess.run([*prefix, *args], check=True, capture_output=True, timeout=120)

    try:
        run(str(bindir / "initdb"), "-D", str(data), "-U", "a2ls", "--auth=trust", "-E", "UTF8")
        run(str(bindir / "pg_ctl"), "-D", str(data), "-l", str(home / "server.log"), "-w", "-t", "60", "start",
            "-o", f"-p {port} -k {home} -c listen_addresses=127.0.0.1")
        yield f"postgresql://a2ls@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"],
                       capture_output=True, timeout=120, check=False)
        shutil.rmtree(home, ignore_errors=True)


def test_concurrent_claims_on_postgres_never_share_a_slot(postgres_url):
    # Two workers with their own connections; no training, an injected fitness (exercises the claim protocol).
    config = SearchSettings(population=4, stages=3, max_horizon=3, storage=postgres_url, study_name="claims",
                            poll_seconds=0.02, claim_settle_seconds=0.1, heartbeat_interval=1, grace_period=5)
    open_study(config, {})
    fitness = lambda spec: len(spec.target_state_offsets) + 0.1 * spec.horizon
    threads = [threading.Thread(target=lambda: run_worker(open_study(config, {}), FitnessObjective(fitness),
                                                          config)) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=120)
    trials = open_study(config, {}).get_trials()
    ledger = Ledger(trials, config.population, config.stages)
    assert ledger.complete
    complete = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 12 and len({t.user_attrs[ATTR_SPEC] for t in complete}) == 12


def test_two_workers_on_two_commands_join_one_study(postgres_url, tmp_path):
    # Like two machines: the same command twice, each one worker, one database URL; real tiny training.
    config = yaml.safe_load((ROOT / "configs" / "search_smoke.yaml").read_text())
    config["data"].update(warmup_steps=50, eval_interval=600, capacity=3000)
    config["search"].update(budget_env_steps=1200, run_dir=str(tmp_path / "run"), study_name="cluster",
                            storage=postgres_url, workers=1, population=4, stages=2, poll_seconds=0.2)
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(config))
    env = dict(os.environ, OMP_NUM_THREADS="1")
    command = [sys.executable, "-m", "a2ls_lightning.cli", "search", "--config", str(path)]
    first = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    time.sleep(1.0)
    second = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    outputs = [p.communicate(timeout=300)[0] for p in (first, second)]
    assert first.returncode == 0 and second.returncode == 0, "\n".join(o[-3000:] for o in outputs)
    study = optuna.load_study(study_name="cluster", storage=open_storage(postgres_url))
    ledger = Ledger(study.get_trials(), 4, 2)
    assert ledger.complete
    holders = list(ledger.holders.values())
    assert len({t.user_attrs[ATTR_SPEC] for t in holders}) == 8
    workers = {t.user_attrs[ATTR_WORKER] for t in holders}
    assert len(workers) == 2, f"expected both commands to train candidates, got {workers}"
    assert f"{first.pid}" in " ".join(workers) and f"{second.pid}" in " ".join(workers)
