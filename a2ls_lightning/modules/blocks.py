"""Residual feed-forward networks with LayerNorm (SimBa: Lee et al. 2024, "SimBa: Simplicity Bias for Scaling Up
Parameters in Deep RL").

A SimBa network on ``[..., in_dim]`` inputs, with ``W`` the width and ``N`` the number of blocks::

    x [..., in_dim] ── Linear(in_dim → W) ──► h [..., W]                       embedding
    h ── N × ResidualBlock ──► h [..., W]        h + Linear(4W → W)(ReLU(Linear(W → 4W)(LayerNorm(h))))
    h ── LayerNorm ──► [..., W]                                                  final normalisation
      ── Linear(W → out_dim) ──► [..., out_dim]                                  output (residual_mlp only)

The pre-LayerNorm blocks keep an identity path from the embedding to the output, so a deeper network starts
close to a shallow one (the "simplicity bias" of the paper); the final LayerNorm bounds the features the output
layer reads. :func:`residual_trunk` is the network without its output layer (what an encoder's trunk is);
:func:`residual_mlp` adds the output ``Linear`` as the *last* module of a flat ``nn.Sequential``, so
``net[-1]`` is the output layer, as it is for :func:`a2ls_lightning.modules.sac.mlp` (resets rely on it).
"""

from __future__ import annotations

import torch
from torch import nn

#: Width of a block's inner layer, as a multiple of the block's width (SimBa: 4, as a Transformer's MLP).
EXPANSION = 4


class ResidualBlock(nn.Module):
    """``h + Linear(4W → W)(ReLU(Linear(W → 4W)(LayerNorm(h))))``: ``[..., W] → [..., W]``.

    Args:
        width: ``W``.

    Examples:
        >>> ResidualBlock(8)(torch.zeros(3, 8)).shape
        torch.Size([3, 8])
    """

    def __init__(self, width: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(width)
        self.inner = nn.Linear(width, EXPANSION * width)
        self.outer = nn.Linear(EXPANSION * width, width)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return h + self.outer(torch.relu(self.inner(self.norm(h))))


def residual_trunk(in_dim: int, width: int, blocks: int) -> nn.Sequential:
    """``Linear(in_dim → W)``, ``blocks`` × :class:`ResidualBlock`, ``LayerNorm``: ``[..., in_dim] → [..., W]``.

    Examples:
        >>> residual_trunk(17, 8, 2)(torch.zeros(4, 17)).shape
        torch.Size([4, 8])
    """
    return nn.Sequential(nn.Linear(in_dim, width), *(ResidualBlock(width) for _ in range(blocks)), nn.LayerNorm(width))


def residual_mlp(in_dim: int, width: int, blocks: int, out_dim: int) -> nn.Sequential:
    """:func:`residual_trunk` then ``Linear(W → out_dim)``, flat: ``[..., in_dim] → [..., out_dim]``.

    Examples:
        >>> net = residual_mlp(23, 16, 2, 1)
        >>> net(torch.zeros(5, 23)).shape, type(net[-1]).__name__
        (torch.Size([5, 1]), 'Linear')
    """
    return nn.Sequential(*residual_trunk(in_dim, width, blocks), nn.Linear(width, out_dim))
