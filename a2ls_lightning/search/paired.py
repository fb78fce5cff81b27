"""A candidate's fitness over seeds, paired with the SAC baseline trained on the same seeds, and its uncertainty.

With ``search.baseline`` every stage trains plain SAC on the seeds its candidates train on. A candidate's fitness is
then its paired improvement: ``d_k = f(candidate, seed k) - f(SAC, seed k)``. The same seed means the same initial
networks and environment draws at the start (common random numbers), so the seed's own luck largely cancels in the
difference. The interval is Student's t over the seeds, ``mean(d) ± t_{(1+c)/2, n-1} · sd(d) / sqrt(n)``; candidates
rank by its lower bound, so a lead seen on one lucky seed does not outrank a smaller, consistent one. With one seed
there is no interval (NaN) and the mean ranks. Without a baseline ``d_k`` is the candidate's own fitness.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["Paired", "paired_fitness", "rank_key"]


@dataclass(frozen=True)
class Paired:
    """Paired fitness of one candidate: the mean difference over ``n`` seeds, its std, and the interval."""

    mean: float
    std: float
    n: int
    low: float
    high: float
    paired: bool

    def interval(self, digits: int = 1) -> str:
        """``mean [low, high]`` (``mean (n=1)`` without an interval)."""
        if math.isnan(self.low):
            return f"{self.mean:.{digits}f} (n={self.n}, no interval)"
        return f"{self.mean:.{digits}f} [{self.low:.{digits}f}, {self.high:.{digits}f}] (n={self.n})"


def paired_fitness(candidate: Sequence[float], baseline: Sequence[float] | None, confidence: float = 0.9) -> Paired:
    """Paired improvement of ``candidate`` ``[n]`` over ``baseline`` ``[n]`` (seed by seed), or the candidate's own
    fitness when ``baseline`` is ``None``, with a two-sided Student-t interval at ``confidence``.

    Raises:
        ValueError: no seed, or the two lists differ in length (the seeds are not paired).
    """
    values = np.asarray(candidate, dtype=float)
    if values.size == 0:
        raise ValueError("paired fitness: the candidate has no seed")
    if baseline is not None:
        base = np.asarray(baseline, dtype=float)
        if base.shape != values.shape:
            raise ValueError(f"paired fitness: {values.size} candidate seeds against {base.size} baseline seeds")
        values = values - base
    n = int(values.size)
    mean = float(values.mean())
    if n < 2:
        return Paired(mean, float("nan"), n, float("nan"), float("nan"), baseline is not None)
    from scipy import stats

    std = float(values.std(ddof=1))
    half = float(stats.t.ppf((1 + confidence) / 2, n - 1)) * std / math.sqrt(n)
    return Paired(mean, std, n, mean - half, mean + half, baseline is not None)


def rank_key(paired: Paired) -> tuple[int, float, float]:
    """Sort key, best first: candidates with an interval by its lower bound, then those without by their mean."""
    if math.isnan(paired.low):
        return 1, -paired.mean, 0.0
    return 0, -paired.low, -paired.mean
