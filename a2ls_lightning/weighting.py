"""The auxiliary-loss weighting contract, as a type, and the default rule (fixed weights of 1).

Below both :mod:`a2ls_lightning.modules` (which calls the contract) and :mod:`a2ls_lightning.callbacks`
(which implement it), so neither depends on the other. A module that wants pluggable weighting:

- exposes ``shared_parameters()``: the parameters shared by the main and the auxiliary losses (the encoder);
- backpropagates ``self.aux_weighting.combine(main_loss, aux_losses, shared_parameters)`` in ``training_step``.

Per-example losses: a value of ``aux_losses`` may be a ``[B]`` tensor (one loss per example), and ``combine`` takes
an optional keyword ``example_features``, a ``[B, D]`` detached description of each example. A rule that is not
per-example (``per_example = False``, every rule but RL-AUX) first reduces each ``[B]`` loss by ``.mean()``
(:func:`mean_per_example_losses`), so it behaves exactly as with the scalar. A module computes per-example losses
only for a rule with ``per_example = True`` (reading the attribute with ``getattr(rule, "per_example", False)``)
and declares that it can, with a class attribute ``per_example_losses = True``; a rule that needs more of a
module checks for it in its ``setup``: RL-AUX and the look-ahead rule need ``heldout_main_loss(resample: bool = True,
with_graph: bool = False) -> Tensor``, the main loss on a held-out batch (``resample=False``: the batch of the last
call again; ``with_graph=True``: differentiable with respect to the module's parameters, for per-example credit).

A weighting callback installs itself as ``pl_module.aux_weighting`` in ``setup``; with none, the module uses
:class:`UnitWeights`. Under DDP a rule must take the same decision on every rank (reduce what it measures).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Protocol, runtime_checkable

from torch import Tensor


@runtime_checkable
class AuxWeightingProtocol(Protocol):
    """What a module needs from a weighting rule (``FixedWeights``, ``OLAux``, ... implement it)."""

    @property
    def weights(self) -> dict[str, float]:
        """Current weight per auxiliary-loss name (empty before the first ``combine``)."""

    def combine(self, main_loss: Tensor, aux_losses: Mapping[str, Tensor], shared_parameters: Iterable[Tensor], *,
                example_features: Tensor | None = None) -> Tensor:
        """The scalar loss to backpropagate, from the scalar main loss and ``name → scalar`` (or ``[B]``, one
        per example) auxiliary losses; ``example_features``: optional ``[B, D]`` detached, for per-example
        rules."""

    def after_update(self) -> None:
        """Called once after every optimizer update (a rule that learns its weights updates them here)."""

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume the rule exactly."""

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned."""


class UnitWeights:
    """The default rule: ``L_main + Σ_i L_aux,i`` (every auxiliary weight is 1; stateless).

    Example:
        >>> import torch
        >>> UnitWeights().combine(torch.tensor(1.0), {"forward": torch.tensor(2.0)}, [])
        tensor(3.)
    """

    def __init__(self) -> None:
        self._names: list[str] = []

    @property
    def weights(self) -> dict[str, float]:
        return dict.fromkeys(self._names, 1.0)

    #: Wants scalar losses: ``[B]`` ones are reduced by their mean.
    per_example = False

    def combine(self, main_loss: Tensor, aux_losses: Mapping[str, Tensor], shared_parameters: Iterable[Tensor], *,
                example_features: Tensor | None = None) -> Tensor:
        if not aux_losses:
            return main_loss
        self._names = list(aux_losses)
        return main_loss + sum(mean_per_example_losses(aux_losses).values())

    def after_update(self) -> None:
        pass

    def state_dict(self) -> dict[str, Any]:
        return {}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        pass


def mean_per_example_losses(aux_losses: Mapping[str, Tensor]) -> dict[str, Tensor]:
    """``name → scalar``: each ``[B]`` per-example loss replaced by its mean; scalars are passed through as they are
    (the very tensors: a rule given scalars computes exactly what it computed before per-example losses existed)."""
    return {name: loss.mean() if loss.ndim else loss for name, loss in aux_losses.items()}
