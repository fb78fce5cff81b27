"""Cost of one update with adaptive auxiliary weighting, against fixed weights.

Shape of a state-based SAC critic update with five auxiliary losses: an encoder (MLP obs 17 → 40 → 50 +
LayerNorm) shared by a twin-Q main head (2x256 MLPs on [features, action 6]) and five auxiliary heads
(Linear(50, 100) → BatchNorm1d → ReLU → Linear(100, 50)), batch 256, one Adam over everything. One update
= forward, ``combine`` (the real callback code), backward, Adam step, ``after_update``.

    python scripts/benchmark_olaux_cost.py [--rounds 25] [--updates 10] [--threads 2] [--clock wall]

Prints milliseconds per update (median over rounds, the rules interleaved within each round so that
machine noise hits them alike) and the ratio to FixedWeights. On a machine shared with other jobs,
``--threads 1 --clock cpu`` (this process's CPU time) is the steadier measure.
"""

from __future__ import annotations

import argparse
import statistics
import time
import weakref

import torch
from torch import nn

from a2ls_lightning.callbacks import (
    AuxWeighting,
    CosineGating,
    FixedWeights,
    GradientBalancing,
    OLAux,
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=25, help="timing rounds (the median is reported)")
    parser.add_argument("--updates", type=int, default=10, help="updates per rule and round")
    parser.add_argument("--threads", type=int, default=2, help="torch CPU threads")
    parser.add_argument("--clock", choices=("wall", "cpu"), default="wall",
                        help="wall-clock time, or this process's CPU time (steadier on a busy machine)")
    parser.add_argument("--rules", default=",".join(RULES), help=f"comma-separated subset of: {', '.join(RULES)}")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    chosen = ["FixedWeights", *(name for name in args.rules.split(",") if name != "FixedWeights")]
    unknown = sorted(set(chosen) - set(RULES))
    if unknown:
        parser.error(f"--rules: unknown {unknown}; allowed: {', '.join(RULES)}")
    updates = {name: make_update(RULES[name]()) for name in chosen}
    for update in updates.values():  # warm-up
        for _ in range(20):
            update()
    clock = time.perf_counter if args.clock == "wall" else time.process_time
    times: dict[str, list[float]] = {name: [] for name in updates}
    for _ in range(args.rounds):
        for name, update in updates.items():
            start = clock()
            for _ in range(args.updates):
                update()
            times[name].append((clock() - start) / args.updates * 1e3)
    print(f"{AUX_LOSSES} auxiliary losses, batch {BATCH}, {torch.get_num_threads()} threads, {args.clock} clock, "
          f"{args.rounds} rounds x {args.updates} updates, torch {torch.__version__}")
    print(f"{'rule':<26}{'ms/update':>10}{'x fixed':>9}")
    for name, values in times.items():
        # the ratio is taken within each round (rules timed back to back) before the median: load that
        # comes and goes on a shared machine then cancels out
        ratio = statistics.median(v / f for v, f in zip(values, times["FixedWeights"]))
        print(f"{name:<26}{statistics.median(values):>10.2f}{ratio:>9.2f}")


if __name__ == "__main__":
    main()
