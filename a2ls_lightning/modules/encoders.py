"""Observation encoders: ``pixel`` (CURL's conv net), ``mlp``, ``ofe`` (OFENet-style dense) and ``identity``.

Every encoder is a ``trunk`` followed by a ``head``. The critic uses ``head(trunk(obs))``; the actor owns a copy
of the head (:meth:`Encoder.make_actor_head`) applied to ``trunk(obs).detach()``, so the actor trains its own
projection while the shared trunk is trained only by the critic and the auxiliary losses (CURL's tied-conv
scheme; the official A2LS vector code left the actor's encoder layers untrained, a defect not copied here).

The state encoders (``mlp``, ``ofe``) take ``blocks > 0`` SimBa residual blocks (:mod:`blocks`) in their trunk;
the head, and so the ``[N, feature_dim]`` features the critic, the actor and the auxiliary losses read, stays.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from a2ls_lightning.modules.blocks import residual_trunk

ENCODERS = ("pixel", "mlp", "ofe", "identity")
#: Encoders that can hold SimBa residual blocks (the state encoders with parameters).
BLOCK_ENCODERS = ("mlp", "ofe")


class Encoder(nn.Module):
    """Base: ``forward(obs) = head(trunk(obs))``; ``feature_dim`` is the head's output width."""

    trunk: nn.Module
    head: nn.Module
    feature_dim: int

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        """``[N, *obs_shape]`` → ``[N, feature_dim]``."""
        return self.head(self.trunk(obs))

    def make_actor_head(self) -> nn.Module:
        """A fresh copy of the head for the actor (same shapes, independent parameters)."""
        head = copy.deepcopy(self.head)
        for module in head.modules():
            if hasattr(module, "reset_parameters"):
                module.reset_parameters()
        return head


def _projection(in_dim: int, feature_dim: int) -> nn.Sequential:
    return nn.Sequential(nn.Linear(in_dim, feature_dim), nn.LayerNorm(feature_dim))


class PixelEncoder(Encoder):
    """CURL's encoder: ``num_layers`` 3×3 convs (first stride 2) → Linear → LayerNorm.

    Args:
        obs_shape: ``(C, H, W)`` of the cropped, stacked uint8 frames (``C = 3 · frame_stack``).
        feature_dim: output features.
        num_layers: conv layers.
        num_filters: channels per conv.

    Examples:
        >>> enc = PixelEncoder((9, 84, 84))
        >>> enc(torch.zeros(2, 9, 84, 84, dtype=torch.uint8)).shape
        torch.Size([2, 50])
    """

    def __init__(
        self, obs_shape: tuple[int, int, int], feature_dim: int = 50, num_layers: int = 4, num_filters: int = 32
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(obs_shape[0], num_filters, 3, stride=2), nn.ReLU()]
        for _ in range(num_layers - 1):
            layers += [nn.Conv2d(num_filters, num_filters, 3, stride=1), nn.ReLU()]
        self.convs = nn.Sequential(*layers, nn.Flatten())
        with torch.no_grad():
            flat = self.convs(torch.zeros(1, *obs_shape)).shape[-1]
        self.trunk = _PixelTrunk(self.convs)
        self.head = _projection(flat, feature_dim)
        self.feature_dim = feature_dim


class _PixelTrunk(nn.Module):
    def __init__(self, convs: nn.Module) -> None:
        super().__init__()
        self.convs = convs

    def forward(self, obs: torch.Tensor) -> torch.Tensor:
        # uint8 frames are scaled here, on the device, so the buffer and the batch stay uint8 (4x smaller).
        return self.convs(obs.float() / 255.0 if obs.dtype == torch.uint8 else obs)


class MLPEncoder(Encoder):
    """``Linear(obs, hidden) → ReLU`` trunk, ``Linear(hidden, feature_dim) → LayerNorm`` head (A2LS ``mlp``).

    With ``blocks > 0`` the trunk is a SimBa residual trunk instead, ``[N, obs] → [N, block_width]``: its
    embedding ``Linear(obs, block_width)`` takes the place of the first layer (``block_width`` ``None``:
    ``hidden_dim``).

    Examples:
        >>> MLPEncoder(17)(torch.zeros(4, 17)).shape
        torch.Size([4, 50])
        >>> MLPEncoder(17, blocks=2, block_width=32)(torch.zeros(4, 17)).shape
        torch.Size([4, 50])
    """

    def __init__(self, obs_dim: int, feature_dim: int = 50, hidden_dim: int = 40, blocks: int = 0,
                 block_width: int | None = None) -> None:
        super().__init__()
        if blocks:
            width = block_width or hidden_dim
            self.trunk = residual_trunk(obs_dim, width, blocks)
        else:
            width = hidden_dim
            self.trunk = nn.Sequential(nn.Linear(obs_dim, hidden_dim), nn.ReLU())
        self.head = _projection(width, feature_dim)
        self.feature_dim = feature_dim


