"""``scripts/gpu_check.sh --dry-run``: the GPU check's steps run end to end on the CPU at tiny sizes."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_dry_run():
    env = dict(os.environ, OMP_NUM_THREADS="1", MUJOCO_GL=os.environ.get("MUJOCO_GL", "egl"), PYTHON=sys.executable)
    proc = subprocess.run(["bash", "scripts/gpu_check.sh", "--dry-run"], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=400, check=False)
    out = proc.stdout
    assert proc.returncode == 0, out[-3000:] + proc.stderr[-3000:]
    for obs in ("state", "pixels"):
        # --dry-run does not compile the pixel networks (minutes on a CPU); the GPU run has all five rows
        modes = ["eager fp32", "eager bf16-mixed", "CUDA graphs"]
        modes += ["compiled", "compiled + CUDA graphs"] if obs == "state" else []
        for mode in modes:
            pattern = rf"^\| {obs}[^|]* \| {re.escape(mode)} \| cpu \| \d+ \| \d+ \| ([0-9.]+) \|$"
            row = re.search(pattern, out, re.MULTILINE)
            assert row and float(row.group(1)) > 0, f"no numeric row for {obs} / {mode}:\n{out}"
    assert re.search(r"^smoke run: OK \(exit 0, \d+ finite losses, eval/return -?[0-9.]+\)$", out, re.MULTILINE), out
    assert "GPU tests: done" in out
