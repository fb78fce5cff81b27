"""Learning curves of runs: read TensorBoard scalars, pair evaluations with env steps, summarise, plot, tabulate.

The lowest layer of the package (it imports nothing from ``a2ls_lightning``): numpy, matplotlib (figures drawn
on the Agg canvas, so no display is needed and pyplot's global state is left alone) and tensorboard's
``EventAccumulator``. Used by ``a2ls plot``, ``scripts/benchmark_learning.py`` and ``examples/quickstart.ipynb``.

A *curve* is ``(x [E], y [E])``: one point per evaluation, ``x`` in env steps (action repeats included).
A *group* is a label and the curves of its runs (e.g. one per seed)::

    scalars = read_scalars("runs/sac/seed1")                # {"eval/return": [(update, value), ...], ...}
    x, y = eval_curve(scalars)                              # [E], [E]
    groups = {"sac": [eval_curve(read_scalars(d)) for d in sac_dirs]}
    plot_groups(groups, "plot.png", title="cheetah-run")
    print(markdown_table(groups))
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from a2ls_lightning.stats import welch_p_value  # noqa: F401 - part of this module's API (the tables use it)

#: ``tag → [(step, value), ...]`` in step order; ``step`` is the logged step (the update count for this package).
Scalars = dict[str, list[tuple[int, float]]]
#: One run's evaluation curve: ``(x [E], y [E])``.
Curve = tuple[np.ndarray, np.ndarray]

EVENT_GLOB = "events.out.tfevents*"


def event_files(run_dir: str | Path) -> list[Path]:
    """The TensorBoard event files under ``run_dir`` (recursive), sorted by path."""
    return sorted(p for p in Path(run_dir).rglob(EVENT_GLOB) if p.is_file())


def read_scalars(run_dir: str | Path, tags: Iterable[str] | None = None) -> Scalars:
    """Every scalar series of the TensorBoard event files under ``run_dir`` (searched recursively).

    Args:
        run_dir: one run's folder (e.g. a Lightning ``default_root_dir`` or a logger's ``version_N`` folder).
        tags: keep only these tags (those not logged are simply absent); ``None`` keeps all.

    Returns:
        ``{tag: [(step, value), ...]}``, each series ``[S]`` sorted by step. Several event files (a resumed run)
        are merged; where a step was written more than once, the latest write (by wall time) wins.

    Raises:
        FileNotFoundError: no event file under ``run_dir``.
    """
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    files = event_files(run_dir)
    if not files:
        raise FileNotFoundError(f"no TensorBoard event files under {run_dir}")
    wanted = None if tags is None else set(tags)
    events: dict[str, list[tuple[int, float, int, float]]] = {}  # tag -> (step, wall time, order, value)
    order = 0
    for path in files:
        acc = EventAccumulator(str(path), size_guidance={"scalars": 0})  # 0: keep every point
        acc.Reload()
        for tag in acc.Tags()["scalars"]:
            if wanted is not None and tag not in wanted:
                continue
            for event in acc.Scalars(tag):
                events.setdefault(tag, []).append((int(event.step), float(event.wall_time), order, float(event.value)))
                order += 1
    scalars: Scalars = {}
    for tag, points in events.items():
        points.sort()  # by step, then wall time, then reading order: the last of a step is the latest write
        merged: dict[int, float] = {}
        for step, _, _, value in points:
            merged[step] = value
        scalars[tag] = list(merged.items())
    return scalars


def eval_curve(
    scalars: Mapping[str, Sequence[Sequence[float]]], tag: str = "eval/return", x_tag: str = "eval/env_steps"
) -> Curve:
    """One run's evaluation curve: ``(x [E], y [E])``, one point per evaluation, sorted by ``x``.

    ``tag`` and ``x_tag`` are logged together at the same step (the update count): the points are paired by
    step. Without ``x_tag`` the logged step itself is ``x``. A repeated ``x`` (an evaluation point written again,
    e.g. by a run resumed from a checkpoint older than its last evaluation) keeps its latest point: the last in
    step order (a step written twice is already resolved to its latest write by :func:`read_scalars`), the one
    the run went on from.

    Args:
        scalars: ``{tag: [(step, value), ...]}`` as from :func:`read_scalars` (JSON lists ``[step, value]`` too).
        tag: the evaluated quantity (``y``).
        x_tag: the env-step counter logged with it.

    Raises:
        KeyError: ``tag`` was not logged.
    """
    if tag not in scalars:
        raise KeyError(f"no {tag!r} scalars (logged tags: {', '.join(sorted(scalars)) or 'none'})")
    series = [(int(step), float(value)) for step, value in scalars[tag]]
    if x_tag in scalars:
        x_at = {int(step): float(value) for step, value in scalars[x_tag]}
        series = [(x_at[step], y) for step, y in series if step in x_at]
    else:
        series = [(float(step), y) for step, y in series]
    x = np.array([p[0] for p in series], dtype=float)
    y = np.array([p[1] for p in series], dtype=float)
    # Sorted unique x, index of its last occurrence: unique() on the reversed series finds the first from the end.
    _, from_end = np.unique(x[::-1], return_index=True)
    latest = len(x) - 1 - from_end
    return x[latest], y[latest]


def shared_x(curves: Sequence[Curve]) -> np.ndarray:
    """The env steps ``[S]`` at which every curve has an evaluation (sorted; empty when they share none)."""
    if not curves:
        return np.zeros(0)
    common = np.asarray(curves[0][0], dtype=float)
    for x, _ in curves[1:]:
        common = np.intersect1d(common, np.asarray(x, dtype=float))
    return common


def same_schedule(curves: Sequence[Curve]) -> bool:
    """True when every curve was evaluated at exactly the same env steps (same budget and schedule)."""
    first = np.asarray(curves[0][0], dtype=float) if curves else np.zeros(0)
    return all(np.array_equal(first, np.asarray(x, dtype=float)) for x, _ in curves[1:])


def last_x(curves: Sequence[Curve]) -> tuple[float, float]:
    """``(min, max)`` over curves of their last env step: the budgets a group's final values are taken at."""
    ends = [float(np.asarray(x)[-1]) for x, _ in curves]
    return min(ends), max(ends)


