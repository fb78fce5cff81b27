"""Sequence replay: a TorchRL ``ReplayBuffer`` that serves ``[B, L]`` slices of consecutive steps of one episode.

Layout: one storage entry per *visited state*. Entry ``i`` holds the state ``s_t`` (a state vector, or one uint8
frame ``[3, H, W]`` for pixels), the action ``a_t`` taken there, the reward ``r_t`` and whether ``s_{t+1}`` is
terminal, plus the episode id and the step within the episode. The last state of an episode gets an entry of its
own with ``has_action=False``. So a pixel transition costs about one frame (CURL stores a stacked ``obs`` and
``next_obs``: six frames at frame stack 3), and frame stacks are built at sample time from the slice.

Sampling is done by :class:`EpisodeSliceSampler`, a TorchRL :class:`~torchrl.data.replay_buffers.Sampler` that
keeps the set of valid slice starts *incrementally* (O(L) work per written entry, O(B) per sample). TorchRL's
``SliceSampler`` recomputes episode boundaries on every call (about 6x a minimal numpy sampler here, see
``scripts/benchmark_sampling.py``), marks slice ends as truncated, and cannot look back for
frame stacks; hence this sampler. A start is valid when its whole window (the look-back for the frame stack
included) lies in one episode and has not been overwritten, so slices never cross episodes, the buffer's
wrap-around, or a resume.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from tensordict import TensorDict, TensorDictBase
from torchrl.data import LazyTensorStorage, ReplayBuffer, RoundRobinWriter
from torchrl.data.replay_buffers import Sampler
from torchrl.envs import Transform


class EpisodeSliceSampler(Sampler):
    """Uniform sampler of windows of ``slice_length`` consecutive states of one episode.

    Args:
        capacity: storage capacity (entries).
        slice_length: states per slice ``L`` (``L - 1`` transitions with actions, plus the last state).
        history: extra earlier states each slice needs for frame stacks (``frame_stack - 1``); before the
            episode's first state the index is clamped to it, as the collector pads stacks at reset.
        seed: seed of the sampler's own numpy generator (saved in :meth:`state_dict`).

    ``sample`` returns an index ``[B, history + slice_length]``.
    """

    def __init__(self, capacity: int, slice_length: int, history: int = 0, seed: int = 0) -> None:
        super().__init__()
        self.capacity = int(capacity)
        self.slice_length = int(slice_length)
        self.history = int(history)
        self.episode = np.full(self.capacity, -1, dtype=np.int64)
        self.step = np.zeros(self.capacity, dtype=np.int64)
        self.has_action = np.zeros(self.capacity, dtype=bool)
        # Dense set of valid starts: members[:n_valid] are the starts, position[i] is i's place (-1: absent).
        self.members = np.zeros(self.capacity, dtype=np.int64)
        self.position = np.full(self.capacity, -1, dtype=np.int64)
        self.n_valid = 0
        self.rng = np.random.default_rng(seed)
        self._offsets = np.arange(-self.history, self.slice_length)

    # --- bookkeeping -------------------------------------------------------------------------------
    def mark(self, index: int, episode: int, step: int, has_action: bool) -> None:
        """Record what was written at ``index`` and refresh the starts whose window covers it."""
        self.episode[index] = episode
        self.step[index] = step
        self.has_action[index] = has_action
        starts = (index + np.arange(-(self.slice_length - 1), self.history + 1)) % self.capacity
        for start, ok in zip(starts.tolist(), self._valid(starts).tolist()):
            if ok and self.position[start] < 0:
                self.position[start] = self.n_valid
                self.members[self.n_valid] = start
                self.n_valid += 1
            elif not ok and self.position[start] >= 0:
                last = self.members[self.n_valid - 1]
                self.members[self.position[start]] = last
                self.position[last] = self.position[start]
                self.position[start] = -1
                self.n_valid -= 1

    def _valid(self, starts: np.ndarray) -> np.ndarray:
        """``[S]`` bool: does the window of each start lie in one episode, in order, with actions?"""
        if self.slice_length + self.history > self.capacity:
            return np.zeros(len(starts), dtype=bool)
        ep0, step0 = self.episode[starts], self.step[starts]
        back = np.minimum(self.history, step0)  # look-back stops at the episode's first state
        offsets = self._offsets[None, :]
        idx = (starts[:, None] + offsets) % self.capacity
        needed = offsets >= -back[:, None]
        same = (self.episode[idx] == ep0[:, None]) & (self.step[idx] == step0[:, None] + offsets)
        acts = self.has_action[idx] | (offsets >= self.slice_length - 1) | (offsets < 0)
        return (ep0 >= 0) & np.all(same | ~needed, axis=1) & np.all(acts, axis=1)

    def valid_starts(self) -> np.ndarray:
        """The current valid starts (a copy), in no particular order."""
        return self.members[: self.n_valid].copy()

    # --- torchrl Sampler API -----------------------------------------------------------------------
    def sample(self, storage: Any, batch_size: int) -> tuple[torch.Tensor, dict]:
        if self.n_valid == 0:
            raise RuntimeError("the replay buffer holds no complete slice yet: collect more steps first")
        starts = self.members[self.rng.integers(0, self.n_valid, size=batch_size)]
        offsets = np.maximum(self._offsets[None, :], -self.step[starts][:, None])
        index = (starts[:, None] + offsets) % self.capacity
        return torch.from_numpy(index), {}

    def _empty(self) -> None:
        self.__init__(self.capacity, self.slice_length, self.history)

    def state_dict(self, filled: int | None = None) -> dict[str, Any]:
        """The bookkeeping of the first ``filled`` entries (default: all) and the valid starts, as tensors.

        Entries past ``filled`` have never been written (the storage fills from index 0 until it wraps), so they
        hold the defaults and are not stored; ``position`` is rebuilt from ``members`` on load.
        """
        n = self.capacity if filled is None else int(filled)
        return {
            "filled": n,
            "episode": torch.from_numpy(self.episode[:n].copy()),
            "step": torch.from_numpy(self.step[:n].copy()),
            "has_action": torch.from_numpy(self.has_action[:n].copy()),
            "members": torch.from_numpy(self.members[: self.n_valid].copy()),
            "n_valid": self.n_valid,
            "rng": self.rng.bit_generator.state,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # Side files of version 0.1 hold whole-capacity numpy arrays and `position`; newer ones the filled part.
        self.episode[:] = -1
        self.step[:] = 0
        self.has_action[:] = False
        self.position[:] = -1
        for key in ("episode", "step", "has_action"):
            values = np.asarray(state_dict[key])
            getattr(self, key)[: len(values)] = values
        self.n_valid = int(state_dict["n_valid"])
        members = np.asarray(state_dict["members"])[: self.n_valid]
        self.members[:] = 0
        self.members[: self.n_valid] = members
        self.position[members] = np.arange(self.n_valid)
        self.rng.bit_generator.state = state_dict["rng"]

    def dumps(self, path: Any) -> None:  # whole-buffer dumps go through state_dict (see SequenceReplay)
        raise NotImplementedError("use SequenceReplay.state_dict()")

    def loads(self, path: Any) -> None:
        raise NotImplementedError("use SequenceReplay.load_state_dict()")


class SliceStorage(LazyTensorStorage):
    """``LazyTensorStorage`` whose ``get`` gathers a ``[B, L]`` index with one ``index_select`` per field.

    Why: TensorDict's advanced indexing with a 2-D index costs ~3x an ``index_select`` per field here (measured
    by ``scripts/benchmark_sampling.py``), and sampling runs once per update. Valid indices are always written
    entries (the sampler only hands out starts whose whole window was written).
    """

    def get(self, index: Any) -> Any:
        if not (isinstance(index, torch.Tensor) and index.ndim == 2 and self.initialized):
            return super().get(index)
        shape = tuple(index.shape)
        flat = index.reshape(-1)
        if self.device.type == "cuda":
            # A copy from pageable memory synchronizes the stream (the host would wait for the previous update's
            # kernels every update); from pinned memory it is queued and the host runs ahead. PyTorch's caching
            # host allocator keeps the pinned block alive until the copy is done.
            flat = flat.pin_memory().to(self.device, non_blocking=True)
        else:
            flat = flat.to(self.device)
        return self._storage.apply(
            lambda v: v.index_select(0, flat).unflatten(0, shape), batch_size=shape, device=self._storage.device
        )


class StackFramesAtSample(Transform):
    """Turn a sampled ``[B, history + L]`` window into ``[B, L]`` steps with frame-stacked observations.

    ``observation`` of ``[B, history + L, C, H, W]`` becomes ``[B, L, (history + 1) * C, H, W]``, oldest frame
    first (the layout of TorchRL's ``CatFrames`` and of CURL); every other key drops the look-back entries.
    """

    def __init__(self, history: int) -> None:
        super().__init__()
        self.history = int(history)

    def forward(self, tensordict: TensorDictBase) -> TensorDictBase:
        if self.history == 0:
            return tensordict
        frames = tensordict.get("observation")
        out = tensordict[:, self.history :].clone(recurse=False)
        b, n, c, h, w = frames.shape
        k = self.history + 1
        stacks = frames.unfold(1, k, 1)  # [B, L, C, H, W, k]
        stacks = stacks.permute(0, 1, 5, 2, 3, 4).reshape(b, n - self.history, k * c, h, w)
        out.set("observation", stacks)
        return out

    _call = forward


class SequenceReplay:
    """Replay of episodes that serves ``[B, L]`` slices (a TorchRL ``ReplayBuffer`` underneath).

    Args:
        capacity: entries kept (one per visited state; about one per transition).
        batch_size: slices per sample ``B``.
        slice_length: consecutive states per slice ``L`` (at least 2: a transition needs its next state).
        frame_stack: frames per pixel observation (1 for state observations).
        device: where the storage lives (the training device when it fits: no host copies per batch).
        seed: seed of the sampler.

    Examples:
        >>> rb = SequenceReplay(capacity=1000, batch_size=4, slice_length=3)
        >>> for t in range(10):
        ...     rb.add(torch.zeros(5), torch.zeros(2), 1.0, False, episode=0, step=t, has_action=t < 9)
        >>> rb.sample()["observation"].shape
        torch.Size([4, 3, 5])
    """

    def __init__(
        self,
        capacity: int,
        batch_size: int,
        slice_length: int,
        frame_stack: int = 1,
        device: str | torch.device = "cpu",
        seed: int = 0,
    ) -> None:
        self.sampler = EpisodeSliceSampler(capacity, slice_length, frame_stack - 1, seed)
        self.buffer = ReplayBuffer(
            storage=SliceStorage(capacity, device=torch.device(device)),
            sampler=self.sampler,
            writer=RoundRobinWriter(),
            batch_size=batch_size,
            transform=StackFramesAtSample(frame_stack - 1),
        )

    def __len__(self) -> int:
        return len(self.buffer)

    @property
    def num_slices(self) -> int:
        """Number of valid slice starts."""
        return self.sampler.n_valid

    def add(
        self,
        observation: torch.Tensor,
        action: torch.Tensor,
        reward: float,
        terminated: bool,
        episode: int,
        step: int,
        has_action: bool,
    ) -> int:
        """Write one state entry; returns its storage index."""
        entry = TensorDict(
            {
                "observation": observation,
                "action": action.float(),
                "reward": torch.tensor([reward], dtype=torch.float32),
                "terminated": torch.tensor([terminated]),
                "episode": torch.tensor(episode, dtype=torch.int64),
                "step": torch.tensor(step, dtype=torch.int64),
            },
            batch_size=[],
        )
        index = int(self.buffer.add(entry))
        self.sampler.mark(index, episode, step, has_action)
        return index

    def sample(self) -> TensorDictBase:
        """A ``[B, L]`` TensorDict: ``observation``, ``action``, ``reward``, ``terminated``, ``episode``, ``step``.

        ``action[:, t]``, ``reward[:, t]`` and ``terminated[:, t]`` belong to the transition from step ``t`` to
        ``t + 1`` and are meaningful for ``t < L - 1``.
        """
        return self.buffer.sample()

    def storage_bytes(self) -> int:
        """Bytes held by the storage tensors (allocated at the first write)."""
        if not len(self.buffer):
            return 0
        return sum(t.numel() * t.element_size() for t in self.buffer.storage._storage.values(True, True))

    def state_dict(self) -> dict[str, Any]:
        """TorchRL's buffer state (storage, writer cursor, sampler) with only the *filled* entries of the storage
        and of the sampler's bookkeeping: a side file grows with the data collected, not with the capacity.

        Until the ring wraps, entries ``[0, len)`` are the written ones (TorchRL's round-robin writer fills from 0);
        after it, all are; the writer's cursor says where the next write goes.
        """
        filled = len(self.buffer.storage)
        state = self.buffer.state_dict()
        storage = state["_storage"]
        if isinstance(storage.get("_storage"), dict):
            storage["_storage"] = _take(storage["_storage"], filled)
        storage["_filled"] = filled
        state["_sampler"] = self.sampler.state_dict(filled)
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        storage = state["_storage"]
        filled = storage.pop("_filled", None)
        if filled is not None and isinstance(storage.get("_storage"), dict):
            capacity = self.sampler.capacity
            # Back to TorchRL's layout (capacity rows); rows past `filled` were never written and are never sampled.
            storage["_storage"] = _pad(storage["_storage"], capacity)
        self.buffer.load_state_dict(state)


def _take(fields: dict[str, Any], n: int) -> dict[str, Any]:
    """The first ``n`` rows of every tensor of a (nested) storage state."""
    return {k: _take(v, n) if isinstance(v, dict) else v[:n].clone() for k, v in fields.items()}


def _pad(fields: dict[str, Any], capacity: int) -> dict[str, Any]:
    """Every tensor of a (nested) storage state grown to ``capacity`` rows (zeros after the stored ones)."""
    out = {}
    for k, v in fields.items():
        if isinstance(v, dict):
            out[k] = _pad(v, capacity)
        elif v.shape[0] < capacity:
            full = torch.zeros((capacity, *v.shape[1:]), dtype=v.dtype, device=v.device)
            full[: v.shape[0]] = v
            out[k] = full
        else:
            out[k] = v
    return out
