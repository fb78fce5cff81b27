"""Checkpoints written by version 0.1 (before the package's restructuring) still resume, and exactly.

``tests/data/checkpoint_v0_1`` was written by ``a2ls fit --config config.yaml`` at version 0.1 (60 updates, one
A2-winner-v loss weighted by OL-AUX; checkpoint plus the replay side file it references). ``resumed_to_90.json``
holds, from version 0.1 too, the sum of every weight after resuming that checkpoint to 90 updates, the env
steps and OL-AUX's weights: the same resume today must give the same numbers.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import lightning.pytorch as pl
import pytest

from a2ls_lightning import ReplayDataModule, SACModule
from a2ls_lightning.callbacks import OLAux

DATA = Path(__file__).parent / "data" / "checkpoint_v0_1"


def test_version_0_1_checkpoint_resumes_exactly_from_a_moved_folder(tmp_path, monkeypatch):
    # Moved away from where it was written, and resumed from another working directory: the side file is found
    # next to the checkpoint, not at the path recorded relative to the old working directory.
    run = tmp_path / "moved" / "run"
    shutil.copytree(DATA, run)
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)
    module = SACModule.from_settings(hidden_dim=32, feature_dim=16, encoder_hidden_dim=16,
                                     aux_losses={"a2v": "a2_winner_v"})
    data = ReplayDataModule(capacity=300, batch_size=16, warmup_steps=40, eval_interval=400, eval_episodes=1, seed=3)
    olaux = OLAux(lr=5e-3, log_main=False)  # the rule and step size of version 0.1, which wrote it
    trainer = pl.Trainer(max_steps=90, callbacks=[olaux], logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, accelerator="cpu", devices=1,
                         default_root_dir=str(tmp_path / "resumed"))
    # written before side files had checksums: verified by loading it in full, and a warning says so
    with pytest.warns(UserWarning, match="no recorded checksum"):
        trainer.fit(module, data, ckpt_path=str(run / "checkpoints" / "last.ckpt"))

    expected = json.loads((DATA / "resumed_to_90.json").read_text())
    assert trainer.global_step == 90
    assert data.collector.env_steps == expected.pop("_env_steps")
    assert olaux.weights == pytest.approx(expected.pop("_weights"), rel=1e-6)
    sums = {name: float(value.double().sum()) for name, value in module.state_dict().items()}
    assert sorted(sums) == sorted(expected)
    for name, value in expected.items():
        if name in ROUNDING_ONLY:
            continue
        assert sums[name] == pytest.approx(value, rel=1e-6, abs=1e-6), name


# The bias of a Linear layer that feeds a BatchNorm does not change the loss (the normalisation subtracts it), so
# its gradient is rounding noise, which Adam scales up to steps of the learning rate's size: its value, and the
# BatchNorm's running mean that it shifts, follow the CPU's summation order (seen: the same code passes on one
# CPU and gives -2.0637 for -2.0480 on another). Everything the losses depend on is compared above.
ROUNDING_ONLY = {"learner.aux_losses.a2v.predictor.0.bias", "learner.aux_losses.a2v.predictor.1.running_mean"}
