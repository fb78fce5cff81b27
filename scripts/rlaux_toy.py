"""RL-AUX on its home ground, in miniature: a synthetic hierarchical classification shaped like CIFAR-100-20,
trained through the public weighting contract with a real ``lightning.Trainer`` on the CPU.

Data (fixed by ``--data-seed``, the same for every run): 20 superclasses × 5 subclasses. Each subclass is a Gaussian
cluster (std ``SIGMA``) around a centre drawn from N(0, I) in ``D_INFO`` informative dimensions; the 5 centres of a
superclass are independent draws, so a superclass is a union of 5 scattered clusters (not linearly separable) that
becomes easy once the clusters are learned. ``D_NOISE`` pure N(0, 1) noise dimensions are appended. Per subclass:
``N_TRAIN`` training examples, ``N_HELDOUT`` held-out ones (RL-AUX's reward batches are drawn from them) and
``N_TEST`` test ones. The subclass labels thus carry information the superclass labels do not (which of the
5 clusters an example is in), and there are few training examples per class, so an auxiliary task can help.

Model: a plain ``LightningModule`` (no SAC): a shared MLP trunk, a primary head (20) and an auxiliary head (100 slots,
5 per superclass). As in the authors' code the auxiliary logits of the other superclasses' slots are set to -inf
before the cross-entropy, so an auxiliary label only says which of its superclass's 5 slots the example is in.
The module follows the weighting contract: ``shared_parameters()`` (the trunk), per-example auxiliary losses ``[B]``
through ``self.aux_weighting.combine(..., example_features=trunk_features.detach())``, ``heldout_main_loss(resample)``
(the primary loss on a batch of ``HELDOUT_BATCH`` held-out examples; the same batch when ``resample=False``), and
one label slot set, ``aux_label_slots() == {"aux": 100}``, with the allowed mask = the 5 slots of the example's
superclass.

Variants (same epochs, batch 100 as the authors, Adam 1e-3 for all):

- single task: no auxiliary loss;
- human labels: the true subclass, ``FixedWeights(1.0)``;
- random fixed labels: a random slot among the superclass's 5, drawn once per example (per seed), ``FixedWeights(1.0)``;
- RL-AUX labels: ``RLAux(mode="labels", reward_every=1)`` (equal weight 1; credit every update: the toy is
  cheap, and its table was measured so), the package defaults otherwise (per-example credit);
- RL-AUX labels + weights: ``RLAux(mode="labels+weights", reward_every=1)``;
- human labels ×4: the true subclass, ``FixedWeights(4.0)`` (the paper's "part of the gain is a larger weight");
- human labels, look-ahead weights: the true subclass, ``LookaheadWeights(credit_every=1)`` (the direct rule on the
  same per-example credit as RL-AUX's default).

Accuracy: primary (superclass) accuracy on the test set after each of the last ``LAST`` epochs, averaged (the paper
averages its last 15 epochs); the table reports its mean ± std over seeds and also the final epoch's.

Diagnostics: the mean auxiliary weight applied over training; for the label variants, how the labels relate to the
true subclasses (normalised mutual information within each superclass, averaged over the 20, of the greedy label
of each training example vs its subclass; 1 = the subclasses up to a renaming of the slots); the label policy's
concentration at the end (mean Σ_k p_k² over the training set: the chance that two draws for one example agree,
0.2 for a uniform choice among 5) and the RL-AUX reward statistics (the held-out loss before − after each update).

Diagnostic variants (``--extra``): per-example RL-AUX weights on the true labels, their fixed-weight control at the
grid's mean factor (6.28), and the two label modes with a 33x faster policy (``lr=1e-2``). Results and the
discussion: docs/benchmark_rlaux.md.

    python scripts/rlaux_toy.py [--seeds 5] [--epochs 60] [--extra] [--figure docs/benchmark_rlaux_toy.png]
"""

from __future__ import annotations

import os

os.environ.setdefault("OMP_NUM_THREADS", "1")

import argparse
import logging
import math
import sys
import time
import warnings
from dataclasses import dataclass, field

import lightning.pytorch as pl
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from a2ls_lightning.callbacks import FixedWeights, LookaheadWeights, RLAux
from a2ls_lightning.callbacks.weighting import default_weighting

