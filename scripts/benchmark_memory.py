"""Replay memory per transition: our pixel layout (one frame per visited state) vs CURL's (stacked obs + next_obs).

Fills a real ``SequenceReplay`` with real rendered dm_control frames (cheetah-run, 100x100, frame stack 3,
action repeat 4: 250-transition episodes), measures the bytes its storage holds, and compares with CURL's
layout for the same number of transitions: ``obs`` and ``next_obs`` of ``[3·k, H, W]`` uint8, action float32,
reward and not-done float32. The paper's capacity (100k) is extrapolated linearly from the measured bytes.

    python scripts/benchmark_memory.py --episodes 4
"""

from __future__ import annotations

import argparse

import numpy as np
import torch

from a2ls_lightning.data.collector import EpisodeCollector
from a2ls_lightning.data.envs import make_env
from a2ls_lightning.data.replay import SequenceReplay


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=100)
    parser.add_argument("--frame-stack", type=int, default=3)
    args = parser.parse_args()
    env = make_env("cheetah-run", from_pixels=True, image_size=args.image_size, seed=0)
    capacity = args.episodes * 251
    rb = SequenceReplay(capacity, batch_size=8, slice_length=2, frame_stack=args.frame_stack)
    collector = EpisodeCollector(env, rb, frame_stack=args.frame_stack, seed=0)
    while collector.episodes < args.episodes:
        collector.step(None)
    transitions = int(rb.sampler.has_action.sum())
    ours = rb.storage_bytes() / transitions
    k, s = args.frame_stack, args.image_size
    action_dim = int(env.action_spec.shape[-1])
    curl = 2 * (3 * k * s * s) + 4 * action_dim + 4 + 4
    batch = rb.sample()
    assert batch["observation"].shape[2:] == (3 * k, s, s) and batch["observation"].dtype == torch.uint8
    print(f"transitions stored: {transitions} in {len(rb)} entries ({args.episodes} episodes, real frames)")
    print("| layout | bytes / transition | 100k transitions |\n|---|---|---|")
    print(f"| CURL: stacked obs + next_obs | {curl:,.0f} | {curl * 1e5 / 2**30:.2f} GiB |")
    print(f"| ours: one frame per state | {ours:,.0f} | {ours * 1e5 / 2**30:.2f} GiB |")
    print(f"ratio ours / CURL = {ours / curl:.3f} (target <= 0.200)")
    assert np.isfinite(ours)


if __name__ == "__main__":
    main()
