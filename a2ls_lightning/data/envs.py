"""DeepMind Control Suite tasks as TorchRL environments (state or pixels).

The environment is a TorchRL :class:`~torchrl.envs.DMControlWrapper` around a small dm_env adapter of ours
(:class:`DMCAdapter`) that does three things the stock wrapper does not:

* **action repeat below the renderer**: the physics is stepped ``action_repeat`` times and the camera renders
  once per agent step (TorchRL's ``frame_skip`` would render every sub-step: 4x the ~26 ms a CPU frame costs);
* **PhysicsError as truncation**: a divergent simulation ends the episode as *truncated* with the key
  ``physics_error`` set, instead of crashing the run;
* **exact mid-episode snapshots**: :meth:`DMCAdapter.get_state` / :meth:`DMCAdapter.set_state` save and
  restore the physics, the solver warm start, the task's random state and the time-limit counter, so a
  resumed run continues the very same episode bit for bit.

Observations: state tasks give one flat float32 vector under ``"observation"``; pixel tasks give one rendered
uint8 frame ``[3, H, W]`` under ``"observation"`` (frame stacks are built by the replay buffer and the
collector, so a frame is stored once). Time limits arrive as ``truncated``, never ``terminated``.
"""

from __future__ import annotations

import collections
import os
from typing import Any

# Headless rendering by default (dm_control otherwise tries GLFW, which needs a display).
os.environ.setdefault("MUJOCO_GL", "egl")

import dm_env
import numpy as np
from dm_control import suite
from dm_control.rl import control
from dm_env import specs
from torchrl.envs import DMControlWrapper

from a2ls_lightning.validation import closest, did_you_mean

#: CURL/A2LS action repeat per domain (CURL, Laskin et al. 2020; A2LS); other domains use 4.
DEFAULT_ACTION_REPEAT = {
    "cartpole": 8,
    "finger": 2,
    "walker": 2,
    "cheetah": 4,
    "reacher": 4,
    "ball_in_cup": 4,
    "hopper": 4,
    "quadruped": 4,
}
#: Camera used for pixel observations (quadruped looks through camera 2, everything else camera 0).
DEFAULT_CAMERA = {"quadruped": 2}


def valid_tasks() -> dict[str, list[str]]:
    """All dm_control suite tasks, ``{domain: [task, ...]}``."""
    tasks: dict[str, list[str]] = collections.defaultdict(list)
    for domain, task in suite.ALL_TASKS:
        tasks[domain].append(task)
    return dict(tasks)


def parse_task(name: str) -> tuple[str, str]:
    """Split ``"domain-task"`` (``"cheetah-run"``, ``"ball_in_cup-catch"``) and check it exists.

    Raises:
        ValueError: one line naming the field ``task``, listing the valid domains (or tasks of the domain) and,
            for a typo, the closest task (``task='cheeta-run' ...; did you mean 'cheetah-run'?``).
    """
    tasks = valid_tasks()
    domain, sep, task = str(name).partition("-")
    if not sep or domain not in tasks:
        # Compared as whole names: a misspelt domain (cheeta-run) or separator (cheetah_run) still finds its task.
        every = [f"{d}-{t}" for d in sorted(tasks) for t in sorted(tasks[d])]
        raise ValueError(
            f"task={name!r} is not a 'domain-task' of the DeepMind Control Suite; valid domains: "
            f"{', '.join(sorted(tasks))}{did_you_mean(name, every)}"
        )
    if task not in tasks[domain]:
        # Only the task part is compared: every task of the domain shares its prefix, which would make any
        # task name look close (cheetah-fly is not a typo of cheetah-run).
        close = closest(task, sorted(tasks[domain]))
        hint = f"; did you mean '{domain}-{close}'?" if close is not None else ""
        raise ValueError(f"task={name!r}: domain {domain!r} has the tasks {', '.join(sorted(tasks[domain]))}{hint}")
    return domain, task


