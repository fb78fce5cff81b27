"""The run's work at the start of a fit is a callback's (RunSetup), which SACModule brings along: a plain Trainer
from a notebook gets the pre-flight, the crash-safe writer and the checks as ``a2ls fit`` does."""

from __future__ import annotations

import pytest
from conftest import tiny_data, tiny_module, tiny_trainer

from a2ls_lightning import files
from a2ls_lightning.files import AtomicCheckpointIO
from a2ls_lightning.modules.run_checks import RunSetup


def test_a_plain_trainer_gets_the_run_setup_from_the_module(tmp_path):
    module, data = tiny_module(), tiny_data(eval_episodes=0, warmup_steps=16, batch_size=8)
    trainer = tiny_trainer(tmp_path, 2)
    trainer.fit(module, data)
    assert trainer.global_step == 2
    assert sum(isinstance(c, RunSetup) for c in trainer.callbacks) == 1
    assert isinstance(trainer.strategy.checkpoint_io, AtomicCheckpointIO)
    assert not files._CREATED  # a started run's folders are forgotten: a long-lived worker keeps no growing list


def test_a_refused_run_removes_only_its_own_new_folders(tmp_path):
    files.ensure_writable(tmp_path / "earlier" / "run", "x")
    files.forget_created_folders()  # as at the start of that earlier run's training
    files.ensure_writable(tmp_path / "refused" / "run", "y")
    assert files.remove_created_folders() == [tmp_path / "refused" / "run", tmp_path / "refused"]
    assert (tmp_path / "earlier" / "run").is_dir() and not (tmp_path / "refused").exists()


def test_the_run_setup_refuses_before_any_env_step(tmp_path):
    module, data = tiny_module(), tiny_data(eval_episodes=0, warmup_steps=16, batch_size=8)
    trainer = tiny_trainer(tmp_path, 2, log_every_n_steps=0)
    with pytest.raises(ValueError, match=r"^trainer.log_every_n_steps=0 must be >= 1$"):
        trainer.fit(module, data)
    assert data.collector is None or data.collector.agent_steps == 0
