"""Updates/s of SACModule inside a Lightning Trainer vs a plain PyTorch loop over the same networks and batch.

Both run in this process with the same thread count, on one fixed sampled batch (so only the update path is
compared: Lightning's loop, hooks, logging and progress bar against a bare loop). Rounds alternate to spread
machine noise. Time is the process's CPU time (``time.process_time``): on a shared 2-core machine wall time swings
by 2x with other jobs, CPU time much less; with one thread it is the work done. ``--clock wall`` for wall time.

    python scripts/benchmark_throughput.py                      # state, 256-wide, batch 256 (CPU-sized)
    python scripts/benchmark_throughput.py --hidden 1024 --batch 512 --updates 100
    python scripts/benchmark_throughput.py --replay-ratio 2      # 2 updates per training_step, as at replay ratio 2

``--end-to-end`` measures P0 instead: ``a2ls fit`` on the learning benchmark's config (state cheetah-run, collection,
replay sampling, updates, logging; evaluation off) against ``scripts/sac_reference.py`` (a lean SAC with CleanRL's
structure on the same task, action repeat and warm-up), both in this process, one thread, rounds alternating;
updates/s after the first 200 updates of each (CPU time).

    python scripts/benchmark_throughput.py --end-to-end --updates 2000 --rounds 3
    python scripts/benchmark_throughput.py --end-to-end --set model.optim.fused_adam=true   # a setting on our side
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import tempfile
import time

import lightning.pytorch as pl
import torch

from a2ls_lightning import ReplayDataModule, SACModule


class _Repeat:
    def __init__(self, batch, n: int) -> None:
        self.batch, self.n = batch, n

    def __len__(self) -> int:
        return self.n

    def __iter__(self):
        for _ in range(self.n):
            yield self.batch


class FixedBatchData(pl.LightningDataModule):
    """Serves one real sampled batch over and over; no collection, no evaluation (only the update is timed)."""

    def __init__(self, source: ReplayDataModule, batch, n: int, group: int = 1) -> None:
        super().__init__()
        self.source, self.batch, self.n = source, batch, n
        self.observation_shape, self.action_dim = source.observation_shape, source.action_dim
        #: updates per training_step, as ReplayDataModule's at an integer replay ratio (``--replay-ratio``)
        self.updates_per_batch = group

    def train_dataloader(self):  # a sized iterable, as ReplayDataModule's
        return _Repeat(self.batch, self.n)

    def next_batch(self):  # the further batches of a group
        return self.batch

    transfer_batch_to_device = ReplayDataModule.transfer_batch_to_device

    def evaluate_if_due(self, policy) -> None:
        return None

    def counters(self):
        return self.source.counters()


CLOCK = {"cpu": time.process_time, "wall": time.perf_counter}
clock = CLOCK["cpu"]


def sac_update(module: SACModule, opt, batch, update: int, losses_fn=None, autocast=None) -> torch.Tensor:
    """One update of SACModule.training_step as bare PyTorch (fixed weights of 1); returns the total loss.

    ``losses_fn``: the learner's ``losses`` (default) or a compiled form; ``autocast``: a context for the forward.
    """
    hp, learner = module.sac, module.learner
    with autocast if autocast is not None else contextlib.nullcontext():
        main, aux, _ = (losses_fn or learner.losses)(batch, update_actor=update % hp.actor_update_freq == 0)
        total = main["critic"] + sum(aux.values()) + main.get("actor", 0.0) + main.get("temperature", 0.0)
    opt.zero_grad(set_to_none=True)
    total.backward()
    opt.step()
    if update % hp.target_update_freq == 0:
        learner.update_targets(hp.critic_tau, hp.encoder_tau)
    return total


def plain_loop(module: SACModule, batch, n: int) -> float:
    """The same update as SACModule.training_step, written as a bare loop; returns updates/s."""
    opt = module.configure_optimizers()
    start = clock()
    for update in range(n):
        sac_update(module, opt, batch, update)
    return n / (clock() - start)


def trainer_loop(module: SACModule, data: FixedBatchData, n: int, log_every: int = 50) -> float:
    # As the shipped configs run it: TensorBoard logging every 50 updates, a progress bar refreshed every 50.
    from lightning.pytorch.callbacks import TQDMProgressBar
    from lightning.pytorch.loggers import TensorBoardLogger

    trainer = pl.Trainer(max_steps=n, logger=TensorBoardLogger(tempfile.mkdtemp()), enable_checkpointing=False,
                         callbacks=[TQDMProgressBar(refresh_rate=50)], enable_model_summary=False,
                         accelerator="cpu", devices=1, log_every_n_steps=log_every)
    times = {}

    class Clock(pl.Callback):  # time the loop itself, not the Trainer's set-up
        def on_train_start(self, *_):
            times["start"] = clock()

        def on_train_end(self, *_):
            times["end"] = clock()

    trainer.callbacks.append(Clock())
    trainer.fit(module, data)
    return n / (times["end"] - times["start"])


def guard_cost(module: SACModule, batch, calls: int = 2000) -> float:
    """Seconds per ``guard.observe`` call on one real update's losses and gradients (its whole per-update cost)."""
    main, aux, _ = module.learner.losses(batch, update_actor=True)
    total = main["critic"] + sum(aux.values()) + main["actor"] + main["temperature"]
    total.backward()
    losses = {f"{k} loss": v for k, v in main.items()} | {f"aux {k} loss": v for k, v in aux.items()}
    grads = module._grads()
    for update in range(50):  # warm-up
        module.guard.observe(update, losses, grads)
    start = clock()
    for update in range(calls):
        module.guard.observe(update, losses, grads)
    return (clock() - start) / calls