def summarize(curves: Sequence[Curve]) -> dict[str, float | int]:
    """Mean and std over runs of the final value and of the AULC of their curves.

    The AULC is the mean of ``y`` over the evaluation points: the area under the curve normalised by its
    length, for evenly spaced evaluations. Standard deviations are population ones (``ddof=0``).

    Args:
        curves: ``n`` curves ``(x [E_i], y [E_i])``, ``E_i >= 1``.

    Returns:
        ``{"n", "final_mean", "final_std", "aulc_mean", "aulc_std"}``.
    """
    if not curves:
        raise ValueError("summarize: no curves")
    finals = np.array([np.asarray(y, dtype=float)[-1] for _, y in curves])
    aulc = np.array([np.mean(np.asarray(y, dtype=float)) for _, y in curves])
    return {"n": len(curves), "final_mean": float(finals.mean()), "final_std": float(finals.std()),
            "aulc_mean": float(aulc.mean()), "aulc_std": float(aulc.std())}


def mean_std(mean: float, std: float, digits: int = 1, n: int | None = None) -> str:
    """``"mean ± std"`` with ``digits`` decimals; only ``"mean"`` when ``n == 1`` (one run has no spread)."""
    if n == 1:
        return f"{mean:.{digits}f}"
    return f"{mean:.{digits}f} ± {std:.{digits}f}"


def markdown_table(groups: Mapping[str, Sequence[Curve]], digits: int = 1) -> str:
    """Markdown table of :func:`summarize` per group (``digits`` decimals) and the env steps its runs end at::

        | group | runs | final (mean ± std) | AULC (mean ± std) | env steps |

    A group whose runs were evaluated at different env steps (another budget or schedule) shows the range of their
    last env steps (``12000–100000``), and a line under the table says that its final value and AULC mix budgets.
    """
    rows = ["| group | runs | final (mean ± std) | AULC (mean ± std) | env steps |", "|---|---|---|---|---|"]
    notes = []
    for label, curves in groups.items():
        s = summarize(curves)
        low, high = last_x(curves)
        steps = f"{low:.0f}" if low == high else f"{low:.0f}–{high:.0f}"
        mixed = not same_schedule(curves)
        rows.append(f"| {label}{' (*)' if mixed else ''} | {s['n']} | "
                    f"{mean_std(s['final_mean'], s['final_std'], digits, s['n'])} | "
                    f"{mean_std(s['aulc_mean'], s['aulc_std'], digits, s['n'])} | {steps} |")
        if mixed:
            notes.append(f"(*) {label}: its runs were evaluated at different env steps (last at {steps}): the final "
                         "value and the AULC mix budgets or schedules")
    return "\n".join(rows + ([""] + notes if notes else []))


