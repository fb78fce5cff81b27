"""Per-example credit of auxiliary losses, and the base class of the rules that learn from a held-out main loss.

One SGD step with per-example weights ``w`` moves ``θ' = θ − η ∇θ[L_main + Σ_n mean_b w[b, n] L_n[b]]``, so to
first order the held-out main loss moves by

    ∂L_main^held(θ') / ∂w[b, n] ≈ −(η / B) · c[b, n],    c[b, n] = ⟨∇θ L_n[b], ∇θ L_main^held(θ)⟩

over the shared parameters ``θ``. ``c[b, n] > 0``: raising example ``b``'s weight on loss ``n`` lowers the held-out
main loss. This is the quantity of learning-to-reweight (Ren et al. 2018, "Learning to Reweight Examples for Robust
Deep Learning") and Meta-Weight-Net (Shu et al. 2019), and, summed over the batch, OL-AUX's dot product (Lin et al.
2019).

All ``B × K`` values come from two extra reverse passes, not ``B`` backward passes (:func:`example_credit`: the
double-backward trick). With dummies ``u_n ∈ R^B`` (all ones), ``v(u) = ∇θ Σ_n ⟨u_n, L_n⟩ = Jᵀu`` is taken with its
graph, and ``∇u ⟨v(u), g⟩ = J g`` is the vector of every ``⟨∇θ L_n[b], g⟩``. It works on the losses the module
already computed (no functional re-run of the module, which ``torch.func.jvp`` would need: the contract hands the
rule losses, not functions). Every op on the path of the auxiliary losses needs a double backward (PyTorch's
built-in layers have one).

Under DDP the held-out gradient ``g`` is averaged over the ranks *before* the dot products (:func:`heldout_gradient`),
as OL-AUX's authors average gradients across workers, and the normalisation's scale is averaged too: every rank
scores its own examples against the same ``g`` on the same scale.

Cost of a credit measurement: the held-out main loss's forward and backward (SAC: the critic on a second batch) and
the double backward through the auxiliary losses. Measured with ``cd scripts && python benchmark_olaux_cost.py
--module --threads 1 --clock cpu --rounds 5 --updates 300`` (``SACModule.training_step`` in a Trainer, the five losses
of the benchmark config, hidden 256, batch 256, one thread, CPU time, on the 2-core machine with a load of about 9):
FixedWeights 25.7 ms per update; OLAux 1.14x; ``RLAux()`` (credit every 4 updates) 1.31x (quartiles of rounds
1.29-1.40), ``reward_every=1`` 1.97x; ``RLAux(credit="batch")`` 1.28x; ``LookaheadWeights()`` (every 4) 1.34x
(1.08-1.43), ``credit_every=1`` 2.08x. The defaults stay within 1.5x; credit on every update does not.
"""

from __future__ import annotations

import inspect
import weakref
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn

from a2ls_lightning.callbacks.gradients import all_reduce_mean
from a2ls_lightning.callbacks.weighting import AuxWeighting
from a2ls_lightning.validation import check


def _flat(grads: Sequence[Tensor | None], params: Sequence[Tensor]) -> Tensor:
    """``[P]`` float32 from one gradient per parameter (zeros where ``None``)."""
    if not params:
        return torch.zeros(0)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1).float()
                      for g, p in zip(grads, params)])


def heldout_gradient(heldout_loss: Tensor, shared_parameters: Sequence[Tensor]) -> Tensor:
    """``g = ∇θ L_main^held``: ``[P]`` float32 over the shared parameters, averaged over DDP ranks.

    ``heldout_loss``: the held-out main loss *with its graph* (``heldout_main_loss(with_graph=True)``)."""
    params = [p for p in shared_parameters if p.requires_grad]
    if not heldout_loss.requires_grad or not params:
        return all_reduce_mean(torch.zeros(sum(p.numel() for p in params), device=heldout_loss.device))
    grads = torch.autograd.grad(heldout_loss, params, allow_unused=True)
    return all_reduce_mean(_flat(grads, params))


