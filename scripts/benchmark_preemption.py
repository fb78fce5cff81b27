"""What a preemption costs: a real ``a2ls fit`` (the quickstart config, state cheetah-run) gets a signal after
``--after`` seconds of training; prints the exit code, the update it stopped at, the updates its checkpoint holds
(lost = stopped-at minus saved: 0 when the update in flight is saved), the time from the signal to the exit (the
update in flight, the save of checkpoint and side file, the shutdown) and the files' sizes.

    OMP_NUM_THREADS=1 python scripts/benchmark_preemption.py --signal SIGTERM --after 60
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--signal", default="SIGTERM", choices=["SIGTERM", "SIGUSR1", "SIGINT"])
    parser.add_argument("--after", type=float, default=60.0, help="seconds after the start before the signal")
    args = parser.parse_args()
    signum = signal.Signals[args.signal]
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [sys.executable, "-m", "a2ls_lightning.cli", "fit", f"--trainer.default_root_dir={tmp}",
               "--trainer.enable_progress_bar=false"]
        env = dict(os.environ, OMP_NUM_THREADS="1")
        proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        time.sleep(args.after)
        sent = time.perf_counter()
        proc.send_signal(signum)
        _, stderr = proc.communicate()
        seconds = time.perf_counter() - sent
        match = re.search(r"stopped by \w+ at update (\d+); resume with --ckpt_path (\S+)", stderr)
        if not match:
            raise SystemExit(f"no stop line (exit {proc.returncode}):\n{stderr[-2000:]}")
        update, path = int(match.group(1)), Path(match.group(2))
        saved = torch.load(path, map_location="cpu", weights_only=False)["global_step"]
        side = sorted(path.parent.glob("replay/*.pt"))[-1]
        print(f"command: OMP_NUM_THREADS=1 python scripts/benchmark_preemption.py --signal {args.signal} "
              f"--after {args.after:g}")
        print("| signal | exit code | stopped at update | checkpoint holds | updates lost | signal → exit | "
              "checkpoint | side file |\n|---|---|---|---|---|---|---|---|")
        print(f"| {args.signal} | {proc.returncode} | {update} | {saved} | {update - saved} | {seconds:.2f} s | "
              f"{path.stat().st_size / 2**20:.1f} MiB | {side.stat().st_size / 2**20:.1f} MiB |")


if __name__ == "__main__":
    main()
