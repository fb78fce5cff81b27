"""Opening the study's database and the study: embedded SQLite by default, any SQLAlchemy URL (PostgreSQL) to
let workers on many machines join one study. Heartbeats are on, so a dead worker's candidate is detected.
"""

from __future__ import annotations

import json
import re
import warnings
from pathlib import Path
from typing import Any

import optuna
from optuna.storages import RDBStorage

from a2ls_lightning.search.evolution import RejectHook
from a2ls_lightning.search.ledger import STUDY_ATTR_SETTINGS
from a2ls_lightning.search.sampler import EvolutionSampler
from a2ls_lightning.search.settings import SearchSettings

__all__ = ["describe_url", "make_pruner", "open_storage", "open_study"]


def describe_url(url: str) -> str:
    """The URL with any password masked (for messages)."""
    return re.sub(r"://([^:/@]+):[^@/]*@", r"://\1:***@", url)


def _first_line(err: BaseException) -> str:
    text = " ".join(str(getattr(err, "orig", None) or err).split())
    return text[:300]


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
        raise ValueError(f"storage: cannot open {describe_url(url)}: {_first_line(err)}") from None


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
