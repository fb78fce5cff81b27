"""One-step look-ahead reweighting of auxiliary losses per example: a small network from each example's features to
its weights, trained by gradient on the held-out main loss's first-order decrease (learning-to-reweight, Ren et al.
2018; Meta-Weight-Net, Shu et al. 2019; MAXL, Liu et al. 2019), as a weighting callback.

The loss to backpropagate is ``L = L_main + Σ_n mean_b( w[b, n] · L_n[b] )`` with ``w = f_φ(x)``, ``x`` the module's
``example_features`` (``[B, D]``) and ``f_φ`` a two-layer tanh MLP ending in ``max_weight · sigmoid``. One SGD step
lowers the held-out main loss, to first order, by ``(η/B) Σ_{b,n} w[b, n] · c[b, n]`` with ``c`` the per-example
credit (``callbacks/credit.py``: ``⟨∇θ L_n[b], ∇θ L_main^held⟩`` over the shared parameters, the held-out gradient
averaged over DDP ranks first). Every ``credit_every`` updates ``φ`` takes one Adam step up that decrease, on
``mean_{b,n} w_φ[b, n] · ĉ[b, n]`` (``ĉ``: ``c`` over its RMS, clipped at ±5), i.e. along ``∂L^held/∂w`` as
learning-to-reweight does, but through a network that generalises to examples it has not scored (as Meta-Weight-Net
does) instead of one-off per-batch weights.

Why a callback of its own and not a mode of ``RLAux``: both learn from the same credit (they share
:class:`~a2ls_lightning.callbacks.credit.HeldoutRule`), but nothing else. ``RLAux`` samples a bin of a weight grid
from a policy and learns by REINFORCE (the sampled weight's advantage); here the weight is a deterministic, continuous
output whose gradient *is* the credit, so there is no grid, no sampling generator, no entropy bonus, no labels and no
reward statistics. As a mode, half of ``RLAux``'s settings would be meaningless for it, and ``--help`` would list them.

Do no harm: the output layer starts at zero weights and a bias of ``logit(1 / max_weight)``: every weight is exactly
1 at the start, so the first updates are the unweighted ones. Weights stay within ``(0, max_weight)``: an opposing
example's weight can fall to 0 (the loss is switched off for it), and no weight exceeds ``max_weight``. The guarantee
is first order: the weights move along the held-out main loss's first-order decrease; curvature (a step made too
large by weights near ``max_weight``) and a misleading held-out batch are not guarded against.

Cost (``callbacks/credit.py`` has the command): 1.34x a FixedWeights ``SACModule`` update at the default
``credit_every=4``, within the 1.5x budget; 2.08x with credit on every update.

Example (a plain loop; ``net`` has ``heldout_main_loss(resample, with_graph)``)::

    rule = LookaheadWeights(); rule.attach(net)
    total = rule.combine(main_loss, {"aux": per_example_loss}, net.encoder.parameters(),
                         example_features=features.detach())   # per_example_loss: [B], features: [B, D]
    total.backward(); optimizer.step(); rule.after_update()
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from a2ls_lightning.callbacks.credit import (
    HeldoutRule,
    move_optimizer_state,
    normalise_credit,
    seeded,
    step_with_mean_gradients,
    weight_spread,
)
from a2ls_lightning.callbacks.gradients import all_reduce_mean
from a2ls_lightning.validation import check_integer, check_number

CREDIT_CLIP = 5.0  # a normalised credit beyond ±5 is an outlier (a loss spike), not information


class WeightNet(nn.Module):
    """``[B, D]`` features → ``[B, K]`` weights in ``(0, max_weight)``, all 1 at initialisation."""

    def __init__(self, in_dim: int, hidden_dim: int, n_losses: int, max_weight: float) -> None:
        super().__init__()
        self.max_weight = max_weight
        self.net = nn.Sequential(nn.Linear(in_dim, hidden_dim), nn.Tanh(), nn.Linear(hidden_dim, hidden_dim),
                                 nn.Tanh(), nn.Linear(hidden_dim, n_losses))
        nn.init.zeros_(self.net[-1].weight)
        nn.init.constant_(self.net[-1].bias, -math.log(max_weight - 1.0))  # sigmoid(b) = 1 / max_weight

    def forward(self, features: Tensor) -> Tensor:
        return self.max_weight * torch.sigmoid(self.net(features))


class LookaheadWeights(HeldoutRule):
    """Per-example auxiliary weights from a small network trained on the held-out main loss's one-step look-ahead
    gradient (see the module docstring), as a Lightning callback.

    Needs a module with ``per_example_losses = True`` (``[B]`` losses and ``example_features`` in ``combine``) and
    ``heldout_main_loss(resample, with_graph)`` (``SACModule`` has both). Outside a Trainer, call :meth:`attach`.

    Args:
        max_weight: the largest weight, > 1 (weights lie in ``(0, max_weight)`` and start at 1).
        hidden_dim: width of the network's two hidden layers.
        lr: Adam learning rate of the network.
        credit_every: measure the credit and step the network every this many updates (the weights are used on
            every update).
        seed: seed of the network's initialisation (the same on every DDP rank).
    """

    def __init__(self, max_weight: float = 4.0, proximal: float = 0.1, hidden_dim: int = 64, lr: float = 1e-3,
                 credit_every: int = 4, seed: int = 0) -> None:
        super().__init__()
        self.proximal = check_number("LookaheadWeights.proximal", proximal, low=0.0)
        self.max_weight = check_number("LookaheadWeights.max_weight", max_weight, low=1.0, strict=True)
        self.hidden_dim = check_integer("LookaheadWeights.hidden_dim", hidden_dim, 1)
        self.lr = check_number("LookaheadWeights.lr", lr, low=0.0, strict=True)
        self.credit_every = check_integer("LookaheadWeights.credit_every", credit_every, 1)
        self.seed = check_integer("LookaheadWeights.seed", seed, 0)
        self.net: WeightNet | None = None
        self.optimizer: torch.optim.Adam | None = None
        self._names: list[str] = []
        self._in_dim: int | None = None
        self._pending: dict[str, Tensor] | None = None  # the update in flight (combine → after_update), not saved
        self._updates = 0
        self._last_credit = torch.zeros(())
        self._mean_weights: dict[str, Tensor] = {}
        self._last_weights: Tensor | None = None  # [B, K] the last training batch's weights

    def _build(self, in_dim: int, names: list[str], device: torch.device) -> None:
        self.net = seeded(self.seed, lambda: WeightNet(in_dim, self.hidden_dim, len(names), self.max_weight))
        self.net.to(device)
        self.optimizer = torch.optim.Adam(self.net.parameters(), lr=self.lr)
        self._names, self._in_dim = list(names), in_dim

    @property
    def weights(self) -> dict[str, float]:
        """Mean weight of each auxiliary loss over the last batch (1.0 before any; one host sync)."""
        return {name: float(self._mean_weights[name]) if name in self._mean_weights else 1.0 for name in self._weights}

    def example_weights(self, example_features: Tensor) -> Tensor:
        """``[B, D]`` → ``[B, K]``: the weights the network gives these examples (no gradient)."""
        with torch.no_grad():
            return self.net(example_features.float())

    def _combine(self, main_loss, aux_losses, names, shared_parameters, example_features=None):
        features = self._check_inputs("LookaheadWeights", aux_losses, names, example_features)
        if self.net is None:
            self._build(features.shape[1], names, features.device)
        self.check_built(features, names)
        training = torch.is_grad_enabled()
        learning = training and self._updates % self.credit_every == 0
        with torch.set_grad_enabled(learning), torch.autocast(features.device.type, enabled=False):
            weights = self.net(features)  # [B, K]
        if learning:
            raw = self.credit(aux_losses, shared_parameters)  # [B, K]
            credit = normalise_credit(raw).clamp(-CREDIT_CLIP, CREDIT_CLIP)
            self._pending = {"weights": weights, "credit": credit, "raw": (weights.detach() * raw).sum(1).mean()}
        weights = weights.detach()
        self._mean_weights = dict(zip(names, weights.mean(0).unbind()))
        if training:
            self._last_weights = weights
            self._updates += 1
        total = main_loss
        for k, loss in enumerate(aux_losses):
            total = total + (weights[:, k].to(loss.dtype) * loss).mean()
        return total

    def check_built(self, features: Tensor, names: list[str]) -> None:
        if features.shape[1] != self._in_dim or names != self._names:
            raise ValueError(f"LookaheadWeights: example_features with {features.shape[1]} columns and losses {names} "
                             f"differ from those the network was built for ({self._in_dim}, {self._names})")

    def after_update(self) -> None:
        """After the optimizer step: one Adam step of the network up the first-order decrease (gradients averaged
        over ranks first)."""
        pending, self._pending = self._pending, None
        if pending is None:
            return
        self._last_credit = all_reduce_mean(pending["raw"].reshape(1)).reshape(()).detach()
        weights = pending["weights"]
        objective = (-(weights * pending["credit"]) + 0.5 * self.proximal * (weights - 1.0).pow(2)).sum(1).mean()
        step_with_mean_gradients(objective, self.net, self.optimizer)

    def metrics(self) -> dict[str, float]:
        """``aux_weight/<name>`` (mean weight over the last batch), ``reweight/weight_p10/<name>`` and ``_p90``
        (the spread over the last batch's examples) and ``reweight/credit`` (``mean_b Σ_n w·c``, the first-order
        held-out decrease up to ``η/B``, averaged over ranks)."""
        out = super().metrics()
        if self._last_weights is not None:
            out.update(weight_spread("reweight", self._last_weights, self._names))
        out["reweight/credit"] = float(self._last_credit)
        return out

    def state_dict(self) -> dict[str, Any]:
        if self._pending is not None:  # an update in flight (see RLAux.state_dict): finish it first
            self.after_update()
        return {
            "weights": dict(self._weights),
            "mean_weights": {k: v.detach().cpu().clone() for k, v in self._mean_weights.items()},
            "names": list(self._names),
            "in_dim": self._in_dim,
            "net": None if self.net is None else {k: v.detach().cpu().clone() for k, v in self.net.state_dict().items()},
            "optimizer": None if self.optimizer is None else self.optimizer.state_dict(),
            "updates": self._updates,
            "last_credit": self._last_credit.detach().cpu().clone(),
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._weights = dict(state_dict["weights"])
        self._mean_weights = dict(state_dict["mean_weights"])
        self._updates = int(state_dict["updates"])
        self._last_credit = state_dict["last_credit"].clone()
        self._pending = None
        if state_dict["net"] is None:
            self.net = self.optimizer = None
            return
        self._build(int(state_dict["in_dim"]), list(state_dict["names"]), torch.device("cpu"))
        self.net.load_state_dict(state_dict["net"])
        self.optimizer.load_state_dict(state_dict["optimizer"])

    def on_fit_start(self, trainer, pl_module) -> None:
        # a network restored from a checkpoint is built on the CPU: move it where the module trains
        device = pl_module.device
        if self.net is not None and next(self.net.parameters()).device != device:
            self.net.to(device)
            move_optimizer_state(self.optimizer, device)
