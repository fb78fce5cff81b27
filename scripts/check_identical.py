"""Bit-identity check: train a fixed-seed run through ``a2ls fit`` and print a digest of everything it learned.

Run it before and after a change that must not move results (new options off), on the same machine; the two
digests must be equal. The run: the learning benchmark's config (state cheetah-run, CPU-sized SAC), five auxiliary
losses with fixed weights, 1500 updates, no evaluation, one thread.

    python scripts/check_identical.py                     # the digest of this checkout
    python scripts/check_identical.py --updates 300       # quicker, same idea
    python scripts/check_identical.py --extra --data.replay_ratio=1   # extra a2ls fit arguments after --extra

Reference digests on the 2-core development machine (torch 2.13.0 CPU): ``7e0a68a887a59ed1e7cdef1a81737fd2`` at the
defaults (the foreach Adam step; unchanged since the backbone options existed), ``2b2b1e2f7ab9227053d76ff9c3edaf63``
with ``--extra --model.optim.fused_adam=true``.

The digest is BLAKE2b over the final checkpoint's ``state_dict`` (every parameter and buffer, in key order, as raw
bytes) and the optimizer's state; the final critic loss is printed too, for a human to compare.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[1]
FIVE = ("{fwd: forward_dynamics, inv: inverse_dynamics, rew: reward_prediction, rec: state_reconstruction, "
        "a2v: a2_winner_v}")


def digest(checkpoint: Path) -> str:
    """BLAKE2b of the module's tensors and the optimizer's state tensors (key order, raw bytes)."""
    state = torch.load(checkpoint, map_location="cpu", weights_only=False)
    h = hashlib.blake2b(digest_size=16)

    def feed(value) -> None:
        if isinstance(value, torch.Tensor):
            h.update(value.detach().reshape(-1).contiguous().view(torch.uint8).numpy().tobytes())
        elif isinstance(value, dict):
            for key in sorted(value, key=str):
                h.update(str(key).encode())
                feed(value[key])
        elif isinstance(value, (list, tuple)):
            for item in value:
                feed(item)
        else:
            h.update(repr(value).encode())

    feed(state["state_dict"])
    feed([opt["state"] for opt in state["optimizer_states"]])
    return h.hexdigest()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--updates", type=int, default=1500)
    parser.add_argument("--extra", nargs=argparse.REMAINDER, default=[], help="more a2ls fit arguments")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        command = [sys.executable, "-m", "a2ls_lightning.cli", "fit",
                   "--config=configs/benchmark_cheetah_state_cpu.yaml", "--seed_everything=1",
                   f"--model.aux_losses={FIVE}", "--trainer.callbacks+=a2ls_lightning.callbacks.FixedWeights",
                   f"--trainer.max_steps={args.updates}", "--data.eval_episodes=0",
                   f"--trainer.default_root_dir={tmp}", "--threads=1", *args.extra]
        env = {**os.environ, "PYTHONPATH": str(ROOT), "MUJOCO_GL": os.environ.get("MUJOCO_GL", "egl")}
        subprocess.run(command, cwd=ROOT, env=env, check=True, stdout=subprocess.DEVNULL)
        last = sorted(Path(tmp).glob("**/last.ckpt"))
        if not last:
            raise SystemExit(f"no last.ckpt under the run folder after {args.updates} updates")
        state = torch.load(last[0], map_location="cpu", weights_only=False)
        print(f"updates {state['global_step']}  digest {digest(last[0])}")


if __name__ == "__main__":
    main()
