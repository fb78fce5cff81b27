"""Running statistics of the discounted return of the training episodes, for reward normalisation (SimbaV2: Lee et
al. 2025; the model setting ``sac.reward_norm_g_max``).

After every collected agent step with reward ``r_t``: ``G_t = r_t + γ·G_{t-1}`` (``G`` restarts at 0 with each
episode); the running mean and variance of all ``G_t`` so far (Welford, float64) and the largest ``|G_t|`` are kept.
Rewards are then divided by ``max(std(G), max|G| / g_max)``: the first term scales returns to unit spread, the
second keeps every return seen so far within ``±g_max`` (what a categorical critic's support must hold).
"""

from __future__ import annotations

import math
from typing import Any

__all__ = ["ReturnStatistics"]

#: Added to the variance before its square root (the statistics of a run whose rewards are all 0).
EPS = 1e-8


class ReturnStatistics:
    """Discounted-return statistics of one collector's episodes (plain floats; saved with the collector).

    Args:
        discount: γ per agent step.

    Examples:
        >>> stats = ReturnStatistics(0.5)
        >>> for r in (1.0, 1.0):
        ...     stats.update(r, episode_end=False)
        >>> stats.mean, stats.max_abs          # G = 1, then 1 + 0.5·1
        (1.25, 1.5)
        >>> round(stats.scale(g_max=0.5), 6)   # max(std 0.25, 1.5 / 0.5)
        3.0
    """

    def __init__(self, discount: float) -> None:
        self.discount = float(discount)
        self.running = 0.0  # G of the episode in flight
        self.count = 0
        self.mean = 0.0
        self.m2 = 0.0
        self.max_abs = 0.0

    def update(self, reward: float, episode_end: bool) -> None:
        """Fold one agent step's reward in; ``episode_end``: this step ended the episode (``G`` restarts)."""
        self.running = reward + self.discount * self.running
        self.count += 1
        delta = self.running - self.mean
        self.mean += delta / self.count
        self.m2 += delta * (self.running - self.mean)
        self.max_abs = max(self.max_abs, abs(self.running))
        if episode_end:
            self.running = 0.0

    def end_episode(self) -> None:
        """The episode ended without a reward step (a physics error): ``G`` restarts."""
        self.running = 0.0

    def scale(self, g_max: float) -> float:
        """What rewards are divided by: ``max(sqrt(var(G) + 1e-8), max|G| / g_max)`` (1 before any step)."""
        if self.count == 0:
            return 1.0
        return max(math.sqrt(self.m2 / self.count + EPS), self.max_abs / g_max)

    def state_dict(self) -> dict[str, Any]:
        return {"discount": self.discount, "running": self.running, "count": self.count, "mean": self.mean,
                "m2": self.m2, "max_abs": self.max_abs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        for key in ("discount", "running", "count", "mean", "m2", "max_abs"):
            setattr(self, key, state[key])
