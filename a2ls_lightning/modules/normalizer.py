"""Running observation normalisation for state vectors (``SACModule(obs_norm=True)``).

``ObsNormalizer`` keeps the count, mean and sum of squared deviations (``m2``) of every observation it was
shown, as float64 buffers: they are saved in checkpoints with the module, so a resumed run normalises exactly as
the uninterrupted one. A batch is folded in with the parallel form of Welford's update (Chan et al. 1979): the
batch's own count, mean and ``m2`` are combined with the running ones, which is exact whatever the batch size and
numerically safe (no difference of large sums over the whole run). Under DDP the batch's count, sum and sum of
squares are summed over the ranks first, so every rank holds identical statistics.

Shapes: observations ``[..., D]``; ``mean``, ``m2`` ``[D]``; ``count`` a scalar.
"""

from __future__ import annotations

import torch
from torch import nn

#: Normalised values are clipped to ±CLIP. Observations far out in the tails (a rare state, or the first batches
#: while the variance is still tiny) would otherwise reach the networks as values of hundreds; SimBa and the RL
#: normalisation wrappers it follows (gym's NormalizeObservation, Stable-Baselines' VecNormalize) clip at 10.
CLIP = 10.0
#: Added to the variance before the square root: a constant coordinate (variance 0) maps to 0, not to inf.
EPS = 1e-8


class ObsNormalizer(nn.Module):
    """``(obs - mean) / sqrt(var + 1e-8)`` clipped to ±10, with running statistics updated by :meth:`update`.

    Before the first update (``count == 0``) it is the identity (mean 0, variance 1).

    Args:
        dim: ``D``, the observation size.

    Examples:
        >>> norm = ObsNormalizer(3)
        >>> norm.update(torch.tensor([[1.0, 2.0, 3.0], [3.0, 2.0, 5.0]]))
        >>> norm(torch.tensor([[2.0, 2.0, 4.0]]))
        tensor([[0., 0., 0.]])
    """

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.register_buffer("count", torch.zeros((), dtype=torch.float64))
        self.register_buffer("mean", torch.zeros(dim, dtype=torch.float64))
        self.register_buffer("m2", torch.zeros(dim, dtype=torch.float64))

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """``[..., D]`` float → normalised ``[..., D]`` in ``obs``'s dtype, within ±10."""
        # Computed on the device from the buffers each call (no host sync; D is small): the statistics are read
        # as they are at that moment, whether the caller is acting, training or scoring a held-out batch.
        var = torch.where(self.count > 0, self.m2 / self.count.clamp_min(1.0), torch.ones_like(self.m2))
        mean, std = self.mean.to(obs.dtype), (var + EPS).sqrt().to(obs.dtype)
        return ((obs - mean) / std).clamp(-CLIP, CLIP)

    @torch.no_grad()
    def update(self, obs: torch.Tensor) -> None:
        """Fold the observations ``[..., D]`` into the running statistics (summed over the DDP ranks if any)."""
        with torch.autocast(obs.device.type, enabled=False):
            x = obs.reshape(-1, obs.shape[-1]).to(torch.float64)
            # [1 + 2D]: count, sum, sum of squares; one all-reduce sums them over the ranks.
            stats = torch.cat([x.new_tensor([x.shape[0]]), x.sum(0), x.pow(2).sum(0)])
            if torch.distributed.is_available() and torch.distributed.is_initialized():
                torch.distributed.all_reduce(stats)
            self._combine(*stats.split([1, x.shape[1], x.shape[1]]))

    def _combine(self, count: torch.Tensor, total: torch.Tensor, squares: torch.Tensor) -> None:
        """Chan et al.'s combination of the running (count, mean, m2) with a batch given by its sums."""
        count = count.reshape(())
        batch_mean = total / count
        # The batch's own m2 from its sums, in float64; clamped at 0 against rounding on near-constant values.
        batch_m2 = (squares - count * batch_mean.pow(2)).clamp_min(0.0)
        new_count = self.count + count
        delta = batch_mean - self.mean
        self.mean.add_(delta * (count / new_count))
        self.m2.add_(batch_m2 + delta.pow(2) * (self.count * count / new_count))
        self.count.copy_(new_count)