def default_action_repeat(task: str) -> int:
    """The paper's action repeat for the domain of ``task`` (4 where the papers give none)."""
    return DEFAULT_ACTION_REPEAT.get(parse_task(task)[0], 4)


class DMCAdapter(dm_env.Environment):
    """dm_env adapter: action repeat, flat or pixel observation, PhysicsError → truncation.

    Args:
        env: a dm_control ``control.Environment`` (from ``suite.load``).
        action_repeat: physics control steps per agent step; rewards are summed over them.
        from_pixels: render ``[3, image_size, image_size]`` uint8 frames instead of the state vector.
        image_size: rendered frame side (pixels).
        camera_id: MuJoCo camera to render from.
        render_effects: render MuJoCo's shadows and reflections (the papers' frames); off, a CPU renderer draws a
            frame about 4x faster (cheetah-run 64 px, Mesa llvmpipe: 17-20 → 4 ms) and the frames lose them.
    """

    #: MuJoCo render flags switched off by ``render_effects=False`` (the skybox made no measurable difference).
    NO_EFFECTS = {"shadow": False, "reflection": False}

    def __init__(
        self,
        env: control.Environment,
        action_repeat: int = 1,
        from_pixels: bool = False,
        image_size: int = 100,
        camera_id: int = 0,
        render_effects: bool = True,
    ) -> None:
        self._env = env
        self.action_repeat = int(action_repeat)
        self.from_pixels = bool(from_pixels)
        self.image_size = int(image_size)
        self.camera_id = int(camera_id)
        self._render_flags = None if render_effects else dict(self.NO_EFFECTS)
        self.physics_errors = 0
        state_dim = sum(int(np.prod(s.shape)) for s in env.observation_spec().values())
        obs_spec = (
            specs.Array((3, self.image_size, self.image_size), np.uint8, "observation")
            if self.from_pixels
            else specs.Array((state_dim,), np.float32, "observation")
        )
        self._obs_spec = collections.OrderedDict(
            observation=obs_spec, physics_error=specs.Array((1,), bool, "physics_error")
        )

    # dm_control's TorchRL wrapper reaches for these two when seeding.
    @property
    def task(self) -> Any:
        return self._env.task

    @property
    def physics(self) -> Any:
        return self._env.physics

    def _observe(self, time_step: dm_env.TimeStep | None) -> collections.OrderedDict:
        physics_error = time_step is None
        if physics_error:  # the state is divergent (NaN/inf): never render or hand it on
            spec = self._obs_spec["observation"]
            obs = np.zeros(spec.shape, spec.dtype)
        elif self.from_pixels:
            frame = self._env.physics.render(self.image_size, self.image_size, camera_id=self.camera_id,
                                             render_flag_overrides=self._render_flags)
            obs = np.ascontiguousarray(frame.transpose(2, 0, 1))
        else:
            parts = [np.asarray(v, dtype=np.float32).reshape(-1) for v in time_step.observation.values()]
            obs = np.concatenate(parts)
        return collections.OrderedDict(observation=obs, physics_error=np.array([physics_error]))

    def reset(self) -> dm_env.TimeStep:
        ts = self._env.reset()
        return ts._replace(observation=self._observe(ts))

    def step(self, action: np.ndarray) -> dm_env.TimeStep:
        reward = 0.0
        for _ in range(self.action_repeat):
            try:
                ts = self._env.step(action)
            except control.PhysicsError:
                self.physics_errors += 1
                self._env._reset_next_step = True  # dm_control's own flag: next step() resets
                # Truncated (discount 1): the episode did not reach a terminal state; the collector drops
                # the transition into the divergent state because of `physics_error`.
                return dm_env.TimeStep(dm_env.StepType.LAST, reward, 1.0, self._observe(None))
            reward += ts.reward or 0.0
            if ts.last():
                break
        return ts._replace(reward=reward, observation=self._observe(ts))

    def observation_spec(self) -> collections.OrderedDict:
        return self._obs_spec

    def action_spec(self) -> specs.BoundedArray:
        return self._env.action_spec()

    def reward_spec(self) -> specs.Array:
        return self._env.reward_spec()

    def discount_spec(self) -> specs.Array:
        return self._env.discount_spec()

    def close(self) -> None:
        self._env.close()

    def reseed(self, seed: int) -> None:
        """Reseed the task's random state (what the next ``reset`` draws its initial state from)."""
        self._env.task.random.seed(seed)
        self._env._reset_next_step = True

    # --- exact snapshots -------------------------------------------------------------------------
    def get_state(self) -> dict[str, Any]:
        """Everything that decides the rest of the episode (physics, warm start, task RNG, time limit)."""
        physics = self._env.physics
        return {
            "physics": physics.get_state().copy(),
            "qacc_warmstart": physics.data.qacc_warmstart.copy(),
            "time": float(physics.data.time),
            "task_random": self._env.task.random.get_state(),
            "step_count": self._env._step_count,
            "reset_next_step": self._env._reset_next_step,
            "physics_errors": self.physics_errors,
        }

    def set_state(self, state: dict[str, Any]) -> None:
        physics = self._env.physics
        with physics.reset_context():
            physics.set_state(state["physics"])
        # mj_forward (run by reset_context) leaves the solver's warm start alone; it is an input to the next
        # step, so restoring it makes contact-rich tasks continue bit for bit as well.
        physics.data.qacc_warmstart[:] = state["qacc_warmstart"]
        physics.data.time = state["time"]
        self._env.task.random.set_state(state["task_random"])
        self._env._step_count = state["step_count"]
        self._env._reset_next_step = state["reset_next_step"]
        self.physics_errors = state["physics_errors"]