N_SUPER, N_SUB = 20, 5
N_SLOTS = N_SUPER * N_SUB
D_INFO, D_NOISE, SIGMA = 8, 32, 0.5
N_TRAIN, N_HELDOUT, N_TEST = 20, 10, 100  # per subclass: 2000 / 1000 / 10000 examples
BATCH, HELDOUT_BATCH, HIDDEN, LR = 100, 256, 128, 1e-3
LAST = 5  # test accuracy: mean over the last LAST epochs
GRID_MEAN = sum(2 ** (8 * k / 20 - 3) for k in range(21)) / 21  # 6.28

VARIANTS = {  # name → (auxiliary labels, weighting callback factory)
    "single task": (None, None),
    "human labels": ("human", lambda seed: FixedWeights(1.0)),
    "random fixed labels": ("random", lambda seed: FixedWeights(1.0)),
    "RL-AUX labels (equal weight)": ("rlaux", lambda seed: RLAux(mode="labels", reward_every=1, seed=seed)),
    "RL-AUX labels + weights": ("rlaux", lambda seed: RLAux(mode="labels+weights", reward_every=1, seed=seed)),
    "human labels, weight ×4": ("human", lambda seed: FixedWeights(4.0)),
    # the direct rule on the same per-example credit (it learns weights, not labels: on the true labels)
    "human labels, look-ahead weights": ("human", lambda seed: LookaheadWeights(credit_every=1, seed=seed)),
}
EXTRA_VARIANTS = {  # diagnostics (--extra): weights alone on the true labels and their control; a 33x faster policy
    "human labels, RL-AUX weights": ("human", lambda seed: RLAux(mode="weights", reward_every=1, seed=seed)),
    # the mean factor of the default grid, 2^(8k/20 − 3) for k = 0…20: what a uniform weight policy applies
    "human labels, weight ×6.28 (grid mean)": ("human", lambda seed: FixedWeights(GRID_MEAN)),
    "RL-AUX labels, policy lr 1e-2": ("rlaux", lambda seed: RLAux(mode="labels", lr=1e-2, reward_every=1, seed=seed)),
    "RL-AUX labels + weights, policy lr 1e-2": ("rlaux", lambda seed: RLAux(mode="labels+weights", lr=1e-2,
                                                                           reward_every=1, seed=seed)),
    "RL-AUX labels + weights, version 0.3 (batch credit, uniform start)": (
        "rlaux", lambda seed: RLAux(mode="labels+weights", credit="batch", initial_weight=None, reward_every=1,
                                    seed=seed)),
}
VARIANTS.update(EXTRA_VARIANTS)
DEFAULT_VARIANTS = [v for v in VARIANTS if v not in EXTRA_VARIANTS]


@dataclass
class Split:
    x: Tensor  # [N, D_INFO + D_NOISE]
    sub: Tensor  # [N] true subclass slot in [0, 100): superclass = sub // 5

    @property
    def sup(self) -> Tensor:
        return self.sub // N_SUB


def make_data(seed: int) -> tuple[Split, Split, Split]:
    """Train, held-out and test splits (see the module docstring)."""
    g = torch.Generator().manual_seed(seed)
    centres = torch.randn(N_SLOTS, D_INFO, generator=g)

    def draw(n: int) -> Split:
        sub = torch.arange(N_SLOTS).repeat_interleave(n)
        x = centres[sub] + SIGMA * torch.randn(len(sub), D_INFO, generator=g)
        return Split(torch.cat([x, torch.randn(len(sub), D_NOISE, generator=g)], 1), sub)

    return draw(N_TRAIN), draw(N_HELDOUT), draw(N_TEST)


