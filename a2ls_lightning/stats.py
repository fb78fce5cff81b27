"""Aggregate statistics of RL results across tasks and seeds, with the ``rliable`` library (Agarwal et al., "Deep
Reinforcement Learning at the Edge of the Statistical Precipice", NeurIPS 2021): interquartile mean (IQM) and mean
of normalised scores with stratified-bootstrap confidence intervals, the probability of improvement of one group
over another, and performance profiles. The computations are ``rliable``'s own; this module only arranges the
scores and fixes the random state, so that a figure is reproducible. Also Welch's t-test for per-seed figures
(:func:`welch_p_value`, scipy's).

``rliable`` is an optional dependency (``pip install "a2ls_lightning[stats]"``); without it the functions here
raise a one-line ``ImportError`` that says what to install. No matplotlib here (plots live in ``plotting``).
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import numpy as np

INSTALL_HINT = ("aggregate statistics need rliable: pip install 'a2ls_lightning[stats]' "
                "(rliable, with arch<8 and pandas<3, which arch 7 needs)")

#: Default per-task reference of a normalised score: DMC's episode returns lie in [0, 1000].
DMC_MAX_RETURN = 1000.0


def _rliable() -> tuple[Any, Any]:
    try:
        from rliable import library, metrics
    except Exception as err:  # noqa: BLE001 - missing package, or arch broken by an incompatible pandas
        raise ImportError(f"{INSTALL_HINT} ({type(err).__name__}: {str(err).splitlines()[0][:120]})") from None
    return library, metrics


@contextlib.contextmanager
def _quiet_arch(seed: int | None = None) -> Iterator[None]:
    """Silence arch's FutureWarning about ``random_state`` (rliable's API passes a ``RandomState`` on purpose) and,
    with ``seed``, seed numpy's global generator for the call and restore it afterwards: with arch 7 the bootstrap
    also draws from it (seen: the same ``random_state`` gave other intervals from one call to the next)."""
    state = np.random.get_state()
    try:
        if seed is not None:
            np.random.seed(seed)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="random_state is deprecated", category=FutureWarning)
            yield
    finally:
        np.random.set_state(state)


def score_matrix(runs: Sequence[tuple[str, float]], tasks: Sequence[str]) -> tuple[np.ndarray, int]:
    """A group's ``(task, score)`` pairs as rliable's ``[runs, tasks]`` matrix.

    Each task keeps its first ``n`` runs, ``n`` the fewest runs of any task (rliable's stratified bootstrap needs
    a rectangle); returns the matrix and the number of runs dropped for that.

    Raises:
        ValueError: a task of ``tasks`` has no run.
    """
    by_task: dict[str, list[float]] = {task: [] for task in tasks}
    for task, score in runs:
        if task in by_task:
            by_task[task].append(float(score))
    missing = [task for task, values in by_task.items() if not values]
    if missing:
        raise ValueError(f"no run of task(s) {', '.join(missing)}")
    n = min(len(values) for values in by_task.values())
    dropped = sum(len(values) - n for values in by_task.values())
    return np.array([[by_task[task][i] for task in tasks] for i in range(n)], dtype=float), dropped


def aggregate(scores: Mapping[str, np.ndarray], reps: int = 2000, seed: int = 0,
              confidence: float = 0.95) -> dict[str, dict[str, Any]]:
    """IQM and mean with stratified-bootstrap CIs per group, and each group's probability of improvement over
    every other group, with its CI.

    Args:
        scores: ``{group: [runs, tasks]}`` normalised scores (the same tasks, in the same order, for every group).
        reps: bootstrap replications.
        seed: seed of the bootstrap (``numpy.random.RandomState(seed)`` for each estimate).
        confidence: confidence level of the intervals.

    Returns:
        ``{group: {"iqm": x, "iqm_ci": [lo, hi], "mean": x, "mean_ci": [lo, hi], "runs": n, "tasks": t,
        "p_improvement": {other: [p, lo, hi]}}}`` where ``p`` is P(a run of ``group`` scores higher than one of
        ``other`` on a random task), rliable's ``probability_of_improvement``.
    """
    library, metrics = _rliable()
    scores = {group: np.asarray(matrix, dtype=float) for group, matrix in scores.items()}

    def iqm_and_mean(matrix: np.ndarray) -> np.ndarray:
        return np.array([metrics.aggregate_iqm(matrix), metrics.aggregate_mean(matrix)])

    with _quiet_arch(seed):
        points, intervals = library.get_interval_estimates(
            scores, iqm_and_mean, reps=reps, confidence_interval_size=confidence,
            random_state=np.random.RandomState(seed))
    out: dict[str, dict[str, Any]] = {}
    for group, matrix in scores.items():
        (iqm, mean), ci = points[group], intervals[group]
        out[group] = {"iqm": float(iqm), "iqm_ci": [float(ci[0, 0]), float(ci[1, 0])], "mean": float(mean),
                      "mean_ci": [float(ci[0, 1]), float(ci[1, 1])], "runs": int(matrix.shape[0]),
                      "tasks": int(matrix.shape[1]), "p_improvement": {}}
    groups = list(scores)
    pairs = {f"{x}\x00{y}": [scores[x], scores[y]] for x in groups for y in groups if x != y}
    if pairs:
        with _quiet_arch(seed):
            p_points, p_intervals = library.get_interval_estimates(
                pairs, metrics.probability_of_improvement, reps=reps, confidence_interval_size=confidence,
                random_state=np.random.RandomState(seed))
        for key, point in p_points.items():
            x, y = key.split("\x00")
            lo, hi = p_intervals[key][:, 0]
            out[x]["p_improvement"][y] = [float(np.asarray(point).reshape(-1)[0]), float(lo), float(hi)]
    return out


def performance_profiles(scores: Mapping[str, np.ndarray], taus: np.ndarray, reps: int = 2000,
                         seed: int = 0) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
    """rliable's score-distribution performance profiles: the fraction of runs above each ``tau`` ``[T]`` per group,
    and its bootstrap CI ``[2, T]`` (rliable draws from numpy's global generator here: it is seeded with ``seed``
    and restored afterwards)."""
    library, _ = _rliable()
    with _quiet_arch(seed):
        return library.create_performance_profile(dict(scores), taus, reps=reps)


def welch_p_value(a: Sequence[float], b: Sequence[float]) -> float:
    """Two-sided p-value of Welch's t-test (unequal variances) that ``a`` and ``b`` have the same mean.

    Meant for per-seed figures (e.g. the AULC of each seed of two variants), where 3 seeds per side is common: the
    test is weak there, so read a small p as evidence and a large one as "not shown", never as "no difference".

    Args:
        a: ``[n_a]`` values, ``n_a >= 2``.
        b: ``[n_b]`` values, ``n_b >= 2``.

    Returns:
        The p-value; ``nan`` when a side has fewer than two values, ``0.0`` when both sides are constant and
        differ, ``1.0`` when both are constant and equal (scipy returns ``nan`` for these).
    """
    import warnings

    from scipy import stats  # imported here: only the tables need it, not every plot

    a, b = np.asarray(a, dtype=float), np.asarray(b, dtype=float)
    if len(a) < 2 or len(b) < 2:
        return float("nan")
    if a.std() == 0 and b.std() == 0:
        return 1.0 if a.mean() == b.mean() else 0.0
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # near-identical groups: scipy warns about precision, the value stands
        return float(stats.ttest_ind(a, b, equal_var=False).pvalue)


def format_aggregate_table(result: Mapping[str, Mapping[str, Any]], baseline: str | None = None,
                           digits: int = 3) -> str:
    """A Markdown table of :func:`aggregate`'s result (IQM, mean, and P(improvement) over ``baseline``)."""
    header = "| group | runs × tasks | IQM [95% CI] | mean [95% CI] |"
    rule = "|---|---|---|---|"
    if baseline:
        header += f" P(group > {baseline}) [95% CI] |"
        rule += "---|"
    rows = [header, rule]
    for group, r in result.items():
        row = (f"| {group} | {r['runs']} × {r['tasks']} | {r['iqm']:.{digits}f} [{r['iqm_ci'][0]:.{digits}f}, "
               f"{r['iqm_ci'][1]:.{digits}f}] | {r['mean']:.{digits}f} [{r['mean_ci'][0]:.{digits}f}, "
               f"{r['mean_ci'][1]:.{digits}f}] |")
        if baseline:
            p = r["p_improvement"].get(baseline)
            row += " – |" if p is None else f" {p[0]:.2f} [{p[1]:.2f}, {p[2]:.2f}] |"
        rows.append(row)
    return "\n".join(rows)
