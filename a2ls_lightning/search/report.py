"""The report of a search, read back from its study: top candidates, fitness per stage (PNG), and the pattern
analysis of A2LS (He et al. 2022, arXiv 2210.06041, Table 5).

:func:`write_report` writes ``report.md``, ``stages.png`` and ``base.yaml`` into a folder and returns the markdown.

A pattern holds for a loss when (``∈ in``: an input element, ``∈ out``: a target element):

- forward dynamics: some ``i`` with ``s_i, a_i ∈ in`` and ``s_{i+1} ∈ out``;
- inverse dynamics: some ``i`` with ``s_i, s_{i+1} ∈ in`` and ``a_i ∈ out``;
- reward prediction: some reward ``∈ out``;
- action inference: some action ``∈ out``;
- state reconstruction: some state both ``∈ in`` and ``∈ out``;
- more target states than input states: ``|states ∈ out| > |states ∈ in|``;
- in-batch negatives: the loss contrasts against the batch.

Candidates rank by the lower bound of their fitness interval over seeds (the paired improvement over the stage's
SAC baseline when the search trains one; :mod:`.paired`), those scored on one seed after them by their mean; the
table shows each interval. With ``promote`` a candidate is scored once per stage it reaches; the pattern analysis
then uses stage 0 only (every candidate once, at one fidelity).

For each pattern the table gives the mean fitness of the candidates with and without it, the difference, and
Welch's two-sided t-test p-value (scipy; ``nan`` when a group has fewer than two candidates).
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import optuna
from optuna.trial import TrialState

from a2ls_lightning.files import atomic_write_text
from a2ls_lightning.modules.aux_spec import AuxLossSpec
from a2ls_lightning.search.paired import Paired, rank_key
from a2ls_lightning.search.runner import describe_url, open_storage
from a2ls_lightning.search.sampler import (
    ATTR_ERROR,
    ATTR_ORIGIN,
    ATTR_SEED_FITNESS,
    ATTR_SPEC,
    STUDY_ATTR_SETTINGS,
    Ledger,
    is_baseline,
)
from a2ls_lightning.search.settings import SearchSettings

__all__ = [
    "PATTERNS",
    "PatternRow",
    "Results",
    "Scored",
    "load_results",
    "pattern_table",
    "patterns_markdown",
    "stage_figure",
    "top_markdown",
    "write_report",
]


# --- patterns ----------------------------------------------------------------------------------------------
def _forward(spec: AuxLossSpec) -> bool:
    ins, outs = set(spec.inputs), set(spec.targets)
    return any(("s", i) in ins and ("a", i) in ins and ("s", i + 1) in outs for i in range(spec.horizon))


def _inverse(spec: AuxLossSpec) -> bool:
    ins, outs = set(spec.inputs), set(spec.targets)
    return any(("s", i) in ins and ("s", i + 1) in ins and ("a", i) in outs for i in range(spec.horizon))


#: Pattern name → predicate.
PATTERNS: dict[str, Callable[[AuxLossSpec], bool]] = {
    "forward dynamics": _forward,
    "inverse dynamics": _inverse,
    "reward prediction": lambda spec: bool(spec.target_reward_offsets),
    "action inference": lambda spec: bool(spec.target_action_offsets),
    "state reconstruction": lambda spec: bool(set(spec.input_state_offsets) & set(spec.target_state_offsets)),
    "more target states than input states":
        lambda spec: len(spec.target_state_offsets) > len(spec.input_state_offsets),
    "in-batch negatives": lambda spec: spec.negatives,
}


@dataclass(frozen=True)
class PatternRow:
    """Statistics of one pattern over the scored candidates."""

    pattern: str
    n_with: int
    n_without: int
    mean_with: float
    mean_without: float
    p_value: float

    @property
    def difference(self) -> float:
        """Mean fitness with the pattern minus without."""
        return self.mean_with - self.mean_without


def pattern_table(candidates: Sequence[tuple[AuxLossSpec, float]]) -> list[PatternRow]:
    """One :class:`PatternRow` per pattern of :data:`PATTERNS` over ``(spec, fitness)`` pairs."""
    from scipy import stats

    rows = []
    for name, holds in PATTERNS.items():
        with_ = np.array([f for spec, f in candidates if holds(spec)], dtype=float)
        without = np.array([f for spec, f in candidates if not holds(spec)], dtype=float)
        p_value = float("nan")
        if len(with_) >= 2 and len(without) >= 2 and (with_.std() > 0 or without.std() > 0):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # near-identical groups: scipy warns, the p-value still stands
                p_value = float(stats.ttest_ind(with_, without, equal_var=False).pvalue)
        rows.append(PatternRow(name, len(with_), len(without),
                               float(with_.mean()) if len(with_) else float("nan"),
                               float(without.mean()) if len(without) else float("nan"), p_value))
    return rows


def _fmt(value: float, digits: int = 1) -> str:
    return "–" if math.isnan(value) else f"{value:.{digits}f}"


def patterns_markdown(rows: Sequence[PatternRow]) -> str:
    """The rows as a markdown table."""
    lines = ["| pattern | n with | n without | mean with | mean without | difference | p (Welch t-test) |",
             "|---|---|---|---|---|---|---|"]
    for r in rows:
        p = "–" if math.isnan(r.p_value) else f"{r.p_value:.3g}"
        lines.append(f"| {r.pattern} | {r.n_with} | {r.n_without} | {_fmt(r.mean_with)} | {_fmt(r.mean_without)} "
                     f"| {_fmt(r.difference)} | {p} |")
    return "\n".join(lines)


# --- the report -------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Scored:
    """One trained candidate: its loss, stage, slot, trial number, fitness (mean, std over seeds), origin."""

    spec: AuxLossSpec
    stage: int
    slot: int
    trial: int
    fitness: float
    fitness_std: float
    seeds: int
    origin: str
    paired: Paired | None = None
    """The fitness over seeds, paired with the stage's baseline when there is one, with its interval."""

    @property
    def score(self) -> Paired:
        """:attr:`paired`, or the plain fitness without an interval."""
        return self.paired or Paired(self.fitness, self.fitness_std, self.seeds, float("nan"), float("nan"), False)


