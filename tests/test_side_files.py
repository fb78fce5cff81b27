"""Tamper-evident replay side files: a damaged, truncated or swapped side file is refused in one line naming the
file, what is wrong and the last checkpoint whose files verify, before any env step; side files hold plain data
(``weights_only=True``) and only the filled part of the replay."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from conftest import QUICK as TINY
from conftest import assert_one_line, run

from a2ls_lightning.data.replay import SequenceReplay
from a2ls_lightning.data.snapshots import SideFileError, find_snapshot, load_snapshot, verify_snapshot


@pytest.fixture(scope="module")
def written(tmp_path_factory) -> Path:
    """A tiny run with checkpoints at updates 5 and 10 (``last.ckpt`` = 10), as ``a2ls fit`` writes them."""
    from a2ls_lightning.cli import main

    root = tmp_path_factory.mktemp("written")
    # The quickstart's ModelCheckpoint (in <root>/checkpoints without a logger), every 5 updates, all kept.
    main(["fit", *TINY, "--trainer.max_steps=10", f"--trainer.default_root_dir={root}",
          "--trainer.callbacks.every_n_train_steps=5", "--trainer.callbacks.save_top_k=-1"])
    return root


def _side_file(folder: Path, step: int) -> Path:
    return folder / "checkpoints" / "replay" / f"step{step:09d}-rank0.pt"


def _corrupt(path: Path, other: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0xFF
    path.write_bytes(bytes(data))


def _truncate(path: Path, other: Path) -> None:
    path.write_bytes(path.read_bytes()[:-100])


def _swap(path: Path, other: Path) -> None:
    shutil.copyfile(other, path)  # a valid side file, but not the one the checkpoint recorded


@pytest.mark.parametrize("damage,fragment", [(_corrupt, "checksum differs (damaged or swapped)"),
                                             (_truncate, "truncated or replaced"),
                                             (_swap, "bytes, not the")],
                         ids=["corrupted", "truncated", "swapped"])
def test_a_damaged_side_file_is_refused_in_one_line_before_any_env_step(tmp_path, written, capsys, no_env_steps,
                                                                          damage, fragment):
    folder = tmp_path / "run"
    shutil.copytree(written, folder)
    target = _side_file(folder, 10)
    damage(target, _side_file(folder, 5))
    code, stderr = run(["fit", *TINY, "--trainer.max_steps=20", f"--trainer.default_root_dir={tmp_path / 'out'}",
                        f"--ckpt_path={folder / 'checkpoints' / 'last.ckpt'}"], capsys)
    assert_one_line(code, stderr, fragment, no_env_steps)
    assert str(target) in stderr
    assert "the last checkpoint whose files verify: " in stderr and "step=5.ckpt" in stderr, stderr


def test_side_files_are_plain_data_and_verified_before_they_are_read(written, tmp_path):
    last = written / "checkpoints" / "last.ckpt"
    entry = torch.load(last, weights_only=False)["ReplayDataModule"]
    path = find_snapshot(entry["snapshot"], 0, last)
    torch.load(path, weights_only=True)  # no pickled code: tensors and plain data only
    payload = load_snapshot(path, entry["files"]["0"], last)
    assert isinstance(payload["collector"]["env"]["physics"], type(payload["replay"]["_sampler"]["episode"].numpy()))
    copy = tmp_path / path.name
    copy.write_bytes(path.read_bytes()[:-1] + b"x")
    with pytest.raises(SideFileError, match="checksum differs"):
        verify_snapshot(copy, entry["files"]["0"])


def test_a_side_file_holds_only_the_filled_part_of_the_replay_and_resumes_exactly():
    def filled(n: int, capacity: int = 1000) -> SequenceReplay:
        rb = SequenceReplay(capacity=capacity, batch_size=4, slice_length=3, seed=1)
        for t in range(n):
            rb.add(torch.full((64,), float(t)), torch.zeros(2), 1.0, False, episode=t // 50, step=t % 50,
                   has_action=t % 50 < 49)
        return rb

    def size(rb: SequenceReplay) -> int:
        import io

        buffer = io.BytesIO()
        torch.save(rb.state_dict(), buffer)
        return buffer.tell()

    assert size(filled(100)) < 0.2 * size(filled(1000))  # grows with the data, not the capacity
    for n, capacity in ((100, 1000), (1300, 1000)):  # before and after the ring wrapped
        original = filled(n, capacity)
        copy = SequenceReplay(capacity=capacity, batch_size=4, slice_length=3, seed=99)
        copy.load_state_dict(original.state_dict())
        assert len(copy) == len(original) and copy.num_slices == original.num_slices
        for _ in range(3):  # the same batches after the resume
            a, b = original.sample(), copy.sample()
            assert torch.equal(a["observation"], b["observation"]) and torch.equal(a["step"], b["step"])
        original.add(torch.zeros(64), torch.zeros(2), 0.0, False, episode=99, step=0, has_action=True)
        copy.add(torch.zeros(64), torch.zeros(2), 0.0, False, episode=99, step=0, has_action=True)
        assert torch.equal(original.sample()["observation"], copy.sample()["observation"])
