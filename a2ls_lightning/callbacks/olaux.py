"""OL-AUX: online learning of auxiliary-loss weights (Lin et al. 2019, shared/seeds/olaux_paper.md).

The combined loss is ``L = L_main + Σ_i w_i A_i`` with ``A_i = log(L_aux,i + log_eps)`` under log balancing
(else ``A_i = L_aux,i``). Every update the dot products ``⟨∇L_main, ∇A_i⟩`` over the shared parameters are
accumulated; every ``n_steps`` updates

    w_i ← max(min_weight, w_i + lr · Σ_{j<n_steps} ⟨∇L_main(θ_t+j), ∇A_i(θ_t+j)⟩)

i.e. gradient ascent on how fast the main loss decreases (Algorithm 1, Eq. 7).

Choices, after the authors' re-implementation (``Xingyu-Lin/auxiliary-tasks-rl``, ``olaux/``):

- ``lr`` is the whole factor on the summed dot products, ``β·α`` in the paper's notation (5e-3 by default).
  The paper's toy problem (§5.1, ``scripts/olaux_toy.py``) quotes ``β = 1e-2``: its Figure 2 is reproduced
  with ``lr = 1e-2``; ``lr = β·α = 1e-4`` barely moves the weights in 1000 iterations.
- Log balancing wraps the auxiliary losses only, as ``log(L_aux + log_eps)``, in the combined loss and in
  the dot products alike (the weight then learns about the loss it actually scales). The main loss stays
  unwrapped: wrapping the critic loss in ``log`` would change SAC's effective critic learning rate.
- Dot products over the shared (encoder) parameters only, of gradients averaged over DDP ranks
  (the authors averaged across workers before the dot products): the weights are identical on every rank.
- Mixed precision: gradients are computed from the scaled loss under 16-mixed and unscaled before the dot
  products (see gradients.py); bf16 needs no scaling. An update whose dot products are not finite (e.g. an
  fp16 overflow step, which the scaler also skips) is left out of its window's sum (counted in
  ``skipped_steps``); a window with no finite update leaves the weights unchanged.

Cost (``python scripts/benchmark_olaux_cost.py --threads 1 --clock cpu --rounds 40``, five auxiliary losses,
state encoder, twin-Q 2x256, batch 256): one OL-AUX update costs 1.25-1.28x a fixed-weight update with
``gradient_method="per_loss"`` (the default), 2.7-2.8x with ``"batched"``. Measured on a 2-core machine
shared with other jobs, hence one thread and CPU time.
"""

from __future__ import annotations

from typing import Any

import torch

from a2ls_lightning.callbacks.gradients import (
    GRADIENT_METHODS,
    GradientMethod,
    LossGradients,
    all_reduce_mean,
    dot_with_main,
)
from a2ls_lightning.callbacks.weighting import AuxWeighting, log_balanced
from a2ls_lightning.validation import check_choice, check_number


class OLAux(AuxWeighting):
    """OL-AUX weighting of auxiliary losses, as a Lightning callback.

    Args:
        n_steps: updates per weight update (``N`` in the paper); the dot products are summed over them.
        lr: step size on the summed dot products (``β·α`` of the paper), >= 0.
        log_balance: wrap each auxiliary loss as ``log(L_aux + log_eps)`` (combined loss and dot products).
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

    def __init__(
        self,
        n_steps: int = 5,
        lr: float = 5e-3,
        log_balance: bool = True,
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
        self.init_weight, self.min_weight, self.gradient_method = init_weight, min_weight, gradient_method
        # [n_steps, K] ⟨∇L_main, ∇A_i⟩ of each update of the current window; filtered and summed at its end, so
        # that the per-update path is one matmul and one add (no host sync, no finiteness test)
        self._window = torch.zeros(n_steps, 0)
        self._steps_in_window = 0
        self._pending = False  # combine ran since the last after_update
        self.skipped_steps = 0  # updates left out for non-finite gradients, over the run
        self._log_checked = False

    def _initial_weight(self, name: str) -> float:
        self._window = torch.cat([self._window, self._window.new_zeros(self.n_steps, 1)], dim=1)
        return self.init_weight

    def _combine(self, main_loss, aux_losses, names, shared_parameters):
        if self.log_balance:
            aux_losses = log_balanced(aux_losses, names, self.log_eps, "OLAux", check=not self._log_checked)
            self._log_checked = True
        if not torch.is_grad_enabled():  # e.g. a validation pass: nothing to learn from, nothing to count
            return main_loss + sum(self._weights[n] * loss for n, loss in zip(names, aux_losses))
        grads = LossGradients([main_loss, *aux_losses], shared_parameters, self.gradient_method, self._loss_scale())
        dots = dot_with_main(all_reduce_mean(grads.shared))  # [K], from gradients identical on every rank
        if self._window.device != dots.device:
            self._window = self._window.to(dots.device)
        row = self._window[self._steps_in_window]
        if names == list(self._weights):
            row += dots
        else:  # an update with only some of the known losses
            order = list(self._weights)
            row.index_add_(0, torch.tensor([order.index(n) for n in names], device=dots.device), dots)
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
        *sums, kept = torch.cat([sums, finite.sum().to(sums.dtype).reshape(1)]).tolist()
        self.skipped_steps += self.n_steps - int(kept)
        for name, total in zip(self._weights, sums):
            self._weights[name] = max(self.min_weight, self._weights[name] + self.lr * total)
        self._window.zero_()
        self._steps_in_window = 0

    def metrics(self) -> dict[str, float]:
        return {**super().metrics(), "olaux/skipped_steps": float(self.skipped_steps)}

    def state_dict(self) -> dict[str, Any]:
        return {
            "weights": dict(self._weights),
            "window": self._window.detach().cpu().clone(),
            "steps_in_window": self._steps_in_window,
            "pending": self._pending,
            "skipped_steps": self.skipped_steps,
            "log_checked": self._log_checked,
        }

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self._weights = dict(state_dict["weights"])
        self._window = state_dict["window"].detach().clone()
        self._steps_in_window = int(state_dict["steps_in_window"])
        self._pending = bool(state_dict["pending"])
        self.skipped_steps = int(state_dict["skipped_steps"])
        self._log_checked = bool(state_dict["log_checked"])