class _DenseLayer(nn.Module):
    """OFENet's dense connection: ``h → [h, relu(W h)]``."""

    def __init__(self, in_dim: int, hidden_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, hidden_dim)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return torch.cat([h, torch.relu(self.linear(h))], dim=-1)


class OFEEncoder(Encoder):
    """OFENet-style dense trunk (``num_layers`` layers of ``hidden_dim``), then Linear → LayerNorm (A2LS ``ofe``).

    With ``blocks > 0`` a SimBa residual trunk (``[N, obs + num_layers·hidden] → [N, block_width]``; width
    ``None``: ``hidden_dim``) follows the dense layers, which keep their role of widening the state.

    Examples:
        >>> OFEEncoder(17)(torch.zeros(4, 17)).shape
        torch.Size([4, 50])
        >>> OFEEncoder(17, blocks=1)(torch.zeros(4, 17)).shape
        torch.Size([4, 50])
    """

    def __init__(self, obs_dim: int, feature_dim: int = 50, hidden_dim: int = 40, num_layers: int = 1,
                 blocks: int = 0, block_width: int | None = None) -> None:
        super().__init__()
        layers: list[nn.Module] = [_DenseLayer(obs_dim + i * hidden_dim, hidden_dim) for i in range(num_layers)]
        width = obs_dim + num_layers * hidden_dim
        if blocks:
            layers += list(residual_trunk(width, block_width or hidden_dim, blocks))
            width = block_width or hidden_dim
        self.trunk = nn.Sequential(*layers)
        self.head = _projection(width, feature_dim)
        self.feature_dim = feature_dim


class IdentityEncoder(Encoder):
    """The state itself is the feature (no parameters: nothing is shared between actor and critic).

    Examples:
        >>> IdentityEncoder(17)(torch.ones(4, 17)).shape
        torch.Size([4, 17])
    """

    def __init__(self, obs_dim: int) -> None:
        super().__init__()
        self.trunk = nn.Identity()
        self.head = nn.Identity()
        self.feature_dim = obs_dim


def make_encoder(
    kind: str, obs_shape: tuple[int, ...], feature_dim: int, hidden_dim: int, num_layers: int, num_filters: int,
    blocks: int = 0, block_width: int | None = None,
) -> Encoder:
    """Build an encoder by name for observations of ``obs_shape`` (``blocks``, ``block_width``: SimBa residual
    blocks of the ``mlp``/``ofe`` trunk, see :class:`MLPEncoder` and :class:`OFEEncoder`).

    Raises:
        ValueError: unknown ``encoder``, a pixel encoder on vectors / a vector encoder on images, or residual
            blocks for an encoder that cannot hold them.
    """
    if kind not in ENCODERS:
        raise ValueError(f"encoder={kind!r} is unknown; allowed: {', '.join(ENCODERS)}")
    is_image = len(obs_shape) == 3
    if kind == "pixel" and not is_image:
        raise ValueError(
            f"encoder='pixel' needs pixel observations but the data are state vectors of shape {tuple(obs_shape)}; "
            "allowed for state: mlp, ofe, identity (or set data.from_pixels=true)"
        )
    if kind != "pixel" and is_image:
        raise ValueError(f"encoder={kind!r} cannot read pixel observations {tuple(obs_shape)}; allowed: pixel")
    if blocks and kind not in BLOCK_ENCODERS:
        raise ValueError(f"encoder_blocks={blocks} needs encoder={' or '.join(BLOCK_ENCODERS)}, not {kind!r}")
    if kind == "pixel":
        return PixelEncoder(tuple(obs_shape), feature_dim, num_layers, num_filters)  # type: ignore[arg-type]
    obs_dim = int(obs_shape[0])
    if kind == "mlp":
        return MLPEncoder(obs_dim, feature_dim, hidden_dim, blocks, block_width)
    if kind == "ofe":
        return OFEEncoder(obs_dim, feature_dim, hidden_dim, num_layers, blocks, block_width)
    return IdentityEncoder(obs_dim)
