"""Cost of one update with adaptive auxiliary weighting, against fixed weights.

Shape of a state-based SAC critic update with five auxiliary losses: an encoder (MLP obs 17 → 40 → 50 +
LayerNorm) shared by a twin-Q main head (2x256 MLPs on [features, action 6]) and five auxiliary heads
(Linear(50, 100) → BatchNorm1d → ReLU → Linear(100, 50)), batch 256, one Adam over everything. One update
= forward, ``combine`` (the real callback code), backward, Adam step, ``after_update``.

    python scripts/benchmark_olaux_cost.py [--rounds 25] [--updates 10] [--threads 2] [--clock wall]

Prints milliseconds per update (median over rounds, the rules interleaved within each round so that
machine noise hits them alike) and the ratio to FixedWeights. On a machine shared with other jobs,
``--threads 1 --clock cpu`` (this process's CPU time) is the steadier measure.

``--module`` times the whole update as users run it instead: ``SACModule.training_step`` (critic with the five
auxiliary losses of the learning benchmark, actor, temperature, target EMA, logging) inside a real ``Trainer``,
on one batch sampled from a real state cheetah-run replay, the CPU-sized networks of
``configs/benchmark_cheetah_state_cpu.yaml``.

    python scripts/benchmark_olaux_cost.py --module --threads 1 --clock cpu --rounds 5 --updates 300

``--module`` also times the per-example rules, their held-out batches drawn from the real replay: ``RLAux`` with
per-example credit (its default: a held-out critic forward and backward, and a double backward through the auxiliary
losses, on every ``reward_every``-th update) at ``reward_every=4`` and 1, with ``credit="batch"`` (two held-out
critic evaluations per rewarded update), and ``LookaheadWeights`` at ``credit_every=4`` and 1.
"""

from __future__ import annotations

import argparse
import logging
import statistics
import time
import warnings
import weakref

import torch
from torch import nn

from a2ls_lightning.callbacks import (
    AuxWeighting,
    CosineGating,
    FixedWeights,
    GradientBalancing,
    LookaheadWeights,
    OLAux,
    RLAux,
)

OBS, ACTION, FEATURES, AUX_LOSSES, BATCH = 17, 6, 50, 5, 256


