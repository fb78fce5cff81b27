"""Host→device traffic of one sampled batch when the replay lives on the training device (``buffer_device=auto``).

Proved on the CPU by construction: the replay storage is put on PyTorch's ``meta`` device (no data, same dispatch
rules as an accelerator: an op mixing a host tensor into a meta one fails), and every ``Tensor.to``/``cuda``/
``TensorDict.to`` is counted. What the count shows, per update:

* the sampler computes the slice indices on the host (numpy, ``EpisodeSliceSampler.sample`` in
  ``a2ls_lightning/data/replay.py``) and ``SliceStorage.get`` copies them to the storage device once:
  ``B · (frame_stack - 1 + L)`` int64 = 8 bytes each (batch 512, frame_stack 3, L 2: 16 KiB); on CUDA from
  pinned memory, without blocking the host (``tests/test_gpu.py`` checks that sampling never synchronizes);
* nothing else: the gather, the frame stacking, the random crop and the batch transfer
  (``ReplayDataModule.transfer_batch_to_device`` returns the batch itself) stay on the storage device.
"""

from __future__ import annotations

import pytest
import torch
from tensordict import TensorDictBase

from a2ls_lightning import ReplayDataModule
from a2ls_lightning.data.replay import SequenceReplay
from a2ls_lightning.modules.augment import random_crop

DEVICE = torch.device("meta")  # stands for the GPU: a real device other than the host, with no data


class Transfers:
    """Counts tensor moves across devices (host→``DEVICE``) through the Python-level ``to``/``cuda`` calls."""

    def __init__(self, monkeypatch) -> None:
        self.moves: list[tuple[str, str, int]] = []
        original_to, original_cuda, original_td_to = torch.Tensor.to, torch.Tensor.cuda, TensorDictBase.to
        log = self.moves

        def to(tensor, *args, **kwargs):
            out = original_to(tensor, *args, **kwargs)
            if out.device != tensor.device:
                log.append((str(tensor.device), str(out.device), tensor.numel() * tensor.element_size()))
            return out

        def cuda(tensor, *args, **kwargs):  # pragma: no cover - no CUDA here; counted if something calls it
            log.append((str(tensor.device), "cuda", tensor.numel() * tensor.element_size()))
            return original_cuda(tensor, *args, **kwargs)

        def td_to(td, *args, **kwargs):
            out = original_td_to(td, *args, **kwargs)
            if out.device != td.device:
                log.append((str(td.device), str(out.device), td.bytes()))
            return out

        monkeypatch.setattr(torch.Tensor, "to", to)
        monkeypatch.setattr(torch.Tensor, "cuda", cuda)
        monkeypatch.setattr(TensorDictBase, "to", td_to)


def _filled(batch_size: int, slice_length: int, frame_stack: int, pixels: bool) -> SequenceReplay:
    rb = SequenceReplay(capacity=200, batch_size=batch_size, slice_length=slice_length, frame_stack=frame_stack,
                        device=DEVICE)
    obs = torch.zeros(3, 16, 16, dtype=torch.uint8) if pixels else torch.zeros(5)
    for episode in range(2):
        for t in range(30):
            rb.add(obs, torch.zeros(2), 1.0, False, episode=episode, step=t, has_action=t < 29)
    return rb


@pytest.mark.parametrize("pixels", [False, True], ids=["state", "pixels"])
def test_sample_copies_only_the_indices(monkeypatch, pixels):
    batch_size, slice_length = 8, 3
    frame_stack = 3 if pixels else 1
    rb = _filled(batch_size, slice_length, frame_stack, pixels)
    transfers = Transfers(monkeypatch)
    batch = rb.sample()
    assert batch.device == DEVICE
    assert all(v.device == DEVICE for v in batch.values(True, True))
    index_bytes = batch_size * (frame_stack - 1 + slice_length) * 8
    assert transfers.moves == [("cpu", "meta", index_bytes)], transfers.moves
    if pixels:
        assert batch["observation"].shape == (batch_size, slice_length, 3 * frame_stack, 16, 16)
        cropped = random_crop(batch["observation"][:, 0], 12)  # the learner's augmentation, on the same device
        assert cropped.device == DEVICE and cropped.shape == (batch_size, 3 * frame_stack, 12, 12)
    assert len(transfers.moves) == 1  # the crop's offsets are drawn on the device: no further transfer


def test_batch_on_the_training_device_is_not_transferred(monkeypatch):
    rb = _filled(4, 2, 1, pixels=False)
    batch = rb.sample()
    transfers = Transfers(monkeypatch)
    moved = ReplayDataModule(batch_size=4).transfer_batch_to_device(batch, DEVICE, 0)
    assert moved is batch and transfers.moves == []
