"""RL-AUX's policy (the "labeller"): per-example weight-bin and label logits from each example's features, and its
do-no-harm start (a weight head tilted so that the expected weight is a chosen value, 1 by default)."""

from __future__ import annotations

import torch
from torch import Tensor, nn


def tilt_for_mean(factors: Tensor, target: float) -> float:
    """``λ`` with ``Σ_k π_k w_k = target`` for ``π_k ∝ w_k^λ`` (bisection: the mean rises with ``λ``)."""
    logs = factors.double().log()
    low, high = -60.0, 60.0
    for _ in range(200):
        mid = (low + high) / 2
        mean = float((torch.softmax(mid * logs, 0) * factors.double()).sum())
        low, high = (mid, high) if mean < target else (low, mid)
    return (low + high) / 2


class Labeller(nn.Module):
    """The policy: ``[B, D]`` features → ``[B, K, bins]`` weight logits and, per labelled loss, ``[B, slots]``
    label logits. A two-layer tanh trunk; the heads' weights start at zero (the label heads uniform, the weight
    head at ``bias``: ``[bins]`` starting logits)."""

    def __init__(self, in_dim: int, hidden_dim: int, n_losses: int, bins: int, label_slots: dict[str, int],
                 bias: Tensor | None = None) -> None:
        super().__init__()
        self.n_losses, self.bins = n_losses, bins
        # Features are not normalised per example (a LayerNorm here mixed a one-dimension marker into the other
        # dimensions and the opposing-loss test no longer separated the examples).
        self.trunk = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.Tanh(), nn.Linear(hidden_dim, hidden_dim),
                                   nn.Tanh())
        self.weight_head = nn.Linear(hidden_dim, n_losses * bins) if n_losses else None
        self.label_heads = nn.ModuleDict({name: nn.Linear(hidden_dim, n) for name, n in label_slots.items()})
        for head in [self.weight_head, *self.label_heads.values()]:
            if head is not None:
                nn.init.zeros_(head.weight)
                nn.init.zeros_(head.bias)
        if self.weight_head is not None and bias is not None:
            with torch.no_grad():
                self.weight_head.bias.copy_(bias.to(self.weight_head.bias).repeat(n_losses))

    def weight_logits(self, features: Tensor) -> Tensor:
        """``[B, D]`` → ``[B, K, bins]``."""
        return self.weight_head(self.trunk(features)).unflatten(1, (self.n_losses, self.bins))

    def label_logits(self, name: str, features: Tensor) -> Tensor:
        """``[B, D]`` → ``[B, slots]``."""
        return self.label_heads[name](self.trunk(features))
