"""Supervising the training processes that a runner (:func:`~a2ls_lightning.runs.run_seeds`, ``a2ls fit --seeds``,
the benchmark scripts) starts: one writer per run folder, and the runner's stop signals passed on to them.

Two failure modes of a runner of ``a2ls fit`` processes (the first seen in this project's own benchmark runs, the
second one restart away from it):

- **A stopped runner left orphans.** ``kill PID`` (or a scheduler's SIGTERM to the runner alone) ended the runner,
  while its training processes trained on with nobody left to record their results. Inside
  :func:`forwarding_signals`, SIGTERM, SIGINT, SIGUSR1 and SIGHUP (sent on as SIGTERM) to the runner reach every
  training process it started; each saves at the update in flight and exits ``128 + signal``
  (:class:`~a2ls_lightning.callbacks.GracefulPreemption`), runs not yet started are not started, and the runner
  reports them all as preempted: the same command resumes them.
  Its training processes get a session of their own there, so a terminal's Ctrl-C reaches them once, through the
  runner, rather than twice.
- **Two writers in one run folder** (the same command started again while an orphan still trains) would interleave
  two runs' checkpoints and event files. :class:`FolderLock` lets one process at a time into a folder. The training
  process inherits the lock, so it holds for as long as either of them lives, even after the runner is killed
  outright (SIGKILL cannot be passed on).
"""

from __future__ import annotations

import os
import signal
import subprocess
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no flock; folders are then not locked
    fcntl = None  # type: ignore[assignment]

LOCK_NAME = ".a2ls.lock"
#: The runner's signals and what its training processes receive for each: a closed terminal (SIGHUP, which no longer
#: reaches them in their own session) saves them like a scheduler's SIGTERM.
FORWARDED = {"SIGTERM": "SIGTERM", "SIGINT": "SIGINT", "SIGUSR1": "SIGUSR1", "SIGHUP": "SIGTERM"}

_children: set[subprocess.Popen] = set()  # the live training processes of this runner (any thread)
_state = {"depth": 0, "stopped_by": 0}  # nesting of forwarding_signals; the first signal received (0: none)


class FolderLock:
    """An exclusive lock on ``<folder>/.a2ls.lock`` (``flock``), taken without waiting.

    Held by an open file descriptor: give :attr:`fds` to the training process (``Popen(pass_fds=...)``) and the
    lock lasts until the runner and that process have both ended, however they end.
    """

    def __init__(self, folder: str | Path) -> None:
        self.path = Path(folder) / LOCK_NAME
        self._fd: int | None = None

    @property
    def fds(self) -> tuple[int, ...]:
        """The descriptor to pass on to the training process (empty where folders cannot be locked)."""
        return () if self._fd is None or fcntl is None else (self._fd,)

    def acquire(self) -> bool:
        """Take the lock; ``False`` if another process holds it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        if fcntl is not None:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                os.close(fd)
                return False
        self._fd = fd
        self.note(os.getpid())
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


def stopped_by() -> int:
    """The signal that stopped the runner inside the active :func:`forwarding_signals` (0: none, or none active)."""
    return _state["stopped_by"] if _state["depth"] else 0


@contextmanager
def forwarding_signals(signals: dict[str, str] | None = None) -> Iterator[None]:
    """Pass the signals this process receives on to every training process waited for by :func:`wait_supervised`.

    Install it around the runner's pool of workers, in the main thread (elsewhere it does nothing: signal handlers
    live there). A signal also marks the runner stopped (:func:`stopped_by`), so workers start no new run. A signal
    this process ignores (``nohup``'s SIGHUP, a background job's SIGINT) stays ignored.

    Args:
        signals: ``{signal received: signal sent on}`` by name (default :data:`FORWARDED`).
    """
    if _state["depth"]:  # nested: the outer one forwards
        _state["depth"] += 1
        try:
            yield
        finally:
            _state["depth"] -= 1
        return
    if threading.current_thread() is not threading.main_thread():
        yield  # no handler can be installed here: training processes stay in the caller's session
        return

    sent = {signal.Signals[name]: signal.Signals[to] for name, to in (signals or FORWARDED).items()}

    def handle(signum: int, _frame: object) -> None:
        # No lock here: the handler runs in the main thread, which may hold it. tuple() of a set is atomic.
        _state["stopped_by"] = _state["stopped_by"] or signum
        for child in tuple(_children):
            _send(child, sent[signal.Signals(signum)])

    previous = {}
    _state.update(depth=1, stopped_by=0)
    try:
        for signum in sent:
            if signal.getsignal(signum) is not signal.SIG_IGN:
                previous[signum] = signal.signal(signum, handle)
        yield
    finally:
        for signum, handler in previous.items():
            signal.signal(signum, handler if handler is not None else signal.SIG_DFL)
        _state["depth"] = 0


def supervising() -> bool:
    """Whether a :func:`forwarding_signals` is active (training processes then get a session of their own)."""
    return _state["depth"] > 0


def wait_supervised(process: subprocess.Popen) -> int:
    """Wait for a training process, passing on the runner's stop signals to it meanwhile.

    Returns:
        Its exit code, a death by signal N given as ``128 + N`` (as shells report it) rather than Popen's ``-N``.
    """
    _children.add(process)
    try:
        if stopped_by():  # the signal came between the worker's check and the start of this process
            _send(process, signal.SIGTERM)
        code = process.wait()
    finally:
        _children.discard(process)
    return 128 - code if code < 0 else code


def _send(process: subprocess.Popen, signum: int) -> None:
    try:
        process.send_signal(signum)
    except (ProcessLookupError, OSError):  # it has just ended
        pass