def allowed_slots(sup: Tensor) -> Tensor:
    """``[B]`` superclasses → ``[B, 100]`` bool: the 5 slots of each example's superclass."""
    return (torch.arange(N_SLOTS)[None, :] // N_SUB) == sup[:, None]


class HierarchicalModule(pl.LightningModule):
    """Shared trunk, primary head (20), masked auxiliary head (100 slots); the weighting contract's hooks."""

    per_example_losses = True  # [B] auxiliary losses and example_features go to combine

    def __init__(self, data: tuple[Split, Split, Split], aux_labels: str | None, seed: int, epochs: int) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.train_split, self.heldout_split, self.test_split = data
        self.aux_labels, self.seed, self.epochs = aux_labels, seed, epochs
        torch.manual_seed(seed)
        dim = self.train_split.x.shape[1]
        self.trunk = nn.Sequential(nn.Linear(dim, HIDDEN), nn.ReLU(), nn.Linear(HIDDEN, HIDDEN), nn.ReLU())
        self.primary_head = nn.Linear(HIDDEN, N_SUPER)
        self.aux_head = nn.Linear(HIDDEN, N_SLOTS)
        self.aux_weighting = default_weighting()  # replaced by the weighting callback, if any
        g = torch.Generator().manual_seed(10_000 + seed)
        # random fixed labels: one slot among the superclass's 5 per training example, drawn once
        self.random_labels = self.train_split.sup * N_SUB + torch.randint(0, N_SUB, (len(self.train_split.sub),),
                                                                          generator=g)
        self.heldout_generator = torch.Generator().manual_seed(20_000 + seed)
        self._heldout_idx: Tensor | None = None
        self.test_accuracy: list[float] = []  # after each epoch
        self.trace: list[dict[str, float]] = []  # per update: RL-AUX metrics (weights, reward, entropy)

    # --- the weighting contract ------------------------------------------------------------------------------
    def shared_parameters(self) -> list[nn.Parameter]:
        return list(self.trunk.parameters())

    def aux_loss_names(self) -> list[str]:
        return ["aux"] if self.aux_labels else []

    def aux_label_slots(self) -> dict[str, int]:
        return {"aux": N_SLOTS}

    def heldout_main_loss(self, resample: bool = True, with_graph: bool = False) -> Tensor:
        """Primary cross-entropy on ``HELDOUT_BATCH`` held-out examples (the same ones when ``resample=False``;
        differentiable when ``with_graph``, for per-example credit)."""
        if resample or self._heldout_idx is None:
            self._heldout_idx = torch.randperm(len(self.heldout_split.sub), generator=self.heldout_generator)[
                :HELDOUT_BATCH]
        idx = self._heldout_idx
        with torch.set_grad_enabled(with_graph):
            logits = self.primary_head(self.trunk(self.heldout_split.x[idx]))
            return F.cross_entropy(logits, self.heldout_split.sup[idx])

    # --- training --------------------------------------------------------------------------------------------
    def training_step(self, batch: Tensor, batch_idx: int) -> None:
        (idx,) = batch
        x, sub = self.train_split.x[idx], self.train_split.sub[idx]
        sup = sub // N_SUB
        features = self.trunk(x)  # [B, HIDDEN]
        main = F.cross_entropy(self.primary_head(features), sup)
        aux = {}
        if self.aux_labels:
            mask = allowed_slots(sup)  # [B, 100]
            if self.aux_labels == "human":
                labels = sub
            elif self.aux_labels == "random":
                labels = self.random_labels[idx]
            else:  # the agent picks among the superclass's 5 slots
                labels = self.aux_weighting.choose_labels("aux", features.detach(), mask)
            logits = self.aux_head(features).masked_fill(~mask, float("-inf"))  # the authors' masking
            aux["aux"] = F.cross_entropy(logits, labels, reduction="none")  # [B]
        total = self.aux_weighting.combine(main, aux, self.shared_parameters(), example_features=features.detach())
        optimizer = self.optimizers()
        optimizer.zero_grad()
        self.manual_backward(total)
        optimizer.step()

    def on_train_batch_end(self, outputs, batch, batch_idx) -> None:
        # module hooks run after the callbacks': RLAux.after_update (the reward, the policy step) is done
        if self.aux_labels:
            values = self.aux_weighting.metrics()
            self.trace.append({"weight": values.get("aux_weight/aux", 1.0), "reward": values.get("rlaux/reward"),
                               "entropy": values.get("rlaux/entropy")})

    def on_train_epoch_end(self) -> None:
        with torch.no_grad():
            logits = self.primary_head(self.trunk(self.test_split.x))
            self.test_accuracy.append(float((logits.argmax(1) == self.test_split.sup).float().mean()))

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=LR)

    def train_dataloader(self):
        indices = torch.utils.data.TensorDataset(torch.arange(len(self.train_split.sub)))
        return torch.utils.data.DataLoader(indices, batch_size=BATCH, shuffle=True,
                                           generator=torch.Generator().manual_seed(30_000 + self.seed))

    # --- diagnostics -----------------------------------------------------------------------------------------
    def greedy_labels(self) -> tuple[Tensor, Tensor]:
        """The label each training example gets now (the greedy choice for RL-AUX) and, for RL-AUX, the policy's
        probabilities over the allowed slots ``[N, 100]`` (else ``None``)."""
        split = self.train_split
        if self.aux_labels == "human":
            return split.sub, None
        if self.aux_labels == "random":
            return self.random_labels, None
        with torch.no_grad():
            features = self.trunk(split.x)
            logits = self.aux_weighting.policy.label_logits("aux", features).masked_fill(
                ~allowed_slots(split.sup), float("-inf"))
            p = torch.softmax(logits, -1)
        return p.argmax(-1), p


