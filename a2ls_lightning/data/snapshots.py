"""Replay side files: each rank's replay, collectors and RNG states, written next to the checkpoints.

A Lightning checkpoint is written by rank 0 only, and a replay buffer can be far larger than the weights, so
every rank writes its own side file ``<checkpoint dir>/replay/step<N>-rank<r>.pt`` and the checkpoint records
the name (with ``{rank}`` in it). Files are written crash-safe (a temporary file in the same folder, flushed,
fsynced, renamed over the real name), and found again relative to the checkpoint that references them, so a
run folder can be moved or resumed from another working directory.

Tamper-evident: the checkpoint also records each rank's file size and BLAKE2b digest, and a side file is verified
against them before it is read (a damaged, truncated or swapped file is refused in one line naming it). A side
file holds only tensors and plain Python data (numpy arrays are stored as tensors, see :func:`to_plain`), so it
loads with ``torch.load(weights_only=True)``: even an unverified file cannot run code. Side files written before
digests existed (version 0.1) are verified by loading them (a full unpickle: only resume checkpoints you trust).
"""

from __future__ import annotations

import hashlib
import os
import random
import warnings
from pathlib import Path
from typing import Any

import numpy as np
import torch

from a2ls_lightning.files import atomic_torch_save, remove_stale_temps

SNAPSHOT_FOLDER = "replay"


#: Digest of side files: BLAKE2b (cryptographic: a planted file cannot be made to match; the fastest hash of
#: hashlib here, about 0.4-0.6 GiB/s on one core, `python scripts/benchmark_memory.py --side-files`).
DIGEST = "blake2b"
_CHUNK = 1 << 20


class SideFileError(ValueError):
    """A replay side file is missing, unreadable or not the file its checkpoint recorded (one line)."""


