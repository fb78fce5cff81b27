"""The quickstart's speed alone and beside one busy process, by intra-op thread count (``a2ls fit --threads``).

On a machine with few cores, torch's default (one thread per core) makes every op of a small network wait for
the slowest thread; when another process keeps a core busy, that wait dominates. Each row is a real
``a2ls fit`` of the quickstart config for ``--max-steps`` updates (updates/s over the training, from the
``updates/s`` the run logs: process start-up excluded), once alone and once beside a pure-Python busy loop.

    python scripts/benchmark_threads.py                         # 1 thread vs one per core
    python scripts/benchmark_threads.py --threads 1 2 --max-steps 1500

Run it on an otherwise idle machine: other work counts as "busy" in the "alone" column.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BUSY = "while True:\n    pass\n"


def run(threads: int, max_steps: int, busy: bool) -> tuple[float, float]:
    """``(updates/s during training, wall seconds of the whole command)``."""
    hog = subprocess.Popen([sys.executable, "-c", BUSY]) if busy else None
    try:
        with tempfile.TemporaryDirectory() as tmp:
            env = {k: v for k, v in os.environ.items() if k not in ("OMP_NUM_THREADS", "MKL_NUM_THREADS")}
            cmd = [sys.executable, "-m", "a2ls_lightning.cli", "fit", f"--threads={threads}",
                   f"--trainer.max_steps={max_steps}", f"--trainer.default_root_dir={tmp}",
                   "--trainer.enable_progress_bar=false", "--data.eval_episodes=0",
                   f"--trainer.log_every_n_steps={max(10, max_steps // 10)}"]
            start = time.perf_counter()
            proc = subprocess.run(cmd, env=env, cwd=ROOT, capture_output=True, text=True, check=False)
            wall = time.perf_counter() - start
            if proc.returncode != 0:
                raise RuntimeError(proc.stderr[-2000:])
            from a2ls_lightning.plotting import read_scalars

            rates = [v for _, v in read_scalars(tmp).get("updates/s", [])]
    finally:
        if hog is not None:
            hog.kill()
            hog.wait()
    return (sum(rates) / len(rates) if rates else float("nan")), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, os.cpu_count() or 2])
    parser.add_argument("--max-steps", type=int, default=1500, help="updates per run (after 1000 warm-up steps)")
    args = parser.parse_args()
    print(f"{os.cpu_count()} cores; quickstart config, {args.max_steps} updates; command: "
          f"python scripts/benchmark_threads.py --threads {' '.join(map(str, args.threads))} "
          f"--max-steps {args.max_steps}")
    print("| threads | alone: updates/s (wall s) | beside a busy process: updates/s (wall s) | beside / alone |")
    print("|---|---|---|---|")
    for threads in args.threads:
        alone, wall_alone = run(threads, args.max_steps, busy=False)
        beside, wall_beside = run(threads, args.max_steps, busy=True)
        print(f"| {threads} | {alone:.1f} ({wall_alone:.0f}) | {beside:.1f} ({wall_beside:.0f}) | "
              f"{beside / alone:.2f} |", flush=True)


if __name__ == "__main__":
    main()