class DMCEnv(DMControlWrapper):
    """TorchRL environment over a :class:`DMCAdapter` (accepted where the stock wrapper wants dm_control's)."""

    def _check_kwargs(self, kwargs: dict) -> None:
        if not isinstance(kwargs.get("env"), DMCAdapter):
            raise TypeError("DMCEnv wraps a DMCAdapter; use make_env(...)")

    def _build_env(self, env: DMCAdapter, _seed: int | None = None, **kwargs: Any) -> DMCAdapter:
        self.from_pixels = env.from_pixels
        self.pixels_only = True
        return env

    @property
    def adapter(self) -> DMCAdapter:
        return self._env


def make_env(
    task: str,
    from_pixels: bool = False,
    action_repeat: int | None = None,
    image_size: int = 100,
    seed: int = 0,
    camera_id: int | None = None,
    render_effects: bool = True,
) -> DMCEnv:
    """Build a TorchRL env for a dm_control task.

    Args:
        task: ``"domain-task"``, e.g. ``"cheetah-run"``.
        from_pixels: rendered ``[3, image_size, image_size]`` uint8 frames instead of the state vector.
        action_repeat: physics steps per agent step (``None``: the paper's per-domain default).
        image_size: rendered frame side.
        seed: seeds the task's random state (initial states); rank offsets are the caller's business.
        camera_id: camera for pixels (``None``: 2 for quadruped, else 0).
        render_effects: pixels: MuJoCo's shadows and reflections on (the papers) or off (~4x faster on a CPU).

    Examples:
        >>> env = make_env("cheetah-run", seed=1)
        >>> td = env.reset()
        >>> td["observation"].shape, td["observation"].dtype
        (torch.Size([17]), torch.float32)
    """
    domain, name = parse_task(task)
    raw = suite.load(domain, name, task_kwargs={"random": seed})
    adapter = DMCAdapter(
        raw,
        action_repeat=default_action_repeat(task) if action_repeat is None else action_repeat,
        from_pixels=from_pixels,
        image_size=image_size,
        camera_id=DEFAULT_CAMERA.get(domain, 0) if camera_id is None else camera_id,
        render_effects=render_effects,
    )
    env = DMCEnv(env=adapter)
    env.set_seed(seed)
    return env
