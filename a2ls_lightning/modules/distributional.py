"""The categorical (distributional) critic's pieces as plain functions (SimbaV2: Lee et al. 2025, after C51:
Bellemare et al. 2017, "A Distributional Perspective on Reinforcement Learning").

A Q-network gives ``K`` logits over a fixed support ``z_1 < ... < z_K`` (evenly spaced on ``[v_min, v_max]``);
its Q-value is the expectation ``Σ_k softmax(logits)_k · z_k``. The Bellman target moves every atom of the target
distribution to ``r + γ·(1 − terminated)·(z_k − α log π(a'|s'))``, clips it into ``[v_min, v_max]`` and splits its
probability between the two nearest atoms in proportion to closeness (:func:`categorical_projection`); the loss is
the cross-entropy of the online logits against that projected distribution (:func:`categorical_loss`).

Departures from SimbaV2, and why:

* with two Q-networks (``num_q=2``; SimbaV2 uses clipped double Q on episodic tasks only, one network on DMC) each
  example's target is the distribution of the target Q-network whose expectation is smaller: the distributional
  form of the minimum this package takes for scalar Q-values;
* the categorical head sits on whichever network ``network`` configures (plain MLP, SimBa blocks or the
  hyperspherical network), with this package's initialisation: each part of SimbaV2 is an option of its own;
* the loss, the support and the projection are SimbaV2's (and C51's); nothing else differs knowingly.

Shapes: ``B`` batch, ``K`` atoms.
"""

from __future__ import annotations

import torch

__all__ = ["categorical_loss", "categorical_projection", "expected_value"]


def expected_value(logits: torch.Tensor, support: torch.Tensor) -> torch.Tensor:
    """``[B, K]`` logits, ``[K]`` support → ``[B, 1]`` expected value (float32)."""
    return (torch.softmax(logits.float(), dim=-1) * support).sum(-1, keepdim=True)


@torch.no_grad()
def categorical_projection(
    probs: torch.Tensor,
    support: torch.Tensor,
    reward: torch.Tensor,
    not_terminal: torch.Tensor,
    discount: float,
    entropy: torch.Tensor | None = None,
) -> torch.Tensor:
    """The C51 projection of the shifted target distribution onto ``support``.

    Args:
        probs: ``[B, K]`` the target network's probabilities at ``(s', a')``.
        support: ``[K]`` evenly spaced atoms ``z_k`` on ``[v_min, v_max]``.
        reward: ``[B, 1]`` rewards (already normalised where reward normalisation is on).
        not_terminal: ``[B, 1]`` ``1 − terminated`` (truncation bootstraps).
        discount: γ.
        entropy: ``[B, 1]`` ``α log π(a'|s')``, subtracted from every atom (soft Q-learning); None: none.

    Returns:
        ``[B, K]`` probabilities: atom ``k``'s mass sits at ``t_k = clip(r + γ·(1 − d)·(z_k − α log π))``, split
        between the atoms below and above ``t_k`` as ``(1 − frac, frac)`` with ``frac`` its fractional position.

    Examples:
        >>> support = torch.tensor([-1.0, 0.0, 1.0])
        >>> categorical_projection(torch.tensor([[0.0, 1.0, 0.0]]), support, torch.tensor([[0.25]]),
        ...                        torch.ones(1, 1), 0.9)
        tensor([[0.0000, 0.7500, 0.2500]])
    """
    v_min, v_max, k = support[0], support[-1], support.numel()
    shift = support if entropy is None else support - entropy  # [B, K] or [K]
    target = (reward + discount * not_terminal * shift).clamp(v_min, v_max)  # [B, K]
    position = (target - v_min) / ((v_max - v_min) / (k - 1))  # in [0, K-1]
    lower = position.floor().clamp(0, k - 1)
    upper_weight = position - lower  # 0 where the atom lands exactly on z_lower: all its mass stays there
    lower = lower.long()
    upper = (lower + 1).clamp(max=k - 1)
    out = torch.zeros_like(probs, dtype=torch.float32)
    probs = probs.float()
    out.scatter_add_(1, lower, probs * (1 - upper_weight))
    out.scatter_add_(1, upper, probs * upper_weight)
    return out


def categorical_loss(logits: torch.Tensor, target_probs: torch.Tensor) -> torch.Tensor:
    """Cross-entropy ``mean_b −Σ_k target_k · log softmax(logits)_k``: ``[B, K]``, ``[B, K]`` → scalar."""
    return -(target_probs * torch.log_softmax(logits.float(), dim=-1)).sum(-1).mean()
