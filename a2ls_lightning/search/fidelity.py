"""Which cheap fidelity predicts the expensive result: rank correlations measured on stored learning curves.

A search scores many candidates cheaply (few env steps, one seed) and keeps the best; that only works when the cheap
score ranks candidates as the expensive result (100k env steps, mean over seeds) would. This module measures it on
stored runs (records written by ``scripts/benchmark_learning.py``: ``<setting>/<variant>/seed<N>.json`` holding the
``eval/return`` and ``eval/env_steps`` series). Training does not depend on its own length (no schedule reads
``max_steps``), so the first 20k env steps of a 100k run are what a 20k-step run gives.

- A :class:`Fidelity` is a cheap score: ``aulc`` (mean eval return over the evaluations up to ``steps``, what the
  search's ``aulc`` fitness is for a budget of ``steps``) or ``final`` (the eval return at ``steps``), averaged over
  a variant's first ``seeds`` seeds.
- The target of a variant is its ``aulc`` or ``final`` at 100k env steps, averaged over all its seeds, or, with
  ``held_out``, over the seeds the cheap score did not use (an independent replication: no shared runs).
- :func:`correlations` gives Spearman's rho and Kendall's tau-b across the variants of one setting (task), and
  pooled across settings on within-setting standardised scores (raw returns differ between tasks: pooling them
  raw would mostly measure task difficulty), each with a bootstrap CI that resamples variants within settings.

No matplotlib here; ``a2ls search fidelity`` prints the table (:func:`fidelity_markdown`).
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from a2ls_lightning.validation import check, check_choice

__all__ = ["METRICS", "Fidelity", "RunCurve", "correlations", "curve_score", "default_fidelities",
           "fidelity_markdown", "kendall_tau_b", "load_records", "paired_scores", "spearman"]

#: Scores of one evaluation curve up to a number of env steps.
METRICS: tuple[str, ...] = ("aulc", "final")


@dataclass(frozen=True)
class RunCurve:
    """One stored run's evaluation curve.

    Args:
        setting: the record's folder above its variant (``full``, ``planet/walker-walk``...): one task and config.
        variant: the variant folder's name.
        seed: the run's seed.
        steps: env steps of each evaluation ``[E]``, increasing.
        returns: mean eval return of each evaluation ``[E]``.
    """

    setting: str
    variant: str
    seed: int
    steps: np.ndarray
    returns: np.ndarray


def _curve(scalars: Mapping[str, Sequence[Sequence[float]]]) -> tuple[np.ndarray, np.ndarray]:
    """``(env steps [E], return [E])`` paired by the logged step; a repeated env-step count (older records copied
    the last evaluation at later log steps) keeps its first point."""
    x_at = {int(step): float(value) for step, value in scalars["eval/env_steps"]}
    points: dict[float, float] = {}
    for step, value in scalars["eval/return"]:
        if int(step) in x_at:
            points.setdefault(x_at[int(step)], float(value))
    xs = sorted(points)
    return np.array(xs, dtype=float), np.array([points[x] for x in xs], dtype=float)


def load_records(root: str | Path) -> list[RunCurve]:
    """Every ``<setting>/<variant>/seed<N>.json`` record under ``root`` that has an evaluation curve.

    Raises:
        ValueError: ``root`` is not a folder or holds no record.
    """
    root = Path(root)
    check(root.is_dir(), f"--records: {root} is not a folder")
    out = []
    for path in sorted(root.rglob("seed*.json")):
        record = json.loads(path.read_text())
        scalars = record.get("scalars", {})
        if "eval/return" not in scalars or "eval/env_steps" not in scalars:
            continue
        steps, returns = _curve(scalars)
        setting = path.parent.parent.relative_to(root).as_posix()
        out.append(RunCurve(setting, path.parent.name, int(record.get("seed", path.stem[4:])), steps, returns))
    check(bool(out), f"--records: no run records (<setting>/<variant>/seed<N>.json) under {root}")
    return out


def curve_score(curve: RunCurve, metric: str, steps: int) -> float:
    """``aulc``: mean eval return over the evaluations at or before ``steps``; ``final``: the one at ``steps``.

    Raises:
        ValueError: the run has no evaluation at exactly ``steps`` env steps.
    """
    check_choice("metric", metric, METRICS)
    at = np.flatnonzero(curve.steps == steps)
    check(at.size == 1, f"{curve.setting}/{curve.variant} seed {curve.seed}: no evaluation at {steps} env steps")
    upto = curve.returns[: int(at[0]) + 1]
    return float(upto[-1] if metric == "final" else upto.mean())


@dataclass(frozen=True)
class Fidelity:
    """A cheap score: ``metric`` at ``steps`` env steps, mean over a variant's first ``seeds`` seeds."""

    metric: str
    steps: int
    seeds: int

    @property
    def label(self) -> str:
        return f"{self.metric.upper() if self.metric == 'aulc' else 'final'} @ {self.steps // 1000}k, " \
               f"{self.seeds} seed{'s' if self.seeds > 1 else ''}"

    @property
    def cost(self) -> float:
        """Env steps it trains, as a fraction of one 100k-step run."""
        return self.steps * self.seeds / 100_000