def example_credit(aux_losses: Sequence[Tensor], shared_parameters: Sequence[Tensor], heldout_grad: Tensor) -> Tensor:
    """``c[b, n] = ⟨∇θ L_n[b], g⟩``: ``[B, K]`` float32, detached, from ``K`` per-example losses (``[B]`` each, with
    their graphs, which are kept for the module's own backward) and ``g`` (``[P]``, :func:`heldout_gradient`).

    Example:
        >>> enc, head = torch.nn.Linear(3, 2), torch.nn.Linear(2, 1)
        >>> per = head(torch.tanh(enc(torch.randn(5, 3)))).squeeze(1).pow(2)    # [B] = [5]
        >>> example_credit([per], list(enc.parameters()), torch.ones(8)).shape  # 3*2 + 2 shared parameters
        torch.Size([5, 1])
    """
    params = [p for p in shared_parameters if p.requires_grad]
    batch = aux_losses[0].shape[0]
    credit = torch.zeros(batch, len(aux_losses), device=heldout_grad.device)
    live = [k for k, loss in enumerate(aux_losses) if loss.requires_grad]
    if not live or not params:
        return credit
    with torch.enable_grad(), torch.autocast(heldout_grad.device.type, enabled=False):
        dummies = [torch.ones_like(aux_losses[k], requires_grad=True) for k in live]  # u_n, [B]
        vs = torch.autograd.grad([aux_losses[k] for k in live], params, grad_outputs=dummies, create_graph=True,
                                 allow_unused=True)  # Jᵀu, with its graph
        sizes = [p.numel() for p in params]
        dot = sum((v.float() * g.view_as(v)).sum() for v, g in zip(vs, heldout_grad.split(sizes))
                  if v is not None and v.requires_grad)
        if not isinstance(dot, Tensor):  # no loss reaches the shared parameters
            return credit
        # retain_graph: the second pass walks nodes of the forward graph that the module still backpropagates
        rows = torch.autograd.grad(dot, dummies, retain_graph=True, allow_unused=True)
    for k, row in zip(live, rows):
        if row is not None:
            credit[:, k] = row.detach().float()
    return credit


def normalise_credit(credit: Tensor) -> Tensor:
    """``c / RMS(c)``: the RMS over all ``B × K`` values, averaged over ranks (scale-free, the same on every rank)."""
    scale = all_reduce_mean(credit.pow(2).mean().reshape(1)).sqrt()
    return credit / scale.clamp_min(torch.finfo(credit.dtype).tiny)


def step_with_mean_gradients(objective: Tensor, module: nn.Module, optimizer: torch.optim.Optimizer) -> None:
    """One optimizer step of ``module`` on ``objective``, its gradients averaged over DDP ranks first (every rank
    takes the same step)."""
    params = list(module.parameters())
    flat = all_reduce_mean(_flat(torch.autograd.grad(objective, params, allow_unused=True), params))
    for p, g in zip(params, flat.split([p.numel() for p in params])):
        p.grad = g.view_as(p).to(p.dtype).clone()
    optimizer.step()
    optimizer.zero_grad(set_to_none=True)


def seeded(seed: int, build: Callable[[], nn.Module]) -> nn.Module:
    """``build()`` with the global CPU generator seeded by ``seed`` (and restored after): the same on every rank."""
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return build()


def move_optimizer_state(optimizer: torch.optim.Optimizer, device: torch.device) -> None:
    for state in optimizer.state.values():
        for key, value in state.items():
            if isinstance(value, Tensor) and key != "step":
                state[key] = value.to(device)


def batch_advantage(stats: Tensor, rewards_seen: int, reward: Tensor, decay: float) -> tuple[Tensor, Tensor]:
    """RL-AUX's ``credit="batch"``: one reward's advantage against the statistics of the *earlier* rewards, over their
    spread (clipped at ±5), and the updated statistics. ``stats`` = ``[EMA of rewards, EMA of squared deviations,
    decay^n]`` (float64), EMAs started at 0 and bias-corrected as Adam's are."""
    mean, var, power = stats.unbind()
    r = reward.double()
    if rewards_seen >= 2:
        bias = 1.0 - power
        advantage = ((r - mean / bias) / (var / bias).sqrt().clamp_min(1e-12)).clamp(-5.0, 5.0)
    else:  # no spread yet to normalise by: learn from the entropy bonus only
        advantage = torch.zeros_like(r)
    previous = mean / (1.0 - power) if rewards_seen else r
    return advantage, torch.stack([decay * mean + (1 - decay) * r, decay * var + (1 - decay) * (r - previous) ** 2,
                                   power * decay])


