"""Auxiliary losses of the A2LS space as ``nn.Module``s.

:class:`AuxLoss` builds one loss from an :class:`~a2ls_lightning.modules.aux_spec.AuxLossSpec`:
it owns the predictor ``h`` (and, for ``bilinear``, the matrix ``W``; with embeddings, the
action/reward embedders) and computes ``operator(h(inputs), targets)``. The encoders stay with the
caller, who passes the online features of the input states and the EMA features of the target
states; this keeps the module usable with any encoder and lets one window of encoded states feed
several losses.

The spec, its text form and presets live in :mod:`aux_spec`, the operators in :mod:`aux_operators`;
both are re-exported here, so ``from a2ls_lightning.modules.auxiliary import AuxLossSpec, AuxLoss``
is all a caller needs.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from a2ls_lightning.modules.aux_operators import OPERATORS, operator_loss
from a2ls_lightning.modules.aux_spec import (
    PRESET_TEXTS,
    AuxLossSpec,
    Element,
    format_spec_table,
    required_window,
)

__all__ = [
    "OPERATORS",
    "PRESET_TEXTS",
    "AuxLoss",
    "AuxLossSpec",
    "Element",
    "ElementEmbedding",
    "format_spec_table",
    "operator_loss",
    "required_window",
]


class ElementEmbedding(nn.Module):
    """Embeds one raw action or reward: ``Linear → ReLU → Linear → LayerNorm → tanh``.

    The official ``ActionOrRewardEncoder`` stacks its two Linear layers with no activation between
    them, which is a single linear map in effect; the ReLU makes the second layer count.

    Args:
        input_dim: size of the raw element (``|A|`` for an action, 1 for a reward).
        embed_dim: size of the embedding (``AuxLoss`` uses the encoder's feature size).

    Shapes: ``[..., input_dim] → [..., embed_dim]``.
    """

    def __init__(self, input_dim: int, embed_dim: int) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Linear(input_dim, embed_dim),
            nn.ReLU(),
            nn.Linear(embed_dim, embed_dim),
            nn.LayerNorm(embed_dim),
            nn.Tanh(),
        )

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class AuxLoss(nn.Module):
    """One auxiliary loss of the A2LS space.

    The predictor input concatenates, grouped by kind (not interleaved in time): the online features
    of the input states, then the input actions, then the input rewards, each by offset. The target
    concatenates the EMA features of the target states, then the raw target actions and rewards.
    (The official code puts the ``s_`` state after the rewards; the order is a fixed permutation of
    the predictor's input/output units, which are initialised i.i.d., so it changes nothing.)

    Predictor ``h``: ``Linear(d_in, 2·d_in) → BatchNorm1d → ReLU → Linear(2·d_in, d_out)``, with
    ``d_in``/``d_out`` = ``feature_dim`` per state + ``action_dim`` per action + 1 per reward. With
    ``embed_actions_rewards`` each *input* action and reward is embedded to ``feature_dim`` (as the
    official ``z_dim``), so ``d_in`` counts ``feature_dim`` for them. Targets stay raw: the official
    code embeds target actions/rewards with an EMA copy of the embedder, but raw targets need no EMA
    bookkeeping and cannot collapse. BatchNorm needs a batch of at least 2 in training mode.

    Only the parameters the spec uses are created (``W`` for ``bilinear``, an embedder for kinds
    present in the inputs): a parameter without gradient would make DDP fail.

    Args:
        spec: the loss (an ``AuxLossSpec``, a preset name or its text form).
        feature_dim: encoder feature size ``F``.
        action_dim: action size ``A``.
        embed_actions_rewards: embed input actions and rewards before the predictor.

    Examples:
        >>> loss_fn = AuxLoss("a2_winner", feature_dim=50, action_dim=6)
        >>> B, H = 8, loss_fn.spec.horizon
        >>> input_states = torch.randn(B, len(loss_fn.spec.input_state_offsets), 50)   # [8, 1, 50]
        >>> target_states = torch.randn(B, len(loss_fn.spec.target_state_offsets), 50)  # [8, 4, 50]
        >>> loss_fn(input_states, target_states, torch.randn(B, H, 6), torch.randn(B, H, 1)).shape
        torch.Size([])
    """

    def __init__(
        self,
        spec: AuxLossSpec | str,
        feature_dim: int,
        action_dim: int,
        embed_actions_rewards: bool = False,
    ) -> None:
        super().__init__()
        for name, value in (("feature_dim", feature_dim), ("action_dim", action_dim)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name}: must be an integer >= 1, got {value!r}")
        self.spec = AuxLossSpec.coerce(spec)
        self.feature_dim = feature_dim
        self.action_dim = action_dim
        self.embed_actions_rewards = bool(embed_actions_rewards)
        spec = self.spec

        # Offsets as index buffers so they follow the module to its device; not saved (derived).
        for name in ("input_action", "input_reward", "target_action", "target_reward"):
            offsets = getattr(spec, f"{name}_offsets")
            self.register_buffer(f"_{name}_index", torch.tensor(offsets, dtype=torch.long), persistent=False)

        n_in_actions, n_in_rewards = len(spec.input_action_offsets), len(spec.input_reward_offsets)
        self.action_embedding = (
            ElementEmbedding(action_dim, feature_dim) if self.embed_actions_rewards and n_in_actions else None
        )
        self.reward_embedding = (
            ElementEmbedding(1, feature_dim) if self.embed_actions_rewards and n_in_rewards else None
        )
        action_size = feature_dim if self.action_embedding is not None else action_dim
        reward_size = feature_dim if self.reward_embedding is not None else 1
        self.input_dim = (
            feature_dim * len(spec.input_state_offsets) + action_size * n_in_actions + reward_size * n_in_rewards
        )
        self.output_dim = (
            feature_dim * len(spec.target_state_offsets)
            + action_dim * len(spec.target_action_offsets)
            + len(spec.target_reward_offsets)
        )
        self.predictor = nn.Sequential(
            nn.Linear(self.input_dim, 2 * self.input_dim),
            nn.BatchNorm1d(2 * self.input_dim),
            nn.ReLU(),
            nn.Linear(2 * self.input_dim, self.output_dim),
        )
        # Official initialisation: uniform on [0, 1) (torch.rand).
        self.bilinear = (
            nn.Parameter(torch.rand(self.output_dim, self.output_dim)) if spec.operator == "bilinear" else None
        )

    @property
    def online_offsets(self) -> tuple[int, ...]:
        """States read through the online encoder: the spec's input states (the auxiliary-loss interface)."""
        return self.spec.input_state_offsets

    @property
    def target_offsets(self) -> tuple[int, ...]:
        """States read through the target encoder: the spec's target states."""
        return self.spec.target_state_offsets

    def compute(self, ctx, reduction: str = "mean") -> Tensor:
        """The loss from an update's :class:`~a2ls_lightning.modules.aux_registry.AuxContext`: the spec's states
        from the encoded window, its first ``H`` actions and rewards (see :meth:`forward`)."""
        h = self.spec.horizon
        return self(ctx.online(self.online_offsets), ctx.target(self.target_offsets), ctx.action[:, :h].float(),
                    ctx.reward[:, :h].float(), reduction=reduction)

    def extra_repr(self) -> str:
        return f"spec='{self.spec}', input_dim={self.input_dim}, output_dim={self.output_dim}"

    def _check_shapes(
        self, input_states: Tensor, target_states: Tensor | None, actions: Tensor, rewards: Tensor
    ) -> None:
        spec, batch = self.spec, input_states.shape[0]
        expected_in = (batch, len(spec.input_state_offsets), self.feature_dim)
        if tuple(input_states.shape) != expected_in:
            raise ValueError(
                f"input_states: expected [B, {expected_in[1]}, {self.feature_dim}] (offsets "
                f"{spec.input_state_offsets}), got {tuple(input_states.shape)}"
            )
        n_targets = len(spec.target_state_offsets)
        if target_states is None and n_targets:
            raise ValueError(f"target_states: required for target offsets {spec.target_state_offsets}")
        if target_states is not None and tuple(target_states.shape) != (batch, n_targets, self.feature_dim):
            raise ValueError(
                f"target_states: expected [{batch}, {n_targets}, {self.feature_dim}] (offsets "
                f"{spec.target_state_offsets}), got {tuple(target_states.shape)}"
            )
        # A longer window is fine: one window may serve several losses of different horizons.
        for name, tensor, size in (("actions", actions, self.action_dim), ("rewards", rewards, 1)):
            shape = tuple(tensor.shape)
            if len(shape) != 3 or shape[0] != batch or shape[1] < spec.horizon or shape[2] != size:
                raise ValueError(f"{name}: expected [{batch}, >={spec.horizon}, {size}], got {tuple(tensor.shape)}")

    def predict(
        self,
        input_states: Tensor,
        target_states: Tensor | None,
        actions: Tensor,
        rewards: Tensor,
    ) -> tuple[Tensor, Tensor]:
        """Predictions and (detached) targets, before the operator.

        Args:
            input_states: ``[B, n_in_s, F]`` online features of the states at ``spec.input_state_offsets``.
            target_states: ``[B, n_tgt_s, F]`` EMA features of the states at ``spec.target_state_offsets``
                (may be ``None`` when the spec has no target state).
            actions: ``[B, ≥H, A]`` raw actions of the window, offset 0 first.
            rewards: ``[B, ≥H, 1]`` (or ``[B, ≥H]``) raw rewards of the window.

        Returns:
            ``(prediction, target)``, both ``[B, d_out]``; the target carries no gradient.
        """
        if rewards.ndim == 2:
            rewards = rewards.unsqueeze(-1)
        self._check_shapes(input_states, target_states, actions, rewards)
        batch = input_states.shape[0]
        # Raw values may arrive in another dtype (float64 from numpy); the predictor runs in the features'.
        actions, rewards = actions.to(input_states.dtype), rewards.to(input_states.dtype)

        input_actions = actions.index_select(1, self._input_action_index)  # [B, n_a, A]
        input_rewards = rewards.index_select(1, self._input_reward_index)  # [B, n_r, 1]
        if self.action_embedding is not None:
            input_actions = self.action_embedding(input_actions)  # [B, n_a, F]
        if self.reward_embedding is not None:
            input_rewards = self.reward_embedding(input_rewards)  # [B, n_r, F]
        predictor_input = torch.cat(
            [input_states.reshape(batch, -1), input_actions.reshape(batch, -1), input_rewards.reshape(batch, -1)], dim=1
        )
        prediction = self.predictor(predictor_input)

        target_pieces = [
            actions.index_select(1, self._target_action_index).reshape(batch, -1).float(),
            rewards.index_select(1, self._target_reward_index).reshape(batch, -1).float(),
        ]
        if target_states is not None:
            # The caller computes these under no_grad; detach anyway so the EMA encoder can never
            # receive a gradient through this loss.
            target_pieces.insert(0, target_states.detach().reshape(batch, -1).float())
        target = torch.cat(target_pieces, dim=1).detach()
        return prediction, target

    def forward(
        self,
        input_states: Tensor,
        target_states: Tensor | None,
        actions: Tensor,
        rewards: Tensor,
        reduction: str = "mean",
    ) -> Tensor:
        """The loss; arguments as in :meth:`predict`. Returns a float32 scalar (also under autocast), or with
        ``reduction="none"`` the ``[B]`` per-example losses (each window's loss; see :func:`operator_loss`)."""
        prediction, target = self.predict(input_states, target_states, actions, rewards)
        return operator_loss(self.spec.operator, prediction, target, self.spec.negatives, self.bilinear,
                             reduction=reduction)
