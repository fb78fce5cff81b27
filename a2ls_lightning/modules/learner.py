"""SACLearner: the networks of SAC (+ auxiliary losses) and one update's losses, as a plain ``nn.Module``.

Data flow of :meth:`SACLearner.losses` on a window batch ``[B, L]``:

* with running observation normalisation (``obs_norm``) every state vector the encoders read is normalised
  first, by the same statistics (:class:`~a2ls_lightning.modules.normalizer.ObsNormalizer`; updated by
  :meth:`SACLearner.observe` before an update's losses, never by acting or scoring);
* states needed by any loss are encoded once: the *online* encoder on offset 0 (critic and actor) and on the
  auxiliary inputs, the *target* (EMA) encoder under ``no_grad`` on offset 1 (the Bellman target) and on the
  auxiliary targets; pixel states are randomly cropped per (sample, time step), independently for the online
  and the target encoder;
* critic loss on ``(s_0, a_0, r_0, s_1)``: the squared Bellman error or, with ``critic_bins``, the cross-entropy
  against the projected target distribution; rewards divided by the running return scale with
  ``reward_norm_g_max``; actor and temperature losses on ``s_0`` (every ``actor_update_freq`` updates);
  auxiliary losses on the whole window.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from a2ls_lightning.modules.augment import center_crop, random_crop
from a2ls_lightning.modules.aux_registry import AuxContext
from a2ls_lightning.modules.distributional import categorical_loss, categorical_projection, expected_value
from a2ls_lightning.modules.encoders import make_encoder
from a2ls_lightning.modules.hyperspherical import project_weights_
from a2ls_lightning.modules.normalizer import ObsNormalizer
from a2ls_lightning.modules.sac import (
    Actor,
    Critic,
    actor_loss,
    critic_loss,
    ema_,
    soft_target,
    temperature_loss,
)
from a2ls_lightning.modules.settings import NetworkSettings, SACSettings


class SACLearner(nn.Module):
    """Encoder, critic (one or two Q-networks), actor, temperature, their EMA targets and auxiliary losses.

    Args:
        obs_shape: stored observation shape, ``(D,)`` or ``(C, H, W)`` before cropping.
        action_dim: ``A``.
        network: the networks' settings (encoder, widths, residual blocks, Q-networks, observation normalisation).
        sac: the algorithm's settings (initial temperature, target entropy, discount).
        aux_losses: ``{name: auxiliary-loss module}`` built by the caller (see
            :mod:`a2ls_lightning.modules.aux_registry`).

    Example:
        >>> learner = SACLearner((17,), 6, NetworkSettings(hidden_dim=64), SACSettings())
        >>> learner.act(torch.zeros(3, 17)).shape
        torch.Size([3, 6])
    """

    def __init__(
        self,
        obs_shape: tuple[int, ...],
        action_dim: int,
        network: NetworkSettings,
        sac: SACSettings,
        aux_losses: Mapping[str, nn.Module] | None = None,
    ) -> None:
        super().__init__()
        net = self.network = network
        self.pixels = len(obs_shape) == 3
        if net.obs_norm and self.pixels:
            raise ValueError(f"obs_norm=true normalises state vectors, not pixels {tuple(obs_shape)}")
        self.crop_size = net.crop_size
        enc_shape = (obs_shape[0], net.crop_size, net.crop_size) if self.pixels else tuple(obs_shape)
        self.encoder = make_encoder(net.encoder, enc_shape, net.feature_dim, net.encoder_hidden_dim, net.layers,
                                    net.num_filters, net.encoder_blocks, net.encoder_block_width)
        f = self.encoder.feature_dim
        self.critic = Critic(f, action_dim, net.hidden_dim, net.num_q, net.critic_blocks, net.critic_block_width,
                             net.critic_bins, net.critic_min_value, net.critic_max_value, net.shift)
        self.actor_head = self.encoder.make_actor_head()
        self.actor = Actor(f, action_dim, net.hidden_dim, net.log_std_min, net.log_std_max, net.actor_blocks,
                           net.actor_block_width, net.shift)
        self.log_alpha = nn.Parameter(torch.tensor(math.log(sac.init_temperature), dtype=torch.float32))
        self.target_encoder = copy.deepcopy(self.encoder).requires_grad_(False)
        self.target_critic = copy.deepcopy(self.critic).requires_grad_(False)
        self.aux_losses = nn.ModuleDict(dict(aux_losses or {}))
        self.target_entropy = sac.resolved_target_entropy(action_dim)
        self.discount = float(sac.discount)
        # Which states each encoder must encode per update: fixed by the losses, so worked out once here.
        losses = list(self.aux_losses.values())
        self.online_offsets = sorted({0, *(o for a in losses for o in a.online_offsets)})
        self.target_offsets = sorted({1, *(o for a in losses for o in a.target_offsets)})
        # Created last and only when asked: with obs_norm off the module (its parameters, their order, the random
        # draws of their initialisation, its state_dict) is what it was before the option existed.
        self.obs_normalizer = ObsNormalizer(int(obs_shape[0])) if net.obs_norm else None
        # reward_norm_g_max: what rewards are divided by, set before each update (observe); not saved: it comes
        # from the collector's return statistics, which the data side saves.
        self.register_buffer("reward_scale", None if sac.reward_norm_g_max is None else torch.ones(()),
                             persistent=False)

    # --- parameter groups ------------------------------------------------------------------------
    def actor_parameters(self) -> list[nn.Parameter]:
        return [*self.actor_head.parameters(), *self.actor.parameters()]

    @torch.no_grad()
    def project_weights(self) -> None:
        """``hyperspherical``: the actor's and critic's weight rows back onto the unit sphere (after each optimizer
        step); nothing otherwise."""
        if self.network.hyperspherical:
            project_weights_([self.actor, self.critic])

    # --- observation statistics ------------------------------------------------------------------------
    @torch.no_grad()
    def observe(self, batch: Mapping[str, torch.Tensor], reward_scale: float | None = None) -> None:
        """Fold a training batch's observations (``[B, L, D]``, every state of the window) into the running
        normalisation statistics; nothing without ``obs_norm``. Called once per update, before its losses.
        ``reward_scale``: what this update's rewards are divided by (``reward_norm_g_max``)."""
        if self.obs_normalizer is not None:
            self.obs_normalizer.update(batch["observation"])
        if self.reward_scale is not None and reward_scale is not None:
            self.reward_scale.fill_(reward_scale)

    # --- acting ------------------------------------------------------------------------------------
    def _prepare(self, obs: torch.Tensor, train: bool) -> torch.Tensor:
        if not self.pixels:
            return obs.float() if self.obs_normalizer is None else self.obs_normalizer(obs.float())
        return random_crop(obs, self.crop_size) if train else center_crop(obs, self.crop_size)

    @torch.no_grad()
    def act(
        self, obs: torch.Tensor, deterministic: bool = False, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``[N, *obs_shape]`` (uncropped) → action ``[N, A]``; centre crop for pixels."""
        trunk = self.encoder.trunk(self._prepare(obs, train=False))
        action, _ = self.actor(self.actor_head(trunk), deterministic=deterministic, generator=generator)
        return action

    # --- one update's losses ---------------------------------------------------------------------------
    def _encode(self, encoder: nn.Module, obs: torch.Tensor, offsets: list[int]) -> tuple[torch.Tensor, torch.Tensor]:
        """States of ``obs [B, L, ...]`` at ``offsets`` → (trunk ``[B, n, ...]``, features ``[B, n, F]``)."""
        b, n = obs.shape[0], len(offsets)
        flat = self._prepare(obs[:, offsets].flatten(0, 1), train=True)
        trunk = encoder.trunk(flat)
        feats = encoder.head(trunk)
        return trunk.unflatten(0, (b, n)), feats.unflatten(0, (b, n))

    def losses(self, batch: Mapping[str, torch.Tensor], update_actor: bool,
               per_example: bool = False) -> tuple[dict, dict, dict]:
        """Compute every loss of one update.

        Args:
            batch: ``observation [B, L, ...]``, ``action [B, L, A]``, ``reward [B, L, 1]``,
                ``terminated [B, L, 1]`` (step ``t``'s action, reward and ``terminated`` belong to ``t → t+1``).
            update_actor: also compute the actor and temperature losses.
            per_example: auxiliary losses per example (``[B]``: each window's loss, reduced over its time steps
                and elements only), for a per-example weighting rule; ``metrics`` then also holds
                ``example_features``, ``[B, F]``, the online features of state 0, detached (what the rule sees of
                each example). Off: the code path of every other rule, unchanged.

        Returns:
            ``(main, aux, metrics)``: ``main`` has ``critic`` (and ``actor``, ``temperature``) scalar losses,
            ``aux`` ``{name: scalar}`` (``[B]`` with ``per_example``), ``metrics`` detached scalars for logging.
        """
        obs, action, reward = batch["observation"], batch["action"], batch["reward"]
        not_terminal = 1.0 - batch["terminated"][:, 0].float()
        trunk, feats = self._encode(self.encoder, obs, self.online_offsets)
        with torch.no_grad():
            _, target_feats = self._encode(self.target_encoder, obs, self.target_offsets)
            # The policy at s_1 reads the online trunk (CURL: the actor's tied convs), not the EMA one.
            next_trunk = self.encoder.trunk(self._prepare(obs[:, 1], train=True))
            next_action, next_log_prob = self.actor(self.actor_head(next_trunk))
            alpha = self.log_alpha.exp().float()
            target_q, target_probs = self._bellman_target(target_feats[:, self.target_offsets.index(1)], next_action,
                                                          next_log_prob, alpha, reward[:, 0], not_terminal)
        loss, q1 = self._critic_loss(feats[:, 0], action[:, 0], target_q, target_probs)
        main = {"critic": loss}
        metrics: dict[str, Any] = {"q": q1.detach().mean(), "alpha": alpha}
        if self.reward_scale is not None:  # reward_norm_g_max: what this update's rewards were divided by
            metrics["reward_scale"] = self.reward_scale.detach().clone()
        if update_actor:
            pi, log_prob = self.actor(self.actor_head(trunk[:, 0].detach()))
            main["actor"] = actor_loss(self.critic, feats[:, 0], pi, log_prob, alpha)
            main["temperature"] = temperature_loss(self.log_alpha, log_prob, self.target_entropy)
            metrics["entropy"] = -log_prob.detach().mean()
        # Every auxiliary loss reads the same context and is called the same way (modules/aux_registry.py).
        ctx = AuxContext(feats, target_feats, self.online_offsets, self.target_offsets, batch, target_q, self.critic)
        reduction = "none" if per_example else "mean"
        aux = {name: module.compute(ctx, reduction) for name, module in self.aux_losses.items()}
        if per_example:
            metrics["example_features"] = feats[:, 0].detach()
        return main, aux, metrics

    def main_loss(self, batch: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """The critic loss alone on ``batch`` (``[B, L]`` as in :meth:`losses`), a scalar: what a held-out batch
        is scored with. Only the states the critic needs are encoded (state 0 online; state 1 by the target
        encoder, and by the online trunk for the next action), none of the auxiliary losses' inputs: a held-out
        evaluation costs a fraction of an update's forward pass. Same random operations as the critic part of
        :meth:`losses` (pixel crops, the next action's sample), drawn from the global generator."""
        obs, action, reward = batch["observation"], batch["action"], batch["reward"]
        not_terminal = 1.0 - batch["terminated"][:, 0].float()
        _, feats = self._encode(self.encoder, obs, [0])
        _, target_feats = self._encode(self.target_encoder, obs, [1])
        next_trunk = self.encoder.trunk(self._prepare(obs[:, 1], train=True))
        next_action, next_log_prob = self.actor(self.actor_head(next_trunk))
        alpha = self.log_alpha.exp().float()
        target_q, target_probs = self._bellman_target(target_feats[:, 0], next_action, next_log_prob, alpha,
                                                      reward[:, 0], not_terminal)
        return self._critic_loss(feats[:, 0], action[:, 0], target_q, target_probs)[0]

    @torch.no_grad()
    def _bellman_target(self, next_feats: torch.Tensor, next_action: torch.Tensor, next_log_prob: torch.Tensor,
                        alpha: torch.Tensor, reward: torch.Tensor,
                        not_terminal: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The soft Bellman target at ``(s_1, a' ~ π)``: ``([B, 1] target Q, [B, K] target distribution or None)``.

        With ``critic_bins`` and two Q-networks, each example takes the target distribution of the Q-network whose
        expectation is smaller (clipped double Q on distributions); its target Q is the projected expectation."""
        reward = reward.float() if self.reward_scale is None else reward.float() / self.reward_scale
        if not self.critic.bins:
            tq1, tq2 = self.target_critic(next_feats, next_action)
            return soft_target(reward, not_terminal, tq1, tq2, next_log_prob, alpha, self.discount), None
        support = self.target_critic.support
        l1, l2 = self.target_critic.logits(next_feats, next_action)
        if l2 is not None:
            l1 = torch.where(expected_value(l2, support) < expected_value(l1, support), l2, l1)
        probs = categorical_projection(torch.softmax(l1, dim=-1), support, reward, not_terminal, self.discount,
                                       alpha * next_log_prob)
        return (probs * support).sum(-1, keepdim=True), probs

    def _critic_loss(self, feats: torch.Tensor, action: torch.Tensor, target_q: torch.Tensor,
                     target_probs: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """(scalar critic loss, ``[B, 1]`` Q-values of the first Q-network, for logging)."""
        if target_probs is None:
            q1, q2 = self.critic(feats, action)
            return critic_loss(q1, q2, target_q), q1
        l1, l2 = self.critic.logits(feats, action)
        loss = categorical_loss(l1, target_probs)
        loss = loss if l2 is None else loss + categorical_loss(l2, target_probs)
        return loss, expected_value(l1.detach(), self.critic.support)

    @torch.no_grad()
    def update_targets(self, critic_tau: float, encoder_tau: float) -> None:
        """EMA of the target critic (τ = ``critic_tau``) and the target encoder (τ = ``encoder_tau``)."""
        ema_(self.target_critic, self.critic, critic_tau)
        ema_(self.target_encoder, self.encoder, encoder_tau)