@dataclass(frozen=True)
class Results:
    """Everything the report needs: scored candidates and counts per state."""

    study_name: str
    population: int
    stages: int
    scored: list[Scored]
    pruned: int
    failed: int
    stages_done: int
    base_config: dict
    settings: dict
    baselines: dict[int, tuple[float, int]] = dataclasses.field(default_factory=dict)
    """Stage → (SAC baseline's mean fitness, seeds), for searches with ``baseline``."""
    confidence: float = 0.9

    def ranked(self) -> list[Scored]:
        """Scored candidates, best first (:func:`~a2ls_lightning.search.paired.rank_key`); with ``promote`` the
        highest stage reached (the highest fidelity) first."""
        promote = bool(self.settings.get("promote"))
        return sorted(self.scored, key=lambda s: (-s.stage if promote else 0, *rank_key(s.score), -s.stage, s.slot))


def load_results(storage: str, study_name: str) -> Results:
    """Read a search's results from ``storage`` (a database URL).

    Raises:
        ValueError: the storage cannot be opened or holds no such study (one line).
    """
    try:
        study = optuna.load_study(study_name=study_name, storage=open_storage(storage))
    except KeyError:
        raise ValueError(f"study: no study {study_name!r} in {describe_url(storage)}") from None
    stored = study.user_attrs.get(STUDY_ATTR_SETTINGS, {})
    settings = stored.get("search", {})
    trials = study.get_trials(deepcopy=False)
    if not settings:
        raise ValueError(f"study: {study_name!r} is not an a2ls search (no {STUDY_ATTR_SETTINGS} attribute)")
    parsed = SearchSettings.from_mapping(settings)
    ledger = Ledger(trials, parsed.slots, parsed.stages)
    scored, pruned, failed, baselines = [], 0, 0, {}
    for (stage, slot), trial in sorted(ledger.holders.items()):
        if is_baseline(trial):
            if trial.state == TrialState.COMPLETE:
                seeds = trial.user_attrs.get(ATTR_SEED_FITNESS) or [trial.value]
                baselines[stage] = (float(trial.value), len(seeds))
            continue
        if trial.state == TrialState.PRUNED:
            pruned += 1
        elif trial.state == TrialState.FAIL and ATTR_ERROR in trial.user_attrs:
            failed += 1
        if trial.state != TrialState.COMPLETE:
            continue
        seeds = trial.user_attrs.get(ATTR_SEED_FITNESS) or [trial.value]
        spec = AuxLossSpec.parse(trial.user_attrs[ATTR_SPEC])
        scored.append(Scored(spec, stage, slot, trial.number, float(trial.value), float(np.std(seeds)), len(seeds),
                             trial.user_attrs.get(ATTR_ORIGIN, ""), ledger.paired(trial, parsed.confidence)))
    done = sum(ledger.stage_done(s) for s in range(ledger.stages))
    return Results(study_name, ledger.population, ledger.stages, scored, pruned, failed, done,
                   stored.get("base", {}), settings, baselines, parsed.confidence)