class Problem(nn.Module):
    """The networks and one fixed batch; ``losses()`` → (critic loss, {name: aux loss})."""

    def __init__(self) -> None:
        super().__init__()
        self.encoder = nn.Sequential(nn.Linear(OBS, 40), nn.ReLU(), nn.Linear(40, FEATURES), nn.LayerNorm(FEATURES))
        self.q1, self.q2 = self._q(), self._q()
        self.heads = nn.ModuleList(
            nn.Sequential(nn.Linear(FEATURES, 2 * FEATURES), nn.BatchNorm1d(2 * FEATURES), nn.ReLU(),
                          nn.Linear(2 * FEATURES, FEATURES)) for _ in range(AUX_LOSSES))
        self.obs, self.next_obs = torch.randn(BATCH, OBS), torch.randn(BATCH, OBS)
        self.action, self.target_q = torch.randn(BATCH, ACTION), torch.randn(BATCH, 1)

    @staticmethod
    def _q() -> nn.Module:
        return nn.Sequential(nn.Linear(FEATURES + ACTION, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(),
                             nn.Linear(256, 1))

    def losses(self) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        features = self.encoder(self.obs)  # [B, 50]
        critic_input = torch.cat([features, self.action], dim=-1)  # [B, 56]
        critic = sum((q(critic_input) - self.target_q).pow(2).mean() for q in (self.q1, self.q2))
        with torch.no_grad():
            target = self.encoder(self.next_obs)  # stands in for the EMA target encoder
        aux = {f"aux{i}": (head(features) - target).pow(2).mean() for i, head in enumerate(self.heads)}
        return critic, aux


class StandInTrainer:
    """What OLAux reads of its Trainer: the update count and the logging interval (its cosines are computed
    only in the windows a log step reports)."""

    def __init__(self, log_every_n_steps: int) -> None:
        self.log_every_n_steps, self.global_step = log_every_n_steps, 0


def make_update(rule: AuxWeighting, seed: int = 0):
    torch.manual_seed(seed)
    problem = Problem()
    optimizer = torch.optim.Adam(problem.parameters(), lr=1e-4)
    shared = list(problem.encoder.parameters())
    trainer = getattr(rule, "stand_in_trainer", None)

    def update() -> None:
        main, aux = problem.losses()
        total = rule.combine(main, aux, shared)
        optimizer.zero_grad(set_to_none=True)
        total.backward()
        optimizer.step()
        rule.after_update()
        if trainer is not None:
            trainer.global_step += 1

    return update


def _logged_every(steps: int, rule: OLAux) -> OLAux:
    """``rule`` as under a Trainer that logs every ``steps`` updates (the quickstart: 50)."""
    rule.stand_in_trainer = StandInTrainer(steps)
    rule._trainer = weakref.ref(rule.stand_in_trainer)
    return rule


RULES = {
    "FixedWeights": lambda: FixedWeights(1.0),
    "GradientBalancing": lambda: GradientBalancing(),
    "OLAux (per_loss)": lambda: _logged_every(50, OLAux()),
    "OLAux (per_loss; cos every window)": lambda: OLAux(),
    "OLAux (batched)": lambda: OLAux(gradient_method="batched"),
    "CosineGating (per_loss)": lambda: CosineGating(),
    "CosineGating (batched)": lambda: CosineGating(gradient_method="batched"),
}


FIVE = {"fwd": "forward_dynamics", "inv": "inverse_dynamics", "rew": "reward_prediction",
        "rec": "state_reconstruction", "a2v": "a2_winner_v"}
MODULE_RULES = {"FixedWeights": lambda: FixedWeights(1.0), "OLAux": lambda: OLAux(),
                "RLAux (default: example, every 4)": lambda: RLAux(),
                "RLAux (example, reward_every=1)": lambda: RLAux(reward_every=1),
                "RLAux (credit=batch, every 4)": lambda: RLAux(credit="batch", initial_weight=None),
                "LookaheadWeights (default: every 4)": lambda: LookaheadWeights(),
                "LookaheadWeights (credit_every=1)": lambda: LookaheadWeights(credit_every=1)}


def module_rounds(rounds: int, updates: int, clock) -> dict[str, list[float]]:
    """Milliseconds per ``SACModule.training_step`` in a Trainer, per rule and round (rules alternate)."""
    import copy
    import tempfile

    import lightning.pytorch as pl

    # a sibling script's data module: one real batch, served over and over
    from benchmark_throughput import FixedBatchData
    from lightning.pytorch.loggers import TensorBoardLogger

    from a2ls_lightning import ReplayDataModule, SACModule

    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)  # no per-fit banner: only the table
    warnings.filterwarnings("ignore")
    pl.seed_everything(0, verbose=False)
    source = ReplayDataModule(batch_size=BATCH, capacity=10_000, warmup_steps=2000)
    base = SACModule.from_settings(hidden_dim=256, aux_losses=dict(FIVE))
    source.setup("fit", policy=lambda obs, gen: torch.zeros(1, 6), slice_length=base.required_slice_length)
    batch = source.next_batch()
    base.build(source.observation_shape, source.action_dim)
    times: dict[str, list[float]] = {name: [] for name in MODULE_RULES}

    class WithReplay(FixedBatchData):  # RLAux's held-out batches come from the real replay
        replay = source.replay

    class Clock(pl.Callback):  # the loop itself, not the Trainer's set-up
        def on_train_start(self, *_):
            self.start = clock()

        def on_train_end(self, *_):
            self.seconds = clock() - self.start

    for _ in range(rounds):
        for name, rule in MODULE_RULES.items():
            timer = Clock()
            trainer = pl.Trainer(max_steps=updates, logger=TensorBoardLogger(tempfile.mkdtemp()),
                                 enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False,
                                 accelerator="cpu", devices=1, log_every_n_steps=50, callbacks=[rule(), timer])
            trainer.fit(copy.deepcopy(base), WithReplay(source, batch, updates))
            times[name].append(timer.seconds / updates * 1e3)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=25, help="timing rounds (the median is reported)")
    parser.add_argument("--updates", type=int, default=10, help="updates per rule and round")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall-clock time, or this process's CPU time (steadier on a busy machine)")
    parser.add_argument("--rules", default=",".join(RULES), help=f"comma-separated subset of: {', '.join(RULES)}")
    parser.add_argument("--module", action="store_true",
                        help="time SACModule.training_step in a Trainer (FixedWeights vs OLAux vs the per-example rules)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    if args.module:
        times = module_rounds(args.rounds, args.updates, clock)
        print(f"SACModule.training_step in a Trainer: {len(FIVE)} auxiliary losses, hidden 256, batch {BATCH}, "
              f"{torch.get_num_threads()} threads, {args.clock} clock, {args.rounds} rounds x {args.updates} updates, "
              f"torch {torch.__version__}")
        _report(times)
        return
    chosen = ["FixedWeights", *(name for name in args.rules.split(",") if name != "FixedWeights")]
    unknown = sorted(set(chosen) - set(RULES))
    if unknown:
        parser.error(f"--rules: unknown {unknown}; allowed: {', '.join(RULES)}")
    updates = {name: make_update(RULES[name]()) for name in chosen}
    for update in updates.values():  # warm-up
        for _ in range(20):
            update()
    times: dict[str, list[float]] = {name: [] for name in updates}
    for _ in range(args.rounds):
        for name, update in updates.items():
            start = clock()
            for _ in range(args.updates):
                update()
            times[name].append((clock() - start) / args.updates * 1e3)
    print(f"{AUX_LOSSES} auxiliary losses, batch {BATCH}, {torch.get_num_threads()} threads, {args.clock} clock, "
          f"{args.rounds} rounds x {args.updates} updates, torch {torch.__version__}")
    _report(times)


def _report(times: dict[str, list[float]]) -> None:
    print(f"{'rule':<36}{'ms/update':>10}{'x fixed':>9}  {'x fixed, quartiles of rounds':>28}")
    for name, values in times.items():
        # the ratio is taken within each round (rules timed back to back) before the median: load that
        # comes and goes on a shared machine then cancels out; the quartiles show how much it still moves
        ratios = [v / f for v, f in zip(values, times["FixedWeights"])]
        low, _, high = statistics.quantiles(ratios, n=4) if len(ratios) > 1 else ratios * 3
        print(f"{name:<36}{statistics.median(values):>10.2f}{statistics.median(ratios):>9.3f}  "
              f"{low:>13.3f} - {high:.3f}")


if __name__ == "__main__":
    main()
