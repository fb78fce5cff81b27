"""OL-AUX: online learning of auxiliary-loss weights (Lin et al. 2019, "Adaptive Auxiliary Task Weighting for
Reinforcement Learning", NeurIPS 2019, Algorithm 1).

The combined loss is ``L = L_main + Σ_i w_i A_i`` with ``A_i = log(L_aux,i + log_eps)`` under log balancing
(else ``A_i = L_aux,i``). Every update the dot products ``⟨∇M, ∇A_i⟩`` over the shared parameters are
accumulated, with ``M = log(L_main + log_eps)`` under log balancing (Algorithm 1 logs every loss, the main one
included) and ``M = L_main`` without; every ``n_steps`` updates

    w_i ← max(min_weight, w_i + lr · Σ_{j<n_steps} ⟨∇M(θ_t+j), ∇A_i(θ_t+j)⟩)

i.e. gradient ascent on how fast the main loss decreases (Algorithm 1, Eq. 7).

Why ``∇log L_main``: ``∇log L = ∇L / L`` is free of the loss's scale. With ``∇L_main`` itself (``log_main=False``,
the rule of version 0.1) the dot products grow with the critic's loss, i.e. with the scale of the Q-values,
which grows as the return does: on state cheetah-run the weights then grew without bound (230-870 after 24k
updates) and OL-AUX ended below fixed weights. ``∇log(L_main + log_eps)`` is computed without another backward
pass, as ``∇L_main / (L_main + log_eps)`` (the main loss averaged over DDP ranks, so every rank agrees).

Where we differ from Algorithm 1, and why:

- The combined loss keeps the main loss unwrapped (``L_main``, not ``log L_main``) unless ``train_log_main``:
  only the weight update is scale-free. Wrapping the critic loss in ``log`` (as the authors' re-implementation
  does) divides SAC's critic gradient by the Bellman error, i.e. changes its effective learning rate over
  training, and SAC's learning rates were tuned for the unwrapped loss; gradient balancing, which wraps every
  loss so, ended below fixed weights on our benchmark. Measured with OL-AUX (state cheetah-run, five losses,
  3 seeds, ``docs/benchmark_olaux.md``): ``train_log_main=True`` ended at 310 ± 110 (area under the curve
  171 ± 15), the default at 402 ± 28 (231 ± 50).

Choices, after the authors' re-implementation (``Xingyu-Lin/auxiliary-tasks-rl``, ``olaux/``):

- ``lr`` is the whole factor on the summed dot products, ``β·α`` in the paper's notation; 1e-4 by default,
  50x smaller than the authors' re-implementation (5e-3, with the critic loss itself in ``log``). Measured on
  state cheetah-run (100k env steps, five losses, 3 seeds, ``scripts/benchmark_learning.py
  --suite olaux``): with ``lr = 1e-4`` the weights end within ~7-23 and the area under the learning curve is
  231 ± 50; with ``lr = 5e-3`` the scale-free dot products, positive on average for every loss here, push the
  weights to 170-1050, the auxiliary losses crowd out the critic's, and the area drops to 170 ± 35.
  The paper's toy problem (§5.1, ``scripts/olaux_toy.py``) needs a larger step, ``lr = 1e-2`` (its ``β``),
  to reproduce Figure 2 in 1000 iterations: its losses and gradients are of order one.
- Log balancing wraps the auxiliary losses as ``log(L_aux + log_eps)`` in the combined loss and in the dot
  products alike (the weight then learns about the loss it actually scales); the weights are clipped at
  ``min_weight`` (0) from below only, as the authors do.
- Diagnostics: at every log step, ``olaux/dot/<name>`` and ``olaux/cos/<name>``, the mean over the last complete
  window of the dot product that moves the weight and of the cosine between the main and the auxiliary
  gradient (from the gradients the update computes anyway).
- Dot products over the shared (encoder) parameters only, of gradients averaged over DDP ranks
  (the authors averaged across workers before the dot products): the weights are identical on every rank.
- Each update's dot product is of that update's gradients, as in Algorithm 1. The authors' re-implementation
  first averages each gradient over the last 4 updates (``aux_filter_interval``, against oscillation with large
  step sizes), which would keep ``4 x (K+1)`` gradient copies of the encoder; with the small default ``lr`` the
  window's sum already averages over ``n_steps`` updates. (Their update, ``aux_base_lr · n_steps`` times the
  window's mean of ``critic_lr``-scaled dot products, is the same ``lr`` on the window's sum: 5 · 1e-3 = 5e-3.)
- Mixed precision: gradients are computed from the scaled loss under 16-mixed and unscaled before the dot
  products (see gradients.py); bf16 needs no scaling. An update whose dot products are not finite (e.g. an
  fp16 overflow step, which the scaler also skips) is left out of its window's sum (counted in
  ``skipped_steps``); a window with no finite update leaves the weights unchanged.

Cost (``python scripts/benchmark_olaux_cost.py --threads 1 --clock cpu --rounds 60``, five auxiliary losses,
state encoder, twin-Q 2x256, batch 256, one thread, CPU time, idle 2-core machine): one OL-AUX critic update
costs 1.22-1.23x a fixed-weight one with ``gradient_method="per_loss"`` (the default), 2.5-2.6x with ``"batched"``;
a whole ``SACModule.training_step`` in a Trainer (``--module``) 1.15-1.22x (two runs each; the ratio moves with the
machine: before the last speed-up, another machine gave 1.30-1.31x and 1.22-1.29x).
"""