def nmi_within_superclass(labels: Tensor, sub: Tensor) -> float:
    """Mean over superclasses of NMI(labels, subclass) (arithmetic normalisation, as scikit-learn's default; 0
    where either side is constant)."""
    values = []
    for s in range(N_SUPER):
        keep = sub // N_SUB == s
        a, b = labels[keep] % N_SUB, sub[keep] % N_SUB
        joint = torch.zeros(N_SUB, N_SUB, dtype=torch.float64)
        joint.index_put_((a, b), torch.ones(len(a), dtype=torch.float64), accumulate=True)
        joint /= joint.sum()
        pa, pb = joint.sum(1), joint.sum(0)
        nz = joint > 0
        mi = float((joint[nz] * (joint[nz] / (pa[:, None] * pb[None, :])[nz]).log()).sum())
        ha = -float((pa[pa > 0] * pa[pa > 0].log()).sum())
        hb = -float((pb[pb > 0] * pb[pb > 0].log()).sum())
        values.append(0.0 if ha == 0 or hb == 0 else mi / ((ha + hb) / 2))
    return sum(values) / len(values)


@dataclass
class Run:
    variant: str
    seed: int
    accuracy: float  # mean over the last LAST epochs
    final: float
    curve: list[float]
    seconds: float
    mean_weight: float = float("nan")
    nmi: float = float("nan")
    concentration: float = float("nan")
    slots_used: float = float("nan")  # distinct greedy labels per superclass (of 5)
    rewards: list[float] = field(default_factory=list)
    entropy_end: float = float("nan")
    weight_end: float = float("nan")  # mean aux weight over the last epoch


