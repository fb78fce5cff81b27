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


def test_sampling_from_a_gpu_replay_never_waits_for_the_gpu():
    """With the replay on the GPU a sample is one non-blocking index copy and device-side gathers: no op
    synchronizes the host with the device (CUDA's sync debug mode raises on any that does)."""
    from a2ls_lightning.data.replay import SequenceReplay

    rb = SequenceReplay(capacity=200, batch_size=32, slice_length=3, frame_stack=3, device="cuda")
    for episode in range(2):
        for t in range(40):
            rb.add(torch.zeros(3, 16, 16, dtype=torch.uint8), torch.zeros(2), 1.0, False, episode=episode, step=t,
                   has_action=t < 39)
    rb.sample()  # first sample: lazy allocations
    torch.cuda.synchronize()
    torch.cuda.set_sync_debug_mode("error")
    try:
        for _ in range(5):
            batch = rb.sample()
    finally:
        torch.cuda.set_sync_debug_mode("default")
    assert batch["observation"].device.type == "cuda" and batch["observation"].shape[:2] == (32, 3)
