"""The OL-AUX paper's toy problem (Lin et al. 2019, §5.1, Figure 2), run through the real callbacks.

Main loss ``L0 = x² + y²``; a useful auxiliary loss ``L1 = (x-0.5)² + (y-0.5)²`` and an adversarial one
``L2 = -L0``. Gradient descent (SGD, lr α = 1e-2) for 1000 iterations from four starting points, once with
fixed weights ``w = (1, 1)`` and once with OL-AUX (``n_steps=1``, no log balancing). Each run is a tiny
LightningModule trained by a real ``lightning.Trainer`` on the CPU, the weighting callback installed as in
any other module.

The weight learning rate: the paper quotes β = 1e-2. ``OLAux.lr`` is the whole factor on the dot products
(β·α in Algorithm 1's notation); Figure 2 (w1 first rises then falls, w2 drops at once, every run ends at the
main optimum) is reproduced with ``lr = 1e-2``. With ``lr = β·α = 1e-4`` the weights barely move and the runs
end near (0.42, 0.42): the last rows of the table show it.

    python scripts/olaux_toy.py [--steps 1000] [--figure docs/olaux_toy.png]
"""

from __future__ import annotations

import argparse
import logging
import warnings
from dataclasses import dataclass
from pathlib import Path

import lightning.pytorch as pl
import torch
from torch import Tensor, nn

from a2ls_lightning.callbacks import AuxWeighting, FixedWeights, OLAux

STARTS = ((-0.8, -1.6), (1.8, 1.0), (-1.8, 1.0), (1.0, -1.0))
DESCENT_LR = 1e-2  # α
WEIGHT_LR = 1e-2  # β, as OLAux.lr


