"""Image augmentation on sampled batches, on the training device: random crop (CURL/RAD) and centre crop."""

from __future__ import annotations

import torch


def random_crop(frames: torch.Tensor, size: int) -> torch.Tensor:
    """Crop each image at its own random position: ``[N, C, H, W]`` → ``[N, C, size, size]``.

    Offsets from the global torch RNG (whose state a checkpoint keeps), drawn the same way on every device. On the
    CPU each image is one slice copy: a Python loop, but 384 crops of 9×64×64 → 56 take 2.4 ms against 16.9 ms for
    the gather below (``scripts/benchmark_pixel_speed.py --candidates``: −12% of an A2-winner update). On an
    accelerator the loop would be one kernel launch per image, so there it is one gather with per-sample offsets.
    Both give the same values (tested).
    """
    n, _, h, w = frames.shape
    if h == size and w == size:
        return frames
    top = torch.randint(0, h - size + 1, (n, 1, 1), device=frames.device)
    left = torch.randint(0, w - size + 1, (n, 1, 1), device=frames.device)
    if frames.device.type == "cpu":
        return torch.stack([frames[i, :, t:t + size, l:l + size]
                            for i, (t, l) in enumerate(zip(top.view(-1).tolist(), left.view(-1).tolist()))])
    return _gather_crop(frames, top, left, size)


def _gather_crop(frames: torch.Tensor, top: torch.Tensor, left: torch.Tensor, size: int) -> torch.Tensor:
    """``[N, C, H, W]`` and ``[N, 1, 1]`` offsets → ``[N, C, size, size]`` with one advanced-indexing gather."""
    n = frames.shape[0]
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
