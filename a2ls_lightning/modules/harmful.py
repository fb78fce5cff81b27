"""Auxiliary losses known to hurt, as experiment material for weighting rules (not for training agents).

OL-AUX's first question (Lin et al., "Adaptive Auxiliary Task Weighting for Reinforcement Learning", NeurIPS 2019,
§5.1) is whether a weighting rule ignores a harmful auxiliary task; these losses make such a task on purpose:

- ``adversarial``: a loss whose gradient is minus the critic loss's, with the critic's parameters held fixed, so it
  reaches the shared encoder only: its gradient on the encoder is exactly minus the critic loss's, example by
  example (the paper's toy of §5.1, where a fixed weight drives the shared parameters to a wrong point); its value
  is the critic loss's (non-negative, for rules that take logarithms);
- ``noise_target``: regress a fixed pseudo-random target of each stored transition from its encoded state: pure
  memorisation that spends the encoder's capacity. The target is a function of the transition's (episode id,
  step), so it is the same whenever the transition is sampled, and after an exact resume.

Use them by name: ``--model.aux_losses='{fwd: forward_dynamics, adv: adversarial, noise: noise_target}'`` (both
are registered in :mod:`a2ls_lightning.modules.aux_registry`, marked harmful); ``a2ls losses`` lists them apart
from the A2LS presets.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn
from torch.func import functional_call

from a2ls_lightning.modules.sac import critic_loss

__all__ = ["AdversarialLoss", "ExperimentLoss", "NoiseTargetLoss"]


class ExperimentLoss(nn.Module):
    """Base class: ``forward(context, reduction="mean") -> scalar loss`` (``reduction="none"``: ``[B]``, one loss
    per example, whose mean is the scalar up to float rounding) where ``context`` holds (for a batch of ``B`` windows)
    ``features [B, F]`` (online encoder, state 0), ``action [B, A]``, ``target_q [B, 1]`` (detached),
    ``critic`` (the module), ``episode [B]`` and ``step [B]`` (the transition's ids)."""

    #: States read through the online encoder (state 0) and the target encoder (none): the auxiliary-loss interface
    #: of :mod:`a2ls_lightning.modules.aux_registry`.
    online_offsets: tuple[int, ...] = (0,)
    target_offsets: tuple[int, ...] = ()

    def forward(self, context: Mapping[str, Any], reduction: str = "mean") -> Tensor:  # pragma: no cover
        raise NotImplementedError

    def compute(self, ctx: Any, reduction: str = "mean") -> Tensor:
        """The loss from an update's :class:`~a2ls_lightning.modules.aux_registry.AuxContext` (state 0 only)."""
        context = {"features": ctx.features[:, 0], "action": ctx.action[:, 0].float(), "target_q": ctx.target_q,
                   "critic": ctx.critic, "episode": ctx.episode[:, 0], "step": ctx.step[:, 0]}
        return self(context, reduction=reduction)


class AdversarialLoss(ExperimentLoss):
    """Minus the critic loss's gradient on the encoder, with the critic loss's (non-negative) value.

    Computed as ``2·sg(L) − L`` with ``L`` the critic loss through detached critic parameters (``sg``: stop
    gradient): its value is ``L``, so rules that take the logarithm of a loss (OL-AUX's log balancing) see a
    positive loss, and its gradient is ``−∇L``, on the encoder only.
    """

    def __init__(self) -> None:
        super().__init__()

    def forward(self, context: Mapping[str, Any], reduction: str = "mean") -> Tensor:
        critic = context["critic"]
        frozen = {name: p.detach() for name, p in critic.named_parameters()}
        q1, q2 = functional_call(critic, frozen, (context["features"], context["action"]))
        if reduction == "none":  # [B]: each example's critic loss (the batch mean is critic_loss)
            target = context["target_q"]
            loss = ((q1 - target).pow(2) + (q2 - target).pow(2)).reshape(-1)
        else:
            loss = critic_loss(q1, q2, context["target_q"])
        return 2.0 * loss.detach() - loss


class NoiseTargetLoss(ExperimentLoss):
    """MSE between ``h(features)`` and a fixed target in ``[-1, 1]^dim`` per (episode, step).

    The target is ``sin(key · f + φ)`` with ``key = episode · 1009 + step`` and frequencies ``f`` and phases ``φ``
    drawn once from a fixed seed (buffers, saved with the module): deterministic, and unrelated across transitions.

    Args:
        feature_dim: encoder feature size ``F``.
        dim: target size.
    """

    def __init__(self, feature_dim: int, dim: int = 32) -> None:
        super().__init__()
        self.predictor = nn.Sequential(nn.Linear(feature_dim, 2 * feature_dim), nn.ReLU(),
                                       nn.Linear(2 * feature_dim, dim))
        generator = torch.Generator().manual_seed(20190)
        self.register_buffer("frequency", torch.rand(dim, generator=generator, dtype=torch.float64) * 97.0 + 3.0)
        self.register_buffer("phase", torch.rand(dim, generator=generator, dtype=torch.float64) * 6.283185307179586)

    def target(self, episode: Tensor, step: Tensor) -> Tensor:
        """``[B]`` episode ids and steps → ``[B, dim]`` fixed targets (float32)."""
        key = episode.to(torch.float64) * 1009.0 + step.to(torch.float64)
        return torch.sin(key[:, None] * self.frequency + self.phase).float()

    def forward(self, context: Mapping[str, Any], reduction: str = "mean") -> Tensor:
        target = self.target(context["episode"].reshape(-1), context["step"].reshape(-1))
        prediction = self.predictor(context["features"]).float()
        if reduction == "none":  # [B]: each example's squared error, averaged over the target's elements
            return (prediction - target.to(prediction.device)).pow(2).mean(dim=1)
        return nn.functional.mse_loss(prediction, target.to(prediction.device))