def plot_groups(
    groups: Mapping[str, Sequence[Curve]],
    out_png: str | Path | None = None,
    title: str = "",
    ylabel: str = "eval/return",
    xlabel: str = "env steps",
    ax: Axes | None = None,
    figsize: tuple[float, float] = (7, 4.5),
    dpi: int = 110,
) -> Figure:
    """Mean ± std band of each group's curves against env steps; the legend gives each group's run count.

    Curves are aligned on their env steps, never on their index. Where a group's runs were evaluated at the same
    env steps, the band is their mean ± std there. A run of another budget or schedule is drawn on its own ``x``
    as a thin line of the group's colour, and the band covers only the env steps all the group's runs share (a
    run still training, or one of a smaller budget, then shows where it is; the band never mixes points of
    different env steps). The legend marks such a group ``(n=3, own x)``.

    Args:
        groups: ``{label: [(x [E_i], y [E_i]), ...]}``; groups without curves are skipped.
        out_png: where to save the figure (PNG, ``dpi``); ``None`` saves nothing.
        title, ylabel, xlabel: axis texts.
        ax: draw into these axes (e.g. one panel of a grid, or a notebook's ``plt.subplots()``); ``None``
            draws a new ``figsize`` figure on the Agg canvas (pyplot untouched).

    Returns:
        The figure drawn on (``ax.figure`` when ``ax`` is given).
    """
    if ax is None:
        fig = Figure(figsize=figsize)
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        own = True
    else:
        fig, own = ax.figure, False
    for label, curves in groups.items():
        if not curves:
            continue
        x = shared_x(curves)  # [S]
        mixed = not same_schedule(curves)
        name = f"{label} (n={len(curves)}{', own x' if mixed else ''})"
        color = None
        if len(x):
            # each run's values at the shared env steps, found by value (curves are sorted by x, without repeats)
            stack = np.stack([np.asarray(cy, dtype=float)[np.searchsorted(np.asarray(cx, dtype=float), x)]
                              for cx, cy in curves])  # [runs, S]
            mean, std = stack.mean(0), stack.std(0)
            (line,) = ax.plot(x, mean, marker="o", markersize=3, label=name)
            ax.fill_between(x, mean - std, mean + std, alpha=0.2, color=line.get_color())
            color, name = line.get_color(), None
        if mixed:
            for cx, cy in curves:
                (line,) = ax.plot(cx, cy, linewidth=0.8, alpha=0.6, color=color, label=name)
                color, name = line.get_color(), None
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    if title:
        ax.set_title(title)
    if ax.get_legend_handles_labels()[0]:
        ax.legend()
    if own:
        fig.tight_layout()
    if out_png is not None:
        fig.savefig(out_png, dpi=dpi)
    return fig


def load_run(path: str | Path, tags: Iterable[str] | None = None) -> tuple[Scalars, str]:
    """One run's scalars and task: a run folder (TensorBoard events; the task from its ``hparams.yaml`` or
    ``config.yaml``, ``"unknown"`` if neither names one) or a benchmark record (``*.json`` with ``scalars`` and
    ``task``, as ``scripts/benchmark_learning.py`` writes them)."""
    path = Path(path)
    if path.is_file() and path.suffix == ".json":
        import json

        record = json.loads(path.read_text())
        wanted = None if tags is None else set(tags)
        scalars = {t: [(int(a), float(b)) for a, b in v] for t, v in record.get("scalars", {}).items()
                   if wanted is None or t in wanted}
        return scalars, str(record.get("task") or _task_of_command(str(record.get("command", ""))))
    return read_scalars(path, tags=tags), run_task(path)


def _task_of_command(command: str) -> str:
    """The task of an ``a2ls fit`` command line (older records store no ``task``): ``--data.task=``, else the
    ``data.task`` of its ``--config`` file (relative to the working folder), else ``"unknown"``."""
    import re

    import yaml

    found = re.search(r"--data\.task[= ](\S+)", command)
    if found:
        return found.group(1)
    config = re.search(r"--config[= ](\S+)", command)
    if config and Path(config.group(1)).is_file():
        task = ((yaml.safe_load(Path(config.group(1)).read_text()) or {}).get("data") or {}).get("task")
        if task:
            return str(task)
    return "unknown"


def run_task(run_dir: str | Path) -> str:
    """The task a run folder trained on, from the ``hparams.yaml`` (Lightning's) or ``config.yaml`` (the CLI's)
    under it; ``"unknown"`` when none names one."""
    import yaml

    for name in ("hparams.yaml", "config.yaml"):
        for path in sorted(Path(run_dir).rglob(name)):
            try:
                values = yaml.safe_load(path.read_text()) or {}
            except (OSError, yaml.YAMLError):
                continue
            task = values.get("task") or (values.get("data") or {}).get("task")
            if task:
                return str(task)
    return "unknown"


def is_record(path: str | Path) -> bool:
    """A benchmark record file (``*.json``)."""
    return Path(path).is_file() and Path(path).suffix == ".json"


def run_score(scalars: Scalars, score: str = "final", tag: str = "eval/return", x_tag: str = "eval/env_steps") -> float:
    """A run's score: its last evaluation (``final``) or the mean of its evaluation curve (``aulc``)."""
    _, y = eval_curve(scalars, tag, x_tag)
    return float(y[-1] if score == "final" else np.mean(y))


