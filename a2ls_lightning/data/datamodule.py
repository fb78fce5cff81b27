"""ReplayDataModule: the environment(s), the replay buffer and collection, per rank, as a LightningDataModule.

Its train dataloader yields one sampled ``[B, L]`` batch per gradient update, after stepping the environment
with the module's current policy (uniformly random during warm-up) as many times as the replay ratio asks
(``replay_ratio`` updates per agent step: see :mod:`a2ls_lightning.data.replay_ratio`). The
dataloader reports a length (``trainer.max_steps``), which makes Lightning fetch without prefetching: each batch
is collected and sampled right before the update that uses it, with the weights of the previous update (no
extra lag), and a checkpoint never holds a batch that was sampled but not yet trained on, so resume is exact.

Checkpoints: every rank writes its own replay, collector (episode in flight included) and RNG states to a
side file next to the checkpoints, ``<dir>/replay/step<N>-rank<r>.pt``; the checkpoint records the path and
each rank reads back its own file on resume.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

import lightning.pytorch as pl
import torch
from tensordict import TensorDictBase

from a2ls_lightning.data.collector import EpisodeCollector, Policy
from a2ls_lightning.data.envs import default_action_repeat, make_env, parse_task
from a2ls_lightning.data.evaluation import EvalListener, Evaluator
from a2ls_lightning.data.replay import SequenceReplay
from a2ls_lightning.data.replay_ratio import parse_replay_ratio, steps_before_update
from a2ls_lightning.data.returns import ReturnStatistics
from a2ls_lightning.data.snapshots import (
    SNAPSHOT_FOLDER,
    find_snapshot,
    load_snapshot,
    prune_snapshots,
    rng_state,
    set_rng_state,
    write_snapshot,
)
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

    # Lightning asks a dataloader for `state_dict`/`load_state_dict` to resume mid-epoch, and warns that results
    # may be unreliable without them. Ours resumes exactly: what it draws from (replay, collector, RNG states) is
    # the datamodule's own checkpoint state; the stream itself holds nothing.
    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        pass


class ReplayDataModule(pl.LightningDataModule):
    """DeepMind Control task, TorchRL replay of ``[B, L]`` episode slices, and collection, for one rank each.

    Args:
        task: dm_control task as ``"domain-task"``, e.g. ``"cheetah-run"``, ``"ball_in_cup-catch"``.
        from_pixels: learn from rendered frames (``True``) or from the flat state vector (``False``).
        action_repeat: control steps per agent step; ``None`` takes the papers' per-domain value (cheetah 4).
        frame_stack: frames per pixel observation (state observations are not stacked).
        image_size: rendered frame side in pixels (the module crops it randomly, e.g. 100 → 84).
        render_effects: pixels: render MuJoCo's shadows and reflections (the papers' frames, the default); off, a
            CPU renderer draws a frame about 4x faster (the CPU-scale pixel benchmark's setting). Videos keep them.
        capacity: replay capacity in stored states (about one per agent step).
        batch_size: slices per update ``B``.
        slice_length: consecutive states per slice ``L``; ``None`` takes what the module needs (2 for plain
            SAC, the longest auxiliary horizon + 1 otherwise).
        warmup_steps: agent steps of uniformly random actions before the first update (the papers' 1000).
        env_steps_per_update: agent steps collected before each update (replay ratio ``1/env_steps_per_update``);
            leave it at 1 when ``replay_ratio`` is set.
        replay_ratio: gradient updates per agent step: ``0.5`` (an update every 2 agent steps), ``1``, ``2`` (two
            updates per collected step, SimBa/BRO's setting), any ratio of small integers; null:
            ``1/env_steps_per_update``. Env steps after ``max_steps`` updates:
            ``action_repeat · (warmup_steps + ceil(max_steps / replay_ratio))``.
        eval_interval: evaluate every this many env steps (control steps, action repeats included).
        eval_episodes: episodes per evaluation (deterministic action, own environment instance).
        seed: environment and exploration seed; rank ``r`` uses ``seed + r``.
        buffer_device: ``"cpu"``, or ``"auto"`` to keep the replay on the training device (no host copy per
            batch; pick it on a GPU when the buffer fits in its memory).
        keep_replay_snapshots: per-rank replay side files kept next to the checkpoints (older are deleted).
        video_every: record the first episode of every this many evaluations (and of the last) from the task's
            camera as ``<run folder>/videos/eval_<env steps>.mp4`` (GIF without an MP4 encoder); 0: never.
    """

    def __init__(
        self,
        task: str = "cheetah-run",
        from_pixels: bool = False,
        action_repeat: int | None = None,
        frame_stack: int = 3,
        image_size: int = 100,
        render_effects: bool = True,
        capacity: int = 100_000,
        batch_size: int = 512,
        slice_length: int | None = None,
        warmup_steps: int = 1000,
        env_steps_per_update: int = 1,
        replay_ratio: float | None = None,
        eval_interval: int = 10_000,
        eval_episodes: int = 10,
        seed: int = 1,
        buffer_device: str = "cpu",
        keep_replay_snapshots: int = 2,
        video_every: int = 0,
    ) -> None:
        super().__init__()
        parse_task(task)
        check(action_repeat is None or action_repeat >= 1, f"action_repeat={action_repeat} must be >= 1 or null")
        check(frame_stack >= 1, f"frame_stack={frame_stack} must be >= 1")
        check(image_size >= 16, f"image_size={image_size} must be >= 16")
        check(capacity >= 2, f"capacity={capacity} must be >= 2")
        check(batch_size >= 1, f"batch_size={batch_size} must be >= 1")
        check(batch_size <= capacity,
              f"batch_size={batch_size} must be <= capacity={capacity} (slices sampled per update)")
        check(slice_length is None or slice_length >= 2, f"slice_length={slice_length} must be >= 2 or null")
        check(warmup_steps >= 0, f"warmup_steps={warmup_steps} must be >= 0")
        check(env_steps_per_update >= 1, f"env_steps_per_update={env_steps_per_update} must be >= 1")
        # updates per agent step, exact (validated here, before any work)
        ratio = parse_replay_ratio(replay_ratio if replay_ratio is not None else f"1/{env_steps_per_update}")
        if replay_ratio is not None:
            check(env_steps_per_update == 1, f"data.env_steps_per_update={env_steps_per_update} and data.replay_ratio="
                  f"{replay_ratio} both set the collection; allowed: one of them (replay_ratio = "
                  f"1/env_steps_per_update)")
        check(eval_interval >= 1, f"eval_interval={eval_interval} must be >= 1 (env steps)")
        check(eval_episodes >= 0, f"eval_episodes={eval_episodes} must be >= 0")
        check(buffer_device in ("cpu", "auto"), f"buffer_device={buffer_device!r}; allowed: cpu, auto")
        check(keep_replay_snapshots >= 1, f"keep_replay_snapshots={keep_replay_snapshots} must be >= 1")
        check(video_every >= 0, f"video_every={video_every} must be >= 0 (evaluations between videos; 0: none)")
        self.save_hyperparameters()
        self.policy: Policy | None = None
        self.collector: EpisodeCollector | None = None
        self.replay: SequenceReplay | None = None
        self.evaluator: Evaluator | None = None
        self._eval_listeners: list[EvalListener] = []
        self._batches = 0  # batches made so far (one per update): the replay ratio's schedule position
        self._ratio = ratio

    # --- what the module needs to build its networks -------------------------------------------------
    @property
    def observation_shape(self) -> tuple[int, ...]:
        """``(D,)`` for state, ``(3 · frame_stack, image_size, image_size)`` for pixels (before cropping)."""
        hp = self.hparams
        if hp.from_pixels:
            return (3 * hp.frame_stack, hp.image_size, hp.image_size)
        env = self.collector.env if self.collector is not None else self._make_env(0)
        return tuple(env.observation_spec["observation"].shape)

    @property
    def action_dim(self) -> int:
        env = self.collector.env if self.collector is not None else self._make_env(0)
        return int(env.action_spec.shape[-1])

    @property
    def action_repeat(self) -> int:
        """Control steps per agent step (the setting, or the papers' per-domain value when it is null)."""
        repeat = self.hparams.action_repeat
        return default_action_repeat(self.hparams.task) if repeat is None else repeat

    @staticmethod
    def resolve_settings(settings: dict[str, Any]) -> dict[str, Any]:
        """``settings`` (this class's arguments) with the values a null stands for filled in: ``action_repeat``
        becomes the task's default. Used to compare a resume's settings with the checkpoint's by meaning."""
        out = dict(settings)
        if out.get("action_repeat") is None and out.get("task"):
            out["action_repeat"] = default_action_repeat(out["task"])
        return out

    @property
    def replay_ratio(self):
        """Updates per agent step, an exact :class:`fractions.Fraction` (``replay_ratio``, or
        ``1/env_steps_per_update`` when it is null)."""
        return self._ratio

    @property
    def updates_per_batch(self) -> int:
        """Updates the module runs per train batch: at an integer replay ratio ``k > 1``, a group of the updates
        that share one agent step (the module draws the group's further batches with :meth:`next_batch`), else 1.

        The group is the largest divisor of ``k`` that the trainer's step counts acted on at the end of a batch
        (``log_every_n_steps``, each checkpoint callback's ``every_n_train_steps``) are multiples of, so that
        logging and scheduled saves land where they would without groups: ``k`` itself with the defaults at
        ``k = 2``; ``gcd(4, 50) = 2`` at ``k = 4`` with ``log_every_n_steps: 50``.
        """
        ratio = self._ratio
        if ratio.denominator != 1 or ratio <= 1:
            return 1
        group = int(ratio)
        trainer = self.trainer
        if trainer is not None:
            group = math.gcd(group, trainer.log_every_n_steps or group)
            for callback in trainer.checkpoint_callbacks:
                group = math.gcd(group, getattr(callback, "_every_n_train_steps", 0) or group)
        return group

    @property
    def frame_stack(self) -> int:
        """Frames per observation: ``frame_stack`` for pixels, 1 for state."""
        return self.hparams.frame_stack if self.hparams.from_pixels else 1

    def _make_env(self, seed: int):
        hp = self.hparams
        return make_env(hp.task, hp.from_pixels, self.action_repeat, hp.image_size, seed=seed,
                        render_effects=hp.render_effects)

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
        hp = self.hparams
        if hp.slice_length is not None and hp.slice_length < needed:
            raise ValueError(f"slice_length={hp.slice_length} is shorter than the {needed} states the module needs")
        length = hp.slice_length or needed
        device = "cpu"
        if hp.buffer_device == "auto" and module is not None:
            device = str(self.trainer.strategy.root_device)
        seed = hp.seed + self.rank
        self.replay = SequenceReplay(hp.capacity, hp.batch_size, length, self.frame_stack, device, seed=seed)
        self.collector = EpisodeCollector(self._make_env(seed), self.replay, self.frame_stack, seed=seed)
        eval_seed = seed + EVAL_SEED_OFFSET
        eval_collector = EpisodeCollector(self._make_env(eval_seed), None, self.frame_stack)
        self.evaluator = Evaluator(eval_collector, hp.eval_interval, hp.eval_episodes, self._eval_listeners,
                                   seed=eval_seed, video_every=hp.video_every, video_dir=self._video_dir)
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
        """Collect (warm-up first, then the policy steps the replay ratio gives this update: ``1/r`` for
        ``r <= 1``, one before every ``r``-th update for ``r > 1``) and sample one ``[B, L]`` batch."""
        collector, replay = self.collector, self.replay
        assert collector is not None and replay is not None, "call setup() first"
        while collector.agent_steps < self.hparams.warmup_steps:
            collector.step(None)
        for _ in range(steps_before_update(self._batches, self.replay_ratio)):
            collector.step(self.policy)
        self._batches += 1
        while replay.num_slices == 0:  # tiny warm-ups: no whole slice yet
            collector.step(self.policy)
        return replay.sample()

    def track_returns(self, discount: float) -> None:
        """Keep discounted-return statistics of the training episodes from now on (reward normalisation; called by
        the module's ``setup``, before any step is collected; saved and restored with the collector)."""
        assert self.collector is not None, "call setup() first"
        if self.collector.returns is None:
            self.collector.returns = ReturnStatistics(discount)

    def reward_scale(self, g_max: float) -> float:
        """What this update's rewards are divided by (see :class:`~a2ls_lightning.data.returns.ReturnStatistics`)."""
        assert self.collector is not None and self.collector.returns is not None, "call track_returns() first"
        return self.collector.returns.scale(g_max)

    def add_eval_listener(self, listener: EvalListener) -> None:
        """Call ``listener(env_steps, mean eval return)`` after every evaluation (e.g. to record a learning curve);
        it may raise to stop the run. Can be called before or after ``setup``."""
        self._eval_listeners.append(listener)

    def evaluate_if_due(self, policy: Policy) -> float | None:
        """At the end of an update: run the evaluation if it is due (see :class:`Evaluator`); its mean or None."""
        if self.evaluator is None or self.trainer is None:
            return None
        return self.evaluator.maybe_evaluate(self.trainer, policy, self.collector.env_steps)

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

    def _video_dir(self) -> Path:
        # Rank 0 only: not `trainer.log_dir`, which broadcasts (a collective the other ranks would not join).
        trainer = self.trainer
        return Path(getattr(trainer.logger, "log_dir", None) or trainer.default_root_dir) / "videos"

    # --- checkpoints: each rank writes its own side file (see data/snapshots.py) --------------------------
    def _snapshot_dir(self) -> Path:
        trainer = self.trainer
        ckpt = getattr(trainer, "checkpoint_callback", None)
        base = getattr(ckpt, "dirpath", None) or trainer.default_root_dir
        return Path(base) / SNAPSHOT_FOLDER

    def state_dict(self) -> dict[str, Any]:
        if self.collector is None or self.trainer is None:
            return {}
        # Nothing is written for a diverged run: the module refuses (one line) before this side file exists.
        check_finite = getattr(self.trainer.lightning_module, "check_finite", None)
        if check_finite is not None:
            check_finite()
        folder = self._snapshot_dir()
        payload = {
            "replay": self.replay.state_dict(),
            "collector": self.collector.state_dict(),
            **self.evaluator.state_dict(),
            "rng": rng_state(),
        }
        recorded, digest = write_snapshot(folder, self.trainer.global_step, self.rank, payload)
        prune_snapshots(folder, self.rank, self.hparams.keep_replay_snapshots)
        # Every rank's size and digest go into the checkpoint (written by rank 0), verified before a resume.
        digests = _gather_objects(self.trainer, digest)
        return {"snapshot": recorded, "world_size": self.trainer.world_size,
                "files": {str(rank): d for rank, d in enumerate(digests)}, "batches": self._batches}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        if not state_dict:
            return
        if self.collector is None:
            self.setup("fit")
        if state_dict["world_size"] != self.trainer.world_size:
            raise ValueError(
                f"the checkpoint was written by {state_dict['world_size']} ranks but this run has "
                f"{self.trainer.world_size}: replay buffers are per rank"
            )
        path = find_snapshot(state_dict["snapshot"], self.rank, self.trainer.ckpt_path)
        expected = (state_dict.get("files") or {}).get(str(self.rank))
        payload = load_snapshot(path, expected, self.trainer.ckpt_path)
        self.replay.load_state_dict(payload["replay"])
        self.collector.load_state_dict(payload["collector"])
        self.evaluator.load_state_dict(payload)
        set_rng_state(payload["rng"])
        # Checkpoints from before the replay ratio have no count: their schedule (1/env_steps_per_update) is the
        # same before every update, so any position gives it.
        self._batches = int(state_dict.get("batches", 0))


def _gather_objects(trainer: Any, value: Any) -> list[Any]:
    """``value`` of every rank, in rank order (just ``[value]`` without a process group)."""
    import torch.distributed as dist

    if trainer.world_size > 1 and dist.is_available() and dist.is_initialized():
        out: list[Any] = [None] * trainer.world_size
        dist.all_gather_object(out, value)
        return out
    return [value]
