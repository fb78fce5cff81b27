"""Sequence replay: slices stay inside one episode (wrap-around, resume), frame stacks, memory layout."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from a2ls_lightning.data.replay import SequenceReplay


def _fill(rb: SequenceReplay, lengths: list[int], obs_shape=(4,), first_episode: int = 0) -> None:
    """Write episodes of the given numbers of transitions; obs encodes (episode, step)."""
    for i, n in enumerate(lengths):
        ep = first_episode + i
        for t in range(n + 1):
            value = ep * 1000 + t
            obs = torch.full(obs_shape, value % 256 if len(obs_shape) == 3 else value, dtype=torch.uint8
                             if len(obs_shape) == 3 else torch.float32)
            rb.add(obs, torch.full((2,), float(value)), float(value), False, ep, t, has_action=t < n)


def _check_consecutive(batch) -> None:
    ep, step = batch["episode"], batch["step"]
    assert (ep == ep[:, :1]).all(), "a slice crossed episodes"
    assert (step[:, 1:] - step[:, :-1] == 1).all(), "a slice is not consecutive"
    # rewards were written as ep * 1000 + t: they must belong to the same steps
    assert torch.equal(batch["reward"][..., 0], (ep * 1000 + step).float())


@pytest.mark.parametrize("length", [2, 5, 10])
def test_slices_never_cross_episodes_and_have_shape(length):
    rng = np.random.default_rng(0)
    rb = SequenceReplay(capacity=10_000, batch_size=64, slice_length=length, seed=1)
    _fill(rb, rng.integers(1, 30, size=100).tolist())
    for _ in range(20):
        batch = rb.sample()
        assert batch.batch_size == (64, length)
        assert batch["observation"].shape == (64, length, 4)
        _check_consecutive(batch)


def test_wraparound_invalidates_overwritten_windows():
    rb = SequenceReplay(capacity=97, batch_size=256, slice_length=4, seed=2)
    _fill(rb, [13] * 40)  # 560 entries through 97 slots: wraps about six times
    for _ in range(20):
        _check_consecutive(rb.sample())
    starts = rb.sampler.valid_starts()
    expected = 0  # brute force: starts whose window is intact
    s = rb.sampler
    for i in range(97):
        idx = (i + np.arange(4)) % 97
        if s.episode[i] >= 0 and (s.episode[idx] == s.episode[i]).all() and \
                (s.step[idx] == s.step[i] + np.arange(4)).all() and s.has_action[idx[:3]].all():
            expected += 1
    assert len(starts) == expected > 0


def test_frame_stack_built_at_sample_time_clamped_at_episode_start():
    rb = SequenceReplay(capacity=1000, batch_size=128, slice_length=3, frame_stack=3, seed=3)
    _fill(rb, [6, 9, 4], obs_shape=(3, 5, 5))
    batch = rb.sample()
    assert batch["observation"].shape == (128, 3, 9, 5, 5) and batch["observation"].dtype == torch.uint8
    frames = batch["observation"][:, :, ::3, 0, 0].long()  # [B, L, k] frame values, oldest first
    expected_newest = (batch["episode"] * 1000 + batch["step"]) % 256
    assert torch.equal(frames[..., -1], expected_newest)
    for k in range(3):  # frame k of a stack is k - 2 steps back, clamped to the episode's first state
        back = (batch["step"] - (2 - k)).clamp(min=0)
        assert torch.equal(frames[..., k], (batch["episode"] * 1000 + back) % 256)


def test_state_dict_round_trip_samples_identically():
    rb = SequenceReplay(capacity=500, batch_size=32, slice_length=3, seed=4)
    _fill(rb, [20] * 30)
    state = rb.state_dict()
    other = SequenceReplay(capacity=500, batch_size=32, slice_length=3, seed=99)
    other.load_state_dict(state)
    a, b = rb.sample(), other.sample()
    assert torch.equal(a["observation"], b["observation"]) and torch.equal(a["step"], b["step"])
    # and after the resume, new writes of a new episode still never join the old ones
    _fill(other, [7] * 20, first_episode=30)
    for _ in range(10):
        _check_consecutive(other.sample())


def test_pixel_memory_is_under_a_fifth_of_curl_layout():
    rb = SequenceReplay(capacity=2000, batch_size=8, slice_length=2, frame_stack=3)
    _fill(rb, [249] * 8, obs_shape=(3, 84, 84))  # 8 episodes of 250 states
    transitions = 8 * 249
    ours = rb.storage_bytes() / transitions
    curl = 2 * 9 * 84 * 84 + 6 * 4 + 4 + 4  # obs + next_obs stacks, action, reward, not_done
    assert ours <= curl / 5, (ours, curl)


def test_sampling_before_any_complete_slice_raises():
    rb = SequenceReplay(capacity=100, batch_size=4, slice_length=5)
    _fill(rb, [2])
    with pytest.raises(RuntimeError, match="no complete slice"):
        rb.sample()
