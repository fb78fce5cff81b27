"""Crash-safe file writing, shared by every layer: checkpoints, replay side files, search records.

A file is written to a temporary file in the *same* folder, flushed and fsynced, then renamed over its real
name (``os.replace``, atomic on POSIX), and the folder entry is fsynced. A process killed mid-write, or a full
disk, therefore never leaves a partial file under a real name, and the previous version stays readable. (Lightning's
own save goes through a temporary file in the system temp folder: across filesystems its final move is a copy,
and a kill during the copy leaves a truncated checkpoint.)
"""

from __future__ import annotations

import errno
import os
from collections.abc import Callable
from pathlib import Path
from typing import IO, Any

import torch
from lightning.fabric.plugins.io.torch_io import TorchCheckpointIO
from lightning.fabric.utilities.cloud_io import get_filesystem

TEMP_MARK = ".tmp"


class WriteError(OSError):
    """A file could not be written (full disk, no permission, ...); the message is one line naming the file
    and says that its previous version, if any, is intact."""


def temp_path(path: Path) -> Path:
    """Where ``path`` is written before the rename: hidden, in the same folder, unique to this process."""
    return path.with_name(f".{path.name}{TEMP_MARK}{os.getpid()}")


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Write ``path`` crash-safe: ``write(handle)`` fills a temporary file that then replaces ``path``.

    Raises:
        WriteError: the write failed; nothing was left under ``path`` or as a temporary file.
    """
    path = Path(path)
    tmp = temp_path(path)
    try:
        with open(tmp, "wb") as handle:
            write(handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except OSError as err:
        tmp.unlink(missing_ok=True)
        reason = "the disk is full" if err.errno in (errno.ENOSPC, errno.EDQUOT) else (err.strerror or str(err))
        kept = "; its previous version is intact" if path.exists() else ""
        raise WriteError(err.errno, f"could not write {path}: {reason}{kept}") from None
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    fsync_folder(path.parent)


def atomic_torch_save(payload: Any, path: str | os.PathLike) -> None:
    """``torch.save(payload, path)``, crash-safe (see :func:`atomic_write`)."""
    atomic_write(path, lambda handle: torch.save(payload, handle))


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path``, crash-safe (see :func:`atomic_write`)."""
    atomic_write(path, lambda handle: handle.write(text.encode()))


def fsync_folder(folder: str | os.PathLike) -> None:
    """Make a rename in ``folder`` durable (POSIX; a no-op where folders cannot be opened)."""
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def remove_stale_temps(folder: str | os.PathLike, pattern: str = "*") -> list[Path]:
    """Delete temporary files of :func:`atomic_write` matching ``.<pattern>.tmp<pid>`` whose process is gone.

    Returns:
        The deleted paths.
    """
    removed = []
    for tmp in Path(folder).glob(f".{pattern}{TEMP_MARK}*"):
        pid = tmp.name.rsplit(TEMP_MARK, 1)[-1]
        if pid.isdigit() and int(pid) != os.getpid() and not _alive(int(pid)):
            tmp.unlink(missing_ok=True)
            removed.append(tmp)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def ensure_writable(folder: str | os.PathLike, setting: str) -> Path:
    """Create ``folder`` and prove it writable (a probe file is written and removed).

    Args:
        folder: the folder.
        setting: the setting that chose it, named in the error (``trainer.default_root_dir``).

    Raises:
        ValueError: one line naming ``setting``, the folder and the reason.
    """
    folder = Path(folder)
    try:
        missing = [f for f in (folder, *folder.parents) if not f.exists()]
        folder.mkdir(parents=True, exist_ok=True)
        # Folders that hold a file now (an earlier run's) are never removed: forgotten, so a long-lived process
        # (a search worker, a notebook) does not collect every run folder it ever made.
        _CREATED[:] = [f for f in _CREATED if f.is_dir() and not _holds_a_file(f)]
        _CREATED.extend(missing)
        probe = folder / f".a2ls-write-probe{os.getpid()}"
        with open(probe, "wb") as handle:
            handle.write(b"ok")
            handle.flush()
            os.fsync(handle.fileno())
        probe.unlink()
    except OSError as err:
        reason = "the disk is full" if err.errno in (errno.ENOSPC, errno.EDQUOT) else (err.strerror or str(err))
        raise ValueError(f"{setting}: cannot write to {folder} ({reason})") from None
    return folder


#: Folders :func:`ensure_writable` created in this process that hold no file yet (deepest first per call).
_CREATED: list[Path] = []


def _holds_a_file(folder: Path) -> bool:
    return any(not p.is_dir() for p in folder.rglob("*"))


def remove_created_folders() -> list[Path]:
    """Remove the folders :func:`ensure_writable` created that are still empty (after a refused run: no empty run
    folders are left behind). Returns the removed folders."""
    removed = []
    for folder in sorted(set(_CREATED), key=lambda f: len(f.parts), reverse=True):
        try:
            folder.rmdir()  # only an empty folder goes
        except OSError:
            continue
        removed.append(folder)
    _CREATED.clear()
    return removed


def forget_created_folders() -> None:
    """A run started: the folders it was refused in would have been removed, those of a started run stay. Called at
    each training start, so that a long-lived process (a search worker training candidate after candidate) keeps no
    growing list, and a later refusal removes only the folders of its own run."""
    _CREATED.clear()


class AtomicCheckpointIO(TorchCheckpointIO):
    """Lightning's ``TorchCheckpointIO`` with crash-safe local saves (see the module docstring).

    Remote paths (``s3://`` and the like) keep Lightning's own transaction. Stale temporary files of killed
    writers of the same checkpoint name are removed before each save, so they never pile up.
    """

    def save_checkpoint(self, checkpoint: dict[str, Any], path: Any, storage_options: Any | None = None) -> None:
        if storage_options is not None or "://" in str(path):
            return super().save_checkpoint(checkpoint, path, storage_options)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        remove_stale_temps(path.parent, path.name)
        atomic_torch_save(checkpoint, path)

    def remove_checkpoint(self, path: Any) -> None:
        fs = get_filesystem(path)
        if fs.exists(path):
            fs.rm(path, recursive=True)
