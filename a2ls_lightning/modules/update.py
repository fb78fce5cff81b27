"""One SAC update of :class:`~a2ls_lightning.modules.agent.SACModule`: one path, with its variants as data.

    losses → weighting rule → backward → guard → optimizer step → target EMA → logging

The variants only decide how the first two steps and the backward/step pair are done:

* how the losses reach the weighting rule (:data:`LOSS_PATHS`, picked once per update by :func:`loss_path`):
  ``fused`` (the compiled losses where ``runtime.compile`` made them), ``per_loss`` (eager losses for a rule that
  walks each loss's own graph: OL-AUX, cosine gating) or ``per_example`` (``[B]`` losses and example features for a
  per-example rule: RL-AUX);
* how backward and step are called: Lightning's wrappers, or the two torch calls when the wrappers would add nothing
  but their cost (``lean``, :mod:`a2ls_lightning.modules.lean_step`);
* ``runtime.cudagraphs``: the whole update as one captured function (:mod:`a2ls_lightning.modules.graphed`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import torch

from a2ls_lightning.lightning_private import counted_step

__all__ = ["LOSS_PATHS", "loss_path", "named_losses", "run_update"]

Losses = tuple[torch.Tensor, dict, dict, dict]  # (weighted critic objective, main, aux, metrics)


def _fused(module: Any, batch: Mapping[str, torch.Tensor], update_actor: bool) -> Losses:
    main, aux, metrics = module.losses_fn(batch, update_actor=update_actor)
    return module.aux_weighting.combine(main["critic"], aux, module.shared_parameters()), main, aux, metrics


def _per_loss(module: Any, batch: Mapping[str, torch.Tensor], update_actor: bool) -> Losses:
    # A rule that walks each loss's own graph cannot see through a compiled or captured graph: the eager losses.
    main, aux, metrics = module.learner.losses(batch, update_actor=update_actor)
    return module.aux_weighting.combine(main["critic"], aux, module.shared_parameters()), main, aux, metrics


def _per_example(module: Any, batch: Mapping[str, torch.Tensor], update_actor: bool) -> Losses:
    main, aux, metrics = module.learner.losses(batch, update_actor=update_actor, per_example=True)
    features = metrics.pop("example_features")  # [B, F], detached
    critic = module.aux_weighting.combine(main["critic"], aux, module.shared_parameters(), example_features=features)
    aux = {name: loss.detach().mean() for name, loss in aux.items()}  # the guard and the logs take scalars
    return critic, main, aux, metrics


#: How an update's losses reach the weighting rule, by name (see the module docstring).
LOSS_PATHS: dict[str, Callable[[Any, Mapping[str, torch.Tensor], bool], Losses]] = {
    "fused": _fused, "per_loss": _per_loss, "per_example": _per_example}


def loss_path(weighting: Any, cudagraphs: bool) -> str:
    """The path for a weighting rule: ``per_example``, ``per_loss``, ``graphed`` (``cudagraphs``) or ``fused``.
    Every rule that asks for neither per-example losses nor each loss's graph takes ``fused``, the path it always
    took (bit-identical to a module without the other paths)."""
    if getattr(weighting, "per_example", False):
        return "per_example"
    if getattr(weighting, "needs_loss_graphs", False):
        return "per_loss"
    return "graphed" if cudagraphs else "fused"


def run_update(module: Any, batch: Mapping[str, torch.Tensor]) -> None:
    """One gradient update of ``module`` on ``batch`` (losses, weighting, backward, guard, step, targets, logs)."""
    sac = module.sac
    update = module.trainer.global_step  # updates done so far (one optimizer step each)
    # running observation statistics (obs_norm) and the reward scale (reward_norm_g_max), before the losses read them
    module.learner.observe(batch, module.reward_scale())
    update_actor = update % sac.actor_update_freq == 0
    path = loss_path(module.aux_weighting, module.runtime.cudagraphs)
    if path == "graphed":
        _graphed_update(module, batch, update, update_actor)
        return
    critic, main, aux, metrics = LOSS_PATHS[path](module, batch, update_actor)
    total = critic + main.get("actor", 0.0) + main.get("temperature", 0.0)
    opt = module.optimizers()
    opt.zero_grad(set_to_none=True)
    if module.lean_steps:  # what manual_backward would do here (see modules/lean_step.py)
        total.backward()
    else:
        module.manual_backward(total)
    ok = module.guard.observe(update, named_losses(main, aux), module.gradients())
    if module.guard.mode == "skip" and module.guard.skip(update, ok):
        opt.zero_grad(set_to_none=True)  # the update is dropped whole: no step, no target update
        return
    if module.lean_steps:  # LightningOptimizer.step without the layers that would only pass the call on
        counted_step(opt, opt.optimizer.step)
    else:
        opt.step()
    # hyperspherical: weights back onto the sphere, after the step (the weighting rule saw the raw gradients)
    module.learner.project_weights()
    if module.lr_schedule is not None:  # optim.lr_decay_to: the rates of the next update
        module.lr_schedule.step()
    if update % sac.target_update_freq == 0:
        module.learner.update_targets(sac.critic_tau, sac.encoder_tau)
    module.after_update(update, main, aux, metrics)


def _graphed_update(module: Any, batch: Mapping[str, torch.Tensor], update: int, update_actor: bool) -> None:
    """One update through :class:`~a2ls_lightning.modules.graphed.GraphedUpdate`: the step runs inside the graph."""
    opt = module.optimizers()
    graphed = module.graphed_update_for(opt.optimizer)
    main, aux, metrics, grad_norm = graphed(batch, update_actor, update % module.sac.target_update_freq == 0)
    module.guard.observe(update, named_losses(main, aux), [grad_norm])
    counted_step(opt)  # the step itself ran in the graph: only Lightning's counting is left to do
    module.learner.project_weights()  # in place, outside the graph (the captured step reads the same storage)
    module.after_update(update, main, aux, metrics)


def named_losses(main: dict, aux: dict) -> dict:
    """The guard's names of an update's losses: ``critic loss``, ``aux <name> loss``, ..."""
    return {f"{k} loss": v for k, v in main.items()} | {f"aux {k} loss": v for k, v in aux.items()}