def weight_spread(prefix: str, weights: Tensor, names: Sequence[str]) -> dict[str, float]:
    """``{prefix/weight_p10/<name>, prefix/weight_p90/<name>}``: the 10th and 90th percentiles over a batch's examples
    of ``[B, K]`` weights (one host sync)."""
    levels = torch.tensor([0.1, 0.9], device=weights.device)
    spread = torch.quantile(weights.float(), levels, dim=0).cpu()  # [2, K]
    out = {}
    for k, name in enumerate(names):
        out[f"{prefix}/weight_p10/{name}"] = float(spread[0, k])
        out[f"{prefix}/weight_p90/{name}"] = float(spread[1, k])
    return out


class HeldoutRule(AuxWeighting):
    """Base of the per-example rules that learn from the module's held-out main loss (``RLAux``,
    ``LookaheadWeights``): the module's hooks, checked in one line each, and the per-example credit.

    The module declares ``per_example_losses = True`` (it passes ``[B]`` losses and ``example_features`` to
    ``combine``) and has ``heldout_main_loss(resample: bool = True, with_graph: bool = False) -> Tensor``;
    ``with_graph=True`` (needed by a rule with ``needs_heldout_graph``) returns the loss differentiable with respect to
    the module's parameters. Outside a Trainer, call :meth:`attach` with such a module first.
    """

    per_example = True
    #: Whether :meth:`credit` is used (the module's held-out loss must then come with its graph).
    needs_heldout_graph = True

    def __init__(self) -> None:
        super().__init__()
        self._module: Callable[[], Any] | None = None

    def attach(self, module: Any) -> None:
        """Use ``module.heldout_main_loss``; refuse, in one line naming what is missing, a module without it."""
        kind = type(module).__name__
        heldout = getattr(module, "heldout_main_loss", None)
        check(callable(heldout), f"{type(self).__name__} needs the module's heldout_main_loss(resample: bool) -> "
              f"Tensor (the main loss on a held-out batch); {kind} has none")
        if self.needs_heldout_graph:
            try:
                parameters = inspect.signature(heldout).parameters
            except (TypeError, ValueError):  # a builtin or C callable: trust it
                parameters = {"with_graph": None}
            takes = "with_graph" in parameters or any(p.kind == p.VAR_KEYWORD for p in parameters.values()
                                                      if hasattr(p, "kind"))
            check(takes, f"{type(self).__name__} needs {kind}.heldout_main_loss(resample, with_graph) (the held-out "
                  "main loss with its graph, for per-example credit); it takes no with_graph argument")
        try:
            self._module = weakref.ref(module)
        except TypeError:
            self._module = lambda: module

    def setup(self, trainer, pl_module, stage: str) -> None:
        super().setup(trainer, pl_module, stage)
        check(getattr(pl_module, "per_example_losses", False),
              f"{type(self).__name__} needs per-example auxiliary losses: {type(pl_module).__name__} does not declare "
              "per_example_losses = True (it must pass [B] losses and example_features to combine)")
        self.attach(pl_module)

    def _held_module(self) -> Any:
        module = self._module() if self._module is not None else None
        check(module is not None, f"{type(self).__name__} needs the module's heldout_main_loss(): use it as a Trainer "
              "callback or call attach(module) first")
        return module

    def _heldout(self, resample: bool) -> Tensor:
        """The held-out main loss, no graph: a float32 scalar."""
        with torch.no_grad():
            return self._held_module().heldout_main_loss(resample=resample).detach().float().reshape(())

    def credit(self, aux_losses: Sequence[Tensor], shared_parameters: Sequence[Tensor]) -> Tensor:
        """``[B, K]`` per-example credit ``c[b, n]`` against a freshly drawn held-out batch (the held-out gradient
        averaged over ranks first); see the module docstring."""
        with torch.enable_grad():
            heldout = self._held_module().heldout_main_loss(resample=True, with_graph=True)
            grad = heldout_gradient(heldout.reshape(()), shared_parameters)
        return example_credit(aux_losses, shared_parameters, grad)

    @staticmethod
    def _check_inputs(rule: str, aux_losses: Sequence[Tensor], names: Sequence[str],
                      example_features: Tensor | None) -> Tensor:
        """``example_features`` detached as float32 ``[B, D]``, after checking the losses are ``[B]``."""
        check(example_features is not None, f"{rule} needs example_features ([B, D], detached) in combine: the module "
              "must pass them with its per-example losses")
        for name, loss in zip(names, aux_losses):
            check(loss.ndim == 1 and loss.shape[0] == example_features.shape[0],
                  f"{rule} needs per-example auxiliary losses: {name!r} has shape {tuple(loss.shape)}, expected "
                  f"[{example_features.shape[0]}]")
        return example_features.detach().float()