def top_markdown(scored: list[Scored], top: int = 10, confidence: float = 0.9) -> str:
    """The first ``top`` of ``scored`` (ranked already, :meth:`Results.ranked`) as a markdown table."""
    what = "improvement over SAC (paired)" if any(s.score.paired for s in scored) else "fitness"
    lines = [f"| rank | loss (text form) | {what}: mean [{confidence:.0%} CI] | fitness (mean ± std over seeds) | "
             "horizon | operator | stage | origin |", "|---|---|---|---|---|---|---|---|"]
    for rank, s in enumerate(scored[:top], 1):
        operator = s.spec.operator + (" +neg" if s.spec.negatives else "")
        lines.append(f"| {rank} | `{s.spec}` | {s.score.interval()} | {s.fitness:.1f} ± {s.fitness_std:.1f} "
                     f"(n={s.seeds}) | {s.spec.horizon} | {operator} | {s.stage} | {s.origin} |")
    return "\n".join(lines)


def stages_markdown(results: Results) -> str:
    """Per stage: candidates scored, seeds, env steps per run, and the SAC baseline's fitness."""
    settings = SearchSettings.from_mapping(results.settings)
    lines = ["| stage | candidates scored | seeds per candidate | env steps per run | SAC baseline fitness |",
             "|---|---|---|---|---|"]
    for stage in range(settings.stages):
        base = results.baselines.get(stage)
        lines.append(f"| {stage} | {sum(s.stage == stage for s in results.scored)} of {settings.populations[stage]} | "
                     f"{settings.seed_counts[stage]} | {settings.budgets[stage]} | "
                     f"{'–' if base is None else f'{base[0]:.1f} (n={base[1]})'} |")
    return "\n".join(lines)