def ours_end_to_end(updates: int, settings: list[str], skip: int = 200) -> float:
    """``a2ls fit``'s objects on the benchmark config (evaluation off): updates/s after the first ``skip``."""
    from pathlib import Path

    import yaml

    from a2ls_lightning.builder import instantiate

    root = Path(__file__).resolve().parents[1]
    config = yaml.safe_load((root / "configs" / "benchmark_cheetah_state_cpu.yaml").read_text())
    config["trainer"].update(max_steps=updates, default_root_dir=tempfile.mkdtemp())
    config["data"]["eval_episodes"] = 0
    for item in settings:  # "section.key=value", parsed as YAML
        dotted, value = item.split("=", 1)
        section, key = dotted.split(".", 1)
        config.setdefault(section, {})[key] = yaml.safe_load(value)
    cli = instantiate(config)
    times = {}

    class Clock(pl.Callback):
        def on_train_batch_end(self, trainer, *_):
            if trainer.global_step == skip:
                times["start"] = clock()

        def on_train_end(self, *_):
            times["end"] = clock()

    cli.trainer.callbacks.append(Clock())
    cli.trainer.fit(cli.model, cli.datamodule)
    return (updates - skip) / (times["end"] - times["start"])


def end_to_end(updates: int, rounds: int, settings: list[str]) -> None:
    """P0: ours ÷ the CleanRL-structured reference, rounds alternating (see the module docstring)."""
    import sac_reference

    ours, reference = [], []
    for _ in range(rounds):
        reference.append(sac_reference.run(updates, clock=clock))
        ours.append(ours_end_to_end(updates, settings))
    ratios = sorted(o / r for o, r in zip(ours, reference))
    print(f"end to end, state cheetah-run, {updates} updates (rate after 200), threads={torch.get_num_threads()}, "
          f"clock={clock.__name__}, settings={settings or 'the config'}")
    print("| loop | updates/s (best of rounds) | all rounds |\n|---|---|---|")
    for label, rounds in (("reference SAC (CleanRL's structure)", reference), ("a2ls fit, benchmark config", ours)):
        print(f"| {label} | {max(rounds):.1f} | {', '.join(f'{v:.1f}' for v in rounds)} |")
    print(f"P0 = ours / reference: median of round pairs {ratios[len(ratios) // 2]:.3f} (target >= 1.2)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--hidden", type=int, default=256)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--updates", type=int, default=600)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--aux", default=None, help="auxiliary losses, e.g. '{a2v: a2_winner_v}'")
    parser.add_argument("--clock", choices=sorted(CLOCK), default="cpu")
    parser.add_argument("--log-every", type=int, default=50, help="trainer.log_every_n_steps (quickstart: 50)")
    parser.add_argument("--guard", action="store_true",
                        help="also time the Trainer loop with the non-finite guard switched off: its overhead")
    parser.add_argument("--replay-ratio", type=int, default=1,
                        help="updates per training_step in the Trainer loop, as at this integer replay ratio")
    parser.add_argument("--end-to-end", action="store_true", help="P0: a2ls fit vs scripts/sac_reference.py")
    parser.add_argument("--set", nargs="*", default=[], metavar="SECTION.KEY=VALUE",
                        help="--end-to-end: settings of our side, e.g. model.optim.fused_adam=true data.replay_ratio=2")
    args = parser.parse_args()
    global clock
    clock = CLOCK[args.clock]
    if args.end_to_end:
        torch.set_num_threads(1)
        end_to_end(args.updates, args.rounds, args.set)
        return
    pl.seed_everything(0)
    aux = None
    if args.aux:
        import yaml

        aux = yaml.safe_load(args.aux)
    source = ReplayDataModule(batch_size=args.batch, capacity=10_000, warmup_steps=2000)
    base = SACModule.from_settings(hidden_dim=args.hidden, aux_losses=aux)
    source.setup("fit", policy=lambda obs, gen: torch.zeros(1, 6), slice_length=base.required_slice_length)
    batch = source.next_batch()
    base.build(source.observation_shape, source.action_dim)
    results = {"plain": [], "trainer": [], "no_guard": []}
    for _ in range(args.rounds):
        results["plain"].append(plain_loop(copy.deepcopy(base), batch, args.updates))
        module = copy.deepcopy(base)
        data = FixedBatchData(source, batch, args.updates, args.replay_ratio)
        results["trainer"].append(trainer_loop(module, data, args.updates, args.log_every))
        if args.guard:
            module = copy.deepcopy(base)
            module.guard.observe = lambda *a, **k: True  # the update without the guard's device ops
            module.guard.check = lambda *a, **k: None
            data = FixedBatchData(source, batch, args.updates)
            results["no_guard"].append(trainer_loop(module, data, args.updates, args.log_every))
    plain, lightning = max(results["plain"]), max(results["trainer"])
    # Rounds alternate, so a round pair shares the machine's load: the median of per-pair ratios is robust.
    pair_ratios = sorted(t / p for t, p in zip(results["trainer"], results["plain"]))
    print(f"replay ratio {args.replay_ratio} ({args.replay_ratio} updates per training_step)")
    print(f"threads={torch.get_num_threads()} hidden={args.hidden} batch={args.batch} updates={args.updates} "
          f"rounds={args.rounds} aux={args.aux} clock={args.clock} log_every_n_steps={args.log_every}")
    print("| loop | updates/s (best of rounds) | all rounds |\n|---|---|---|")
    for name, best in (("plain PyTorch", plain), ("SACModule in Trainer", lightning)):
        key = "plain" if name.startswith("plain") else "trainer"
        print(f"| {name} | {best:.1f} | {', '.join(f'{v:.1f}' for v in results[key])} |")
    print(f"ratio Trainer / plain: best-of {lightning / plain:.3f}, median of round pairs "
          f"{pair_ratios[len(pair_ratios) // 2]:.3f} (target >= 0.95; >= 0.97 at replay ratio >= 2)")
    if args.guard:
        print(f"guard.observe alone: {guard_cost(copy.deepcopy(base), batch) * 1e6:.0f} us per update "
              f"({100 * guard_cost(copy.deepcopy(base), batch) * lightning:.2f}% of an update at {lightning:.1f}/s)")
        costs = sorted(off / on - 1 for on, off in zip(results["trainer"], results["no_guard"]))
        print(f"| SACModule in Trainer, guard off | {max(results['no_guard']):.1f} | "
              f"{', '.join(f'{v:.1f}' for v in results['no_guard'])} |")
        print(f"non-finite guard overhead per update: median of round pairs {100 * costs[len(costs) // 2]:.1f}% "
              f"(best-of {100 * (max(results['no_guard']) / lightning - 1):.1f}%; target <= 2%)")


if __name__ == "__main__":
    main()