def aggregate_runs(groups: Mapping[str, Sequence[str | Path]], score: str = "final",
                   reference: Mapping[str, float] | None = None, reps: int = 2000, seed: int = 0,
                   tag: str = "eval/return", x_tag: str = "eval/env_steps") -> dict[str, Any]:
    """IQM, mean, probability of improvement (``rliable``, see :mod:`a2ls_lightning.stats`) of groups of runs.

    Args:
        groups: ``{label: [run folder or record, ...]}``; the tasks of a group's runs stratify the bootstrap.
        score: ``final`` (last evaluation) or ``aulc`` (mean over the evaluations).
        reference: per-task normaliser (score / reference); a task not in it uses 1000, DMC's maximum return.
        reps, seed: bootstrap replications and seed.

    Returns:
        ``{"groups": {label: {...}}`` as :func:`a2ls_lightning.stats.aggregate`, ``"tasks": [...]`` (common to all
        groups), ``"dropped_tasks"``, ``"dropped_runs"``, ``"score"``, ``"reference"``, ``"scores"``:
        ``{label: [runs, tasks]}`` normalised, ``"mixed_budgets"``: ``{task: [last env steps, ...]}`` for each task
        whose runs end at different env steps (their scores then mix budgets, and the caller must say so)}.

    Raises:
        ValueError: ``score`` unknown, or no task common to all groups.
    """
    from a2ls_lightning.stats import DMC_MAX_RETURN, aggregate, score_matrix

    if score not in ("final", "aulc"):
        raise ValueError(f"score={score!r}; allowed: final, aulc")
    reference = dict(reference or {})
    per_group: dict[str, list[tuple[str, float]]] = {}
    budgets: dict[str, set[float]] = {}  # task -> the last env steps of its runs (every group)
    for label, paths in groups.items():
        runs = []
        for path in paths:
            scalars, task = load_run(path, tags=(tag, x_tag))
            if tag in scalars:
                x, y = eval_curve(scalars, tag, x_tag)
                value = float(y[-1] if score == "final" else np.mean(y))
                runs.append((task, value / reference.get(task, DMC_MAX_RETURN)))
                budgets.setdefault(task, set()).add(float(x[-1]))
        per_group[label] = runs
    all_tasks = sorted({task for runs in per_group.values() for task, _ in runs})
    tasks = [t for t in all_tasks if all(any(task == t for task, _ in runs) for runs in per_group.values())]
    if not tasks:
        raise ValueError("no task is common to every group (each group needs runs of the same tasks)")
    matrices, dropped_runs = {}, {}
    for label, runs in per_group.items():
        matrices[label], dropped_runs[label] = score_matrix(runs, tasks)
    return {"groups": aggregate(matrices, reps=reps, seed=seed), "tasks": tasks,
            "dropped_tasks": [t for t in all_tasks if t not in tasks], "dropped_runs": dropped_runs,
            "score": score, "reference": {t: reference.get(t, DMC_MAX_RETURN) for t in tasks},
            "scores": {label: m.tolist() for label, m in matrices.items()},
            "mixed_budgets": {t: sorted(budgets[t]) for t in tasks if len(budgets[t]) > 1}}


def plot_performance_profiles(scores: Mapping[str, np.ndarray], out_png: str | Path, reps: int = 2000, seed: int = 0,
                              xlabel: str = "normalised score τ", dpi: int = 110) -> Figure:
    """rliable's score-distribution performance profiles (fraction of runs with score > τ, bootstrap 95% band)."""
    from a2ls_lightning.stats import performance_profiles

    high = max(1.0, max(float(np.max(m)) for m in scores.values()))
    taus = np.linspace(0.0, high, 81)
    profiles, bands = performance_profiles({k: np.asarray(v) for k, v in scores.items()}, taus, reps=reps, seed=seed)
    fig = Figure(figsize=(7, 4.5))
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    for label, profile in profiles.items():
        (line,) = ax.plot(taus, profile, label=label)
        ax.fill_between(taus, bands[label][0], bands[label][1], alpha=0.15, color=line.get_color())
    ax.set_xlabel(xlabel)
    ax.set_ylabel("fraction of runs with score > τ")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(out_png, dpi=dpi)
    return fig


def group_curves(run_dirs: Iterable[str | Path], tag: str = "eval/return",
                 x_tag: str = "eval/env_steps") -> list[Curve]:
    """:func:`eval_curve` of each run folder (see :func:`read_scalars`)."""
    return [eval_curve(read_scalars(d, tags=(tag, x_tag)), tag, x_tag) for d in run_dirs]


__all__ = ["Curve", "Scalars", "aggregate_runs", "eval_curve", "event_files", "group_curves", "is_record", "last_x",
           "load_run", "markdown_table", "mean_std", "plot_groups", "plot_performance_profiles", "read_scalars",
           "run_score", "run_task", "same_schedule", "shared_x", "summarize", "welch_p_value"]