def default_fidelities(steps: Sequence[int] = (20_000, 30_000, 50_000), seeds: Sequence[int] = (1, 2, 3)) \
        -> list[Fidelity]:
    """Every combination of metric, steps and seeds, cheapest first within a metric."""
    return [Fidelity(m, s, k) for m in METRICS for s in steps for k in seeds]


def paired_scores(curves: Sequence[RunCurve], cheap: Fidelity, target: str = "aulc", target_steps: int = 100_000,
                  held_out: bool = False) -> dict[str, tuple[list[str], np.ndarray, np.ndarray]]:
    """Per setting: its variants, their cheap scores ``[V]`` and targets ``[V]``.

    A variant's seeds are taken in increasing order; the cheap score uses the first ``cheap.seeds``. The target
    averages all seeds, or with ``held_out`` the remaining ones. Variants with too few seeds are left out, and so
    are settings with fewer than 3 variants left.
    """
    groups: dict[tuple[str, str], list[RunCurve]] = defaultdict(list)
    for curve in curves:
        groups[(curve.setting, curve.variant)].append(curve)
    out: dict[str, tuple[list[str], list[float], list[float]]] = {}
    for (setting, variant), runs in sorted(groups.items()):
        runs = sorted(runs, key=lambda c: c.seed)
        if len(runs) < cheap.seeds + int(held_out):
            continue
        x = float(np.mean([curve_score(c, cheap.metric, cheap.steps) for c in runs[: cheap.seeds]]))
        targets = runs[cheap.seeds:] if held_out else runs
        y = float(np.mean([curve_score(c, target, target_steps) for c in targets]))
        names, xs, ys = out.setdefault(setting, ([], [], []))
        names.append(variant), xs.append(x), ys.append(y)
    return {s: (n, np.array(x), np.array(y)) for s, (n, x, y) in out.items() if len(n) >= 3}