def toy_losses(xy: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
    """``xy`` ``[2]`` → main loss ``L0`` and the auxiliary losses ``{"useful": L1, "adversarial": L2}``."""
    main = xy.pow(2).sum()
    return main, {"useful": (xy - 0.5).pow(2).sum(), "adversarial": -main}


class ToyModule(pl.LightningModule):
    """One point ``(x, y)`` as the only (shared) parameter; records its path and the weights."""

    def __init__(self, start: tuple[float, float]) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.xy = nn.Parameter(torch.tensor(start))
        self.aux_weighting: AuxWeighting | None = None  # installed by the weighting callback
        self.path: list[list[float]] = [list(start)]  # [steps + 1, 2]
        self.main_losses: list[float] = []  # main loss before each step
        self.weight_history: list[dict[str, float]] = []  # weights after each step

    def shared_parameters(self) -> list[Tensor]:
        return [self.xy]

    def training_step(self, batch: Tensor, batch_idx: int) -> None:
        main, aux = toy_losses(self.xy)
        total = self.aux_weighting.combine(main, aux, self.shared_parameters())
        optimizer = self.optimizers()
        optimizer.zero_grad()
        self.manual_backward(total)
        optimizer.step()
        self.main_losses.append(float(main.detach()))

    def on_train_batch_end(self, outputs, batch, batch_idx: int) -> None:  # after the callback's update
        self.path.append(self.xy.detach().tolist())
        self.weight_history.append(self.aux_weighting.weights)

    def configure_optimizers(self) -> torch.optim.Optimizer:
        return torch.optim.SGD([self.xy], lr=DESCENT_LR)

    def train_dataloader(self) -> torch.utils.data.DataLoader:
        return torch.utils.data.DataLoader(torch.zeros(self.trainer.max_steps, 1), batch_size=1)


@dataclass
class ToyRun:
    """One run: the path ``[steps + 1, 2]``, main loss per step ``[steps]`` and weights after each step."""

    start: tuple[float, float]
    path: list[list[float]]
    main_losses: list[float]
    weights: dict[str, list[float]]

    @property
    def end(self) -> tuple[float, float]:
        return tuple(self.path[-1])

    @property
    def final_main_loss(self) -> float:
        x, y = self.end
        return x * x + y * y


def run_toy(weighting: AuxWeighting, start: tuple[float, float], steps: int = 1000) -> ToyRun:
    """Train the toy from ``start`` for ``steps`` SGD updates with ``weighting`` as a Trainer callback."""
    module = ToyModule(start)
    trainer = pl.Trainer(max_steps=steps, accelerator="cpu", devices=1, callbacks=[weighting], logger=False,
                         enable_checkpointing=False, enable_progress_bar=False, enable_model_summary=False)
    trainer.fit(module)
    names = list(module.weight_history[0])
    return ToyRun(start, module.path, module.main_losses,
                  {n: [w[n] for w in module.weight_history] for n in names})


def olaux_for_toy(lr: float = WEIGHT_LR) -> OLAux:
    """OL-AUX as in §5.1: weights updated every step, no log balancing, w₀ = 1."""
    return OLAux(n_steps=1, lr=lr, log_balance=False, init_weight=1.0)


def plot(fixed: list[ToyRun], olaux: list[ToyRun], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 3, figsize=(15, 4.5))
    grid = torch.linspace(-2, 2, 200)
    gx, gy = torch.meshgrid(grid, grid, indexing="xy")
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for ax, runs, title in ((axes[0], fixed, "fixed weights w = (1, 1)"), (axes[1], olaux, "OL-AUX")):
        ax.contour(gx, gy, gx**2 + gy**2, levels=12, colors="0.85", linewidths=0.8)
        for run, color in zip(runs, colors):
            xs, ys = zip(*run.path)
            ax.plot(xs, ys, color=color, lw=1.5)
            ax.plot(*run.start, "o", color=color)
            ax.plot(*run.end, "*", color=color, ms=12, mec="k")
        ax.plot(0, 0, "k+", ms=12)
        ax.set(title=title, xlabel="x", ylabel="y", xlim=(-2, 2), ylim=(-2, 2), aspect="equal")
    ax = axes[2]
    twin = ax.twinx()
    for run, color in zip(olaux, colors):
        iterations = range(1, len(run.main_losses) + 1)
        ax.plot(iterations, run.weights["useful"], color=color, lw=1.5, label=f"start {run.start}")
        ax.plot(iterations, run.weights["adversarial"], color=color, lw=1.5, ls="--")
        twin.plot(iterations, run.main_losses, color=color, lw=0.8, ls=":")
    ax.set(title="OL-AUX: w1 (solid), w2 (dashed), main loss (dotted, right)", xlabel="iteration",
           ylabel="auxiliary weight", xscale="log")
    twin.set(ylabel="main loss L0", yscale="log")
    ax.legend(fontsize=8, loc="center left")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=1000, help="gradient-descent iterations")
    parser.add_argument("--figure", type=Path, default=Path(__file__).resolve().parents[1] / "docs" / "olaux_toy.png")
    args = parser.parse_args()
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    warnings.filterwarnings("ignore", ".*does not have many workers.*")
    rules = {"fixed w=1": lambda: FixedWeights(1.0), "OL-AUX lr=1e-2": olaux_for_toy,
             "OL-AUX lr=1e-4": lambda: olaux_for_toy(lr=DESCENT_LR * WEIGHT_LR)}
    runs = {name: [run_toy(factory(), start, args.steps) for start in STARTS] for name, factory in rules.items()}
    print(f"{'rule':<16}{'start':>14}{'end (x, y)':>20}{'L0 end':>10}{'w1 end':>8}{'w1 max (iter)':>15}{'w2 end':>8}")
    for name, rule_runs in runs.items():
        for run in rule_runs:
            w1, w2 = run.weights["useful"], run.weights["adversarial"]
            peak = max(range(len(w1)), key=w1.__getitem__)
            end = f"({run.end[0]:.3f}, {run.end[1]:.3f})"
            print(f"{name:<16}{run.start!s:>14}{end:>20}{run.final_main_loss:>10.2e}{w1[-1]:>8.3f}"
                  f"{f'{w1[peak]:.3f} ({peak + 1})':>15}{w2[-1]:>8.3f}")
    plot(runs["fixed w=1"], runs["OL-AUX lr=1e-2"], args.figure)
    print(f"figure: {args.figure}")


if __name__ == "__main__":
    main()
