"""Replay memory: bytes per transition of our pixel layout vs CURL's, and bytes per checkpoint side file.

1. Layout: fills a real ``SequenceReplay`` with real rendered dm_control frames (cheetah-run, 100x100, frame
   stack 3, action repeat 4: 250-transition episodes), measures the bytes its storage holds, and compares with
   CURL's layout for the same number of transitions: ``obs`` and ``next_obs`` of ``[3·k, H, W]`` uint8, action
   float32, reward and not-done float32. The paper's capacity (100k) is extrapolated linearly.
2. Side files (``--side-files``): a replay of the papers' capacity (100k) holding 1k / 10k / 100k transitions,
   state (cheetah-run's 17 floats) and pixels (one 100x100 uint8 frame per state), written as a checkpoint writes
   its side file (crash-safe, plain data), with its size, the write time and the time to verify its checksum.
   Entries are synthetic (the side file's size does not depend on the values: nothing is compressed); episodes of
   250 transitions as in cheetah-run.

    python scripts/benchmark_memory.py --episodes 4
    python scripts/benchmark_memory.py --side-files
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from a2ls_lightning.data.collector import EpisodeCollector
from a2ls_lightning.data.envs import make_env
from a2ls_lightning.data.replay import SequenceReplay
from a2ls_lightning.data.snapshots import file_digest, write_snapshot


def layout(args: argparse.Namespace) -> None:
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


def _filled_replay(kind: str, transitions: int, capacity: int, image_size: int) -> SequenceReplay:
    """A replay of ``capacity`` holding ``transitions`` transitions in 250-step episodes (+1 last state each)."""
    shape = (3, image_size, image_size) if kind == "pixels" else (17,)
    dtype = torch.uint8 if kind == "pixels" else torch.float32
    rb = SequenceReplay(capacity, batch_size=8, slice_length=2, frame_stack=3 if kind == "pixels" else 1)
    obs, action = torch.zeros(shape, dtype=dtype), torch.zeros(6)
    written, episode = 0, 0
    while written < transitions:
        steps = min(250, transitions - written)
        for t in range(steps + 1):
            rb.add(obs, action, 0.0, False, episode=episode, step=t, has_action=t < steps)
        written += steps
        episode += 1
    return rb


def side_files(args: argparse.Namespace) -> None:
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("state", "pixels"):
            for transitions in (1_000, 10_000, 100_000):
                rb = _filled_replay(kind, transitions, args.capacity, args.image_size)
                start = time.perf_counter()
                _, digest = write_snapshot(Path(tmp), transitions, 0, {"replay": rb.state_dict()})
                written = time.perf_counter() - start
                path = Path(tmp) / f"step{transitions:09d}-rank0.pt"
                start = time.perf_counter()
                file_digest(path)
                verify = time.perf_counter() - start
                rows.append((kind, transitions, digest["size"], written, verify))
                path.unlink()
                del rb
    print(f"Side file of one rank, replay capacity {args.capacity:,} (pixels: {args.image_size}x{args.image_size} "
          "uint8 frames); write = crash-safe write incl. fsync and checksum; verify = BLAKE2b of the file:\n")
    print("| observations | transitions | side file | bytes / transition | write | verify (checksum) |")
    print("|---|---|---|---|---|---|")
    for kind, n, size, written, verify in rows:
        print(f"| {kind} | {n:,} | {size / 2**20:,.1f} MiB | {size / n:,.0f} | {written:.2f} s | {verify:.2f} s "
              f"({size / 2**30 / max(verify, 1e-9):.2f} GiB/s) |")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--episodes", type=int, default=4)
    parser.add_argument("--image-size", type=int, default=100)
    parser.add_argument("--frame-stack", type=int, default=3)
    parser.add_argument("--side-files", action="store_true", help="bytes per side file at 1k/10k/100k transitions")
    parser.add_argument("--capacity", type=int, default=100_000, help="replay capacity for --side-files")
    args = parser.parse_args()
    side_files(args) if args.side_files else layout(args)


if __name__ == "__main__":
    main()
