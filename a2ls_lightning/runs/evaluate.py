"""Evaluating a trained agent from its checkpoint: returns of N episodes with the deterministic policy, a JSON
record, and optionally a video from the task's camera (``a2ls evaluate``).

Episode ``i`` is seeded from ``(seed, i)`` (the same rule as the evaluations during training), so the same seed gives
the same episodes, and a single episode can be replayed on its own. The task and its settings (action repeat,
pixels, image size, frame stack) are the checkpoint's; ``task`` evaluates the policy on another task with the
same observation and action sizes (transfer).
"""

from __future__ import annotations

import json
import random
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from a2ls_lightning.builder import default_threads, read_checkpoint
from a2ls_lightning.data.collector import EpisodeCollector
from a2ls_lightning.data.envs import default_action_repeat, make_env, parse_task
from a2ls_lightning.data.evaluation import evaluation_seed
from a2ls_lightning.data.video import VideoRecorder
from a2ls_lightning.files import atomic_write_text
from a2ls_lightning.modules.agent import SACModule, model_defaults
from a2ls_lightning.modules.settings import SETTING_GROUPS
from a2ls_lightning.validation import check


@dataclass
class EvaluationResult:
    """What :func:`evaluate_checkpoint` measured (also its JSON record)."""

    checkpoint: str
    task: str
    update: int
    seed: int
    episode_seeds: list[int]
    returns: list[float]
    mean: float
    std: float
    seconds: float
    video: str | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=1)


def default_record(ckpt_path: str | Path, update: int, seed: int) -> Path:
    """``<checkpoint stem>.update<U>.seed<S>.eval.json`` beside the checkpoint: one record per evaluation of a
    policy (a ``last.ckpt`` moves on as training continues; another seed plays other episodes), none overwritten."""
    ckpt = Path(ckpt_path)
    return ckpt.with_name(f"{ckpt.stem}.update{int(update)}.seed{int(seed)}.eval.json")


def load_policy(checkpoint: dict[str, Any]) -> SACModule:
    """The checkpoint's ``SACModule`` with its weights (CPU, eval mode; no trainer, no optimizer)."""
    known = {*model_defaults(), *SETTING_GROUPS}  # settings of this version; flat (older checkpoints) or grouped
    module = SACModule.from_settings(**{k: v for k, v in checkpoint["hyper_parameters"].items() if k in known})
    module.build(*checkpoint["env_spec"])
    module.load_state_dict(checkpoint["state_dict"])
    return module.eval()


def evaluate_checkpoint(ckpt_path: str | Path, episodes: int = 10, seed: int | None = None, task: str | None = None,
                        video: str | Path | None = None, video_episodes: int = 1, video_size: int = 256,
                        out: str | Path | None = None, threads: int | None = None) -> EvaluationResult:
    """Play ``episodes`` episodes of a checkpoint's deterministic policy.

    Args:
        ckpt_path: a checkpoint written by ``a2ls fit`` (any version of this package).
        episodes: episodes to play.
        seed: seed of the episodes (episode ``i`` is seeded from ``(seed, i)``); ``None`` draws one (printed and
            recorded, so the evaluation can be repeated).
        task: evaluate on this task instead of the checkpoint's (same observation and action sizes).
        video: write the first ``video_episodes`` episodes to this file (``.mp4``; GIF without an encoder).
        video_episodes: episodes recorded into ``video``.
        video_size: video frame side in pixels.
        out: JSON record to write (default: :func:`default_record`, next to the checkpoint).
        threads: torch CPU threads (default: as ``a2ls fit``).

    Raises:
        ValueError: one line naming the bad setting (or the unreadable checkpoint).
    """
    check(episodes >= 1, f"episodes={episodes} must be >= 1")
    check(0 <= video_episodes <= episodes, f"video_episodes={video_episodes} must be in [0, episodes={episodes}]")
    check(video_size >= 16, f"video_size={video_size} must be >= 16")
    check(seed is None or 0 <= seed < 2**32, f"seed={seed} must be in [0, 2**32)")
    if video is not None:
        check(Path(video).suffix.lower() in (".mp4", ".gif"), f"video={video}: must end in .mp4 or .gif")
    torch.set_num_threads(threads or default_threads())
    start = time.perf_counter()
    checkpoint = read_checkpoint(ckpt_path)
    check("env_spec" in checkpoint, f"ckpt_path: {ckpt_path} is not an a2ls_lightning checkpoint (no env_spec)")
    data = {k: v for k, v in (checkpoint.get("datamodule_hyper_parameters") or {}).items() if not k.startswith("_")}
    task = task or data.get("task", "cheetah-run")
    parse_task(task)
    from_pixels = bool(data.get("from_pixels", False))
    repeat = data.get("action_repeat") if task == data.get("task") else None
    repeat = repeat or default_action_repeat(task)
    env = make_env(task, from_pixels, repeat, int(data.get("image_size", 100)), seed=0,
                   render_effects=bool(data.get("render_effects", True)))  # the frames the policy learned from
    frame_stack = int(data.get("frame_stack", 3)) if from_pixels else 1
    collector = EpisodeCollector(env, None, frame_stack)
    obs_shape = tuple(env.observation_spec["observation"].shape)
    spec_obs, spec_actions = checkpoint["env_spec"]
    if from_pixels:
        obs_shape = (3 * frame_stack, *obs_shape[1:])
    check(tuple(spec_obs) == obs_shape and int(env.action_spec.shape[-1]) == spec_actions,
          f"task={task!r}: observations {obs_shape} and {int(env.action_spec.shape[-1])} actions do not fit the "
          f"checkpoint's policy ({tuple(spec_obs)}, {spec_actions} actions)")
    module = load_policy(checkpoint)
    seed = random.SystemRandom().randrange(2**31) if seed is None else int(seed)
    recorder = VideoRecorder(video_size) if video is not None and video_episodes > 0 else None
    seeds, returns = [], []
    for i in range(episodes):
        episode_seed = evaluation_seed(seed, i)
        collector.restart(episode_seed)
        record = recorder.capture if recorder is not None and i < video_episodes else None
        returns.append(collector.run_episode(module.act_deterministic, record))
        seeds.append(episode_seed)
    written = recorder.save(video) if recorder is not None else None
    result = EvaluationResult(
        checkpoint=str(ckpt_path), task=task, update=int(checkpoint.get("global_step", 0)), seed=seed,
        episode_seeds=seeds, returns=[float(r) for r in returns], mean=float(np.mean(returns)),
        std=float(np.std(returns)), seconds=time.perf_counter() - start, video=str(written) if written else None,
        settings={"action_repeat": repeat, "from_pixels": from_pixels, "episodes": episodes})
    out = Path(out) if out is not None else default_record(ckpt_path, result.update, seed)
    atomic_write_text(out, result.to_json() + "\n")
    return result
