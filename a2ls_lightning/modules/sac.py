"""Soft actor-critic pieces: tanh-Gaussian actor, twin critic, and the three losses as plain functions.

Shapes: ``B`` batch, ``F`` encoder features, ``A`` action dimensions.
The actor and each Q-network are a plain MLP (two hidden layers, the CURL/A2LS networks) or, with ``blocks > 0``,
a SimBa residual network (:mod:`a2ls_lightning.modules.blocks`); the critic has one or two Q-networks (with two,
targets and the actor's objective take their minimum: clipped double Q).
Probabilities are computed in float32 even under autocast (bf16 log-probabilities of a tanh-Gaussian lose the
precision the temperature update lives on).
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.func import functional_call

from a2ls_lightning.modules.blocks import residual_mlp
from a2ls_lightning.modules.distributional import expected_value
from a2ls_lightning.modules.hyperspherical import hyper_mlp
from a2ls_lightning.validation import check_choice


def mlp(in_dim: int, hidden_dim: int, out_dim: int, hidden_layers: int = 2) -> nn.Sequential:
    """``hidden_layers`` × (Linear → ReLU), then Linear."""
    layers: list[nn.Module] = []
    for i in range(hidden_layers):
        layers += [nn.Linear(in_dim if i == 0 else hidden_dim, hidden_dim), nn.ReLU()]
    layers.append(nn.Linear(hidden_dim if hidden_layers else in_dim, out_dim))
    return nn.Sequential(*layers)


def network(
    in_dim: int, hidden_dim: int, out_dim: int, blocks: int = 0, block_width: int | None = None,
    shift: float | None = None,
) -> nn.Sequential:
    """:func:`mlp` (``blocks == 0``) or a SimBa :func:`residual_mlp` of ``blocks`` blocks of width ``block_width``
    (``None``: ``hidden_dim``); either way ``[..., in_dim] → [..., out_dim]`` with the output ``Linear`` last.
    ``shift`` given: the hyperspherical network of SimbaV2 with that input shift (:func:`hyper_mlp`, ``blocks``
    blocks, possibly 0), its output head last."""
    if shift is not None:
        return hyper_mlp(in_dim, block_width or hidden_dim, blocks, out_dim, shift)
    if blocks == 0:
        return mlp(in_dim, hidden_dim, out_dim)
    return residual_mlp(in_dim, block_width or hidden_dim, blocks, out_dim)


def _orthogonal_init(module: nn.Module) -> None:
    # CURL/SAC-AE initialisation: orthogonal weights, zero biases.
    if isinstance(module, nn.Linear):
        nn.init.orthogonal_(module.weight)
        nn.init.zeros_(module.bias)


class Actor(nn.Module):
    """Tanh-squashed Gaussian policy on encoder features.

    Args:
        feature_dim: input features ``F``.
        action_dim: ``A``.
        hidden_dim: width of the two hidden layers.
        log_std_min: lower bound of the log standard deviation.
        log_std_max: upper bound of the log standard deviation.
        blocks: SimBa residual blocks (0: the plain two-hidden-layer MLP).
        block_width: width of the residual network; ``None``: ``hidden_dim``.
        shift: the hyperspherical network's input shift; ``None``: not hyperspherical.
    """

    def __init__(
        self, feature_dim: int, action_dim: int, hidden_dim: int, log_std_min: float = -10.0, log_std_max: float = 2.0,
        blocks: int = 0, block_width: int | None = None, shift: float | None = None,
    ) -> None:
        super().__init__()
        self.net = network(feature_dim, hidden_dim, 2 * action_dim, blocks, block_width, shift)
        self.log_std_min, self.log_std_max = log_std_min, log_std_max
        self.apply(_orthogonal_init)

    def forward(
        self, features: torch.Tensor, deterministic: bool = False, generator: torch.Generator | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, F]`` → (action ``[B, A]`` in [-1, 1], log-probability ``[B, 1]`` float32).

        ``deterministic`` returns ``tanh(mean)`` (log-probability of the mean, for logging only).
        ``generator`` draws the exploration noise from a given RNG (the collector's own, so that acting does not
        disturb the training RNG stream).
        """
        mu, log_std = self.net(features).float().chunk(2, dim=-1)
        with torch.autocast(device_type=mu.device.type, enabled=False):
            # CURL's soft bound of the log-std into [min, max].
            log_std = torch.tanh(log_std)
            log_std = self.log_std_min + 0.5 * (self.log_std_max - self.log_std_min) * (log_std + 1)
            if deterministic:
                noise = torch.zeros_like(mu)
            else:
                # A collector's generator lives on the CPU: draw there, then move (no device generator needed).
                gen_device = generator.device if generator is not None else mu.device
                noise = torch.randn(mu.shape, device=gen_device, dtype=mu.dtype, generator=generator).to(mu.device)
            pre_tanh = mu + noise * log_std.exp()
            gauss_log_prob = (-0.5 * noise.pow(2) - log_std).sum(-1, keepdim=True) - 0.5 * math.log(
                2 * math.pi
            ) * mu.shape[-1]
            action = torch.tanh(pre_tanh)
            # log|d tanh(u)/du| = 2 (log 2 - u - softplus(-2u)): stable where 1 - tanh(u)^2 underflows.
            correction = (2 * (math.log(2) - pre_tanh - nn.functional.softplus(-2 * pre_tanh))).sum(-1, keepdim=True)
            return action, gauss_log_prob - correction


