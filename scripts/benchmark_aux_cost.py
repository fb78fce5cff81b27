"""Cost of an update with auxiliary losses relative to a plain SAC update (same networks, real sampled batches).

Each variant trains ``--updates`` updates of the same loop (``benchmark_throughput.plain_loop``: the update of
``SACModule.training_step`` without the Trainer) on a real batch sampled from a replay filled by a real
cheetah-run env; the slice length follows the variant (2 for SAC, 10 for A2-winner-v). Rounds alternate.

    python scripts/benchmark_aux_cost.py                                    # A2-winner-v vs SAC
    python scripts/benchmark_aux_cost.py --aux "{a2v: a2_winner_v}" "{fwd: forward_dynamics}"
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import lightning.pytorch as pl
import torch
import yaml

sys.path.insert(0, str(Path(__file__).parent))
from benchmark_throughput import plain_loop

from a2ls_lightning import ReplayDataModule, SACModule


def prepared(aux: dict | None, hidden: int, batch: int):
    pl.seed_everything(0)
    module = SACModule.from_settings(hidden_dim=hidden, aux_losses=aux)
    data = ReplayDataModule(batch_size=batch, capacity=10_000, warmup_steps=2000)
    data.setup("fit", policy=lambda obs, gen: torch.zeros(1, 6), slice_length=module.required_slice_length)
    sample = data.next_batch()
    module.build(data.observation_shape, data.action_dim)
    return module, sample


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--aux", nargs="+", default=["{a2v: a2_winner_v}"])
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--updates", type=int, default=300)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    variants = {"sac": None, **{text: yaml.safe_load(text) for text in args.aux}}
    prepared_variants = {name: prepared(aux, args.hidden, args.batch) for name, aux in variants.items()}
    best = {name: 0.0 for name in variants}
    for _ in range(args.rounds):
        for name, (module, sample) in prepared_variants.items():
            best[name] = max(best[name], plain_loop(copy.deepcopy(module), sample, args.updates))
    print(f"threads={torch.get_num_threads()} hidden={args.hidden} batch={args.batch} updates={args.updates}")
    print("| variant | updates/s (best of rounds) | cost vs SAC |\n|---|---|---|")
    for name, value in best.items():
        print(f"| {name} | {value:.1f} | {best['sac'] / value:.2f}x |")
    print("target: A2-winner-v <= 1.5x")


if __name__ == "__main__":
    main()
