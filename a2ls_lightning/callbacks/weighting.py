"""The auxiliary-loss weighting contract and the simple rules: fixed weights, gradient balancing, cosine gating.

The contract (:class:`a2ls_lightning.weighting.AuxWeightingProtocol`): a LightningModule exposes
``shared_parameters()`` (the encoder) and, in ``training_step``, backpropagates
``self.aux_weighting.combine(main_loss, aux_losses, shared_parameters)`` with ``aux_losses`` a dict
``name → scalar``. A weighting callback installs itself as ``pl_module.aux_weighting`` in ``setup``; without
one the module uses fixed weights of 1 (:class:`~a2ls_lightning.weighting.UnitWeights`). Names are discovered at
the first ``combine``. Under DDP, rules that look at gradients average them over the ranks first, so every rank
takes the same decision. ``combine`` must then be called on every rank the same number of times (it is a
collective).

Example (see docs/weighting_contract.md for a runnable module)::

    trainer = lightning.Trainer(callbacks=[CosineGating()])
    # in training_step, with features = encoder(obs) of shape [B, D]:
    total = self.aux_weighting.combine(critic_loss, {"forward": fwd_loss}, self.shared_parameters())
    self.manual_backward(total)
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import lightning.pytorch as pl
import torch
from torch import Tensor

from a2ls_lightning.callbacks.gradients import (
    GRADIENT_METHODS,
    GradientMethod,
    LossGradients,
    all_reduce_mean,
    dot_with_main,
)
from a2ls_lightning.validation import check_choice, check_number
from a2ls_lightning.weighting import mean_per_example_losses


class AuxWeighting(pl.Callback):
    """Base class of the weighting callbacks (they implement :class:`~a2ls_lightning.weighting.AuxWeightingProtocol`):
    turns a main loss and named auxiliary losses into the loss to backpropagate.

    Subclasses implement :meth:`_combine`. A rule with ``per_example = False`` (the default) sees scalar losses
    only: ``[B]`` per-example losses are reduced by their mean before ``_combine`` (bit-identical to the module
    passing the mean). A rule with ``per_example = True`` gets them as they come, and ``_combine`` also receives
    ``example_features=`` (``[B, D]`` or ``None``). ``weights`` maps each auxiliary-loss name to its current weight;
    it is logged as ``aux_weight/<name>`` on the steps where Lightning writes logs (``log_every_n_steps``).
    """

    def __init__(self) -> None:
        super().__init__()
        self._weights: dict[str, float] = {}
        self._grad_scaler: Any = None  # the precision plugin's GradScaler under 16-mixed (set in setup)

    @property
    def weights(self) -> dict[str, float]:
        """Current weight per auxiliary-loss name (empty before the first ``combine``)."""
        return dict(self._weights)

    #: Whether the rule weighs each example (it then gets ``[B]`` losses and ``example_features``); ``False``:
    #: every ``[B]`` loss is reduced by its mean first, and a module need not compute per-example losses at all.
    per_example: bool = False

    def combine(
        self, main_loss: Tensor, aux_losses: Mapping[str, Tensor], shared_parameters: Iterable[Tensor], *,
        example_features: Tensor | None = None,
    ) -> Tensor:
        """The loss to backpropagate.

        Args:
            main_loss: scalar main loss (the critic loss in SAC).
            aux_losses: ``name → scalar`` auxiliary losses, or ``[B]`` per-example losses (reduced by the mean
                unless the rule is ``per_example``).
            shared_parameters: the parameters shared by the main and auxiliary losses (the encoder).
            example_features: ``[B, D]`` detached description of each example (per-example rules only).

        Returns:
            A scalar tensor; its backward gives the parameters the gradient of this rule.
        """
        if not aux_losses:
            return main_loss
        if not self.per_example:
            aux_losses = mean_per_example_losses(aux_losses)
        names = list(aux_losses)
        for name in names:
            if name not in self._weights:
                self._weights[name] = self._initial_weight(name)
        if self.per_example:
            return self._combine(main_loss, [aux_losses[n] for n in names], names, list(shared_parameters),
                                 example_features=example_features)
        return self._combine(main_loss, [aux_losses[n] for n in names], names, list(shared_parameters))

    def _initial_weight(self, name: str) -> float:
        return 1.0

    def _combine(self, main_loss: Tensor, aux_losses: list[Tensor], names: list[str],
                 shared_parameters: list[Tensor]) -> Tensor:
        raise NotImplementedError

    def after_update(self) -> None:
        """Call once after every optimizer update (``on_train_batch_end`` does it under a Trainer)."""

    def metrics(self) -> dict[str, float]:
        """What is logged: ``aux_weight/<name>``."""
        return {f"aux_weight/{name}": value for name, value in self.weights.items()}

    def _loss_scale(self) -> Tensor | float | None:
        """The 16-mixed loss scale (``None`` without a scaler), read without a host-device sync."""
        scaler = self._grad_scaler
        if scaler is None or not scaler.is_enabled():
            return None
        # `_get_scale_async` avoids the sync of `get_scale()`; before the first `scale()` it is None
        scale = scaler._get_scale_async() if hasattr(scaler, "_get_scale_async") else None
        return scaler.get_scale() if scale is None else scale

    # --- Lightning hooks ----------------------------------------------------------------------------
    def setup(self, trainer: pl.Trainer, pl_module: pl.LightningModule, stage: str) -> None:
        pl_module.aux_weighting = self
        self._grad_scaler = getattr(trainer.precision_plugin, "scaler", None)
        names = getattr(pl_module, "aux_loss_names", None)
        if callable(names):  # a module that names its losses up front: settings are checked before any update
            self.check_names(list(names()))

    def check_names(self, names: list[str]) -> None:
        """Refuse settings that name auxiliary losses the module does not have (before any update)."""

    def on_train_batch_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule, outputs: Any, batch: Any,
                           batch_idx: int) -> None:
        self.after_update()
        if self._weights and _should_log(trainer):
            pl_module.log_dict(self.metrics(), on_step=True, on_epoch=False, batch_size=1)


def _should_log(trainer: pl.Trainer) -> bool:
    # Lightning writes step metrics only when this holds; logging on other steps would be dropped work
    connector = getattr(trainer, "_logger_connector", None)
    if connector is not None:
        return bool(connector.should_update_logs)
    return trainer.log_every_n_steps > 0 and (trainer.global_step + 1) % trainer.log_every_n_steps == 0


def log_balanced(losses: Sequence[Tensor], names: Sequence[str], eps: float, field: str, check: bool) -> list[Tensor]:
    """``log(loss + eps)`` for each loss (adaptive loss balancing, Hu et al.: ``∇ = ∇L / (L + eps)``).

    ``check``: :func:`check_log_balance` first.
    """
    if check:
        check_log_balance(losses, names, eps, field)
    return [torch.log(loss + eps) for loss in losses]


def check_log_balance(losses: Sequence[Tensor], names: Sequence[str], eps: float, field: str) -> None:
    """Verify ``loss + eps > 0`` (one host sync; done at the first combine only): a loss that can go negative,
    e.g. ``nmse`` with negatives, cannot be log-balanced."""
    for name, loss in zip(names, losses):
        value = float(loss.detach())
        if not value + eps > 0:
            raise ValueError(f"{field}: loss {name!r} = {value:.4g} but log balancing needs loss + {eps} > 0; "
                             "use non-negative losses or switch log balancing off")


class FixedWeights(AuxWeighting):
    """``L = L_main + Σ_i w_i L_aux,i`` with constant weights.

    Args:
        weights: one weight for every auxiliary loss (a float), or ``{name: weight}`` naming every
            auxiliary loss exactly (checked at the first ``combine``). Weights are finite and >= 0.

    Example:
        >>> w = FixedWeights({"forward": 0.5})
        >>> w.combine(torch.tensor(1.0), {"forward": torch.tensor(2.0)}, [])
        tensor(2.)
    """

    def __init__(self, weights: float | dict[str, float] = 1.0) -> None:
        super().__init__()
        if isinstance(weights, Mapping):
            self._configured: float | dict[str, float] = {
                str(k): check_number(f"FixedWeights.weights[{k!r}]", v, low=0.0) for k, v in weights.items()}
        else:
            self._configured = check_number("FixedWeights.weights", weights, low=0.0)
        self._checked = False

    def _initial_weight(self, name: str) -> float:
        if isinstance(self._configured, float):
            return self._configured
        if name not in self._configured:
            raise ValueError(f"FixedWeights.weights has no entry for auxiliary loss {name!r}; "
                             f"allowed: a single float, or a dict naming each of the losses")
        return self._configured[name]

    def check_names(self, names: list[str]) -> None:
        if isinstance(self._configured, dict):
            unknown = sorted(set(self._configured) - set(names))
            if unknown:
                raise ValueError(f"FixedWeights.weights names unknown auxiliary losses {unknown}; "
                                 f"allowed names: {sorted(names)}")
            for name in names:
                self._initial_weight(name)

    def _combine(self, main_loss, aux_losses, names, shared_parameters):
        if not self._checked:
            self.check_names(names)
        self._checked = True
        return main_loss + sum(self._weights[n] * loss for n, loss in zip(names, aux_losses))


def default_weighting() -> AuxWeighting:
    """What a module uses when no weighting callback is installed: fixed weights of 1."""
    return FixedWeights(1.0)


class GradientBalancing(AuxWeighting):
    """Adaptive loss balancing (Hu et al. 2017): ``L = log(L_main + eps) + Σ_i log(L_aux,i + eps)``.

    Every loss, the main one included, is wrapped in ``log``, so each contributes ``∇L / (L + eps)``: gradients
    of losses of different scales are balanced, and the weights stay 1. Losses must satisfy ``L + eps > 0``.

    Args:
        eps: added inside the log, > 0; keeps the gradient bounded when a loss goes to zero.
    """

    def __init__(self, eps: float = 0.02) -> None:
        super().__init__()
        self.eps = check_number("GradientBalancing.eps", eps, low=0.0, strict=True)
        self._checked = False

    def _combine(self, main_loss, aux_losses, names, shared_parameters):
        logs = log_balanced([main_loss, *aux_losses], ["main", *names], self.eps, "GradientBalancing",
                            check=not self._checked)
        self._checked = True
        return sum(logs)


class CosineGating(AuxWeighting):
    """Gradient-similarity gating (Du et al. 2018): auxiliary gradients reach the shared parameters only
    where they agree with the main gradient.

    On the shared parameters the update is ``∇L_main + Σ_i g_i ∇L_aux,i`` with
    ``g_i = 1[cos(∇L_main, ∇L_aux,i) >= 0]`` (or ``max(0, cos)`` when ``weighted``), the cosine taken over all
    shared parameters (averaged over DDP ranks first). Everything else gets its ordinary gradient: each
    auxiliary head learns from its own loss whatever the gate. ``weights`` reports the last gates.

    Args:
        weighted: scale each auxiliary gradient by ``max(0, cos)`` instead of gating it on ``cos >= 0``.
        gradient_method: ``"per_loss"`` (one autograd call per loss, reused for the update: cheapest with
            big heads) or ``"batched"`` (one vmapped call over the shared parameters).
    """

    #: Differentiates each loss on its own (walks its graph): a module runs its losses eagerly for it.
    needs_loss_graphs = True

    def __init__(self, weighted: bool = False, gradient_method: GradientMethod = "per_loss") -> None:
        super().__init__()
        self.weighted = bool(weighted)
        self.gradient_method = check_choice("CosineGating.gradient_method", gradient_method, GRADIENT_METHODS)
        self._gates: dict[str, Tensor] = {}

    @property
    def weights(self) -> dict[str, float]:
        """The gate of each auxiliary loss at the last update (1.0 before any)."""
        return {name: float(self._gates[name]) if name in self._gates else w for name, w in self._weights.items()}

    def _combine(self, main_loss, aux_losses, names, shared_parameters):
        if not torch.is_grad_enabled():  # e.g. a validation pass: no gradients to gate
            return main_loss + sum(aux_losses)
        grads = LossGradients([main_loss, *aux_losses], shared_parameters, self.gradient_method, self._loss_scale())
        gates = cosine_gates(all_reduce_mean(grads.shared), self.weighted)
        self._gates.update(zip(names, gates.detach().unbind()))
        return grads.combine([1.0] * (len(names) + 1), shared_coefficients=torch.cat([gates.new_ones(1), gates]))


def cosine_gates(shared_grads: Tensor, weighted: bool) -> Tensor:
    """``[K+1, P]`` gradients (main first) → ``[K]`` gates: ``1[cos >= 0]`` or ``max(0, cos)``."""
    norms = shared_grads.norm(dim=1)
    cos = dot_with_main(shared_grads) / (norms[1:] * norms[0]).clamp_min(torch.finfo(norms.dtype).tiny)
    return cos.clamp_min(0.0) if weighted else (cos >= 0).to(cos.dtype)
