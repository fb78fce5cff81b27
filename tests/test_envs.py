"""Environments through TorchRL: observations, action repeat, truncation, PhysicsError, snapshots, bad tasks."""

from __future__ import annotations

import pytest
import torch
from dm_control.rl import control
from tensordict import TensorDict

from a2ls_lightning.data.collector import EpisodeCollector
from a2ls_lightning.data.envs import default_action_repeat, make_env, parse_task
from a2ls_lightning.data.replay import SequenceReplay


def _step(env, action):
    return env.step(TensorDict({"action": action}, batch_size=[]))["next"]


def test_state_observation_is_flat_float32():
    env = make_env("cheetah-run", seed=0)
    td = env.reset()
    assert td["observation"].shape == (17,) and td["observation"].dtype == torch.float32
    assert env.action_spec.shape == (6,)


def test_pixels_are_uint8_chw():
    env = make_env("cartpole-swingup", from_pixels=True, image_size=32, seed=0)
    obs = env.reset()["observation"]
    assert obs.shape == (3, 32, 32) and obs.dtype == torch.uint8
    assert obs.float().std() > 0  # a real rendered frame, not zeros


def test_time_limit_is_truncation_and_action_repeat_counts():
    env = make_env("cheetah-run", action_repeat=4, seed=0)
    assert default_action_repeat("cheetah-run") == 4 and default_action_repeat("cartpole-swingup") == 8
    env.reset()
    for t in range(250):
        nxt = _step(env, torch.zeros(6))
        if t < 249:
            assert not nxt["done"]
    # 1000 control steps = 250 agent steps at action repeat 4; the limit is a truncation.
    assert nxt["truncated"] and nxt["done"] and not nxt["terminated"]


def test_action_repeat_sums_rewards():
    a1, a4 = make_env("cheetah-run", action_repeat=1, seed=3), make_env("cheetah-run", action_repeat=4, seed=3)
    a1.reset(), a4.reset()
    action = torch.full((6,), 0.3)
    r1 = sum(float(_step(a1, action)["reward"]) for _ in range(4))
    assert float(_step(a4, action)["reward"]) == pytest.approx(r1, rel=1e-6)


def test_unknown_task_is_one_line_listing_domains():
    with pytest.raises(ValueError) as err:
        parse_task("cheeta-run")
    message = str(err.value)
    assert "\n" not in message and "task=" in message and "cheetah" in message and "walker" in message
    with pytest.raises(ValueError, match="has the tasks"):
        parse_task("cheetah-fly")


def _raise_after(env, n_steps: int):
    physics = env.adapter.physics
    original, calls = physics.step, {"n": 0}

    def step(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n_steps:
            raise control.PhysicsError("simulated divergence")
        return original(*args, **kwargs)

    physics.step = step


def test_physics_error_truncates_counts_and_goes_on():
    env = make_env("cheetah-run", action_repeat=2, seed=0)
    replay = SequenceReplay(capacity=1000, batch_size=8, slice_length=2)
    collector = EpisodeCollector(env, replay, seed=0)  # resets (cheetah settles with 200 physics steps)
    _raise_after(env, 21)  # the 11th agent step diverges
    for _ in range(30):
        collector.step(None)
    assert collector.physics_errors == 1 and collector.episodes == 1
    # episode 0 ends at its last good state (10 transitions + final state), and episode 1 runs on
    sampler = replay.sampler
    ep0 = (sampler.episode == 0).nonzero()[0]
    assert len(ep0) == 11 and not sampler.has_action[ep0[-1]]
    assert (sampler.episode == 1).sum() == 19
    assert torch.isfinite(replay.sample()["observation"]).all()


def test_snapshot_continues_the_same_episode_bit_for_bit():
    env = make_env("cheetah-run", seed=5)
    env.reset()
    gen = torch.Generator().manual_seed(0)
    actions = [torch.rand(6, generator=gen) * 2 - 1 for _ in range(60)]
    for a in actions[:30]:
        _step(env, a)
    state = env.adapter.get_state()
    straight = [_step(env, a)["observation"] for a in actions[30:]]
    other = make_env("cheetah-run", seed=99)
    other.reset()
    other.adapter.set_state(state)
    resumed = [_step(other, a)["observation"] for a in actions[30:]]
    assert all(torch.equal(x, y) for x, y in zip(straight, resumed))


def test_frames_without_render_effects_lose_the_shadows_only():
    """Same physics state, same camera: the frames differ (no shadow on the floor) but stay alike overall."""
    frames = []
    for effects in (True, False):
        env = make_env("cheetah-run", from_pixels=True, image_size=64, seed=2, render_effects=effects)
        frames.append(env.reset()["observation"].float())
    with_effects, without = frames
    assert with_effects.shape == without.shape == (3, 64, 64)
    difference = (with_effects - without).abs()
    assert difference.max() > 30  # shadows and reflections are gone somewhere
    assert difference.mean() < 0.25 * with_effects.mean()  # the scene is the same
