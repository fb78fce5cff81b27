"""The whole SAC update as one function of the batch, captured as a CUDA graph (``SACModule(cudagraphs=True)``).

An update is many small kernels (encoder, twin critic, actor, auxiliary heads, Adam over a dozen tensors, the
EMA of the targets); at the CPU-sized networks of the benchmarks the GPU waits on Python to launch them. Captured
once, an update becomes one copy of the batch into the graph's inputs and one replay: Python runs the update's
code only while capturing. LeanRL reports SAC going from 127 to 725 steps/s on an H100 this way
(``torch.compile`` plus CUDA graphs).

The capture is done by ``tensordict.nn.CudaGraphModule`` (TorchRL's own wrapper: warm-up on a side stream,
static input buffers, the batch copied in before each replay) rather than by hand. Without CUDA it calls the
function as it is, so the CPU test suite runs exactly the code that CUDA captures.

What capture needs, and how the module provides it:

- **Static control flow.** An update either trains the actor or not, and either moves the targets or not: one
  graph per combination (at most four), each captured after ``warmup`` eager calls of its own.
- **Static tensors.** Adam runs with ``capturable=True`` (its step counts live on the device); the gradients are
  set to ``None`` at the start of every update, as in the eager path, so an update that skips the actor leaves
  the actor's Adam state alone.
- **No host syncs.** The non-finite guard gets the losses and the gradient norm as graph outputs and checks
  them outside the graph (``nonfinite="skip"`` reads the flag before the optimizer step, so it cannot be
  captured: the module refuses the combination).
- **Static weighting.** ``UnitWeights``, ``FixedWeights`` and ``GradientBalancing`` are captured with the update
  (their weights are constants of the graph). Rules that differentiate each loss on its own and change their
  weights between updates (``OLAux``, ``CosineGating``: ``needs_loss_graphs``) run the eager update instead.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable, Mapping, Sequence

import torch
from torch import Tensor

from a2ls_lightning.weighting import AuxWeightingProtocol

#: ``(main, aux, metrics, gradient norm)`` of one update, detached.
UpdateOutputs = tuple[dict[str, Tensor], dict[str, Tensor], dict[str, Tensor], Tensor]


class GraphedUpdate:
    """Losses, weighting, backward, optimizer step and target EMA of one update, captured per update kind.

    Args:
        losses_fn: ``(batch, update_actor) → (main, aux, metrics)`` (``SACLearner.losses`` or its compiled form).
        weighting: the weighting rule; its ``combine`` is traced into the graph.
        shared_parameters: the parameters the weighting treats as shared (the encoder's).
        parameters: every trained parameter (for the gradient norm the guard checks).
        optimizer: the raw ``torch.optim`` optimizer (``capturable=True`` on CUDA).
        update_targets: ``() → None``, the EMA of the target networks.
        warmup: eager calls of each update kind before its capture (compiled losses compile in the first).

    Example:
        >>> graphed = GraphedUpdate(learner.losses, weighting, shared, params, adam, ema)     # doctest: +SKIP
        >>> main, aux, metrics, grad_norm = graphed(batch, update_actor=True, update_targets=False)  # +SKIP
    """

    def __init__(
        self,
        losses_fn: Callable[..., tuple[dict, dict, dict]],
        weighting: AuxWeightingProtocol,
        shared_parameters: Sequence[torch.nn.Parameter],
        parameters: Sequence[torch.nn.Parameter],
        optimizer: torch.optim.Optimizer,
        update_targets: Callable[[], None],
        warmup: int = 3,
    ) -> None:
        self.losses_fn, self.weighting, self.optimizer = losses_fn, weighting, optimizer
        self.shared_parameters, self.parameters = list(shared_parameters), list(parameters)
        self.update_targets, self.warmup = update_targets, warmup
        self._graphs: dict[tuple[bool, bool], Callable[[dict[str, Tensor]], UpdateOutputs]] = {}

    def __call__(self, batch: Mapping[str, Tensor], update_actor: bool, update_targets: bool) -> UpdateOutputs:
        """Run one update on ``batch`` (``[B, L, ...]`` tensors on the training device); returns its outputs."""
        key = (bool(update_actor), bool(update_targets))
        graph = self._graphs.get(key)
        if graph is None:
            from tensordict.nn import CudaGraphModule

            with warnings.catch_warnings():
                # Without CUDA the module warns that it passes calls through (the module said so at setup);
                # with TensorDict registered in PyTree it unregisters it (process-wide, once; our batches are
                # passed in as plain dicts, and Lightning moves them before this point).
                warnings.filterwarnings("ignore", message=".*without CUDA device.*|.*registered in PyTree.*")
                graph = self._graphs[key] = CudaGraphModule(self._update_fn(*key), warmup=self.warmup)
        # A plain dict of tensors (a TensorDict iterates over its batch dimension, not over its keys).
        tensors = {k: batch[k] for k in batch.keys()}  # noqa: SIM118
        device = next(iter(tensors.values())).device.type
        if not torch.is_autocast_enabled(device):
            return graph(tensors)
        # Under bf16-mixed (Lightning's autocast around training_step): autocast's cache of casted weights must be
        # off while capturing, or the graph would read casts freed after capture (torch.cuda.graph's docs).
        with torch.autocast(device, dtype=torch.get_autocast_dtype(device), cache_enabled=False):
            return graph(tensors)

    def _update_fn(self, update_actor: bool, update_targets: bool) -> Callable[[dict[str, Tensor]], UpdateOutputs]:
        def update(batch: dict[str, Tensor]) -> UpdateOutputs:
            main, aux, metrics = self.losses_fn(batch, update_actor=update_actor)
            critic = self.weighting.combine(main["critic"], aux, self.shared_parameters)
            total = critic + main.get("actor", 0.0) + main.get("temperature", 0.0)
            # None, not zeros: an update without the actor must leave the actor's Adam moments alone (as eager).
            self.optimizer.zero_grad(set_to_none=True)
            total.backward()
            grads = [p.grad for p in self.parameters if p.grad is not None]
            grad_norm = torch.linalg.vector_norm(torch.stack(torch._foreach_norm(grads)))
            self.optimizer.step()
            if update_targets:
                self.update_targets()
            return ({k: v.detach() for k, v in main.items()}, {k: v.detach() for k, v in aux.items()},
                    {k: torch.as_tensor(v).detach() for k, v in metrics.items()}, grad_norm.detach())

        return update
