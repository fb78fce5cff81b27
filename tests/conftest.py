"""Shared fixtures: shrunk configurations that train in seconds on a 2-core CPU."""

from __future__ import annotations

import os
import warnings

import lightning.pytorch as pl
import pytest
import torch

os.environ.setdefault("MUJOCO_GL", "egl")
# One intra-op thread: tiny networks gain nothing from two, and a second thread spinning next to another
# process on a 2-core machine slows every op several-fold.
torch.set_num_threads(1)
warnings.filterwarnings("ignore", message=".*LeafSpec.*")

from a2ls_lightning import ReplayDataModule, SACModule


def tiny_module(**overrides) -> SACModule:
    kwargs = dict(hidden_dim=32, feature_dim=16, encoder_hidden_dim=16, num_filters=8, encoder_layers=None)
    kwargs.update(overrides)
    return SACModule.from_settings(**kwargs)


def tiny_data(**overrides) -> ReplayDataModule:
    kwargs = dict(batch_size=16, capacity=3000, warmup_steps=40, eval_interval=400, eval_episodes=1)
    kwargs.update(overrides)
    return ReplayDataModule(**kwargs)


def tiny_trainer(tmp_path, max_steps: int, **overrides) -> pl.Trainer:
    kwargs = dict(
        max_steps=max_steps,
        accelerator="cpu",
        devices=1,
        logger=False,
        enable_checkpointing=False,
        enable_progress_bar=False,
        enable_model_summary=False,
        log_every_n_steps=10,
        default_root_dir=str(tmp_path),
    )
    kwargs.update(overrides)
    return pl.Trainer(**kwargs)


@pytest.fixture
def make_module():
    return tiny_module


@pytest.fixture
def make_data():
    return tiny_data


@pytest.fixture
def make_trainer(tmp_path):
    return lambda max_steps, **kw: tiny_trainer(tmp_path, max_steps, **kw)
