"""Supervising the training processes that a runner (:func:`~a2ls_lightning.runs.run_seeds`, ``a2ls fit --seeds``,
the benchmark scripts) starts with :func:`~a2ls_lightning.runs.run_seed`: one writer per run folder, and the
runner's stop signals passed on to them.

Two failure modes of a runner of ``a2ls fit`` processes (the first seen in this project's own benchmark runs, the
second one restart away from it):

- **A stopped runner left orphans.** ``kill PID`` (or a scheduler's SIGTERM to the runner alone) ended the runner,
  while its training processes trained on with nobody left to record their results. Inside
  :func:`forwarding_signals`, SIGTERM, SIGINT, SIGUSR1 and SIGHUP (sent on as SIGTERM) to the runner reach every
  training process it waits for; each saves at the update in flight and exits ``128 + signal``
  (:class:`~a2ls_lightning.callbacks.GracefulPreemption`), runs not yet started are not started, and once they
  have all stopped the runner itself stops by the same signal (Ctrl-C: ``KeyboardInterrupt``), so a script or a
  shell loop around it stops too. The same command resumes them. Training processes stay in the runner's process
  group, so a terminal's signals (Ctrl-C, Ctrl-Z, hang-up) reach them directly as they reach a single ``a2ls fit``;
  a second copy of a signal is ignored by the callback.
- **Two writers in one run folder** (the same command started again while an orphan still trains) would interleave
  two runs' checkpoints and event files. :class:`FolderLock` lets one process at a time into a folder. The training
  process inherits the lock, so it holds for as long as either of them lives, even after the runner is killed
  outright (SIGKILL cannot be passed on).
"""

from __future__ import annotations

import errno
import fcntl
import os
import signal
import subprocess
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from a2ls_lightning.callbacks.preemption import SIGNALS as PREEMPTION_SIGNALS

LOCK_NAME = ".a2ls.lock"
#: The runner's signals and the signal its training processes receive for each.
FORWARDED = {"SIGTERM": "SIGTERM", "SIGINT": "SIGINT", "SIGUSR1": "SIGUSR1", "SIGHUP": "SIGTERM"}
#: Exit codes of a training process stopped and saved by GracefulPreemption (its ``128 + signal``).
PREEMPTED_CODES = frozenset(128 + s for s in PREEMPTION_SIGNALS)
# flock on file systems that do not lock (Lustre without -o flock, some NFS/SMB mounts).
_NO_LOCKING = {errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.EINVAL}


@dataclass
class Stop:
    """What stopped the runner inside :func:`forwarding_signals`: ``signum`` received (0: none yet) and ``sent``,
    the signal passed on to the training processes."""

    signum: int = 0
    sent: int = 0


_children: set[subprocess.Popen] = set()  # the live training processes of this runner (any thread)
_active: list[Stop] = []  # the Stop of the outermost active forwarding_signals (at most one)


class FolderLock:
    """An exclusive lock on ``<folder>/.a2ls.lock`` (``flock``), taken without waiting.

    Held by an open file descriptor: give :attr:`fds` to the training process (``Popen(pass_fds=...)``) and the
    lock lasts until the runner and that process have both ended, however they end. On a file system that cannot
    lock, a warning says so and the folder is not locked.
    """

    def __init__(self, folder: str | Path) -> None:
        self.path = Path(folder) / LOCK_NAME
        self._fd: int | None = None

    @property
    def fds(self) -> tuple[int, ...]:
        """The descriptor to pass on to the training process."""
        return () if self._fd is None else (self._fd,)

    def acquire(self) -> bool:
        """Take the lock; ``False`` if another process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # O_CLOEXEC: no other process this one starts (another seed's) holds the lock, only the one given it.
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        except OSError as err:
            if err.errno not in _NO_LOCKING:
                os.close(fd)
                raise
            warnings.warn(f"{self.path.parent} cannot be locked on this file system ({err.strerror}): two runners "
                          "started on it at once would both train it", RuntimeWarning, stacklevel=2)
        self._fd = fd
        try:
            self.note(os.getpid())
        except OSError:
            self.release()
            raise
        return True

    def note(self, pid: int) -> None:
        """Write the pid of the process that trains in the folder (what :meth:`holder` shows another runner)."""
        if self._fd is not None:
            os.ftruncate(self._fd, 0)
            os.pwrite(self._fd, f"{pid}\n".encode(), 0)

    def holder(self) -> str:
        """``"pid N"`` of the process noted by the holder of the lock (``"another process"`` if none is noted)."""
        try:
            pid = self.path.read_text().strip()
        except OSError:
            pid = ""
        return f"pid {pid}" if pid.isdigit() else "another process"

    def release(self) -> None:
        """Close this process's descriptor (the lock ends once a training process holding it has ended too)."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


def stopped_by() -> Stop | None:
    """The :class:`Stop` of the active :func:`forwarding_signals` if a signal has stopped the runner, else ``None``."""
    return _active[0] if _active and _active[0].signum else None


@contextmanager
def forwarding_signals(signals: dict[str, str] | None = None, reraise: bool = True) -> Iterator[Stop]:
    """Pass the signals this process receives on to every training process of :func:`wait_supervised` (so every
    process that :func:`~a2ls_lightning.runs.run_seed` starts); processes started otherwise are not reached.

    Install it around the runner's pool of workers, in the main thread (elsewhere, and nested, it installs
    nothing: signal handlers live in the main thread, and the outer block forwards). A signal also marks the runner
    stopped (:func:`stopped_by`), so workers start no new run. A signal this process ignores (``nohup``'s SIGHUP, a
    background job's SIGINT) stays ignored.

    Args:
        signals: ``{signal received: signal sent on}`` by name (default :data:`FORWARDED`).
        reraise: once the block has ended and the handlers are back, deliver the signal received to this process
            (Ctrl-C then raises ``KeyboardInterrupt``, SIGTERM ends the process as it would have): a stopped
            runner stops its caller too. ``False`` leaves that to the caller, who reads the yielded :class:`Stop`.

    Yields:
        The :class:`Stop` of the outermost block.
    """
    if _active or threading.current_thread() is not threading.main_thread():
        yield _active[0] if _active else Stop()
        return
    sent = {signal.Signals[name]: signal.Signals[to] for name, to in (signals or FORWARDED).items()}
    stop = Stop()

    def handle(signum: int, _frame: object) -> None:
        # No lock here: the handler runs in the main thread, which may hold it. tuple() of a set is atomic.
        if not stop.signum:
            stop.signum, stop.sent = signum, sent[signal.Signals(signum)]
        for child in tuple(_children):
            _send(child, sent[signal.Signals(signum)])

    previous = {}
    _active.append(stop)
    try:
        for signum in sent:
            if signal.getsignal(signum) is not signal.SIG_IGN:
                previous[signum] = signal.signal(signum, handle)
        yield stop
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        _active.clear()
    if reraise and stop.signum:
        signal.raise_signal(stop.signum)


def wait_supervised(process: subprocess.Popen) -> int:
    """Wait for a training process, passing on the runner's stop signals to it meanwhile.

    Returns:
        Its exit code, a death by signal N given as ``128 + N`` (as shells report it) rather than Popen's ``-N``.
    """
    _children.add(process)
    try:
        if (stop := stopped_by()) is not None:  # the signal came between the worker's check and this start
            _send(process, stop.sent)
        code = process.wait()
    finally:
        _children.discard(process)
    return 128 - code if code < 0 else code


def _send(process: subprocess.Popen, signum: int) -> None:
    try:
        process.send_signal(signum)
    except (ProcessLookupError, OSError):  # it has just ended
        pass