def write_snapshot(folder: Path, step: int, rank: int, payload: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Write one rank's side file for update ``step``.

    Returns:
        The name template (``{rank}`` left in it) and this rank's ``{"size": bytes, "blake2b": hex digest}``.
    """
    folder.mkdir(parents=True, exist_ok=True)
    template = f"step{step:09d}-rank{{rank}}.pt"
    path = folder / template.format(rank=rank)
    atomic_torch_save(to_plain(payload), path)
    return str(folder / template), file_digest(path)


def file_digest(path: str | os.PathLike) -> dict[str, Any]:
    """``{"size": bytes, "blake2b": hex digest}`` of a file, read in 1 MiB chunks."""
    digest = hashlib.blake2b(digest_size=32)
    size = 0
    with open(path, "rb") as handle:
        while chunk := handle.read(_CHUNK):
            digest.update(chunk)
            size += len(chunk)
    return {"size": size, DIGEST: digest.hexdigest()}


def verify_snapshot(path: Path, expected: dict[str, Any] | None, checkpoint_path: Any = None) -> None:
    """Check a side file against the size and digest its checkpoint recorded (nothing to check if ``None``).

    Raises:
        SideFileError: one line naming the file, what is wrong and the checkpoint.
    """
    if not expected:
        return
    of = f" (recorded by checkpoint {checkpoint_path})" if checkpoint_path is not None else ""
    try:
        stat = path.stat()
        size = stat.st_size
        key = (str(path.resolve()), stat.st_mtime_ns, size, expected[DIGEST])
        if key in _VERIFIED:  # checked before anything was built; the datamodule reads it again on resume
            return
        if size != expected["size"]:
            raise SideFileError(f"the replay side file {path} has {size} bytes, not the {expected['size']} its "
                                f"checkpoint recorded{of}: truncated or replaced")
        found = file_digest(path)[DIGEST]
    except OSError as err:
        raise SideFileError(f"the replay side file {path} is unreadable{of}: {err.strerror or err}") from None
    if found != expected[DIGEST]:
        raise SideFileError(f"the replay side file {path} does not match its checkpoint{of}: {DIGEST} checksum "
                            f"differs (damaged or swapped)")
    _VERIFIED.add(key)


#: Side files verified in this process, by (path, modification time, size, digest).
_VERIFIED: set[tuple[str, int, int, str]] = set()


def load_snapshot(path: Path, expected: dict[str, Any] | None, checkpoint_path: Any = None) -> dict[str, Any]:
    """Verify (see :func:`verify_snapshot`) and read a side file; numpy arrays come back as numpy arrays.

    A file with a recorded digest loads with ``weights_only=True``; one without (version 0.1) is verified by
    loading it in full, with a warning that says so.

    Raises:
        SideFileError: one line naming the file and what is wrong.
    """
    verify_snapshot(path, expected, checkpoint_path)
    if not expected:
        warnings.warn(f"the replay side file {path} has no recorded checksum (written by version 0.1): verified by "
                      "loading it, which unpickles it in full; resume only checkpoints you trust", UserWarning,
                      stacklevel=2)
    try:
        payload = torch.load(path, map_location="cpu", weights_only=bool(expected))
    except Exception as err:  # noqa: BLE001 - pickle, zip and torch raise several types for a damaged file
        reason = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise SideFileError(f"the replay side file {path} is unreadable ({type(err).__name__}: {reason})") from None
    return from_plain(payload)


def verify_checkpoint_files(checkpoint: dict[str, Any], checkpoint_path: str | os.PathLike) -> None:
    """Check every rank's side file a checkpoint references (exists, size, digest) before anything is built.

    Raises:
        SideFileError: one line naming the file, what is wrong, and the newest checkpoint next to it whose side
            files verify (or that there is none).
    """
    try:
        _verify_all(checkpoint, checkpoint_path)
    except SideFileError as err:
        good = last_verified_checkpoint(Path(checkpoint_path))
        hint = f"; the last checkpoint whose files verify: {good}" if good else "; no checkpoint next to it verifies"
        raise SideFileError(f"{err}{hint}") from None


def _verify_all(checkpoint: dict[str, Any], checkpoint_path: str | os.PathLike) -> None:
    entry = checkpoint.get("ReplayDataModule") if isinstance(checkpoint, dict) else None
    if not isinstance(entry, dict) or not entry.get("snapshot"):
        return
    files = entry.get("files") or {}
    for rank in range(int(entry.get("world_size", 1))):
        try:
            path = find_snapshot(entry["snapshot"], rank, checkpoint_path)
        except FileNotFoundError as err:
            raise SideFileError(str(err)) from None
        verify_snapshot(path, files.get(str(rank)), checkpoint_path)


def last_verified_checkpoint(checkpoint_path: Path) -> Path | None:
    """The newest other checkpoint in ``checkpoint_path``'s folder whose side files all verify."""
    others = sorted((c for c in checkpoint_path.parent.glob("*.ckpt") if c.resolve() != checkpoint_path.resolve()),
                    key=lambda c: c.stat().st_mtime_ns, reverse=True)
    for ckpt in others:
        try:
            state = torch.load(ckpt, map_location="cpu", weights_only=False, mmap=True)
            _verify_all(state, ckpt)
        except Exception:  # noqa: BLE001 - any unreadable or mismatching candidate is skipped
            continue
        return ckpt
    return None


# --- plain data: what torch.load(weights_only=True) accepts -------------------------------------------------
_NDARRAY = "__ndarray__"


def to_plain(value: Any) -> Any:
    """``value`` with every numpy array turned into ``{"__ndarray__": tensor}`` and numpy scalars into Python
    numbers, so that it holds only tensors and plain data (dicts, lists, tuples, str, numbers, None)."""
    if isinstance(value, np.ndarray):
        return {_NDARRAY: torch.from_numpy(np.ascontiguousarray(value).copy())}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, dict):
        return {k: to_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(to_plain(v) for v in value)
    return value


def from_plain(value: Any) -> Any:
    """The inverse of :func:`to_plain` (arrays come back as numpy arrays of the same dtype)."""
    if isinstance(value, dict):
        if set(value) == {_NDARRAY}:
            return value[_NDARRAY].numpy()
        return {k: from_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return type(value)(from_plain(v) for v in value)
    return value


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
