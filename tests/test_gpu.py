"""GPU-only checks (marker ``gpu``; skipped without CUDA). Run by ``scripts/gpu_check.sh`` (``pytest -m gpu``)."""

from __future__ import annotations

import math

import lightning.pytorch as pl
import pytest
import torch
from conftest import tiny_data, tiny_module, tiny_trainer

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device (none here)"),
]


def test_bf16_mixed_with_replay_on_the_gpu(tmp_path):
    """bf16-mixed on CUDA with ``buffer_device=auto``: the replay lives on the GPU and losses stay finite."""
    module = tiny_module()
    data = tiny_data(buffer_device="auto")
    seen = {}

    class Check(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen["batch_device"] = batch.device
            seen["storage_device"] = data.replay.buffer.storage.device

        def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
            losses = [float(v) for k, v in trainer.callback_metrics.items() if k.endswith("loss")]
            seen.setdefault("losses", []).extend(losses)

    trainer = tiny_trainer(tmp_path, 20, accelerator="gpu", precision="bf16-mixed", log_every_n_steps=5,
                           callbacks=[Check()])
    trainer.fit(module, data)
    assert trainer.global_step == 20
    assert seen["storage_device"].type == "cuda" and seen["batch_device"].type == "cuda"
    assert seen["losses"] and all(math.isfinite(v) for v in seen["losses"])
    assert all(torch.isfinite(p).all() for p in module.parameters())


def test_compiled_update_on_the_gpu(tmp_path):
    """``compile=True`` trains on CUDA (compile path exercised where it pays off) with finite parameters."""
    module = tiny_module(compile=True)
    trainer = tiny_trainer(tmp_path, 8, accelerator="gpu")
    trainer.fit(module, tiny_data(buffer_device="auto"))
    assert trainer.global_step == 8
    assert all(torch.isfinite(p).all() for p in module.parameters())


def test_whole_update_captured_as_cuda_graphs(tmp_path):
    """``cudagraphs=True`` on CUDA: both update kinds are captured, replays run the optimizer step (Adam's step
    count on the device reaches the number of updates), Lightning counts every step, parameters stay finite."""
    module = tiny_module(cudagraphs=True, aux_losses={"fwd": "forward_dynamics"})
    trainer = tiny_trainer(tmp_path, 16, accelerator="gpu", log_every_n_steps=5)
    trainer.fit(module, tiny_data(buffer_device="auto"))
    assert trainer.global_step == 16
    graphs = module._graphed._graphs
    assert len(graphs) == 2 and all(hasattr(g, "graph") for g in graphs.values())  # captured, not only warmed up
    opt = trainer.optimizers[0]
    critic = next(iter(module.learner.critic.parameters()))
    assert opt.defaults["capturable"] and int(opt.state[critic]["step"]) == 16
    assert all(torch.isfinite(p).all() for p in module.parameters())
