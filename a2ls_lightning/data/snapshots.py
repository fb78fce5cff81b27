"""Replay side files: each rank's replay, collectors and RNG states, written next to the checkpoints.

A Lightning checkpoint is written by rank 0 only, and a replay buffer can be far larger than the weights, so
every rank writes its own side file ``<checkpoint dir>/replay/step<N>-rank<r>.pt`` and the checkpoint records
the name (with ``{rank}`` in it). Files are written crash-safe (a temporary file in the same folder, flushed,
fsynced, renamed over the real name), and found again relative to the checkpoint that references them, so a
run folder can be moved or resumed from another working directory.
"""

from __future__ import annotations

import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch

from a2ls_lightning.files import atomic_torch_save, remove_stale_temps

SNAPSHOT_FOLDER = "replay"


def write_snapshot(folder: Path, step: int, rank: int, payload: dict[str, Any]) -> str:
    """Write one rank's side file for update ``step``; return the name template (``{rank}`` left in it)."""
    folder.mkdir(parents=True, exist_ok=True)
    template = f"step{step:09d}-rank{{rank}}.pt"
    atomic_torch_save(payload, folder / template.format(rank=rank))
    return str(folder / template)


def find_snapshot(recorded: str, rank: int, checkpoint_path: str | os.PathLike | None) -> Path:
    """The side file of ``rank`` that a checkpoint recorded as ``recorded``.

    Looked up first next to the checkpoint (``<its folder>/replay/<name>``: the run folder may have moved, or
    the run is resumed from another working directory), then at the recorded path itself.

    Raises:
        FileNotFoundError: one line naming every place looked at.
    """
    recorded_path = Path(recorded.format(rank=rank))
    places = []
    if checkpoint_path is not None:
        places.append(Path(checkpoint_path).parent / SNAPSHOT_FOLDER / recorded_path.name)
    places.append(recorded_path)
    for place in places:
        if place.is_file():
            return place
    raise FileNotFoundError(f"the replay side file {recorded_path.name} of checkpoint {checkpoint_path} is missing; "
                            f"looked at: {', '.join(map(str, dict.fromkeys(places)))}")


def prune_snapshots(folder: Path, rank: int, keep: int) -> list[Path]:
    """Delete this rank's side files beyond the newest ``keep``, except those a checkpoint still references.

    The references are read from the checkpoints next to ``folder`` (``<folder>/../*.ckpt``), so a side file
    that a surviving checkpoint points to is never deleted, whatever ``keep`` is, and however a save was cut
    short. Temporary files of this rank's killed writers are removed too.

    Returns:
        The deleted paths.
    """
    referenced = referenced_snapshots(folder.parent, rank)
    mine = sorted(folder.glob(f"step*-rank{rank}.pt"))
    deleted = [old for old in mine[:-keep] if old.name not in referenced]
    for old in deleted:
        old.unlink(missing_ok=True)
    return deleted + remove_stale_temps(folder, f"step*-rank{rank}.pt")


_REFERENCES: dict[tuple[str, int, int], str | None] = {}


def referenced_snapshots(checkpoint_folder: Path, rank: int) -> set[str]:
    """Names of ``rank``'s side files referenced by the checkpoints in ``checkpoint_folder``."""
    names = set()
    for ckpt in checkpoint_folder.glob("*.ckpt"):
        try:
            stat = ckpt.stat()
        except OSError:
            continue
        key = (str(ckpt.resolve()), stat.st_mtime_ns, stat.st_size)
        if key not in _REFERENCES:
            _REFERENCES[key] = _recorded_snapshot(ckpt)
        if _REFERENCES[key]:
            names.add(Path(_REFERENCES[key].format(rank=rank)).name)
    return names


def _recorded_snapshot(ckpt: Path) -> str | None:
    # Memory-mapped: the (small) pickle is read, the tensors are not.
    try:
        state = torch.load(ckpt, map_location="cpu", weights_only=False, mmap=True)
    except Exception:  # a foreign or unreadable file protects nothing  # noqa: BLE001
        return None
    entry = state.get("ReplayDataModule") if isinstance(state, dict) else None
    return entry.get("snapshot") if isinstance(entry, dict) else None


def rng_state() -> dict[str, Any]:
    """torch, numpy, Python (and CUDA, when in use) RNG states of this process."""
    state = {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: dict[str, Any]) -> None:
    """Restore what :func:`rng_state` returned."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
    if "cuda" in state and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(state["cuda"])
