"""Image augmentation on sampled batches, on the training device: random crop (CURL/RAD) and centre crop."""

from __future__ import annotations

import torch


def random_crop(frames: torch.Tensor, size: int) -> torch.Tensor:
    """Crop each image at its own random position: ``[N, C, H, W]`` → ``[N, C, size, size]``.

    One gather with per-sample offsets (no Python loop over the batch); uses the global torch RNG, whose state
    a checkpoint keeps.
    """
    n, _, h, w = frames.shape
    if h == size and w == size:
        return frames
    top = torch.randint(0, h - size + 1, (n, 1, 1), device=frames.device)
    left = torch.randint(0, w - size + 1, (n, 1, 1), device=frames.device)
    ar = torch.arange(size, device=frames.device)
    rows = (top + ar.view(1, size, 1)).expand(n, size, size)
    cols = (left + ar.view(1, 1, size)).expand(n, size, size)
    batch = torch.arange(n, device=frames.device).view(n, 1, 1).expand(n, size, size)
    # Advanced indexing on dims (0, 2, 3) puts the channel dim last: [N, size, size, C].
    return frames.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)


def center_crop(frames: torch.Tensor, size: int) -> torch.Tensor:
    """The centre ``size × size`` window: ``[..., H, W]`` → ``[..., size, size]`` (acting and evaluation)."""
    h, w = frames.shape[-2:]
    top, left = (h - size) // 2, (w - size) // 2
    return frames[..., top : top + size, left : left + size]