from __future__ import annotations

import weakref
from typing import Any

import torch

from a2ls_lightning.callbacks.gradients import (
    GRADIENT_METHODS,
    GradientMethod,
    LossGradients,
    all_reduce_mean,
    dot_with_main,
)
from a2ls_lightning.callbacks.weighting import AuxWeighting, check_log_balance
from a2ls_lightning.validation import check_choice, check_number


class OLAux(AuxWeighting):
    """OL-AUX weighting of auxiliary losses, as a Lightning callback.

    Args:
        n_steps: updates per weight update (``N`` in the paper); the dot products are summed over them.
        lr: step size on the summed dot products (``β·α`` of the paper), >= 0; see the module docstring for
            why 1e-4.
        log_balance: wrap each auxiliary loss as ``log(L_aux + log_eps)`` (combined loss and dot products).
        log_main: with ``log_balance``, take the dot products with ``∇log(L_main + log_eps)`` (Algorithm 1,
            scale-free); ``False``: with ``∇L_main`` (the rule of version 0.1, kept for comparison).
        train_log_main: with ``log_balance`` and ``log_main``, also train on ``log(L_main + log_eps)`` in the
            combined loss (the authors' re-implementation); ``False``: the combined loss keeps ``L_main``.
        log_eps: the offset inside the log, > 0.
        init_weight: starting weight of every auxiliary loss, >= ``min_weight``.
        min_weight: weights are clipped from below at this value after each update.
        gradient_method: ``"per_loss"`` (one autograd call per loss, reused for the update: cheapest with big
            heads) or ``"batched"`` (one vmapped call over the shared parameters, then an ordinary backward).

    Example:
        >>> enc, heads = torch.nn.Linear(3, 4), torch.nn.ModuleList(torch.nn.Linear(4, 1) for _ in range(2))
        >>> olaux = OLAux(n_steps=1, lr=0.1, log_balance=False)
        >>> z = enc(torch.randn(8, 3))                                  # [B, D] shared features
        >>> total = olaux.combine(heads[0](z).pow(2).mean(), {"aux": heads[1](z).pow(2).mean()},
        ...                       enc.parameters())
        >>> total.backward(); olaux.after_update()                      # after the optimizer step
        >>> olaux.weights["aux"] != 1.0
        True
    """

    #: Differentiates each loss on its own (walks its graph): a module runs its losses eagerly for it.
    needs_loss_graphs = True

    def __init__(
        self,
        n_steps: int = 5,
        lr: float = 1e-4,
        log_balance: bool = True,
        log_main: bool = True,
        train_log_main: bool = False,
        log_eps: float = 0.02,
        init_weight: float = 1.0,
        min_weight: float = 0.0,
        gradient_method: GradientMethod = "per_loss",
    ) -> None:
        super().__init__()
        if isinstance(n_steps, bool) or not isinstance(n_steps, int) or n_steps < 1:
            raise ValueError(f"OLAux.n_steps={n_steps!r} is not allowed; allowed: an integer >= 1")
        lr = check_number("OLAux.lr", lr, low=0.0)
        log_eps = check_number("OLAux.log_eps", log_eps, low=0.0, strict=True)
        min_weight = check_number("OLAux.min_weight", min_weight)
        init_weight = check_number("OLAux.init_weight", init_weight, low=min_weight)
        gradient_method = check_choice("OLAux.gradient_method", gradient_method, GRADIENT_METHODS)
        self.n_steps, self.lr, self.log_balance, self.log_eps = n_steps, lr, bool(log_balance), log_eps
        self.log_main = bool(log_main)
        if train_log_main and not (log_balance and log_main):
            raise ValueError(f"OLAux.train_log_main=True needs log_balance=True and log_main=True (got log_balance="
                             f"{log_balance}, log_main={log_main})")
        self.train_log_main = bool(train_log_main)
        self.init_weight, self.min_weight, self.gradient_method = init_weight, min_weight, gradient_method
        # [n_steps, K] ⟨∇L_main, ∇A_i⟩ of each update of the current window; filtered and summed at its end, so
        # that the per-update path is one matmul and one add (no host sync, no finiteness test)
        self._window = torch.zeros(n_steps, 0)
        self._cos_window = torch.zeros(n_steps, 0)  # [n_steps, K] cos(∇L_main, ∇A_i), for the diagnostics
        self._last_dots: dict[str, float] = {}  # mean dot product and cosine of the last complete window
        self._last_cos: dict[str, float] = {}
        self._steps_in_window = 0
        self._measure = True  # compute the cosines in the current window (see _window_is_reported)
        self._trainer = None
        self._pending = False  # combine ran since the last after_update
        self.skipped_steps = 0  # updates left out for non-finite gradients, over the run
        self._log_checked = False

    def _initial_weight(self, name: str) -> float:
        self._window = torch.cat([self._window, self._window.new_zeros(self.n_steps, 1)], dim=1)
        self._cos_window = torch.cat([self._cos_window, self._cos_window.new_zeros(self.n_steps, 1)], dim=1)
        return self.init_weight

    def _combine(self, main_loss, aux_losses, names, shared_parameters):
        if self.log_balance and not self._log_checked:
            check_log_balance(aux_losses, names, self.log_eps, "OLAux")
            self._log_checked = True
        eps = self.log_eps if self.log_balance else None
        if not torch.is_grad_enabled():  # e.g. a validation pass: nothing to learn from, nothing to count
            if eps is not None:
                aux_losses = [torch.log(loss + eps) for loss in aux_losses]
            return main_loss + sum(self._weights[n] * loss for n, loss in zip(names, aux_losses))
        # the log of log balancing is applied by LossGradients (as the gradient it would give: no graph nodes)
        main_eps = self.log_eps if self.train_log_main else None  # its gradients are then ∇log(L_main + eps)
        grads = LossGradients([main_loss, *aux_losses], shared_parameters, self.gradient_method, self._loss_scale(),
                              log_eps=[main_eps, *[eps] * len(aux_losses)])
        shared = all_reduce_mean(grads.shared)  # [K+1, P], identical on every rank
        dots = dot_with_main(shared)  # [K] ⟨∇L_main, ∇A_i⟩
        if self._steps_in_window == 0:
            self._measure = self._window_is_reported()
        if self._measure:  # cosines only in windows a log step will report: no cost on the other updates
            norms = shared.norm(dim=1)  # [K+1]
            cos = dots / (norms[1:] * norms[0]).clamp_min(torch.finfo(norms.dtype).tiny)
        # ∇log(L_main + eps) = ∇L_main / (L_main + eps): the divisor, folded into the window's add below
        denominator = None
        if self.log_balance and self.log_main and not self.train_log_main:
            denominator = all_reduce_mean(main_loss.detach().float().reshape(1)) + self.log_eps
        if self._window.device != dots.device:
            self._window = self._window.to(dots.device)
            self._cos_window = self._cos_window.to(dots.device)
        row, cos_row = self._window[self._steps_in_window], self._cos_window[self._steps_in_window]
        if names == list(self._weights):
            if denominator is None:
                row += dots
            else:
                row.addcdiv_(dots, denominator)
            if self._measure:
                cos_row += cos
        else:  # an update with only some of the known losses
            order = list(self._weights)
            index = torch.tensor([order.index(n) for n in names], device=dots.device)
            row.index_add_(0, index, dots if denominator is None else dots / denominator)
            if self._measure:
                cos_row.index_add_(0, index, cos.to(cos_row.dtype))
        self._pending = True
        return grads.combine([1.0, *(self._weights[n] for n in names)])

    def after_update(self) -> None:
        """Count one update; at the end of a window of ``n_steps``, update the weights (one host sync)."""
        if not self._pending:
            return
        self._pending = False
        self._steps_in_window += 1
        if self._steps_in_window < self.n_steps:
            return
        finite = torch.isfinite(self._window).all(dim=1, keepdim=True)  # [n_steps, 1]: updates to keep
        sums = torch.where(finite, self._window, 0.0).sum(dim=0)
        cos_sums = torch.where(finite, self._cos_window, 0.0).sum(dim=0)
        k = len(self._weights)
        *values, kept = torch.cat([sums, cos_sums.to(sums.dtype), finite.sum().to(sums.dtype).reshape(1)]).tolist()
        sums, cos_sums = values[:k], values[k:]
        self.skipped_steps += self.n_steps - int(kept)
        for name, total, cos_total in zip(self._weights, sums, cos_sums):
            self._weights[name] = max(self.min_weight, self._weights[name] + self.lr * total)
            self._last_dots[name] = total / max(kept, 1)
            if self._measure:
                self._last_cos[name] = cos_total / max(kept, 1)
        self._window.zero_()
        self._cos_window.zero_()
        self._steps_in_window = 0

    def _window_is_reported(self) -> bool:
        """Will a log step report the window starting now (the last complete window before that step)?"""
        trainer = self._trainer() if self._trainer is not None else None
        every = getattr(trainer, "log_every_n_steps", 0) if trainer is not None else 0
        if not every:
            return True  # outside a Trainer: measure every window
        start, n = trainer.global_step, self.n_steps  # the window ends after update start + n - 1
        next_log = -(-(start + n) // every) * every  # first log step at or after the window's end
        return next_log < start + 2 * n  # no later window completes before that log step

    def setup(self, trainer, pl_module, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        self._trainer = weakref.ref(trainer)  # a weak one: the callback may outlive or be copied apart from it

    def metrics(self) -> dict[str, float]:
        """``aux_weight/<name>``, ``olaux/dot/<name>`` and ``olaux/cos/<name>`` (means over the last complete
        window: the dot product that moved the weight, and the cosine between the main and the auxiliary
        gradient), ``olaux/skipped_steps``."""
        out = {**super().metrics(), "olaux/skipped_steps": float(self.skipped_steps)}
        out.update({f"olaux/dot/{name}": value for name, value in self._last_dots.items()})
        out.update({f"olaux/cos/{name}": value for name, value in self._last_cos.items()})
        return out

    def state_dict(self) -> dict[str, Any]:
        return {
            "weights": dict(self._weights),
            "window": self._window.detach().cpu().clone(),
            "cos_window": self._cos_window.detach().cpu().clone(),
            "last_dots": dict(self._last_dots),
            "last_cos": dict(self._last_cos),
            "measure": self._measure,
            "steps_in_window": self._steps_in_window,
            "pending": self._pending,
            "skipped_steps": self.skipped_steps,
            "log_checked": self._log_checked,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._weights = dict(state_dict["weights"])
        self._window = state_dict["window"].detach().clone()
        # Checkpoints of version 0.1 hold no diagnostics: they start afresh.
        self._cos_window = state_dict.get("cos_window", torch.zeros_like(self._window)).detach().clone()
        self._last_dots = dict(state_dict.get("last_dots", {}))
        self._last_cos = dict(state_dict.get("last_cos", {}))
        self._measure = bool(state_dict.get("measure", True))
        self._steps_in_window = int(state_dict["steps_in_window"])
        self._pending = bool(state_dict["pending"])
        self.skipped_steps = int(state_dict["skipped_steps"])
        self._log_checked = bool(state_dict["log_checked"])
