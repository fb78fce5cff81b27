"""Stepping one environment with the current policy and writing every visited state into the replay.

Why not TorchRL's ``Collector``: an update needs ``env_steps_per_update`` steps interleaved with gradient steps,
in the training process, with the *current* weights and no copy of the policy; and an exactly-resumable run
needs the episode in flight (physics, frame history, counters, exploration RNG) in the checkpoint. A collector
of frames-per-batch does neither, so this small loop drives the TorchRL env directly.
"""

from __future__ import annotations

import collections
from collections.abc import Callable
from typing import Any

import torch
from tensordict import TensorDict

from a2ls_lightning.data.envs import DMCEnv
from a2ls_lightning.data.replay import SequenceReplay
from a2ls_lightning.data.returns import ReturnStatistics

#: ``policy(obs [1, *obs_shape], generator) -> action [1, A]``: the actor with exploration noise.
Policy = Callable[[torch.Tensor, torch.Generator], torch.Tensor]


class EpisodeCollector:
    """Runs episodes of ``env`` and writes them into ``replay``.

    Args:
        env: a TorchRL env from :func:`a2ls_lightning.data.envs.make_env`.
        replay: where visited states go.
        frame_stack: frames the policy sees (pixels); the replay stores single frames.
        seed: seed of the exploration RNG (random warm-up actions and the policy's noise).
    """

    def __init__(self, env: DMCEnv, replay: SequenceReplay | None, frame_stack: int = 1, seed: int = 0) -> None:
        self.env = env
        self.replay = replay
        self.frame_stack = frame_stack if env.adapter.from_pixels else 1
        self.generator = torch.Generator().manual_seed(seed)
        spec = env.action_spec
        self._low, self._high = spec.space.low.float(), spec.space.high.float()
        self.action_repeat = env.adapter.action_repeat
        self.env_steps = 0  # control steps, action repeats included (PlaNet convention)
        self.agent_steps = 0
        self.episodes = 0
        self.episode_id = 0
        self.last_episode_return = float("nan")
        #: Discounted-return statistics for reward normalisation; None unless a module asks (``track_returns``).
        self.returns: ReturnStatistics | None = None
        self._begin_episode()

    @property
    def physics_errors(self) -> int:
        return self.env.adapter.physics_errors

    def _begin_episode(self) -> None:
        obs = self.env.reset()["observation"]
        self._frames = collections.deque([obs] * self.frame_stack, maxlen=self.frame_stack)
        self._step = 0
        self._return = 0.0

    def _end_episode(self) -> None:
        self.episodes += 1
        self.episode_id += 1
        self.last_episode_return = self._return
        self._begin_episode()

    def observation(self) -> torch.Tensor:
        """What the policy sees now: the state, or the ``[3 · frame_stack, H, W]`` frame stack (oldest first)."""
        return torch.cat(list(self._frames), dim=0) if self.frame_stack > 1 else self._frames[-1]

    def random_action(self) -> torch.Tensor:
        u = torch.rand(self._low.shape, generator=self.generator)
        return self._low + u * (self._high - self._low)

    def step(self, policy: Policy | None = None, on_last_step: Callable[[DMCEnv], None] | None = None) -> None:
        """One agent step: act (uniformly at random when ``policy`` is None), write the state, advance.

        ``on_last_step(env)`` is called when this step ends the episode, before the environment is reset.
        """
        obs = self._frames[-1]
        if policy is None:
            action = self.random_action()
        else:
            action = policy(self.observation().unsqueeze(0), self.generator).squeeze(0).cpu().float()
            if not bool(torch.isfinite(action).all()):  # a diverged policy: never step the physics with it
                raise FloatingPointError(f"the policy returned a non-finite action {action.tolist()} at env step "
                                         f"{self.env_steps}; the networks have diverged")
        nxt = self.env.step(TensorDict({"action": action}, batch_size=[]))["next"]
        self.agent_steps += 1
        self.env_steps += self.action_repeat
        if bool(nxt["physics_error"]):
            # The transition into the divergent state is dropped: s_t becomes the episode's last state.
            self._write(obs, torch.zeros_like(action), 0.0, False, has_action=False)
            if self.returns is not None:
                self.returns.end_episode()
            self._end_episode()
            return
        reward = float(nxt["reward"])
        self._write(obs, action, reward, bool(nxt["terminated"]), has_action=True)
        if self.returns is not None:
            self.returns.update(reward, episode_end=bool(nxt["done"]))
        self._return += reward
        self._step += 1
        if bool(nxt["done"]):
            self._write(nxt["observation"], torch.zeros_like(action), 0.0, False, has_action=False)
            if on_last_step is not None:
                on_last_step(self.env)
            self._end_episode()
        else:
            self._frames.append(nxt["observation"])

    def _write(self, obs: torch.Tensor, action: torch.Tensor, reward: float, terminated: bool,
               has_action: bool) -> None:
        if self.replay is not None:
            self.replay.add(obs, action, reward, terminated, self.episode_id, self._step, has_action)

    def restart(self, seed: int) -> None:
        """Drop the episode in flight and begin a new one from ``seed`` (the task's initial-state RNG and the
        exploration RNG): what follows depends on ``seed`` alone, not on what this collector did before."""
        self.env.adapter.reseed(seed)
        self.generator.manual_seed(seed)
        self._begin_episode()

    def run_episode(self, policy: Policy, on_step: Callable[[DMCEnv], None] | None = None) -> float:
        """Play the episode in flight to its end (the collector always has one begun); returns its return.

        ``on_step(env)`` (e.g. a video recorder) is called before the first step and after every agent step that
        stays in the episode, and once more after the last step, before the next episode begins: ``T + 1`` calls
        for an episode of ``T`` agent steps.
        """
        start = self.episodes
        if on_step is not None:
            on_step(self.env)
        while self.episodes == start:
            self.step(policy, on_last_step=on_step)
            if on_step is not None and self.episodes == start:
                on_step(self.env)
        return self.last_episode_return

    # --- exact resume ------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {
            "env": self.env.adapter.get_state(),
            "frames": [f.clone() for f in self._frames],
            "step": self._step,
            "return": self._return,
            "generator": self.generator.get_state(),
            "counters": (self.env_steps, self.agent_steps, self.episodes, self.episode_id, self.last_episode_return),
            **({"returns": self.returns.state_dict()} if self.returns is not None else {}),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.env.adapter.set_state(state["env"])
        self._frames = collections.deque(state["frames"], maxlen=self.frame_stack)
        self._step, self._return = state["step"], state["return"]
        self.generator.set_state(state["generator"])
        self.env_steps, self.agent_steps, self.episodes, self.episode_id, self.last_episode_return = state["counters"]
        if self.returns is not None and "returns" in state:
            self.returns.load_state_dict(state["returns"])
