"""Evaluation, in one place: its environment, its schedule, and where its result goes.

Every ``interval`` env steps of training (and once at the end) the deterministic policy plays ``episodes``
episodes on an environment instance of its own (its own seed, so evaluation never disturbs the training
episode or its RNG).

Evaluation is *history-free*: the evaluation at env step ``E`` reseeds its environment from ``(seed, E)``
(:func:`evaluation_seed`) before its first episode, so it plays the same episodes (same initial states, same task
RNG) whether or not the run was cut and resumed before ``E``, and whether or not another evaluation (the end of a
cut run) happened in between. (Version 0.1 kept one running evaluation environment, whose RNG every extra
evaluation advanced.) The mean return is averaged over DDP ranks, written straight to the loggers as
``eval/return`` and ``eval/env_steps`` at the current update, shown in the progress bar, and handed to every
listener (``ReplayDataModule.add_eval_listener``): that is how a loss search records its learning curve.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from a2ls_lightning.data.collector import EpisodeCollector, Policy
from a2ls_lightning.data.video import VideoRecorder

#: Told ``(env_steps, mean eval return)`` after every evaluation; it may raise to stop the run.
EvalListener = Callable[[int, float], None]


class Evaluator:
    """Evaluates the deterministic policy every ``interval`` env steps of training.

    Args:
        collector: the evaluation environment's collector (no replay).
        interval: env steps (action repeats included) between evaluations.
        episodes: episodes per evaluation; 0 switches evaluation off.
        listeners: told ``(env_steps, value)`` after every evaluation (the list is shared, not copied).
        seed: base seed of the evaluations (each one reseeds from ``(seed, env_steps)``).
        video_every: record the first episode of every this many evaluations (and of the last one) as
            ``<video_dir()>/eval_<env steps>.mp4`` (rank 0); 0: never.
        video_dir: where videos go (called when one is written: the run's folder is known only then).
    """

    def __init__(self, collector: EpisodeCollector, interval: int, episodes: int,
                 listeners: list[EvalListener] | None = None, seed: int = 0, video_every: int = 0,
                 video_dir: Callable[[], str | Path] | None = None) -> None:
        self.collector = collector
        self.interval = interval
        self.episodes = episodes
        self.seed = int(seed)
        self.video_every = int(video_every)
        self.video_dir = video_dir
        self.next_at = interval
        self.last_at: int | None = None  # env steps of the latest evaluation
        self._listeners: list[EvalListener] = listeners if listeners is not None else []

    def due(self, env_steps: int, final: bool = False) -> bool:
        """True when training crossed the next ``interval`` mark, or at the end (``final``) unless the latest
        evaluation was at these very env steps: at a replay ratio above 1 the last updates collect nothing, and an
        evaluation curve has one point per env-step count."""
        return self.episodes > 0 and ((final and env_steps != self.last_at) or env_steps >= self.next_at)

    def episode_returns(self, policy: Policy, env_steps: int, episodes: int | None = None,
                        recorder: VideoRecorder | None = None) -> list[float]:
        """Returns of ``episodes`` (default: the setting) episodes of ``policy``, reseeded from
        ``(seed, env_steps)`` first: the same call gives the same episodes whatever happened before it.
        ``recorder`` records the first episode's frames."""
        self.collector.restart(evaluation_seed(self.seed, env_steps))
        count = self.episodes if episodes is None else episodes
        return [self.collector.run_episode(policy, recorder.capture if recorder is not None and i == 0 else None)
                for i in range(count)]

    def run(self, policy: Policy, env_steps: int, recorder: VideoRecorder | None = None) -> float:
        """Mean return of ``episodes`` episodes of ``policy``; schedules the next evaluation after ``env_steps``."""
        returns = self.episode_returns(policy, env_steps, recorder=recorder)
        self.next_at = (env_steps // self.interval + 1) * self.interval
        self.last_at = int(env_steps)
        return float(np.mean(returns))

    def _recorder(self, env_steps: int, final: bool) -> VideoRecorder | None:
        """A recorder for this evaluation's first episode when ``video_every`` says so (and on the last one)."""
        if self.video_every <= 0 or self.video_dir is None:
            return None
        if final or (env_steps // self.interval) % self.video_every == 0:
            return VideoRecorder()
        return None

    def maybe_evaluate(self, trainer: Any, policy: Policy, env_steps: int) -> float | None:
        """Evaluate if due (``trainer`` at the end of an update); log, notify listeners, return the mean.

        ``trainer``: the running ``lightning.Trainer`` (its strategy reduces over ranks, its loggers and
        LightningModule record the value).
        """
        final = trainer.max_steps > 0 and trainer.global_step >= trainer.max_steps
        if not self.due(env_steps, final):
            return None
        module = trainer.lightning_module
        recorder = self._recorder(env_steps, final) if trainer.is_global_zero else None
        value = torch.tensor(self.run(policy, env_steps, recorder), device=module.device)
        if recorder is not None:
            recorder.save(Path(self.video_dir()) / f"eval_{env_steps:09d}.mp4")
        value = trainer.strategy.reduce(value, reduce_op="mean")  # every rank evaluated its own env
        metrics = {"eval/return": float(value), "eval/env_steps": float(env_steps)}
        # Straight to the loggers: `module.log` reaches them only on `log_every_n_steps` boundaries.
        for logger in trainer.loggers:
            logger.log_metrics(metrics, step=trainer.global_step)
        # For the progress bar and callbacks (ModelCheckpoint's monitor) only: through `module.log` the value
        # would be written to the loggers again at every later log step.
        module.log("eval/return", value, on_step=True, on_epoch=False, prog_bar=True, logger=False)
        for listener in self._listeners:
            listener(int(env_steps), float(value))
        return float(value)

    # The key name is kept from the side files of version 0.1, so older checkpoints still resume. Their
    # ``eval_collector`` entry (the running evaluation episode) is not needed any more: every evaluation reseeds.
    def state_dict(self) -> dict[str, Any]:
        return {"next_eval": self.next_at, "last_eval": self.last_at}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.next_at = state["next_eval"]
        self.last_at = state.get("last_eval")  # absent from side files written before it existed


def evaluation_seed(seed: int, env_steps: int) -> int:
    """The seed of the evaluation at ``env_steps`` of a run whose evaluation seed is ``seed`` (a 32-bit value mixed
    from both by numpy's ``SeedSequence``: nearby steps or seeds give unrelated streams)."""
    return int(np.random.SeedSequence([int(seed), int(env_steps)]).generate_state(1)[0])
