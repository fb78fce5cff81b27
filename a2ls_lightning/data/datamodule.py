"""ReplayDataModule: the environment(s), the replay buffer and collection, per rank, as a LightningDataModule.

Its train dataloader yields one sampled ``[B, L]`` batch per gradient update, after stepping the environment
``env_steps_per_update`` times with the module's current policy (uniformly random during warm-up). The
dataloader reports a length (``trainer.max_steps``), which makes Lightning fetch without prefetching: each batch
is collected and sampled right before the update that uses it, with the weights of the previous update (no
extra lag), and a checkpoint never holds a batch that was sampled but not yet trained on, so resume is exact.

Checkpoints: every rank writes its own replay, collector (episode in flight included) and RNG states to a
side file next to the checkpoints, ``<dir>/replay/step<N>-rank<r>.pt``; the checkpoint records the path and
each rank reads back its own file on resume.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import numpy as np
import torch
from tensordict import TensorDictBase

from a2ls_lightning.data.collector import EpisodeCollector, Policy
from a2ls_lightning.data.envs import default_action_repeat, make_env, parse_task
from a2ls_lightning.data.replay import SequenceReplay
from a2ls_lightning.validation import check

#: Offset between the training and the evaluation environment's seed (per rank: ``seed + rank``).
EVAL_SEED_OFFSET = 1_000_003


class _UpdateStream:
    """One batch per update, for as many updates as the trainer runs (a *sized* iterable: see module doc)."""

    def __init__(self, datamodule: ReplayDataModule) -> None:
        self.datamodule = datamodule

    def __len__(self) -> int:
        trainer = self.datamodule.trainer
        max_steps = trainer.max_steps if trainer is not None else -1
        return max_steps if max_steps and max_steps > 0 else 2**40

    def __iter__(self) -> Iterator[TensorDictBase]:
        while True:
            yield self.datamodule.next_batch()


class ReplayDataModule(pl.LightningDataModule):
    """DeepMind Control task, TorchRL replay of ``[B, L]`` episode slices, and collection, for one rank each.

    Args:
        task: dm_control task as ``"domain-task"``, e.g. ``"cheetah-run"``, ``"ball_in_cup-catch"``.
        from_pixels: learn from rendered frames (``True``) or from the flat state vector (``False``).
        action_repeat: control steps per agent step; ``None`` takes the papers' per-domain value (cheetah 4).
        frame_stack: frames per pixel observation (state observations are not stacked).
        image_size: rendered frame side in pixels (the module crops it randomly, e.g. 100 → 84).
        capacity: replay capacity in stored states (about one per agent step).
        batch_size: slices per update ``B``.
        slice_length: consecutive states per slice ``L``; ``None`` takes what the module needs (2 for plain
            SAC, the longest auxiliary horizon + 1 otherwise).
        warmup_steps: agent steps of uniformly random actions before the first update (the papers' 1000).
        env_steps_per_update: agent steps collected before each update.
        eval_interval: evaluate every this many env steps (control steps, action repeats included).
        eval_episodes: episodes per evaluation (deterministic action, own environment instance).
        seed: environment and exploration seed; rank ``r`` uses ``seed + r``.
        buffer_device: ``"cpu"``, or ``"auto"`` to keep the replay on the training device (no host copy per
            batch; pick it on a GPU when the buffer fits in its memory).
        keep_replay_snapshots: per-rank replay side files kept next to the checkpoints (older are deleted).
    """

    def __init__(
        self,
        task: str = "cheetah-run",
        from_pixels: bool = False,
        action_repeat: int | None = None,
        frame_stack: int = 3,
        image_size: int = 100,
        capacity: int = 100_000,
        batch_size: int = 512,
        slice_length: int | None = None,
        warmup_steps: int = 1000,
        env_steps_per_update: int = 1,
        eval_interval: int = 10_000,
        eval_episodes: int = 10,
        seed: int = 1,
        buffer_device: str = "cpu",
        keep_replay_snapshots: int = 2,
    ) -> None:
        super().__init__()
        parse_task(task)
        check(action_repeat is None or action_repeat >= 1, f"action_repeat={action_repeat} must be >= 1 or null")
        check(frame_stack >= 1, f"frame_stack={frame_stack} must be >= 1")
        check(image_size >= 16, f"image_size={image_size} must be >= 16")
        check(capacity >= 2, f"capacity={capacity} must be >= 2")
        check(batch_size >= 1, f"batch_size={batch_size} must be >= 1")
        check(
            batch_size <= capacity, f"batch_size={batch_size} must be <= capacity={capacity} (slices sampled per update)"
        )
        check(slice_length is None or slice_length >= 2, f"slice_length={slice_length} must be >= 2 or null")
        check(warmup_steps >= 0, f"warmup_steps={warmup_steps} must be >= 0")
        check(env_steps_per_update >= 1, f"env_steps_per_update={env_steps_per_update} must be >= 1")
        check(eval_interval >= 1, f"eval_interval={eval_interval} must be >= 1 (env steps)")
        check(eval_episodes >= 0, f"eval_episodes={eval_episodes} must be >= 0")
        check(buffer_device in ("cpu", "auto"), f"buffer_device={buffer_device!r}; allowed: cpu, auto")
        check(keep_replay_snapshots >= 1, f"keep_replay_snapshots={keep_replay_snapshots} must be >= 1")
        self.save_hyperparameters()
        self.task = task
        self.from_pixels = from_pixels
        self.action_repeat = default_action_repeat(task) if action_repeat is None else action_repeat
        self.frame_stack = frame_stack if from_pixels else 1
        self.image_size = image_size
        self.capacity = capacity
        self.batch_size = batch_size
        self.slice_length = slice_length
        self.warmup_steps = warmup_steps
        self.env_steps_per_update = env_steps_per_update
        self.eval_interval = eval_interval
        self.eval_episodes = eval_episodes
        self.seed = seed
        self.buffer_device = buffer_device
        self.keep_replay_snapshots = keep_replay_snapshots
        self.policy: Policy | None = None
        self.collector: EpisodeCollector | None = None
        self.replay: SequenceReplay | None = None
        self._next_eval = eval_interval

    # --- what the module needs to build its networks -------------------------------------------------
    @property
    def observation_shape(self) -> tuple[int, ...]:
        """``(D,)`` for state, ``(3 · frame_stack, image_size, image_size)`` for pixels (before cropping)."""
        if self.from_pixels:
            return (3 * self.frame_stack, self.image_size, self.image_size)
        env = self.collector.env if self.collector is not None else self._make_env(0)
        return tuple(env.observation_spec["observation"].shape)

    @property
    def action_dim(self) -> int:
        env = self.collector.env if self.collector is not None else self._make_env(0)
        return int(env.action_spec.shape[-1])

    def _make_env(self, seed: int):
        return make_env(self.task, self.from_pixels, self.action_repeat, self.image_size, seed=seed)

    @property
    def rank(self) -> int:
        return self.trainer.global_rank if self.trainer is not None else 0

    # --- Lightning hooks ----------------------------------------------------------------------------
    def setup(self, stage: str | None = None, policy: Policy | None = None, slice_length: int | None = None) -> None:
        """Build this rank's environments, replay and collector (idempotent).

        Under a ``Trainer`` the policy is the module's ``act`` and the slice length the module's
        ``required_slice_length``; standalone (tests, notebooks) pass them here.
        """
        if self.collector is not None:
            return
        module = self.trainer.lightning_module if self.trainer is not None else None
        needed = slice_length or getattr(module, "required_slice_length", 2)
        if self.slice_length is not None and self.slice_length < needed:
            raise ValueError(f"slice_length={self.slice_length} is shorter than the {needed} states the module needs")
        length = self.slice_length or needed
        device = "cpu"
        if self.buffer_device == "auto" and module is not None:
            device = str(self.trainer.strategy.root_device)
        seed = self.seed + self.rank
        self.replay = SequenceReplay(self.capacity, self.batch_size, length, self.frame_stack, device, seed=seed)
        self.collector = EpisodeCollector(self._make_env(seed), self.replay, self.frame_stack, seed=seed)
        self.eval_collector = EpisodeCollector(self._make_env(seed + EVAL_SEED_OFFSET), None, self.frame_stack)
        if policy is not None:
            self.policy = policy
        elif module is not None:
            self.policy = module.act

    def train_dataloader(self) -> Iterable[TensorDictBase]:
        # The stream itself, not a torch DataLoader: it makes its batches in this process (collection needs the
        # live policy), so a DataLoader would only add per-batch overhead (worker-less fetch, collate, seeding).
        return _UpdateStream(self)

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        # A TensorDict batch moves as one object, and not at all when the replay already lives on `device`
        # (Lightning's generic collection walk costs ~0.3 ms per update, a few % of a CPU-sized update).
        if isinstance(batch, TensorDictBase):
            return batch if batch.device == device else batch.to(device, non_blocking=True)
        return super().transfer_batch_to_device(batch, device, dataloader_idx)

    # --- collection ---------------------------------------------------------------------------------
    def next_batch(self) -> TensorDictBase:
        """Collect (warm-up first, then ``env_steps_per_update`` policy steps) and sample one ``[B, L]`` batch."""
        collector, replay = self.collector, self.replay
        assert collector is not None and replay is not None, "call setup() first"
        while collector.agent_steps < self.warmup_steps:
            collector.step(None)
        for _ in range(self.env_steps_per_update):
            collector.step(self.policy)
        while replay.num_slices == 0:  # tiny warm-ups: no whole slice yet
            collector.step(self.policy)
        return replay.sample()

    def evaluation_due(self, final: bool = False) -> bool:
        """True when the env steps crossed the next ``eval_interval`` mark (or at the end, ``final``)."""
        if self.eval_episodes == 0 or self.collector is None:
            return False
        return final or self.collector.env_steps >= self._next_eval

    def evaluate(self, policy: Policy) -> float:
        """Mean return of ``eval_episodes`` episodes of the deterministic ``policy`` on the evaluation env."""
        assert self.collector is not None
        returns = [self.eval_collector.run_episode(policy) for _ in range(self.eval_episodes)]
        steps = self.collector.env_steps
        self._next_eval = (steps // self.eval_interval + 1) * self.eval_interval
        return float(np.mean(returns))

    def counters(self) -> dict[str, float]:
        """Env steps, episodes, physics errors and the last finished training episode's return."""
        c = self.collector
        assert c is not None
        return {
            "env_steps": float(c.env_steps),
            "episodes": float(c.episodes),
            "physics_errors": float(c.physics_errors),
            "episode_return": c.last_episode_return,
        }

    # --- checkpoints: each rank writes its own side file -------------------------------------------------
    def _snapshot_dir(self) -> Path:
        trainer = self.trainer
        ckpt = getattr(trainer, "checkpoint_callback", None)
        base = getattr(ckpt, "dirpath", None) or trainer.default_root_dir
        return Path(base) / "replay"

    def state_dict(self) -> dict[str, Any]:
        if self.collector is None or self.trainer is None:
            return {}
        folder = self._snapshot_dir()
        folder.mkdir(parents=True, exist_ok=True)
        name = f"step{self.trainer.global_step:09d}-rank{{rank}}.pt"
        payload = {
            "replay": self.replay.state_dict(),
            "collector": self.collector.state_dict(),
            "eval_collector": self.eval_collector.state_dict(),
            "next_eval": self._next_eval,
            "rng": _rng_state(),
        }
        path = folder / name.format(rank=self.rank)
        torch.save(payload, str(path) + ".tmp")
        os.replace(str(path) + ".tmp", path)  # a killed writer never leaves a half file under the real name
        self._prune(folder)
        return {"snapshot": str(folder / name), "world_size": self.trainer.world_size}

    def _prune(self, folder: Path) -> None:
        mine = sorted(folder.glob(f"step*-rank{self.rank}.pt"))
        for old in mine[: -self.keep_replay_snapshots]:
            old.unlink(missing_ok=True)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        if self.collector is None:
            self.setup("fit")
        path = Path(state_dict["snapshot"].format(rank=self.rank))
        if state_dict["world_size"] != self.trainer.world_size:
            raise ValueError(
                f"the checkpoint was written by {state_dict['world_size']} ranks but this run has "
                f"{self.trainer.world_size}: replay buffers are per rank"
            )
        if not path.exists():
            raise FileNotFoundError(f"replay snapshot {path} of this checkpoint is missing (keep_replay_snapshots)")
        payload = torch.load(path, weights_only=False)
        self.replay.load_state_dict(payload["replay"])
        self.collector.load_state_dict(payload["collector"])
        self.eval_collector.load_state_dict(payload["eval_collector"])
        self._next_eval = payload["next_eval"]
        _set_rng_state(payload["rng"])


def _rng_state() -> dict[str, Any]:
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def _set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])

