"""The ``search:`` section of a search config (:class:`SearchSettings`) and reading a search config file.

A search config is an ``a2ls fit`` config (``seed_everything``, ``trainer``, ``model``, ``data``: the base
training run every candidate repeats with its own auxiliary loss) plus one ``search:`` mapping whose keys are
the fields of :class:`SearchSettings`. Every field is checked on construction; a bad value raises a one-line
``ValueError`` that names the field (``search.population=1 must be an integer >= 2``).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import yaml

from a2ls_lightning.modules.aux_operators import OPERATORS
from a2ls_lightning.modules.aux_spec import AuxLossSpec
from a2ls_lightning.search.space import Genome, SearchSpace
from a2ls_lightning.validation import (
    check,
    check_choice,
    check_integer,
    check_number,
    did_you_mean,
    one_line,
)

__all__ = ["FITNESS", "MUTATIONS", "PRUNERS", "SearchSettings", "load_search_config"]

#: Fitness of one training run: ``aulc`` = mean eval return over the evaluation curve; ``final`` = last one.
FITNESS: tuple[str, ...] = ("aulc", "final")
#: Optuna pruners that may stop a hopeless candidate early (``none``: every candidate runs its full budget).
PRUNERS: tuple[str, ...] = ("none", "median", "successive_halving")
#: Mutation kinds and what they change (see :func:`a2ls_lightning.search.space.mutate`).
MUTATIONS: tuple[str, ...] = ("flip", "horizon", "operator", "negatives")


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
    """Seed of the evolution (>= 0): the same study, seed and fitness values give the same candidates."""
    study_name: str = "a2ls-search"
    """Optuna study name; running the same command again resumes it."""
    storage: str | None = None
    """Database URL shared by the workers (``postgresql://user@host:5432/db``); null: ``<run_dir>/search.db``."""
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
    stage_populations: tuple[int, ...] | None = None
    """Candidates per stage, one per stage (successive halving: e.g. [24, 6, 2]); null: ``population`` each."""
    stage_budgets: tuple[int, ...] | None = None
    """Env steps per run, one per stage, non-decreasing (e.g. [50000, 50000, 100000]); null: ``budget_env_steps``."""
    stage_seeds: tuple[int, ...] | None = None
    """Seeds per candidate, one per stage, non-decreasing (e.g. [1, 3, 5]); null: ``seeds_per_candidate``."""
    promote: bool = False
    """Each stage after the first retrains the previous stage's survivors at its own budget and seeds first; mutated
    children fill the rest (successive halving when a stage's population is its predecessor's survivor count)."""
    fresh_seeds: bool = False
    """Each stage trains on seeds no earlier stage used (stage s starts after the seeds of stages < s): a survivor's
    lead is tested again on independent seeds; false: every stage uses ``seed_everything + k``."""
    baseline: bool = False
    """Each stage also trains plain SAC (no auxiliary loss) on the same seeds; the fitness that ranks candidates is
    then the paired improvement over it, seed by seed (common random numbers)."""
    confidence: float = 0.9
    """Level of the fitness intervals (Student t over seeds); with 2+ seeds, candidates rank by the interval's lower
    bound, not by the mean."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "operators", tuple(self.operators) if not isinstance(self.operators, str)
                           else (self.operators,))
        object.__setattr__(self, "negatives", tuple(self.negatives) if not isinstance(self.negatives, bool)
                           else (self.negatives,))
        object.__setattr__(self, "seed_presets", tuple(self.seed_presets) if not isinstance(self.seed_presets, str)
                           else (self.seed_presets,))
        object.__setattr__(self, "mutation_weights", dict(self.mutation_weights))
        for name in ("stage_populations", "stage_budgets", "stage_seeds"):
            value = getattr(self, name)
            if isinstance(value, (list, tuple)):
                object.__setattr__(self, name, tuple(value))
        self._check()

    def _check(self) -> None:
        check_integer("search.population", self.population, 2)
        check_integer("search.stages", self.stages, 1)
        check_number("search.survivor_fraction", self.survivor_fraction, 0, strict=True, high=1)
        space = self.space  # checks max_horizon, operators and negatives
        presets = AuxLossSpec.presets()
        for name in self.seed_presets:
            check(name in presets, f"search.seed_presets: unknown preset {name!r}; allowed: {', '.join(presets)}"
                                   f"{did_you_mean(name, presets)}")
            spec = presets[name]
            check(space.admit(Genome.of(spec))[0] is not None,
                  f"search.seed_presets: {name} ({spec}) lies outside the space (max_horizon={self.max_horizon}, "
                  f"operators={list(self.operators)}, negatives={list(self.negatives)})")
        check_number("search.init_density", self.init_density, 0, strict=True, high=1)
        for kind, weight in self.mutation_weights.items():
            check(kind in MUTATIONS,
                  f"search.mutation_weights: unknown mutation {kind!r}; allowed: {', '.join(MUTATIONS)}")
            check_number(f"search.mutation_weights.{kind}", weight, 0)
        check(sum(self.mutation_weights.values()) > 0,
              f"search.mutation_weights={self.mutation_weights} must have a positive weight")
        check_integer("search.mutation_flips", self.mutation_flips, 1)
        check_number("search.crossover_probability", self.crossover_probability, 0, high=1)
        check_integer("search.max_rejections", self.max_rejections, 1)
        check_integer("search.budget_env_steps", self.budget_env_steps, 1)
        check_integer("search.seeds_per_candidate", self.seeds_per_candidate, 1)
        check_choice("search.fitness", self.fitness, FITNESS)
        check_choice("search.pruner", self.pruner, PRUNERS)
        check_integer("search.sampler_seed", self.sampler_seed, 0)
        check(isinstance(self.study_name, str) and self.study_name.strip() != "",
              f"search.study_name={self.study_name!r} must be a non-empty string")
        check(self.storage is None or (isinstance(self.storage, str) and "://" in self.storage),
              f"search.storage={self.storage!r} must be a database URL like postgresql://user@host:5432/db, or null")
        check_integer("search.workers", self.workers, 1)
        check_integer("search.threads_per_worker", self.threads_per_worker, 1)
        check_integer("search.heartbeat_interval", self.heartbeat_interval, 1)
        check_integer("search.grace_period", self.grace_period, 1)
        check(self.grace_period > self.heartbeat_interval,
              f"search.grace_period={self.grace_period} must be > heartbeat_interval={self.heartbeat_interval}")
        check_number("search.poll_seconds", self.poll_seconds, 0, strict=True)
        check_number("search.claim_settle_seconds", self.claim_settle_seconds, 0)
        self._check_stages()

    def _check_stages(self) -> None:
        for name, low in (("stage_populations", 1), ("stage_budgets", 1), ("stage_seeds", 1)):
            value = getattr(self, name)
            if value is None:
                continue
            check(isinstance(value, tuple) and len(value) == self.stages,
                  f"search.{name}={_plain(value)} must be a list of {self.stages} integers (one per stage), or null")
            for index, item in enumerate(value):
                check_integer(f"search.{name}[{index}]", item, low)
        if self.stage_populations is not None:
            check_integer("search.stage_populations[0]", self.populations[0], 2)
        for name in ("stage_budgets", "stage_seeds"):
            value = getattr(self, name)
            check(value is None or list(value) == sorted(value),
                  f"search.{name}={_plain(value)} must not decrease from stage to stage")
        for name in ("promote", "fresh_seeds", "baseline"):
            check(isinstance(getattr(self, name), bool), f"search.{name}={getattr(self, name)!r} must be true or false")
        check_number("search.confidence", self.confidence, 0, strict=True, high=1)
        check(self.confidence < 1, f"search.confidence={self.confidence} must be in (0, 1)")
        if self.promote:
            for stage in range(1, self.stages):
                check(self.populations[stage] >= self.survivors_of(stage - 1),
                      f"search.stage_populations[{stage}]={self.populations[stage]} must be >= the "
                      f"{self.survivors_of(stage - 1)} survivors of stage {stage - 1} it promotes (survivor_fraction="
                      f"{self.survivor_fraction})")

    # ------------------------------------------------------------------------------------------------
    @cached_property
    def space(self) -> SearchSpace:
        """The searched space (``max_horizon``, ``operators``, ``negatives``); built, and checked, once."""
        return SearchSpace(self.max_horizon, self.operators, self.negatives)

    @property
    def survivors(self) -> int:
        """Parents kept per stage: ``ceil(survivor_fraction · population)``, at least 1."""
        return max(1, math.ceil(self.survivor_fraction * self.population - 1e-9))

    @property
    def populations(self) -> tuple[int, ...]:
        """Candidates of each stage."""
        return self.stage_populations or (self.population,) * self.stages

    @property
    def budgets(self) -> tuple[int, ...]:
        """Env steps of each run, per stage."""
        return self.stage_budgets or (self.budget_env_steps,) * self.stages

    @property
    def seed_counts(self) -> tuple[int, ...]:
        """Seeds per candidate, per stage."""
        return self.stage_seeds or (self.seeds_per_candidate,) * self.stages

    @property
    def slots(self) -> tuple[int, ...]:
        """Trials of each stage: its candidates, plus the SAC baseline (slot 0) with ``baseline``."""
        return tuple(p + int(self.baseline) for p in self.populations)

    def survivors_of(self, stage: int) -> int:
        """Parents kept from ``stage``: ``ceil(survivor_fraction · its population)``, at least 1."""
        return max(1, math.ceil(self.survivor_fraction * self.populations[stage] - 1e-9))

    def seeds_of(self, stage: int, first: int) -> list[int]:
        """The seeds every run of ``stage`` trains on (``first``: ``seed_everything``)."""
        start = first + (sum(self.seed_counts[:stage]) if self.fresh_seeds else 0)
        return [start + k for k in range(self.seed_counts[stage])]

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
            check(key in known, f"search.{key}: unknown setting; allowed: {', '.join(sorted(known))}")
        return cls(**values)


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


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
        raise ValueError(f"config: {path} is not valid YAML: {one_line(err)}") from None
    check(isinstance(loaded, dict), f"config: {path} must hold a mapping with trainer/model/data and search")
    search = loaded.pop("search", None)
    check(search is None or isinstance(search, dict), f"search: must be a mapping of settings, got {search!r}")
    return loaded, SearchSettings.from_mapping(search)
