"""The optimiser of :class:`~a2ls_lightning.modules.agent.SACModule`: one Adam (AdamW with weight decay) with a
parameter group per part, so that one ``optimizer.step()`` is one update and ``trainer.max_steps`` counts updates."""

from __future__ import annotations

from typing import Any

import torch

from a2ls_lightning.modules.settings import OptimizerSettings
from a2ls_lightning.validation import one_line

__all__ = ["check_fused_adam", "make_optimizer"]


def make_optimizer(learner: Any, optim: OptimizerSettings, device: torch.device,
                   capturable: bool = False) -> torch.optim.Optimizer:
    """Adam over the groups ``encoder`` (with the auxiliary heads), ``critic``, ``actor`` and ``alpha``.

    Args:
        learner: the :class:`~a2ls_lightning.modules.learner.SACLearner`.
        optim: learning rates, betas, weight decay, fused step.
        device: where the parameters live (the fused step is checked there).
        capturable: keep the step counts on the device (a CUDA-graph-captured step; same arithmetic).
    """
    betas = (optim.actor_beta1, 0.999)
    groups = [
        {"params": [*learner.encoder.parameters(), *learner.aux_losses.parameters()],
         "lr": optim.encoder_lr or optim.critic_lr, "name": "encoder"},
        {"params": list(learner.critic.parameters()), "lr": optim.critic_lr, "name": "critic"},
        {"params": learner.actor_parameters(), "lr": optim.actor_lr, "name": "actor"},
        {"params": [learner.log_alpha], "lr": optim.alpha_lr, "betas": (optim.alpha_beta1, 0.999), "name": "alpha"},
    ]
    options: dict[str, Any] = {"betas": betas, "capturable": capturable}
    if optim.fused_adam:
        check_fused_adam(device, capturable)
        options["fused"] = True
    else:
        # torch picks the per-tensor loop on a CPU (foreach only on CUDA); the foreach step is the same arithmetic
        # (scripts/check_identical.py: the same digest) and 15% faster here (1.38 vs 1.62 ms per step on the 425k
        # parameters of the benchmark config with one auxiliary loss, one thread).
        options["foreach"] = True
    groups = [g for g in groups if g["params"]]
    if optim.weight_decay > 0:
        for group in groups:  # decoupled decay on the networks; the temperature is a scalar, not a weight
            group["weight_decay"] = 0.0 if group["name"] == "alpha" else optim.weight_decay
        return torch.optim.AdamW(groups, **options)
    return torch.optim.Adam(groups, **options)


def _fused_adam_step(device: torch.device, capturable: bool) -> None:
    """One fused Adam step on a 1-element parameter on ``device``: raises where torch cannot do it."""
    param = torch.zeros(1, device=device, requires_grad=True)
    param.grad = torch.ones_like(param)
    torch.optim.Adam([param], fused=True, capturable=capturable).step()


def check_fused_adam(device: torch.device, capturable: bool = False) -> None:
    """One-line ``ValueError`` unless this torch can run a fused (``capturable`` with ``cudagraphs``) Adam step on
    ``device`` (AdamW shares Adam's fused kernel)."""
    try:
        _fused_adam_step(device, capturable)
    except Exception as err:  # noqa: BLE001 (whatever torch raises, the user gets one line naming the setting)
        what = f"{device} (capturable, for cudagraphs)" if capturable else str(device)
        raise ValueError(f"model.optim.fused_adam=true: torch {torch.__version__} cannot fuse Adam on {what}: "
                         f"{one_line(err)}") from None
