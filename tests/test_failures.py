"""Fail loudly, lose nothing: the non-finite guard, crash-safe saves, a full disk, relocatable runs, strict resume."""

from __future__ import annotations

import errno
import math
import shutil

import lightning.pytorch as pl
import pytest
import torch
from cli_probe import PoisonAt
from conftest import tiny_data, tiny_module, tiny_trainer
from lightning.pytorch.callbacks import ModelCheckpoint

from a2ls_lightning import files
from a2ls_lightning.files import WriteError
from a2ls_lightning.modules.guard import NonFiniteError


def _checkpointing(tmp_path, max_steps, *callbacks, every=10, **kw):
    ckpt = ModelCheckpoint(dirpath=tmp_path / "ckpt", every_n_train_steps=every, save_last=True, save_top_k=-1)
    return tiny_trainer(tmp_path, max_steps, enable_checkpointing=True, callbacks=[ckpt, *callbacks], **kw), ckpt


def _steps_saved(folder) -> list[int]:
    return sorted(torch.load(p, weights_only=False)["global_step"] for p in folder.glob("*.ckpt"))


@pytest.mark.parametrize("what", ["weights", "batch"])
def test_non_finite_update_stops_the_run_and_nothing_is_saved_after_it(tmp_path, what):
    trainer, _ = _checkpointing(tmp_path, 60, PoisonAt(step=25, what=what))
    module = tiny_module(aux_losses={"fwd": "forward_dynamics"})
    with pytest.raises(NonFiniteError) as err:
        trainer.fit(module, tiny_data(eval_interval=100))
    message = str(err.value)
    assert "\n" not in message and "update 25" in message and "last good checkpoint" in message
    assert ("critic loss=nan" in message) if what == "weights" else ("nan" in message), message
    assert _steps_saved(tmp_path / "ckpt") == [10, 20, 20]  # epoch=0-step=10, step=20 and last.ckpt
    last = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=False)
    assert all(torch.isfinite(v).all() for v in last["state_dict"].values())
    side_files = sorted(p.name for p in (tmp_path / "ckpt" / "replay").glob("*.pt"))
    assert side_files[-1] == "step000000020-rank0.pt"
    # the last good checkpoint resumes
    trainer, _ = _checkpointing(tmp_path / "resumed", 30)
    trainer.fit(tiny_module(aux_losses={"fwd": "forward_dynamics"}), tiny_data(eval_interval=100),
                ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert trainer.global_step == 30


def test_diverged_weights_are_never_evaluated(tmp_path):
    # Evaluation is due right after the poisoned update: the guard stops the run before it (no 0.0 return).
    returns = []
    data = tiny_data(eval_interval=(40 + 21) * 4, eval_episodes=1)
    data.add_eval_listener(lambda steps, value: returns.append(value))
    with pytest.raises(NonFiniteError):
        tiny_trainer(tmp_path, 40, callbacks=[PoisonAt(step=20)]).fit(tiny_module(), data)
    assert returns == []


def test_skip_mode_skips_and_counts_then_stops_after_too_many_in_a_row(tmp_path):
    module = tiny_module(nonfinite="skip", max_nonfinite_skips=3)
    trainer = tiny_trainer(tmp_path, 30, callbacks=[PoisonAt(step=15, what="batch")])
    trainer.fit(module, tiny_data(eval_episodes=0))
    assert trainer.global_step == 30 and module.guard.skips == 1
    assert all(torch.isfinite(p).all() for p in module.parameters())
    module = tiny_module(nonfinite="skip", max_nonfinite_skips=3)
    with pytest.raises(NonFiniteError, match="3 non-finite updates in a row"):
        tiny_trainer(tmp_path, 30, callbacks=[PoisonAt(step=15, what="batch", every=True)]).fit(
            module, tiny_data(eval_episodes=0))
    assert all(torch.isfinite(p).all() for p in module.parameters())


def test_a_full_disk_at_a_save_stops_in_one_line_and_keeps_the_previous_checkpoint(tmp_path, monkeypatch):
    class FillDiskAt(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == 15:
                def full(fd):
                    raise OSError(errno.ENOSPC, "No space left on device")
                monkeypatch.setattr(files.os, "fsync", full)

    trainer, _ = _checkpointing(tmp_path, 40, FillDiskAt())
    with pytest.raises(WriteError) as err:
        trainer.fit(tiny_module(), tiny_data(eval_episodes=0))
    assert "\n" not in str(err.value) and "the disk is full" in str(err.value)
    monkeypatch.undo()
    folder = tmp_path / "ckpt"
    assert not [p for p in folder.rglob("*") if files.TEMP_MARK in p.name], "a temporary file was left behind"
    assert _steps_saved(folder) == [10, 10]
    trainer, _ = _checkpointing(tmp_path / "again", 20)
    trainer.fit(tiny_module(), tiny_data(eval_episodes=0), ckpt_path=str(folder / "last.ckpt"))
    assert trainer.global_step == 20


def test_pruning_never_deletes_a_side_file_that_a_checkpoint_references(tmp_path):
    # keep_replay_snapshots=1 with two surviving checkpoints (top-k keeps both): both side files stay.
    data = tiny_data(eval_episodes=0, keep_replay_snapshots=1)
    trainer, _ = _checkpointing(tmp_path, 30, every=10)
    trainer.fit(tiny_module(), data)
    folder = tmp_path / "ckpt"
    referenced = {torch.load(p, weights_only=False)["ReplayDataModule"]["snapshot"].format(rank=0).rsplit("/", 1)[-1]
                  for p in folder.glob("*.ckpt")}
    present = {p.name for p in (folder / "replay").glob("*.pt")}
    assert referenced <= present, f"deleted while referenced: {referenced - present}"
    assert len(referenced) == 3


def test_a_moved_run_folder_resumes_from_another_working_directory(tmp_path, monkeypatch):
    first = tmp_path / "first"
    first.mkdir()
    monkeypatch.chdir(first)
    ckpt = ModelCheckpoint(dirpath="run/ckpt", every_n_train_steps=10, save_last=True)  # relative, as users write
    trainer = tiny_trainer("run", 20, enable_checkpointing=True, callbacks=[ckpt])
    trainer.fit(tiny_module(), tiny_data(eval_episodes=0, seed=5))
    shutil.move(str(first / "run"), str(tmp_path / "moved"))
    other = tmp_path / "other"
    other.mkdir()
    monkeypatch.chdir(other)
    pl.seed_everything(0)
    module, data = tiny_module(), tiny_data(eval_episodes=0, seed=5)
    resumed = tiny_trainer(tmp_path / "out", 30)
    resumed.fit(module, data, ckpt_path=str(tmp_path / "moved" / "ckpt" / "last.ckpt"))
    assert resumed.global_step == 30 and data.collector.agent_steps == 40 + 30


def test_resuming_with_other_settings_is_refused_in_one_line(tmp_path):
    trainer, _ = _checkpointing(tmp_path, 10)
    trainer.fit(tiny_module(), tiny_data(eval_episodes=0))
    other = tiny_trainer(tmp_path / "b", 20)
    with pytest.raises(ValueError) as err:
        other.fit(tiny_module(hidden_dim=48), tiny_data(eval_episodes=0, batch_size=8),
                  ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    message = str(err.value)
    assert "\n" not in message
    assert "model.network.hidden_dim=48 (checkpoint: 32)" in message and "data.batch_size=8 (checkpoint: 16)" in message
    # settings that may change on resume are accepted
    fine = tiny_trainer(tmp_path / "c", 20)
    fine.fit(tiny_module(), tiny_data(eval_episodes=2, eval_interval=1000),
             ckpt_path=str(tmp_path / "ckpt" / "last.ckpt"))
    assert fine.global_step == 20


def test_guard_state_is_finite_on_a_normal_run(tmp_path):
    module = tiny_module(aux_losses={"v": "a2_winner_v"})
    tiny_trainer(tmp_path, 20).fit(module, tiny_data(eval_episodes=0))
    module.check_finite()  # no raise
    assert math.isfinite(float(sum(p.detach().sum() for p in module.parameters())))


def test_a_long_lived_process_forgets_the_folders_of_runs_that_wrote_files(tmp_path, monkeypatch):
    """The folders a refused run made are removed (no empty run folders left behind); in a process that starts many
    runs (a search worker), the record of made folders does not grow with every run that wrote something."""
    monkeypatch.setattr(files, "_CREATED", [])
    for i in range(20):
        ckpt = files.ensure_writable(tmp_path / f"run{i}" / "ckpt", "trainer.default_root_dir")
        (ckpt / "last.ckpt").write_text("saved")
    assert sorted(files._CREATED) == [tmp_path / "run19", tmp_path / "run19" / "ckpt"]  # the last run's, not 40
    files.ensure_writable(tmp_path / "refused" / "run", "trainer.default_root_dir")
    files.ensure_writable(tmp_path / "refused" / "run" / "replay", "the checkpoint folder")
    files.remove_created_folders()
    assert not (tmp_path / "refused").exists()
    assert all((tmp_path / f"run{i}" / "ckpt" / "last.ckpt").exists() for i in range(20))