# --- rank correlations, vectorised over bootstrap replications (leading axes) ------------------------------
def spearman(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Spearman's rho of ``x``, ``y`` ``[..., n]`` along the last axis (average ranks for ties): ``[...]``; NaN
    where either side is constant."""
    from scipy.stats import rankdata

    rx, ry = rankdata(x, axis=-1), rankdata(y, axis=-1)
    rx, ry = rx - rx.mean(-1, keepdims=True), ry - ry.mean(-1, keepdims=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        return (rx * ry).sum(-1) / np.sqrt((rx ** 2).sum(-1) * (ry ** 2).sum(-1))


def kendall_tau_b(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Kendall's tau-b of ``x``, ``y`` ``[..., n]`` along the last axis: (concordant - discordant pairs) over the
    geometric mean of the pairs untied in each; ``[...]``, NaN where either side is constant."""
    dx = np.sign(x[..., :, None] - x[..., None, :])  # [..., n, n]
    dy = np.sign(y[..., :, None] - y[..., None, :])
    upper = np.triu(np.ones(dx.shape[-2:], dtype=bool), 1)
    s = (dx * dy)[..., upper].sum(-1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return s / np.sqrt(np.abs(dx)[..., upper].sum(-1) * np.abs(dy)[..., upper].sum(-1))


def _standardise(values: np.ndarray) -> np.ndarray:
    """Z-scores along the last axis (a constant row stays 0)."""
    std = values.std(-1, keepdims=True)
    return (values - values.mean(-1, keepdims=True)) / np.where(std > 0, std, 1.0)


def correlations(groups: Mapping[str, tuple[Sequence[str], np.ndarray, np.ndarray]], settings: Sequence[str] | None,
                 reps: int = 2000, seed: int = 0, confidence: float = 0.95) -> dict[str, list[float]]:
    """Spearman's rho and Kendall's tau-b between cheap scores and targets, with percentile bootstrap CIs.

    Args:
        groups: :func:`paired_scores`'s result.
        settings: the settings to use; one setting: across its variants; several: pooled across them on
            within-setting z-scores (standardised again in every replication); ``None``: all of ``groups``.
        reps: bootstrap replications (variants resampled with replacement within each setting).
        seed: seed of the bootstrap.
        confidence: the CIs' level.

    Returns:
        ``{"spearman": [rho, lo, hi], "kendall": [tau, lo, hi], "n": [variants, settings]}``.
    """
    chosen = list(groups) if settings is None else [s for s in settings if s in groups]
    check(bool(chosen), f"settings: none of {settings} has 3 or more variants with enough seeds")
    rng = np.random.default_rng(seed)
    xs, ys, bx, by = [], [], [], []
    for name in chosen:
        _, x, y = groups[name]
        index = rng.integers(0, len(x), size=(reps, len(x)))
        pool = len(chosen) > 1  # several settings: standardise within each before pooling
        xs.append(_standardise(x) if pool else x), ys.append(_standardise(y) if pool else y)
        bx.append(_standardise(x[index]) if pool else x[index]), by.append(_standardise(y[index]) if pool else y[index])
    x, y = np.concatenate(xs), np.concatenate(ys)
    boot_x, boot_y = np.concatenate(bx, axis=-1), np.concatenate(by, axis=-1)
    tail = 100 * (1 - confidence) / 2
    out: dict[str, list[float]] = {"n": [float(len(x)), float(len(chosen))]}
    for name, fn in (("spearman", spearman), ("kendall", kendall_tau_b)):
        lo, hi = np.nanpercentile(fn(boot_x, boot_y), [tail, 100 - tail])
        out[name] = [float(fn(x, y)), float(lo), float(hi)]
    return out


def fidelity_markdown(curves: Sequence[RunCurve], fidelities: Sequence[Fidelity], within: str, target: str = "aulc",
                      held_out: bool = False, reps: int = 2000, seed: int = 0) -> str:
    """The table: one row per cheap fidelity; rho and tau within ``within`` and pooled across all settings."""
    check_choice("--target", target, METRICS)
    lines = [f"| cheap score | cost (100k runs) | rho, {within} | tau, {within} | rho, all settings | "
             "tau, all settings | variants (settings) |", "|---|---|---|---|---|---|---|"]

    def cell(value: list[float]) -> str:
        return f"{value[0]:.2f} [{value[1]:.2f}, {value[2]:.2f}]"

    for fidelity in fidelities:
        groups = paired_scores(curves, fidelity, target, held_out=held_out)
        if not groups:
            continue
        one = correlations(groups, [within], reps, seed) if within in groups else None
        pooled = correlations(groups, None, reps, seed)
        inside = (cell(one["spearman"]), cell(one["kendall"])) if one else ("–", "–")
        lines.append(f"| {fidelity.label} | {fidelity.cost:.1f} | {inside[0]} | {inside[1]} | "
                     f"{cell(pooled['spearman'])} | {cell(pooled['kendall'])} | "
                     f"{int(pooled['n'][0])} ({int(pooled['n'][1])}) |")
    return "\n".join(lines)
