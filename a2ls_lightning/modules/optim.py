"""The optimiser of :class:`~a2ls_lightning.modules.agent.SACModule`: one Adam (AdamW with weight decay) with a
parameter group per part, so that one ``optimizer.step()`` is one update and ``trainer.max_steps`` counts updates;
and its optional learning-rate decay (:func:`lr_schedule`)."""

from __future__ import annotations

from typing import Any

import torch

from a2ls_lightning.modules.settings import OptimizerSettings
from a2ls_lightning.validation import one_line

__all__ = ["DECAYED_GROUPS", "check_fused_adam", "check_lr_schedule", "lr_schedule", "make_optimizer"]


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


#: The parameter groups whose learning rate ``lr_decay_to`` decays (the temperature's stays constant).
DECAYED_GROUPS = ("encoder", "critic", "actor")


def check_lr_schedule(optim: OptimizerSettings, max_steps: int, cudagraphs: bool) -> None:
    """One-line ``ValueError`` where ``lr_decay_to`` cannot be followed: no ``max_steps`` to decay over, or a
    captured optimizer step (its learning rate is a constant of the graph)."""
    if optim.lr_decay_to is None:
        return
    if max_steps < 1:
        raise ValueError(f"model.optim.lr_decay_to={optim.lr_decay_to} decays over trainer.max_steps; needs "
                         f"trainer.max_steps >= 1, not {max_steps}")
    if cudagraphs:
        raise ValueError(f"model.optim.lr_decay_to={optim.lr_decay_to}: a CUDA-graph-captured step keeps its "
                         "learning rate constant; allowed with it: runtime.cudagraphs=false")


def lr_schedule(optimizer: torch.optim.Optimizer, optim: OptimizerSettings,
                max_steps: int) -> torch.optim.lr_scheduler.LambdaLR | None:
    """SimbaV2's linear decay (Lee et al. 2025) as a ``LambdaLR``, stepped once after each optimizer step; ``None``
    without ``lr_decay_to``.

    Before update ``t`` (0-based) a decayed group's rate is ``lr · (1 − (1 − f)·min(t / max_steps, 1))`` with
    ``f = lr_decay_to``: ``lr`` at the first update, ``f·lr`` reached at ``max_steps``. It depends only on the
    update count (the scheduler's state and the rates are in the checkpoint), so a resumed run follows the same
    rates as long as it keeps ``trainer.max_steps``.

    Departures from SimbaV2: one fraction for every network (SimbaV2 gives actor and critic the same 1e-4 → 5e-5,
    so the fraction is the same thing there); the temperature is not decayed (a scalar whose rate this package sets
    apart, ``alpha_lr``).

    Examples:
        >>> opt = torch.optim.Adam([{"params": [torch.zeros(1, requires_grad=True)], "lr": 1e-4, "name": "critic"}])
        >>> schedule = lr_schedule(opt, OptimizerSettings(lr_decay_to=0.5), max_steps=10)
        >>> for _ in range(5):
        ...     opt.step(); schedule.step()
        >>> round(opt.param_groups[0]["lr"], 12)
        7.5e-05
    """
    if optim.lr_decay_to is None:
        return None
    final, total = float(optim.lr_decay_to), float(max_steps)

    def decay(update: int) -> float:
        return 1.0 - (1.0 - final) * min(update / total, 1.0)

    factors = [decay if group.get("name") in DECAYED_GROUPS else (lambda update: 1.0)
               for group in optimizer.param_groups]
    return torch.optim.lr_scheduler.LambdaLR(optimizer, factors)