#: Allowed numbers of Q-networks: one, or two with clipped double Q.
NUM_Q = (1, 2)


class Critic(nn.Module):
    """Twin (``num_q=2``) or single (``num_q=1``) Q-functions on ``[features, action]``.

    Args:
        feature_dim: ``F``.
        action_dim: ``A``.
        hidden_dim: width of the two hidden layers of each Q-network.
        num_q: Q-networks: 2 (clipped double Q) or 1 (``q2`` is ``None``; SimBa's setting on DMC).
        blocks: SimBa residual blocks of each Q-network (0: the plain MLP).
        block_width: width of the residual networks; ``None``: ``hidden_dim``.
        bins: 0: each Q-network outputs its Q-value; ``K > 0``: ``K`` logits over the support ``support``
            (``linspace(v_min, v_max, K)``, a buffer), and :meth:`forward` gives their expectation (the categorical
            critic, :mod:`a2ls_lightning.modules.distributional`).
        v_min: lowest atom of the support (with ``bins``).
        v_max: highest atom of the support (with ``bins``).
        shift: the hyperspherical networks' input shift; ``None``: not hyperspherical.
    """

    def __init__(self, feature_dim: int, action_dim: int, hidden_dim: int, num_q: int = 2, blocks: int = 0,
                 block_width: int | None = None, bins: int = 0, v_min: float = -5.0, v_max: float = 5.0,
                 shift: float | None = None) -> None:
        super().__init__()
        check_choice("num_q", num_q, NUM_Q)
        out, args = bins or 1, (blocks, block_width, shift)
        self.q1 = network(feature_dim + action_dim, hidden_dim, out, *args)
        self.q2 = network(feature_dim + action_dim, hidden_dim, out, *args) if num_q == 2 else None
        self.apply(_orthogonal_init)
        self.bins = bins
        if bins:  # after the initialisation: no random draw moves, and no buffer exists without the option
            self.register_buffer("support", torch.linspace(v_min, v_max, bins))

    def q_networks(self) -> list[nn.Module]:
        """The Q-networks, ``q1`` first."""
        return [self.q1] if self.q2 is None else [self.q1, self.q2]

    def forward(self, features: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``[B, F]``, ``[B, A]`` → ``[B, 1]`` float32 Q-values ``(q1, q2)``; ``q2`` is ``None`` with one network.
        With ``bins``: the expectations of the Q-networks' distributions."""
        if self.bins:
            l1, l2 = self.logits(features, action)
            return expected_value(l1, self.support), None if l2 is None else expected_value(l2, self.support)
        x = torch.cat([features, action.to(features.dtype)], dim=-1)
        return self.q1(x).float(), None if self.q2 is None else self.q2(x).float()

    def logits(self, features: torch.Tensor, action: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """``[B, F]``, ``[B, A]`` → ``[B, K]`` float32 logits ``(l1, l2)`` over ``support`` (``bins`` only)."""
        x = torch.cat([features, action.to(features.dtype)], dim=-1)
        return self.q1(x).float(), None if self.q2 is None else self.q2(x).float()


def min_q(q1: torch.Tensor, q2: torch.Tensor | None) -> torch.Tensor:
    """``min(q1, q2)`` (clipped double Q), or ``q1`` with one Q-network; ``[B, 1]``."""
    return q1 if q2 is None else torch.min(q1, q2)


def critic_loss(q1: torch.Tensor, q2: torch.Tensor | None, target_q: torch.Tensor) -> torch.Tensor:
    """Bellman loss of the Q-heads against one (already detached) target: ``mse(q1) + mse(q2)`` (``mse(q1)`` with
    one Q-network, ``q2 = None``), all ``[B, 1]``."""
    loss = nn.functional.mse_loss(q1, target_q)
    return loss if q2 is None else loss + nn.functional.mse_loss(q2, target_q)


@torch.no_grad()
def soft_target(
    reward: torch.Tensor,
    not_terminal: torch.Tensor,
    next_q1: torch.Tensor,
    next_q2: torch.Tensor | None,
    next_log_prob: torch.Tensor,
    alpha: torch.Tensor,
    discount: float,
) -> torch.Tensor:
    """``r + γ · (1 - terminated) · (min(Q1', Q2') - α log π(a'|s'))``, all ``[B, 1]`` (``Q1'`` alone when
    ``next_q2`` is ``None``: one Q-network).

    Truncation (time limit, PhysicsError) bootstraps: only a true terminal state stops the return.
    """
    next_v = min_q(next_q1, next_q2) - alpha * next_log_prob
    return reward + discount * not_terminal * next_v


def actor_loss(
    critic: Critic, features: torch.Tensor, action: torch.Tensor, log_prob: torch.Tensor, alpha: torch.Tensor
) -> torch.Tensor:
    """``mean(α log π(a|s) - min Q(s, a))`` with ``a ~ π``, through the critic with *frozen* weights.

    The critic is called with detached parameters and detached features, so the actor loss puts no gradient on
    any critic or encoder parameter (one optimizer steps them all); the gradient reaches the actor only through
    the action.

    Args:
        critic: the online critic (the minimum of its Q-networks is taken).
        features: ``[B, F]`` critic features of the states (detached here).
        action: ``[B, A]`` reparameterised actions from the actor.
        log_prob: ``[B, 1]`` their log-probabilities.
        alpha: temperature (a scalar, detached here).
    """
    frozen = {name: p.detach() for name, p in critic.named_parameters()}
    q1, q2 = functional_call(critic, frozen, (features.detach(), action))
    return (alpha.detach() * log_prob - min_q(q1, q2)).mean()


def temperature_loss(log_alpha: torch.Tensor, log_prob: torch.Tensor, target_entropy: float) -> torch.Tensor:
    """``mean(-α (log π + target_entropy))`` with the log-probabilities detached (no gradient on the actor).

    CURL's form: the gradient is taken through ``α = exp(log_alpha)``.
    """
    return (-log_alpha.float().exp() * (log_prob.detach() + target_entropy)).mean()


@torch.no_grad()
def ema_(target: nn.Module, online: nn.Module, tau: float) -> None:
    """``target ← (1 - τ) target + τ online`` for parameters (buffers such as norms' stats are copied)."""
    t_params, o_params = list(target.parameters()), list(online.parameters())
    if t_params:
        torch._foreach_lerp_(t_params, o_params, tau)
    for t_buf, o_buf in zip(target.buffers(), online.buffers()):
        t_buf.copy_(o_buf)