def stage_figure(results: Results, path: Path) -> None:
    """Fitness of every candidate per stage (dots, box per stage) and the best so far (line), as a PNG."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    rng = np.random.default_rng(0)
    stages = sorted({s.stage for s in results.scored})
    per_stage = [[s.fitness for s in results.scored if s.stage == st] for st in stages]
    if stages:
        ax.boxplot(per_stage, positions=stages, widths=0.5, showfliers=False)
        for st, values in zip(stages, per_stage):
            ax.scatter(st + rng.uniform(-0.15, 0.15, len(values)), values, s=14, alpha=0.6, color="tab:blue")
        best = np.maximum.accumulate([max(v) for v in per_stage])
        ax.plot(stages, best, color="tab:red", marker="o", label="best so far")
        ax.legend(loc="lower right")
        ax.set_xticks(stages)
    ax.set_xlabel("stage")
    ax.set_ylabel("fitness (mean eval return over the curve)")
    sizes = sorted({len(v) for v in per_stage}, reverse=True)
    ax.set_title(f"{results.study_name}: fitness per stage ({'/'.join(map(str, sizes)) or 0} scored per stage)")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


def write_report(storage: str, study_name: str, out_dir: str | Path, top: int = 10, olaux_top: int = 5) -> str:
    """Write ``report.md``, ``stages.png`` and ``base.yaml`` (the base training config, to train the winner
    with ``a2ls fit``) into ``out_dir``; return the markdown."""
    import yaml

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    results = load_results(storage, study_name)
    stage_figure(results, out / "stages.png")
    ranked = results.ranked()
    promote = bool(results.settings.get("promote"))
    patterned = [s for s in results.scored if s.stage == 0 or not promote]
    paired = bool(results.baselines)
    lines = [f"# Auxiliary-loss search `{study_name}`", "",
             (f"{len(results.scored)} candidates scored, {results.pruned} pruned, {results.failed} failed; "
              f"{results.stages_done} of {results.stages} stages done."), "", stages_markdown(results),
             "", "## Top candidates", "",
             ("Ranked by the lower bound of the interval over seeds" + (" of the paired improvement over the stage's "
              "SAC baseline (same seeds)" if paired else "") + "; one-seed candidates (no interval) after them, by "
              "mean" + ("; the highest stage reached first." if promote else ".")), "",
             top_markdown(ranked, top, results.confidence), "",
             "## Fitness per stage", "", "![fitness per stage](stages.png)", "",
             "## Patterns (the paper's Table 5)", "",
             (f"Mean {'paired improvement over SAC' if paired else 'fitness'} of the "
              f"{'stage-0 ' if promote else ''}candidates with and without each pattern; p: Welch's t-test."), "",
             patterns_markdown(pattern_table([(s.spec, s.score.mean) for s in patterned]))]
    if results.scored:
        best = ranked[0]
        base = training_config(results, out / "winner")
        atomic_write_text(out / "base.yaml", yaml.safe_dump(base, sort_keys=False))
        olaux = olaux_config(results, out / "olaux", olaux_top)
        atomic_write_text(out / "olaux.yaml", yaml.safe_dump(olaux, sort_keys=False))
        lines += ["", "## Training the winner", "",
                  "`base.yaml` next to this report is the search's training run: its config, budget "
                  f"({base['trainer']['max_steps']} updates) and seed; logs go to `{out / 'winner'}`:", "",
                  "```bash",
                  f"a2ls fit --config {out / 'base.yaml'} --model.aux_losses='{{best: \"{best.spec}\"}}'", "```",
                  "", "## The best losses together, weighted by OL-AUX", "",
                  f"`olaux.yaml` trains the {len(olaux['model']['aux_losses'])} best distinct candidates at once, "
                  "their weights learned online by OL-AUX (Lin et al. 2019), with the same training settings:", "",
                  "```bash", f"a2ls fit --config {out / 'olaux.yaml'}", "```"]
    text = "\n".join(lines) + "\n"
    atomic_write_text(out / "report.md", text)
    return text


def olaux_config(results: Results, root_dir: Path, top: int) -> dict:
    """:func:`training_config` with the ``top`` best distinct candidates as auxiliary losses weighted by OL-AUX."""
    config = training_config(results, root_dir)
    losses: dict[str, str] = {}
    for scored in results.ranked():
        text = str(scored.spec)
        if text not in losses.values():
            losses[f"top{len(losses) + 1}"] = text
        if len(losses) == top:
            break
    config["model"] = {**(config.get("model") or {}), "aux_losses": losses}
    trainer = config["trainer"]
    ours = "a2ls_lightning.callbacks"
    callbacks = [c for c in trainer.get("callbacks") or []
                 if not str(c.get("class_path", "") if isinstance(c, dict) else c).startswith(ours)]
    trainer["callbacks"] = [*callbacks, {"class_path": "a2ls_lightning.callbacks.OLAux"}]
    return config


def training_config(results: Results, root_dir: Path) -> dict:
    """The ``a2ls fit`` config every candidate trained with: the base config, the budget's ``trainer.max_steps``
    and a root folder of its own (``root_dir``)."""
    import copy

    from a2ls_lightning.search.objective import budget_for

    base = copy.deepcopy(results.base_config)
    budget = budget_for(base, SearchSettings.from_mapping(results.settings).budgets[-1])  # the last stage's
    base["trainer"] = {**(base.get("trainer") or {}), "max_steps": budget.max_steps,
                       "default_root_dir": str(root_dir)}
    return base
