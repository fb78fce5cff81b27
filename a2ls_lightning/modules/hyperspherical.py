"""Hyperspherical networks (SimbaV2: Lee et al. 2025, "Hyperspherical Normalization for Scalable Deep RL"): every
hidden feature vector and every weight row is kept on the unit sphere; learnable per-dimension scalers give back the
magnitudes the normalisation removes.

A network of width ``W`` with ``N`` blocks on ``[..., in_dim]`` inputs::

    x ── [x, c_shift] ── l2norm ── HyperLinear(in+1 → W) ── Scaler ── l2norm ──► h          embedding, input shift
    h ── N × block:  r = l2norm(HyperLinear(4W → W)(ReLU(Scaler(HyperLinear(W → 4W)(h)))))
                     h = l2norm(h + α ⊙ (r − h))                                            (LERP, α a Scaler)
    h ── HyperLinear(W → W) ── Scaler ── HyperLinear(W → out) + bias ──► [..., out]         output head

``HyperLinear`` has no bias; its rows are unit vectors at initialisation and after every optimizer step
(:func:`project_weights_`, run by the update after the step, so that the gradients every weighting rule sees, OL-AUX
included, are those of the unprojected step). A :class:`Scaler` stores ``s`` initialised to ``scale`` and multiplies
by ``s · init / scale``: its effective value starts at ``init`` and moves, per Adam step, at the pace ``init/scale``
sets (SimbaV2's reparameterisation; ``scale = 1/sqrt(W)``).

Departures from SimbaV2, and why:

* the actor's mean and log-std come from one output head of ``2·A`` (SimbaV2: a head each), as every actor here;
* the output head has no ReLU and its scalers start at ``1/sqrt(W)``, the inner MLP's too: our reading of SimbaV2's
  configuration (``scaler_init = scaler_scale = 1/sqrt(W)``, ``alpha_init = 1/(N+1)``);
* the target networks are EMAs of the projected weights and are not projected themselves (an average of unit
  rows lies just inside the sphere; the features are re-normalised at every layer anyway);
* the encoder (``network.encoder``) is not made hyperspherical: with ``encoder=identity`` the networks read the
  (normalised, with ``obs_norm``) observations as SimbaV2's do.
"""

from __future__ import annotations

import math

import torch
from torch import nn

__all__ = ["HyperLinear", "Scaler", "hyper_mlp", "l2normalize", "project_weights_"]

EPS = 1e-8


def l2normalize(x: torch.Tensor, dim: int = -1) -> torch.Tensor:
    """``x / max(||x||, 1e-8)`` along ``dim``."""
    return x / torch.linalg.vector_norm(x, dim=dim, keepdim=True).clamp_min(EPS)


class HyperLinear(nn.Module):
    """``x @ Wᵀ`` without bias, ``W`` of shape ``[out, in]`` with unit rows (orthogonal, then normalised)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.empty(out_dim, in_dim))
        nn.init.orthogonal_(self.weight)
        with torch.no_grad():
            self.weight.copy_(l2normalize(self.weight, dim=1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return nn.functional.linear(x, self.weight)


class Scaler(nn.Module):
    """Per-dimension learnable scale ``x ⊙ s · init / scale`` with ``s`` initialised to ``scale``: ``[..., D]``."""

    def __init__(self, dim: int, init: float, scale: float) -> None:
        super().__init__()
        self.scaler = nn.Parameter(torch.full((dim,), float(scale)))
        self.forward_scale = float(init) / float(scale)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * (self.scaler * self.forward_scale)


class _Embed(nn.Module):
    def __init__(self, in_dim: int, width: int, shift: float) -> None:
        super().__init__()
        self.shift = float(shift)
        self.linear = HyperLinear(in_dim + 1, width)
        self.scaler = Scaler(width, 1 / math.sqrt(width), 1 / math.sqrt(width))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = l2normalize(torch.cat([x, x.new_full((*x.shape[:-1], 1), self.shift)], dim=-1))
        return l2normalize(self.scaler(self.linear(x)))


class _Block(nn.Module):
    def __init__(self, width: int, blocks: int) -> None:
        super().__init__()
        scale = 1 / math.sqrt(width)
        self.inner = HyperLinear(width, 4 * width)
        self.scaler = Scaler(4 * width, scale, scale)
        self.outer = HyperLinear(4 * width, width)
        self.alpha = Scaler(width, 1 / (blocks + 1), scale)

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        r = l2normalize(self.outer(torch.relu(self.scaler(self.inner(h)))))
        return l2normalize(h + self.alpha(r - h))


class _Head(nn.Module):
    def __init__(self, width: int, out_dim: int) -> None:
        super().__init__()
        self.hidden = HyperLinear(width, width)
        self.scaler = Scaler(width, 1 / math.sqrt(width), 1 / math.sqrt(width))
        self.out = HyperLinear(width, out_dim)
        self.bias = nn.Parameter(torch.zeros(out_dim))

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        return self.out(self.scaler(self.hidden(h))) + self.bias


def hyper_mlp(in_dim: int, width: int, blocks: int, out_dim: int, shift: float = 3.0) -> nn.Sequential:
    """The hyperspherical network, flat (``net[-1]`` is the output head, as for the other networks: resets rely on
    it): ``[..., in_dim] → [..., out_dim]``.

    Examples:
        >>> net = hyper_mlp(17, 8, 2, 3)
        >>> net(torch.zeros(4, 17)).shape, len(net)
        (torch.Size([4, 3]), 4)
    """
    return nn.Sequential(_Embed(in_dim, width, shift), *(_Block(width, blocks) for _ in range(blocks)),
                         _Head(width, out_dim))


@torch.no_grad()
def project_weights_(modules: list[nn.Module]) -> None:
    """Every :class:`HyperLinear` weight under ``modules`` back onto the unit sphere, row by row (in place)."""
    for module in modules:
        for m in module.modules():
            if isinstance(m, HyperLinear):
                m.weight.copy_(l2normalize(m.weight, dim=1))
