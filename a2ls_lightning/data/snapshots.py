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

from a2ls_lightning.files import atomic_torch_save

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


def prune_snapshots(folder: Path, rank: int, keep: int) -> None:
    """Delete all but the newest ``keep`` side files of ``rank`` in ``folder``."""
    mine = sorted(folder.glob(f"step*-rank{rank}.pt"))
    for old in mine[:-keep]:
        old.unlink(missing_ok=True)


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
