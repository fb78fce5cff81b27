"""Sampling ``[B, L]`` slices: our TorchRL replay (EpisodeSliceSampler) vs a minimal numpy sampler.

The numpy baseline is the floor for this job: valid starts precomputed once, then per sample only
``starts[rng.integers]``, the index arithmetic and one fancy-index gather per field. Ours goes through TorchRL's
``ReplayBuffer.sample`` (storage, transform) and returns a TensorDict. TorchRL's own ``SliceSampler`` is timed for
reference. Data: cheetah-like episodes of 250 transitions, 17-dim states, 6-dim actions.

    python scripts/benchmark_sampling.py --entries 100000 --batch 256 --length 2 5 10
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch
from tensordict import TensorDict
from torchrl.data import LazyTensorStorage, ReplayBuffer, SliceSampler

from a2ls_lightning.data.replay import SequenceReplay


def fill(rb: SequenceReplay, entries: int, episode_len: int = 250) -> dict[str, np.ndarray]:
    """Write ``entries`` states into ``rb``; return the same data as numpy arrays for the baseline."""
    n_ep = entries // (episode_len + 1)
    obs = np.random.randn(n_ep * (episode_len + 1), 17).astype(np.float32)
    act = np.random.rand(len(obs), 6).astype(np.float32)
    rew = np.random.rand(len(obs), 1).astype(np.float32)
    step = np.tile(np.arange(episode_len + 1), n_ep)
    episode = np.repeat(np.arange(n_ep), episode_len + 1)
    # bulk-write the storage the way `add` would, then register every entry with the sampler
    td = TensorDict({"observation": torch.from_numpy(obs), "action": torch.from_numpy(act),
                     "reward": torch.from_numpy(rew), "terminated": torch.zeros(len(obs), 1, dtype=torch.bool),
                     "episode": torch.from_numpy(episode), "step": torch.from_numpy(step)}, batch_size=[len(obs)])
    rb.buffer.extend(td)
    for i in range(len(obs)):
        rb.sampler.mark(i, int(episode[i]), int(step[i]), bool(step[i] < episode_len))
    return {"observation": obs, "action": act, "reward": rew, "episode": episode, "step": step,
            "has_action": step < episode_len}


def numpy_sampler(data: dict[str, np.ndarray], length: int, batch: int, rng: np.random.Generator):
    valid = np.flatnonzero(data["step"][: len(data["step"]) - length + 1] <= 250 - (length - 1))
    offsets = np.arange(length)

    def sample():
        idx = valid[rng.integers(0, len(valid), size=batch)][:, None] + offsets
        return {k: data[k][idx] for k in ("observation", "action", "reward", "episode", "step")}

    return sample


def timeit(fn, repeats: int) -> float:
    for _ in range(10):
        fn()
    start = time.perf_counter()
    for _ in range(repeats):
        fn()
    return (time.perf_counter() - start) / repeats * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--length", type=int, nargs="+", default=[2, 5, 10])
    parser.add_argument("--repeats", type=int, default=300)
    args = parser.parse_args()
    print(f"threads={torch.get_num_threads()} entries={args.entries} batch={args.batch}")
    print("| L | numpy minimal (ms) | ours: SequenceReplay.sample (ms) | ratio | TorchRL SliceSampler (ms) |")
    print("|---|---|---|---|---|")
    for length in args.length:
        rb = SequenceReplay(args.entries, args.batch, length)
        data = fill(rb, args.entries)
        base = timeit(numpy_sampler(data, length, args.batch, np.random.default_rng(0)), args.repeats)
        ours = timeit(rb.sample, args.repeats)
        torchrl_rb = ReplayBuffer(storage=LazyTensorStorage(args.entries), batch_size=args.batch * length,
                                  sampler=SliceSampler(slice_len=length, traj_key="episode", strict_length=True))
        torchrl_rb.extend(rb.buffer.storage._storage[: len(data["step"])])
        ref = timeit(torchrl_rb.sample, max(args.repeats // 5, 20))
        print(f"| {length} | {base:.3f} | {ours:.3f} | {ours / base:.2f} | {ref:.3f} |")
    print("target: ours <= 2x numpy minimal")


if __name__ == "__main__":
    main()
