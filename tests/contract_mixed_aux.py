"""A plain LightningModule (no SAC) for the per-example rules, through the documented weighting contract only: an
auxiliary loss that is informative on some examples and opposes the main loss on the others.

Regression of a fixed random teacher ``y* = f(x)``, ``x ∈ R^8``; the main loss sees noisy labels ``y = y* + ε``
(std ``NOISE``) on ``N_TRAIN`` examples; the test error is against the clean ``y*``. The auxiliary loss of example
``b``: where ``x[b, 0] <= 0`` ("informative") a second head's squared error to the clean ``y*``; where ``x[b, 0] > 0``
("opposing") minus the example's main loss, so a weight above 1 there is gradient *ascent* on the main loss. The rule
sees the inputs ``x`` as ``example_features``. The oracle weighs informative examples 1 and opposing ones 0.
"""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from torch import nn

N_TRAIN, N_HELDOUT, N_TEST, NOISE, BATCH = 256, 256, 2000, 1.0, 64
OPPOSE = 2.0  # an opposing example's auxiliary loss is minus this times its main loss: a weight of 1 is already ascent


class OracleWeights:
    """Per-example oracle through the same contract: weight 1 on informative examples, 0 on opposing ones."""

    per_example = True

    def __init__(self) -> None:
        self.weights: dict[str, float] = {}

    def combine(self, main_loss, aux_losses, shared_parameters, *, example_features=None):
        keep = (example_features[:, 0] <= 0).float()  # [B]
        return main_loss + sum((keep * loss).mean() for loss in aux_losses.values())

    def after_update(self) -> None:
        pass

    def state_dict(self):
        return {}

    def load_state_dict(self, state_dict) -> None:
        pass


class MixedAuxModule(pl.LightningModule):
    """``aux``: ``"none"`` (no auxiliary loss), ``"on"`` (the auxiliary loss through ``self.aux_weighting``)."""

    per_example_losses = True

    def __init__(self, seed: int = 0, aux: str = "on", lr: float = 3e-3) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.aux, self.lr = aux, lr
        g = torch.Generator().manual_seed(1234)  # the data: the same for every seed
        teacher = [torch.randn(8, 32, generator=g) / 8**0.5, torch.randn(32, 1, generator=g) / 32**0.5]

        def draw(n):
            x = torch.randn(n, 8, generator=g)
            clean = torch.tanh(x @ teacher[0]) @ teacher[1] * 3
            return x, clean, clean + NOISE * torch.randn(n, 1, generator=g)

        self.train_set, self.heldout_set, self.test_set = draw(N_TRAIN), draw(N_HELDOUT), draw(N_TEST)
        torch.manual_seed(seed)
        self.trunk = nn.Sequential(nn.Linear(8, 64), nn.Tanh(), nn.Linear(64, 64), nn.Tanh())
        self.head, self.aux_head = nn.Linear(64, 1), nn.Linear(64, 1)
        self.aux_weighting = None
        self.sampler = torch.Generator().manual_seed(seed + 1)
        self.heldout_sampler = torch.Generator().manual_seed(seed + 2)
        self._kept = None

    def shared_parameters(self):
        return list(self.trunk.parameters())

    def heldout_main_loss(self, resample: bool = True, with_graph: bool = False) -> torch.Tensor:
        if resample or self._kept is None:
            self._kept = torch.randint(N_HELDOUT, (BATCH * 2,), generator=self.heldout_sampler)
        x, _, y = (t[self._kept] for t in self.heldout_set)
        with torch.set_grad_enabled(with_graph):
            loss = (self.head(self.trunk(x)) - y).pow(2).mean()
        return loss if with_graph else loss.detach()

    def training_step(self, batch, batch_idx):
        index = torch.randint(N_TRAIN, (BATCH,), generator=self.sampler)
        x, clean, y = (t[index] for t in self.train_set)
        z = self.trunk(x)
        per_main = (self.head(z) - y).pow(2).squeeze(1)  # [B]
        informative = (self.head(z) - clean).pow(2).squeeze(1)  # the clean target: what the noisy label hides
        aux = torch.where(x[:, 0] <= 0, informative, -OPPOSE * per_main)  # [B]
        main = per_main.mean()
        total = main if self.aux == "none" else self.aux_weighting.combine(
            main, {"aux": aux}, self.shared_parameters(), example_features=x)
        optimizer = self.optimizers()
        optimizer.zero_grad()
        self.manual_backward(total)
        optimizer.step()

    def test_error(self) -> float:
        x, clean, _ = self.test_set
        with torch.no_grad():
            return float((self.head(self.trunk(x)) - clean).pow(2).mean())

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=self.lr)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.zeros(10**6, 1), batch_size=1)


def train(rule, steps: int, seed: int = 0, aux: str = "on") -> MixedAuxModule:
    """Fit a fresh module for ``steps`` updates with ``rule`` (a callback, or an object installed directly)."""
    module = MixedAuxModule(seed=seed, aux=aux)
    callbacks = []
    if isinstance(rule, pl.Callback):
        callbacks = [rule]
    else:
        module.aux_weighting = rule
    trainer = pl.Trainer(max_steps=steps, accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                         enable_progress_bar=False, enable_model_summary=False, callbacks=callbacks)
    trainer.fit(module)
    return module


if __name__ == "__main__":  # the table of docs/benchmark_rlaux.md: python tests/contract_mixed_aux.py
    import logging
    import warnings

    from a2ls_lightning.callbacks import FixedWeights, LookaheadWeights, RLAux

    warnings.filterwarnings("ignore")
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    rules = {"no auxiliary loss": None, "per-example oracle (1 / 0)": OracleWeights,
             "FixedWeights(0.5)": lambda: FixedWeights(0.5), "FixedWeights(1.0)": lambda: FixedWeights(1.0),
             "RLAux()": RLAux, "LookaheadWeights()": LookaheadWeights,
             'RLAux(credit="batch", initial_weight=None, lr=3e-4) (version 0.3)':
                 lambda: RLAux(credit="batch", initial_weight=None, lr=3e-4)}
    print("| rule | test error, seeds 0, 1, 2 (1000 updates) |\n|---|---|")
    for name, make in rules.items():
        errors = [train(make() if make else None, 1000, seed, aux="none" if make is None else "on").test_error()
                  for seed in range(3)]
        print(f"| {name} | {', '.join(f'{e:.3g}' for e in errors)} |", flush=True)
