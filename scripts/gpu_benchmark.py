"""Updates/s of one SAC update (losses + backward + Adam step) on one fixed real batch; prints one Markdown row.

Timing is a plain PyTorch loop over the module's own pieces (``SACModule.losses_fn``, which is
``learner.losses`` or its ``torch.compile``'d form with ``--compile``, then backward, Adam step, EMA targets), not
a Lightning Trainer: only the update is timed (no collection, no logging). ``--precision bf16-mixed`` runs the
losses under ``torch.autocast(bfloat16)`` as Lightning's ``bf16-mixed`` does. ``--cudagraphs`` times the
module's whole-update function (:class:`a2ls_lightning.modules.graphed.GraphedUpdate`: losses, backward, Adam
with ``capturable=True``, EMA), captured as CUDA graphs (uncaptured without CUDA). Wall clock, with a device
synchronize around the timed loop; warm-up updates (compilation and capture included) are not timed.

    python scripts/gpu_benchmark.py --device cuda --hidden 1024 --batch 512 --updates 200
    python scripts/gpu_benchmark.py --device cuda --pixels --batch 512 --compile
    python scripts/gpu_benchmark.py --device cuda --modes fp32,bf16,compiled,graphs,compiled+graphs --header
"""

from __future__ import annotations

import argparse
import contextlib
import os
import sys
import time
import warnings
from pathlib import Path

import lightning.pytorch as pl
import torch

sys.path.insert(0, str(Path(__file__).parent))
from benchmark_throughput import sac_update

from a2ls_lightning import ReplayDataModule, SACModule
from a2ls_lightning.weighting import UnitWeights

warnings.filterwarnings("ignore", message=".*LeafSpec.*")


def make(args) -> tuple[SACModule, object]:
    pl.seed_everything(0)
    data_kwargs = {"batch_size": args.batch, "capacity": 10_000, "warmup_steps": args.warmup_steps}
    model_kwargs = {"hidden_dim": args.hidden, "compile": args.compile, "cudagraphs": args.cudagraphs}
    if args.pixels:
        data_kwargs.update(from_pixels=True, image_size=args.image_size, frame_stack=3)
        model_kwargs.update(encoder="pixel", crop_size=args.crop_size)
    source = ReplayDataModule(**data_kwargs)
    module = SACModule.from_settings(**model_kwargs)
    source.setup("fit", policy=lambda obs, gen: torch.zeros(1, 6), slice_length=module.required_slice_length)
    batch = source.next_batch().to(args.device)
    module.build(source.observation_shape, source.action_dim)
    module.to(args.device)
    return module, batch


def updates_per_second(module: SACModule, batch, args) -> float:
    opt = module.configure_optimizers()
    device = torch.device(args.device)
    autocast = (torch.autocast(device.type, dtype=torch.bfloat16) if args.precision == "bf16-mixed"
                else contextlib.nullcontext())

    hp = module.sac

    def update(i: int) -> torch.Tensor:
        return sac_update(module, opt, batch, i, losses_fn=module.losses_fn, autocast=autocast)

    warmup = args.warmup_updates
    if args.cudagraphs:  # the same update (fixed weights of 1) as the module's captured one
        graphed = module.graphed_update(opt, UnitWeights())
        # each update kind (actor or not, targets or not) warms up 3 times, then is captured
        warmup = max(warmup, 4 * hp.actor_update_freq * hp.target_update_freq)

        def update(i: int) -> torch.Tensor:
            main, _, _, _ = graphed(batch, i % hp.actor_update_freq == 0, i % hp.target_update_freq == 0)
            return main["critic"]

    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    for i in range(warmup):  # both actor / no-actor graphs compiled (and captured) here
        update(i)
    sync()
    start = time.perf_counter()
    for i in range(args.updates):
        total = update(i)
    sync()
    elapsed = time.perf_counter() - start
    if not torch.isfinite(total.detach().float()).item():
        raise SystemExit(f"non-finite loss {total.item()}")
    return args.updates / elapsed


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda")
    parser.add_argument("--hidden", type=int, default=1024)
    parser.add_argument("--batch", type=int, default=512)
    parser.add_argument("--updates", type=int, default=200)
    parser.add_argument("--warmup-updates", type=int, default=4)
    parser.add_argument("--warmup-steps", type=int, default=600, help="env steps collected before the batch")
    parser.add_argument("--pixels", action="store_true", help="pixel observations (CURL sizes)")
    parser.add_argument("--image-size", type=int, default=100)
    parser.add_argument("--crop-size", type=int, default=84)
    parser.add_argument("--precision", choices=["32", "bf16-mixed"], default="32")
    parser.add_argument("--compile", action="store_true", help="SACModule runtime.compile=true")
    parser.add_argument("--cudagraphs", action="store_true", help="SACModule runtime.cudagraphs=true: the whole update")
    parser.add_argument("--modes", default=None, help="several rows in one process (saves start-up): comma list "
                        "of fp32,bf16,compiled,graphs,compiled+graphs")
    parser.add_argument("--header", action="store_true", help="print the table header first")
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        raise SystemExit("--device cuda: no CUDA device here (use --device cpu)")
    if args.device == "cpu":
        torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", "1")))
    if args.header:
        print("| observations | mode | device | hidden | batch | updates/s |\n|---|---|---|---|---|---|", flush=True)
    runs = [(args.precision, args.compile, args.cudagraphs)]
    if args.modes:
        table = {"fp32": ("32", False, False), "bf16": ("bf16-mixed", False, False), "compiled": ("32", True, False),
                 "graphs": ("32", False, True), "compiled+graphs": ("32", True, True)}
        unknown = [m for m in args.modes.split(",") if m.strip() not in table]
        if unknown:
            parser.error(f"--modes: unknown {unknown}; allowed: {', '.join(table)}")
        runs = [table[m.strip()] for m in args.modes.split(",")]
    for args.precision, args.compile, args.cudagraphs in runs:
        module, batch = make(args)
        rate = updates_per_second(module, batch, args)
        mode = ("eager bf16-mixed" if args.precision == "bf16-mixed" else
                {(False, False): "eager fp32", (True, False): "compiled", (False, True): "CUDA graphs",
                 (True, True): "compiled + CUDA graphs"}[(args.compile, args.cudagraphs)])
        obs = f"pixels {args.image_size}->{args.crop_size}" if args.pixels else "state"
        print(f"| {obs} | {mode} | {args.device} | {args.hidden} | {args.batch} | {rate:.1f} |", flush=True)


if __name__ == "__main__":
    main()
