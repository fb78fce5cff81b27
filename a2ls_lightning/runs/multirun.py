"""Many seeds of one ``a2ls fit`` configuration at once: one process per seed (one CPU thread each by default),
each into ``<root>/seed_<n>/``, resumable, and a final table of final return and AULC.

A seed whose ``result.json`` exists is done and skipped; a seed with a checkpoint but no result (interrupted,
preempted, killed) resumes from its newest ``last.ckpt``; the others start. A seed's output goes to
``<root>/seed_<n>/fit.log``. ``a2ls plot <root>`` then draws the seeds' mean ± std. ``a2ls fit --seeds`` puts
``<root>`` beside a single run's folder, never inside it (see :mod:`a2ls_lightning.cli.multi`).

Stopping the runner (SIGTERM, SIGINT, SIGUSR1, SIGHUP) stops its training processes, each saved at its update in
flight, starts no other seed, and then stops the runner by the same signal; a seed folder is trained by one process
at a time (see :mod:`a2ls_lightning.runs.supervise`).
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from a2ls_lightning.files import atomic_write_text
from a2ls_lightning.plotting import eval_curve, event_files, read_scalars
from a2ls_lightning.runs.supervise import (
    PREEMPTED_CODES,
    FolderLock,
    forwarding_signals,
    stopped_by,
    wait_supervised,
)
from a2ls_lightning.validation import check

RESULT = "result.json"


@dataclass
class SeedResult:
    """One seed's outcome: ``status`` is ``done`` (trained now), ``recorded`` (found done), ``failed``,
    ``preempted`` (stopped by a signal, or not started because the runner was: run the same command again) or
    ``busy`` (its folder is being trained by another process; nothing was started)."""

    seed: int
    folder: str
    status: str
    final: float | None = None
    aulc: float | None = None
    minutes: float | None = None
    exit_code: int = 0
    message: str = ""
    env_steps: float | None = None  # of its last evaluation: the budget its final value is taken at


def seed_folder(root: str | Path, seed: int) -> Path:
    """``<root>/seed_<seed>``."""
    return Path(root) / f"seed_{seed}"


def last_checkpoint_in(folder: Path) -> Path | None:
    """The ``last.ckpt`` under ``folder`` with the most updates (then the newest), ``None`` if the run never saved.

    Runs of older versions logged each resumed attempt under a new ``lightning_logs/version_<k>/``: the checkpoint
    with the most updates of them all is the one to resume. An unreadable file is skipped.
    """
    import torch

    best: tuple[int, int, Path] | None = None
    for path in folder.rglob("last.ckpt"):
        try:
            step = int(torch.load(path, map_location="cpu", weights_only=False, mmap=True).get("global_step", -1))
        except Exception:  # noqa: BLE001 - not a checkpoint one can resume from
            continue
        key = (step, path.stat().st_mtime_ns, path)
        best = key if best is None or key[:2] > best[:2] else best
    return None if best is None else best[2]


def run_seeds(fit_args: list[str], seeds: list[int], root: str | Path, jobs: int = 2, threads: int = 1,
              echo: bool = True) -> list[SeedResult]:
    """Train ``a2ls fit <fit_args>`` once per seed, ``jobs`` at a time, each into ``<root>/seed_<n>/``.

    Args:
        fit_args: the ``a2ls fit`` arguments shared by every seed (config, overrides).
        seeds: the seeds (``--seed_everything``), distinct.
        root: the folder of the seeds' folders.
        jobs: processes at a time.
        threads: torch CPU threads per process.
        echo: print a line when a seed starts and ends, and every :data:`PROGRESS_EVERY` seconds one line with each
            training seed's progress (from the plain progress lines of its ``fit.log``).

    Returns:
        One :class:`SeedResult` per seed, in the order of ``seeds``.
    """
    check(len(seeds) >= 1 and len(set(seeds)) == len(seeds), f"seeds={seeds}: give distinct seeds")
    check(all(0 <= s < 2**32 for s in seeds), f"seeds={seeds}: each must be in [0, 2**32)")
    check(jobs >= 1, f"jobs={jobs} must be >= 1")
    check(threads >= 1, f"threads={threads} must be >= 1")
    Path(root).mkdir(parents=True, exist_ok=True)
    if echo and not any(a.startswith("--trainer.enable_progress_bar") for a in fit_args):
        # Each seed's progress lines go to its fit.log (plain lines, never a bar in a file): the runner reads them.
        fit_args = [*fit_args, "--trainer.enable_progress_bar=true"]
    training: dict[int, Path] = {}  # seed -> folder, while it trains
    stop = threading.Event()
    monitor = threading.Thread(target=_show_progress, args=(training, stop), daemon=True) if echo else None
    if monitor is not None:
        monitor.start()
    try:
        with forwarding_signals(), ThreadPoolExecutor(jobs) as pool:
            return list(pool.map(lambda s: _run_one(fit_args, s, Path(root), threads, echo, training), seeds))
    finally:
        stop.set()
        if monitor is not None:
            monitor.join()


def _run_one(fit_args: list[str], seed: int, root: Path, threads: int, echo: bool,
             training: dict[int, Path]) -> SeedResult:
    training[seed] = seed_folder(root, seed)
    try:
        return run_seed(fit_args, seed, seed_folder(root, seed), threads=threads, echo=echo)
    finally:
        training.pop(seed, None)


#: Seconds between two progress lines of ``a2ls fit --seeds`` (each seed's latest progress, on one line).
PROGRESS_EVERY = 30.0
_PROGRESS = re.compile(r"updates (\d+)/(\d+) \((\d+)%\)(?:.*?eval/return=([-\d.]+))?")


def progress_line(training: dict[int, Path]) -> str | None:
    """``a2ls: seed 1 40% (800/2000 updates, eval/return 12.3) | seed 2 35% (...)``: each training seed's latest
    progress line in its ``fit.log``; ``None`` when no seed has one yet."""
    parts = []
    for seed, folder in sorted(dict(training).items()):
        found = None
        try:
            with open(folder / "fit.log", "rb") as log:
                log.seek(max(0, log.seek(0, os.SEEK_END) - 4096))
                for line in log.read().decode(errors="replace").splitlines():
                    found = _PROGRESS.search(line) or found
        except OSError:
            pass
        if found is not None:
            shown = f", eval/return {found[4]}" if found[4] else ""
            parts.append(f"seed {seed} {found[3]}% ({found[1]}/{found[2]} updates{shown})")
        else:
            parts.append(f"seed {seed} starting")
    return "a2ls: " + " | ".join(parts) if any("%" in part for part in parts) else None


def _show_progress(training: dict[int, Path], stop: threading.Event) -> None:
    last = None
    while not stop.wait(PROGRESS_EVERY):
        line = progress_line(training)
        if line is not None and line != last:  # nothing new, nothing printed
            print(line, flush=True)
            last = line


def run_seed(fit_args: list[str], seed: int, folder: str | Path, threads: int = 1, echo: bool = True,
             env: dict[str, str] | None = None, cwd: str | Path | None = None) -> SeedResult:
    """Train ``a2ls fit <fit_args>`` with one seed in its own ``folder``, resumably (what :func:`run_seeds` does for
    each seed; the benchmark script trains each of its runs with it too).

    Done (``result.json`` in ``folder``): returns the recorded result (status ``recorded``). A ``last.ckpt`` under
    ``folder`` without a result (killed, preempted): resumes from it. Output goes to ``folder/fit.log``. A folder
    another process trains in is left alone (status ``busy``). Inside
    :func:`~a2ls_lightning.runs.supervise.forwarding_signals` (:func:`run_seeds` calls it) the runner's stop
    signals reach the training process.

    Args:
        fit_args: ``a2ls fit`` arguments (without the seed and the root folder, which this sets).
        seed: ``--seed_everything``.
        folder: the run's ``trainer.default_root_dir``.
        threads: torch CPU threads (and ``OMP_NUM_THREADS``).
        echo: print a line when it starts and ends.
        env: extra environment variables of the training process.
        cwd: its working folder (relative paths in ``fit_args`` are read from there).
    """
    folder = Path(folder)
    if (recorded := _recorded(folder)) is not None:
        return recorded
    if (stop := stopped_by()) is not None:
        return _not_started(seed, folder, f"the runner was stopped by {signal.Signals(stop.signum).name}",
                            128 + stop.sent, "preempted", echo)
    lock = FolderLock(folder)
    if not lock.acquire():
        return _not_started(seed, folder, f"{folder} is being trained by {lock.holder()}", 1, "busy", echo)
    try:  # another runner may have finished it while this one looked
        return _recorded(folder) or _train(fit_args, seed, folder, lock, threads, echo, env, cwd)
    finally:
        lock.release()


def _recorded(folder: Path) -> SeedResult | None:
    if not (folder / RESULT).is_file():
        return None
    recorded = SeedResult(**json.loads((folder / RESULT).read_text()))
    recorded.status = "recorded"
    return recorded


def _not_started(seed: int, folder: Path, why: str, code: int, status: str, echo: bool) -> SeedResult:
    if echo:
        print(f"a2ls: seed {seed}: not started: {why}", flush=True)
    return SeedResult(seed, str(folder), status, exit_code=code, message=f"not started: {why}")


def _train(fit_args: list[str], seed: int, folder: Path, lock: FolderLock, threads: int, echo: bool,
           env: dict[str, str] | None, cwd: str | Path | None) -> SeedResult:
    resume = last_checkpoint_in(folder)
    args = [*fit_args, f"--seed_everything={seed}", f"--trainer.default_root_dir={folder.resolve()}",
            f"--threads={threads}"]
    if resume is not None:
        args.append(f"--ckpt_path={resume.resolve()}")
    process_env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads), **(env or {}))
    if echo:
        print(f"a2ls: seed {seed}: {'resuming from ' + str(resume) if resume else 'starting'} (log: "
              f"{folder / 'fit.log'})", flush=True)
    start = time.time()
    with open(folder / "fit.log", "a") as log:
        process = subprocess.Popen([sys.executable, "-m", "a2ls_lightning.cli", "fit", *args], env=process_env,
                                   stdout=log, stderr=subprocess.STDOUT, cwd=cwd, pass_fds=lock.fds)
        lock.note(process.pid)
        code = wait_supervised(process)
    minutes = (time.time() - start) / 60
    if code != 0:
        # Saved by GracefulPreemption: resumable. A death by another signal (the OOM killer's SIGKILL) is a failure.
        status = "preempted" if code in PREEMPTED_CODES else "failed"
        message = _last_error(folder / "fit.log")
        if echo:
            print(f"a2ls: seed {seed}: {status} (exit {code}): {message}", flush=True)
        return SeedResult(seed, str(folder), status, minutes=minutes, exit_code=code, message=message)
    final, aulc, env_steps = _final_and_aulc(folder)
    result = SeedResult(seed, str(folder), "done", final, aulc, minutes, env_steps=env_steps)
    atomic_write_text(folder / RESULT, json.dumps(asdict(result), indent=1) + "\n")
    if echo:
        shown = f"final eval/return {final:.1f}, AULC {aulc:.1f}" if final is not None else "no evaluation logged"
        print(f"a2ls: seed {seed}: done in {minutes:.1f} min: {shown}", flush=True)
    return result


def _final_and_aulc(folder: Path) -> tuple[float | None, float | None, float | None]:
    if not event_files(folder):
        return None, None, None
    scalars = read_scalars(folder, tags=("eval/return", "eval/env_steps"))
    if "eval/return" not in scalars:
        return None, None, None
    x, y = eval_curve(scalars)
    return float(y[-1]), float(np.mean(y)), float(x[-1])


def _last_error(log: Path) -> str:
    lines = [line for line in log.read_text(errors="replace").splitlines() if line.strip()]
    errors = [line for line in lines if line.startswith("a2ls:")]
    return (errors or lines or ["(no output)"])[-1][:300]


def results_table(results: list[SeedResult]) -> str:
    """Markdown table of the seeds (with the env steps of each one's last evaluation) and a mean ± std row over the
    seeds with a final return; that row says so when their budgets differ (e.g. a seed recorded by an earlier call
    with another ``max_steps``)."""
    rows = ["| seed | status | final eval/return | AULC | env steps | minutes |", "|---|---|---|---|---|---|"]
    for r in results:
        steps = "–" if r.env_steps is None else f"{r.env_steps:.0f}"
        rows.append(f"| {r.seed} | {r.status} | {_num(r.final)} | {_num(r.aulc)} | {steps} | {_num(r.minutes)} |")
    done = [r for r in results if r.final is not None]
    if done:
        finals, aulcs = [r.final for r in done], [r.aulc for r in done]
        ends = sorted({r.env_steps for r in done if r.env_steps is not None})
        label = f"mean ± std ({len(done)} seeds" + ("; budgets differ" if len(ends) > 1 else "") + ")"
        steps = "–" if not ends else f"{ends[0]:.0f}" + (f"–{ends[-1]:.0f}" if len(ends) > 1 else "")
        rows.append(f"| {label} | | {np.mean(finals):.1f} ± {np.std(finals):.1f} | "
                    f"{np.mean(aulcs):.1f} ± {np.std(aulcs):.1f} | {steps} | |")
    return "\n".join(rows)


def _num(value: float | None) -> str:
    return "–" if value is None else f"{value:.1f}"
