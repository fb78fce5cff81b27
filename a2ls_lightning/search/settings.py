"""The ``search:`` section of a search config: :class:`SearchSettings`, and reading a search config file.

A search config is an ``a2ls fit`` config (``seed_everything``, ``trainer``, ``model``, ``data``: the base
training run every candidate repeats with its own auxiliary loss) plus one ``search:`` mapping whose keys are
the fields of :class:`SearchSettings`. Every field is checked on construction; a bad value raises a one-line
``ValueError`` that names the field (``search.population=1 must be >= 2``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from a2ls_lightning.modules.aux_operators import OPERATORS
from a2ls_lightning.modules.aux_spec import AuxLossSpec

__all__ = ["FITNESS", "MUTATIONS", "PRUNERS", "SearchSettings", "load_search_config"]

#: Fitness of one training run: ``aulc`` = mean eval return over the evaluation curve; ``final`` = last one.
FITNESS: tuple[str, ...] = ("aulc", "final")
#: Optuna pruners that may stop a hopeless candidate early (``none``: every candidate runs its full budget).
PRUNERS: tuple[str, ...] = ("none", "median", "successive_halving")
#: Mutation kinds and what they change (see :mod:`a2ls_lightning.search.mutation`).
MUTATIONS: tuple[str, ...] = ("flip", "horizon", "operator", "negatives")


def _one_line(text: str) -> str:
    return " ".join(str(text).split())


@dataclass(frozen=True)
class SearchSettings:
    """Settings of an evolutionary auxiliary-loss search (the ``search:`` section of a search config)."""

    population: int = 16
    """Candidates per stage (the paper: about 100 per stage); >= 2."""
    stages: int = 5
    """Stages (generations) of the evolution; stage 0 is presets plus random candidates."""
    survivor_fraction: float = 0.25
    """Fraction of a stage kept as parents of the next stage, in (0, 1]; at least one survivor."""
    max_horizon: int = 10
    """Largest horizon ``H`` a candidate may have (A2-winner-v has 9); every candidate has 1 <= H <= this."""
    operators: tuple[str, ...] = OPERATORS
    """Operators a candidate may use; non-empty subset of mse, nmse, inner, bilinear, cosine."""
    negatives: tuple[bool, ...] = (False, True)
    """Allowed values of the in-batch-negatives flag: [false], [true] or [false, true]."""
    seed_presets: tuple[str, ...] = ()
    """Presets (``a2ls losses``) placed first in stage 0; each must lie inside the space above."""
    init_density: float = 0.3
    """Probability that each element is an input (and, independently, a target) of a random stage-0 candidate."""
    mutation_weights: dict[str, float] = field(
        default_factory=lambda: {"flip": 0.6, "horizon": 0.2, "operator": 0.1, "negatives": 0.1})
    """Relative frequency of each mutation kind: flip (mask bits), horizon (H +- 1), operator, negatives."""
    mutation_flips: int = 2
    """A ``flip`` mutation flips between 1 and this many input/target mask bits."""
    crossover_probability: float = 0.0
    """Probability that a child is the uniform crossover of two survivors instead of a mutation, in [0, 1]."""
    max_rejections: int = 10_000
    """Rejected children (invalid, outside the space, duplicate, pure copy) tolerated per stage before the
    search stops with an error: the space is then too small for the population."""
    budget_env_steps: int = 100_000
    """Env steps (control steps, action repeats included) each candidate trains for, per seed."""
    seeds_per_candidate: int = 1
    """Training runs per candidate, seeds ``seed_everything + k``; the fitness is their mean."""
    fitness: str = "aulc"
    """``aulc``: mean eval return over the curve (area under the learning curve / budget); ``final``: last eval."""
    pruner: str = "none"
    """Optuna pruner fed each evaluation: ``none`` (default), ``median`` or ``successive_halving``."""
    sampler_seed: int = 0
    """Seed of the evolution: the same study, seed and fitness values give the same candidates."""
    study_name: str = "a2ls-search"
    """Optuna study name; running the same command again resumes it."""
    storage: str | None = None
    """Database URL shared by the workers (``postgresql://user@host:5432/db``); null: ``sqlite:///<run_dir>/search.db``."""
    run_dir: str = "runs/search"
    """Folder of the embedded database, the candidates' logs and the report."""
    workers: int = 1
    """Worker processes on this machine, one candidate each at a time (more machines: same storage and study)."""
    threads_per_worker: int = 1
    """Torch intra-op threads per worker process."""
    heartbeat_interval: int = 30
    """Seconds between a running candidate's heartbeats in the database."""
    grace_period: int = 120
    """Seconds without a heartbeat after which a candidate counts as dead and its slot is trained again."""
    poll_seconds: float = 2.0
    """How often an idle worker looks at the study (waiting for a stage to finish)."""
    claim_settle_seconds: float = 0.5
    """Pause after a worker claims a slot, before it trusts the claim (concurrent claims: the older trial wins)."""
    keep_logs: bool = False
    """Keep each candidate run's TensorBoard logs under ``<run_dir>/candidates/``."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "operators", tuple(self.operators) if not isinstance(self.operators, str)
                           else (self.operators,))
        object.__setattr__(self, "negatives", tuple(self.negatives) if not isinstance(self.negatives, bool)
                           else (self.negatives,))
        object.__setattr__(self, "seed_presets", tuple(self.seed_presets) if not isinstance(self.seed_presets, str)
                           else (self.seed_presets,))
        object.__setattr__(self, "mutation_weights", dict(self.mutation_weights))
        self._check()

    def _check(self) -> None:
        def need(condition: bool, message: str) -> None:
            if not condition:
                raise ValueError(f"search.{message}")

        def integer(name: str, low: int) -> None:
            value = getattr(self, name)
            need(isinstance(value, int) and not isinstance(value, bool) and value >= low,
                 f"{name}={value!r} must be an integer >= {low}")

        integer("population", 2)
        integer("stages", 1)
        need(isinstance(self.survivor_fraction, (int, float)) and 0 < self.survivor_fraction <= 1,
             f"survivor_fraction={self.survivor_fraction!r} must be in (0, 1]")
        integer("max_horizon", 1)
        need(len(self.operators) > 0, f"operators={list(self.operators)} is empty; allowed: {', '.join(OPERATORS)}")
        for op in self.operators:
            need(op in OPERATORS, f"operators: unknown operator {op!r}; allowed: {', '.join(OPERATORS)}")
        need(len(set(self.operators)) == len(self.operators), f"operators={list(self.operators)} has a duplicate")
        need(len(self.negatives) > 0 and all(isinstance(v, bool) for v in self.negatives)
             and len(set(self.negatives)) == len(self.negatives),
             f"negatives={list(self.negatives)} must be [false], [true] or [false, true]")
        presets = AuxLossSpec.presets()
        for name in self.seed_presets:
            need(name in presets, f"seed_presets: unknown preset {name!r}; allowed: {', '.join(presets)}")
            spec = presets[name]
            need(spec.horizon <= self.max_horizon and spec.operator in self.operators
                 and spec.negatives in self.negatives,
                 f"seed_presets: {name} ({spec}) lies outside the space (max_horizon={self.max_horizon}, "
                 f"operators={list(self.operators)}, negatives={list(self.negatives)})")
        need(isinstance(self.init_density, (int, float)) and 0 < self.init_density <= 1,
             f"init_density={self.init_density!r} must be in (0, 1]")
        for kind, weight in self.mutation_weights.items():
            need(kind in MUTATIONS, f"mutation_weights: unknown mutation {kind!r}; allowed: {', '.join(MUTATIONS)}")
            need(isinstance(weight, (int, float)) and weight >= 0 and math.isfinite(weight),
                 f"mutation_weights.{kind}={weight!r} must be a number >= 0")
        need(sum(self.mutation_weights.values()) > 0,
             f"mutation_weights={self.mutation_weights} must have a positive weight")
        integer("mutation_flips", 1)
        need(isinstance(self.crossover_probability, (int, float)) and 0 <= self.crossover_probability <= 1,
             f"crossover_probability={self.crossover_probability!r} must be in [0, 1]")
        integer("max_rejections", 1)
        integer("budget_env_steps", 1)
        integer("seeds_per_candidate", 1)
        need(self.fitness in FITNESS, f"fitness={self.fitness!r} is unknown; allowed: {', '.join(FITNESS)}")
        need(self.pruner in PRUNERS, f"pruner={self.pruner!r} is unknown; allowed: {', '.join(PRUNERS)}")
        need(isinstance(self.sampler_seed, int), f"sampler_seed={self.sampler_seed!r} must be an integer")
        need(isinstance(self.study_name, str) and self.study_name.strip() != "",
             f"study_name={self.study_name!r} must be a non-empty string")
        need(self.storage is None or (isinstance(self.storage, str) and "://" in self.storage),
             f"storage={self.storage!r} must be a database URL like postgresql://user@host:5432/db, or null")
        integer("workers", 1)
        integer("threads_per_worker", 1)
        integer("heartbeat_interval", 1)
        integer("grace_period", 1)
        need(self.grace_period > self.heartbeat_interval,
             f"grace_period={self.grace_period} must be > heartbeat_interval={self.heartbeat_interval}")
        need(isinstance(self.poll_seconds, (int, float)) and self.poll_seconds > 0,
             f"poll_seconds={self.poll_seconds!r} must be > 0")
        need(isinstance(self.claim_settle_seconds, (int, float)) and self.claim_settle_seconds >= 0,
             f"claim_settle_seconds={self.claim_settle_seconds!r} must be >= 0")

    # ------------------------------------------------------------------------------------------------
    @property
    def survivors(self) -> int:
        """Parents kept per stage: ``ceil(survivor_fraction · population)``, at least 1."""
        return max(1, math.ceil(self.survivor_fraction * self.population - 1e-9))

    @property
    def storage_url(self) -> str:
        """The database URL: ``storage``, or the embedded SQLite file in ``run_dir``."""
        if self.storage is not None:
            return self.storage
        return f"sqlite:///{(Path(self.run_dir) / 'search.db').resolve()}"

    def replace(self, **changes: Any) -> SearchSettings:
        """A copy with ``changes`` applied (``None`` values are ignored: unset command-line options)."""
        return dataclasses.replace(self, **{k: v for k, v in changes.items() if v is not None})

    def to_dict(self) -> dict[str, Any]:
        """Plain values (lists for tuples), e.g. to send to a worker process or store in the study."""
        out = dataclasses.asdict(self)
        return {k: list(v) if isinstance(v, tuple) else v for k, v in out.items()}

    #: Fields that change neither which candidates are generated nor how they are scored: a worker may join a
    #: study with other values of these.
    OPERATIONAL = ("study_name", "storage", "run_dir", "workers", "threads_per_worker", "heartbeat_interval",
                   "grace_period", "poll_seconds", "claim_settle_seconds", "keep_logs", "max_rejections")

    def identity(self) -> dict[str, Any]:
        """The settings that define a study; workers joining one study must agree on them."""
        return {k: v for k, v in self.to_dict().items() if k not in self.OPERATIONAL}

    @classmethod
    def from_mapping(cls, values: dict[str, Any] | None) -> SearchSettings:
        """Build from the ``search:`` mapping; an unknown key is an error naming it and the allowed keys."""
        values = dict(values or {})
        known = {f.name for f in dataclasses.fields(cls)}
        for key in values:
            if key not in known:
                raise ValueError(f"search.{key}: unknown setting; allowed: {', '.join(sorted(known))}")
        return cls(**values)


def load_search_config(path: str | Path) -> tuple[dict[str, Any], SearchSettings]:
    """Read a search config: the base training config (everything but ``search``) and the search settings.

    Raises:
        ValueError: one line naming the file or the field when the file is missing, not YAML or a bad setting.
    """
    path = Path(path)
    if not path.is_file():
        raise ValueError(f"config: {path} does not exist")
    try:
        loaded = yaml.safe_load(path.read_text())
    except yaml.YAMLError as err:
        raise ValueError(f"config: {path} is not valid YAML: {_one_line(err)}") from None
    if not isinstance(loaded, dict):
        raise ValueError(f"config: {path} must hold a mapping with trainer/model/data and search")
    search = loaded.pop("search", None)
    if search is not None and not isinstance(search, dict):
        raise ValueError(f"search: must be a mapping of settings, got {search!r}")
    return loaded, SearchSettings.from_mapping(search)