def train(variant: str, seed: int, epochs: int, data) -> Run:
    aux_labels, factory = VARIANTS[variant]
    pl.seed_everything(seed, verbose=False)
    module = HierarchicalModule(data, aux_labels, seed, epochs)
    callbacks = [factory(seed)] if factory else []
    trainer = pl.Trainer(max_epochs=epochs, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks,
                         num_sanity_val_steps=0, deterministic=True)
    start = time.perf_counter()
    trainer.fit(module)
    seconds = time.perf_counter() - start
    curve = module.test_accuracy
    run = Run(variant, seed, sum(curve[-LAST:]) / len(curve[-LAST:]), curve[-1], curve, seconds)
    if aux_labels:
        run.mean_weight = sum(t["weight"] for t in module.trace) / len(module.trace)
        labels, p = module.greedy_labels()
        run.nmi = nmi_within_superclass(labels, module.train_split.sub)
        sup = module.train_split.sup
        run.slots_used = sum(len(labels[sup == s].unique()) for s in range(N_SUPER)) / N_SUPER
        if p is not None:
            run.concentration = float((p ** 2).sum(-1).mean())
        if module.trace[-1]["reward"] is not None:  # RLAux
            run.rewards = [t["reward"] for t in module.trace]
            run.entropy_end = module.trace[-1]["entropy"]
            last_epoch = module.trace[-len(module.trace) // epochs:]
            run.weight_end = sum(t["weight"] for t in last_epoch) / len(last_epoch)
    return run


def mean_std(values: list[float]) -> tuple[float, float]:
    values = [v for v in values if not math.isnan(v)]
    if not values:
        return float("nan"), float("nan")
    m = sum(values) / len(values)
    s = math.sqrt(sum((v - m) ** 2 for v in values) / (len(values) - 1)) if len(values) > 1 else 0.0
    return m, s


def fmt(values: list[float], digits: int = 3) -> str:
    m, s = mean_std(values)
    return "–" if math.isnan(m) else f"{m:.{digits}f} ± {s:.{digits}f}"


def report(runs: list[Run], seeds: int, epochs: int, total: float) -> str:
    lines = [f"Test accuracy (superclass, {N_TEST * N_SLOTS} test examples), mean over the last {LAST} epochs of "
             f"{epochs}, mean ± std over {seeds} seeds; runtime per run (wall, one thread, shared 2-core machine).",
             "",
             "| variant | test accuracy (last 5 epochs) | final epoch | mean aux weight | label NMI | s / run |",
             "|---|---|---|---|---|---|"]
    for variant in VARIANTS:
        rs = [r for r in runs if r.variant == variant]
        if not rs:
            continue
        lines.append(f"| {variant} | {fmt([r.accuracy for r in rs])} | {fmt([r.final for r in rs])} | "
                     f"{fmt([r.mean_weight for r in rs], 2)} | {fmt([r.nmi for r in rs], 3)} | "
                     f"{mean_std([r.seconds for r in rs])[0]:.0f} |")
    lines += ["", "RL-AUX diagnostics (per run: rewards = `rlaux/reward`, ×1e3: with per-example credit, the default, "
              "mean_b Σ_n w·c, the first-order held-out decrease up to η/B; with credit=\"batch\", the held-out primary "
              "loss before − after each update; "
              "concentration = mean Σp² of the label policy over the training set, 0.2 = uniform among 5; slots used = "
              "distinct greedy labels per superclass, of 5; "
              "entropy = the policy's last logged entropy, nats, uniform: ln 5 = 1.609 for labels, "
              "(ln 5 + ln 21)/2 = 2.327 for labels + weights, the mean of the two choices'):", "",
              "| variant | reward mean ×1e3 | reward std ×1e3 | share of rewards > 0 | concentration | slots used "
              "| entropy at end | mean weight, last epoch |",
              "|---|---|---|---|---|---|---|---|"]
    for variant in VARIANTS:
        rs = [r for r in runs if r.variant == variant and r.rewards]
        if not rs:
            continue
        means = [1e3 * sum(r.rewards) / len(r.rewards) for r in rs]
        stds = [1e3 * mean_std(r.rewards)[1] for r in rs]
        positive = [sum(x > 0 for x in r.rewards) / len(r.rewards) for r in rs]
        lines.append(f"| {variant} | {fmt(means, 2)} | {fmt(stds, 1)} | {fmt(positive, 3)} | "
                     f"{fmt([r.concentration for r in rs], 3)} | {fmt([r.slots_used for r in rs], 2)} | "
                     f"{fmt([r.entropy_end for r in rs], 3)} | "
                     f"{fmt([r.weight_end for r in rs], 2)} |")
    lines += ["", "Per seed (test accuracy, last 5 epochs):", ""]
    for variant in VARIANTS:
        rs = [r for r in runs if r.variant == variant]
        if rs:
            lines.append(f"- {variant}: " + ", ".join(f"{r.accuracy:.3f}" for r in rs))
    lines += ["", f"Total runtime {total / 60:.1f} min. Command: `{' '.join(['python', *sys.argv])}`"]
    return "\n".join(lines)


def plot(runs: list[Run], path: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.2))
    for variant in VARIANTS:
        rs = [r for r in runs if r.variant == variant]
        if not rs:
            continue
        curve = torch.tensor([r.curve for r in rs])
        m, s = curve.mean(0), curve.std(0) if len(rs) > 1 else torch.zeros(curve.shape[1])
        epochs = torch.arange(1, curve.shape[1] + 1)
        ax.plot(epochs, m, label=variant)
        ax.fill_between(epochs, m - s, m + s, alpha=0.2)
    ax.set_xlabel("epoch")
    ax.set_ylabel("test accuracy (superclass)")
    ax.set_title(f"Toy hierarchical classification (20×5), mean ± std over {len({r.seed for r in runs})} seeds")
    lo = min(min(r.curve[len(r.curve) // 4:]) for r in runs)
    ax.set_ylim(lo - 0.02, None)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--data-seed", type=int, default=0)
    parser.add_argument("--variants", nargs="*", default=DEFAULT_VARIANTS, choices=list(VARIANTS),
                        help="default: the six of the issue")
    parser.add_argument("--extra", action="store_true", help="also the diagnostic variants (EXTRA_VARIANTS)")
    parser.add_argument("--figure", default=None, help="write test-accuracy curves to this PNG")
    args = parser.parse_args()
    torch.set_num_threads(1)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore")
    data = make_data(args.data_seed)
    if args.extra:
        args.variants += [v for v in EXTRA_VARIANTS if v not in args.variants]
    runs, start = [], time.perf_counter()
    for variant in args.variants:
        for seed in range(args.seeds):
            run = train(variant, seed, args.epochs, data)
            runs.append(run)
            print(f"# {variant} seed {seed}: acc {run.accuracy:.4f} final {run.final:.4f} weight "
                  f"{run.mean_weight:.2f} nmi {run.nmi:.3f} ({run.seconds:.0f} s)", flush=True)
    print()
    print(report(runs, args.seeds, args.epochs, time.perf_counter() - start))
    if args.figure:
        plot(runs, args.figure)
        print(f"\nfigure: {args.figure}")


if __name__ == "__main__":
    main()
