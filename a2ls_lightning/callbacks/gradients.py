"""Per-loss gradients over the shared parameters, and a combined loss that reuses them.

Adaptive weighting rules (OL-AUX, cosine gating) need the gradient of every loss separately on the
shared parameters (the encoder), each update. Two exact ways to get them:

``"per_loss"`` (default)
    One ``autograd.grad`` per loss over **all** the leaves it depends on (found by walking its graph).
    The heads of the losses are disjoint, so together these calls traverse every head once, as one
    backward of the combined loss would; only the shared encoder is traversed ``K+1`` times. The
    combined loss returned is then a single autograd node that hands the already computed gradients
    to the leaves, so ``manual_backward`` does not traverse the graph again. Cost measured by
    ``scripts/benchmark_olaux_cost.py --threads 1 --clock cpu --rounds 60`` (state encoder, twin-Q 2x256,
    five auxiliary heads, batch 256, idle machine; two runs each, 2026-12, AMD EPYC): 1.22-1.23x a fixed-weight
    critic update for OL-AUX; the whole ``SACModule.training_step`` in a Trainer (``--module``): 1.15-1.22x. The
    ratio moves with the machine: before the direct engine call of ``_grad``, another machine gave 1.30-1.31x
    (this one: 1.23-1.25x). What remains is the encoder's backward once more per auxiliary loss and per-node
    engine work. Tried without a measurable gain: splitting the graph
    at the encoder output and batching only the encoder, walking the shared encoder once for all losses,
    folding the weights into each loss's backward, and reading the main gradient from the final backward with
    hooks. For a heavy encoder the identity ``⟨J^T c_0, J^T c_k⟩ = ⟨c_k, J J^T c_0⟩`` (one JVP instead of K
    encoder backwards) pays: a 3-layer 256-wide encoder went from 13.0 to 9.1 ms per update (fixed: 4.1).

``"batched"``
    One ``autograd.grad(stack(losses), shared, grad_outputs=eye(K+1), is_grads_batched=True)`` call
    (``torch.autograd.grad`` with batched cotangents), followed by an ordinary backward of the weighted sum.
    vmap pushes all ``K+1`` cotangents through every head, so with a large main head (twin Q) it costs about
    2.7x a fixed-weight update on CPU; it can pay off where the shared encoder dominates and heads are tiny
    (pixels, GPU).
    Ops without a batching rule make it fall back to the per-loss loop for the shared gradients.

Both give the same gradients (tests/test_olaux.py checks dot products to 1e-5).

Loss scaling (16-mixed): the losses are multiplied by the scaler's current scale before
``autograd.grad`` (so fp16 activations' gradients do not underflow, as in ``manual_backward``) and the
gradients are divided by it again: everything here is in unscaled units. The combined loss's backward
multiplies the stored gradients by the incoming gradient, i.e. by the scale that ``manual_backward``
applied, so the optimizer (and the scaler's inf check) see the usual scaled gradients.

Limits of ``"per_loss"``: no double backward through the returned loss (``create_graph``), and
tensor hooks registered on leaves fire once per loss during the per-loss calls.
"""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from typing import Literal

import torch
from torch import Tensor

try:  # what torch.autograd.grad calls, without its argument handling (see LossGradients._grad)
    from torch.autograd.graph import _engine_run_backward
except ImportError:  # pragma: no cover - older or newer torch
    _engine_run_backward = None

GradientMethod = Literal["per_loss", "batched"]
GRADIENT_METHODS: tuple[str, ...] = ("per_loss", "batched")


def graph_leaves(loss: Tensor) -> list[Tensor]:
    """The leaf tensors that ``loss.backward()`` would accumulate gradients into."""
    if not loss.requires_grad:
        return []
    if loss.grad_fn is None:
        return [loss]
    # One walk per loss, exact. Walking a shared encoder once for all losses (handing autograd.grad the earlier
    # losses' leaves as extra inputs) was tried: no measurable gain.
    leaves, seen, stack = [], set(), [loss.grad_fn]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        variable = getattr(node, "variable", None)  # only AccumulateGrad nodes have one
        if variable is not None:
            leaves.append(variable)
        else:
            stack.extend([next_node for next_node, _ in node.next_functions if next_node is not None])
    return leaves


def _full_precision(device: torch.device) -> contextlib.AbstractContextManager:
    # combine runs inside training_step, i.e. under autocast: a matmul there would run in bf16/fp16
    if torch.is_autocast_enabled(device.type):
        return torch.autocast(device.type, enabled=False)
    return contextlib.nullcontext()


def dot_with_main(shared: Tensor) -> Tensor:
    """``[K+1, P]`` per-loss gradients (main first) → ``[K]`` float32 ``⟨g_0, g_i⟩``, whatever the autocast."""
    with _full_precision(shared.device):
        return shared[1:] @ shared[0]


def all_reduce_mean(tensor: Tensor) -> Tensor:
    """Average over the ranks of the default process group (a no-op without one): a new tensor."""
    dist = torch.distributed
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size() == 1:
        return tensor
    reduced = tensor.clone()
    dist.all_reduce(reduced)
    return reduced.div_(dist.get_world_size())


class LossGradients:
    """Gradients of ``K+1`` losses ``[main, aux_1, ..., aux_K]`` and a combined loss built from them.

    Args:
        losses: ``K+1`` scalar losses, the main loss first.
        shared_parameters: the parameters shared by main and auxiliary losses (``P`` elements in all).
        method: ``"per_loss"`` or ``"batched"`` (see the module docstring).
        scale: the loss scale of a ``GradScaler`` (16-mixed) or ``None``.
        log_eps: one ``eps`` or ``None`` per loss: the loss counts as ``log(loss + eps)`` (log balancing). With
            ``per_loss`` its gradient is taken as ``∇loss / (loss + eps)`` (the incoming gradient of the loss's
            backward), which is bit for bit what a ``log`` node in the graph would give, without the two autograd
            nodes per loss it costs in the forward and the backward.

    Attributes:
        shared: ``[K+1, P]`` float32, row ``k`` the flattened, unscaled gradient of loss ``k`` over the
            shared parameters (zeros where a loss does not reach a parameter). Local to this rank.

    Example:
        >>> enc, head = torch.nn.Linear(3, 4), torch.nn.Linear(4, 1)
        >>> z = enc(torch.randn(8, 3))
        >>> grads = LossGradients([head(z).pow(2).mean(), z.abs().mean()], list(enc.parameters()))
        >>> grads.shared.shape  # 2 losses, 3*4 + 4 shared parameters
        torch.Size([2, 16])
        >>> grads.combine([1.0, 0.5]).backward()  # = (main + 0.5 * aux).backward()
    """

    def __init__(
        self,
        losses: Sequence[Tensor],
        shared_parameters: Sequence[Tensor],
        method: GradientMethod = "per_loss",
        scale: Tensor | float | None = None,
        log_eps: Sequence[float | None] | None = None,
    ) -> None:
        if method not in GRADIENT_METHODS:
            raise ValueError(f"gradient_method={method!r} is not allowed; allowed: {', '.join(GRADIENT_METHODS)}")
        self.losses = list(losses)
        self._log_eps = list(log_eps) if log_eps is not None else [None] * len(self.losses)
        if len(self._log_eps) != len(self.losses):
            raise ValueError(f"log_eps: {len(self._log_eps)} values for {len(self.losses)} losses")
        if method != "per_loss":  # the log goes into the graph
            self.losses = [loss if eps is None else torch.log(loss + eps)
                           for loss, eps in zip(self.losses, self._log_eps)]
            self._log_eps = [None] * len(self.losses)
        unique = {id(p): p for p in shared_parameters if p.requires_grad}  # a parameter listed twice counts once
        self.shared_parameters = list(unique.values())
        self.method = method
        self._scale = scale
        # per_loss only: which shared parameters some loss reaches, and each loss's other (leaf, grad) pairs
        self._reached: set[int] = set()
        self._other: list[list[tuple[Tensor, Tensor]]] = []
        self.shared = self._per_loss() if method == "per_loss" else self._batched()

    # --- gradients ------------------------------------------------------------------------------
    def _grad(self, outputs: Tensor, inputs: Sequence[Tensor], grad_outputs: Tensor | None = None,
              **kwargs) -> list[Tensor | None]:
        """Unscaled ``d outputs / d inputs``; the outputs are scaled first so fp16 backward does not underflow.

        Without ``kwargs`` (the per-loss path: every input is reached) the engine is called as
        ``torch.autograd.grad`` calls it: its argument handling (type checks, ``_make_grads``, overrides) cost
        ~75 µs a call, 0.45 ms of a ~9.5 ms update with six losses (``scripts/benchmark_olaux_cost.py``).
        """
        if self._scale is not None:
            scale = torch.as_tensor(self._scale, dtype=outputs.dtype, device=outputs.device)
            grad_outputs = (torch.ones_like(outputs) if grad_outputs is None else grad_outputs) * scale
        grads = None
        if not kwargs and _engine_run_backward is not None:
            cotangent = torch.ones_like(outputs) if grad_outputs is None else grad_outputs
            try:  # outputs, grad_outputs, keep_graph, create_graph, inputs, allow_unreachable
                grads = _engine_run_backward((outputs,), (cotangent,), True, False, tuple(inputs), False,
                                             accumulate_grad=False)
            except TypeError:  # a torch whose private signature changed: the public entry point below
                grads = None
        if grads is None:
            grads = torch.autograd.grad(outputs, inputs, grad_outputs, retain_graph=True, **kwargs)
        return list(grads) if self._scale is None else [None if g is None else g / scale for g in grads]

    def _flat_shared(self, rows: list[dict[int, Tensor]]) -> Tensor:
        """``[K+1, P]`` float32 from one ``{id(param): grad}`` per loss, zeros where a loss does not reach."""
        parts = [row[id(p)].reshape(-1) if id(p) in row else p.new_zeros(p.numel())
                 for row in rows for p in self.shared_parameters]
        if not parts:
            return torch.zeros(len(rows), 0)
        return torch.cat(parts).view(len(rows), -1).float()  # one cat: this runs every update

    def _per_loss(self) -> Tensor:
        shared_ids = {id(p) for p in self.shared_parameters}
        rows = []
        for loss, eps in zip(self.losses, self._log_eps):
            leaves = graph_leaves(loss)
            # ∇log(L + eps) = ∇L · 1/(L + eps): the incoming gradient a log node would pass on (the same division)
            cotangent = None if eps is None else torch.ones_like(loss).div_(loss.detach() + eps)
            grads = self._grad(loss, leaves, cotangent) if leaves else []
            row, other = {}, []
            for leaf, grad in zip(leaves, grads):
                if id(leaf) in shared_ids:
                    row[id(leaf)] = grad
                else:
                    other.append((leaf, grad))
            rows.append(row)
            self._reached.update(row)
            self._other.append(other)
        return self._flat_shared(rows)

    def _batched(self) -> Tensor:
        count, params = len(self.losses), self.shared_parameters
        if not params or not any(loss.requires_grad for loss in self.losses):
            return torch.zeros(count, sum(p.numel() for p in params))
        stacked = torch.stack([loss.reshape(()) for loss in self.losses])
        try:
            eye = torch.eye(count, dtype=stacked.dtype, device=stacked.device)
            grads = self._grad(stacked, params, eye, is_grads_batched=True, allow_unused=True)
        except RuntimeError:  # an op without a vmap batching rule: the exact per-loss loop instead
            return self._flat_shared([self._loop_row(loss) for loss in self.losses])
        return torch.cat([(g if g is not None else p.new_zeros(count, *p.shape)).reshape(count, -1).float()
                          for g, p in zip(grads, params)], dim=1)

    def _loop_row(self, loss: Tensor) -> dict[int, Tensor]:
        if not loss.requires_grad:
            return {}
        grads = self._grad(loss, self.shared_parameters, allow_unused=True)
        return {id(p): g for p, g in zip(self.shared_parameters, grads) if g is not None}

    # --- the combined loss ----------------------------------------------------------------------
    def _split_shared(self, flat: Tensor) -> list[Tensor]:
        """``[P]`` → one tensor per shared parameter, in its shape and dtype."""
        sizes = [p.numel() for p in self.shared_parameters]
        return [g.view_as(p) if g.dtype == p.dtype else g.view_as(p).to(p.dtype)
                for g, p in zip(flat.split(sizes), self.shared_parameters)]

    def combine(self, coefficients: Sequence[float], shared_coefficients: Tensor | None = None) -> Tensor:
        """A scalar whose value is ``Σ_k coefficients[k]·loss_k`` and whose backward gives

        - each shared parameter ``Σ_k shared_coefficients[k]·∇loss_k`` (the rule's shared update),
        - every other leaf ``Σ_k coefficients[k]·∇loss_k`` (each head gets its own loss's gradient).

        Args:
            coefficients: ``K+1`` python floats, the weights of the losses.
            shared_coefficients: ``[K+1]`` weights on the shared parameters only (a tensor, so that
                data-dependent gates stay on the device: no host sync); ``None``: ``coefficients``.
        """
        coefficients = [float(c) for c in coefficients]
        plain = torch.tensor(coefficients, dtype=self.shared.dtype, device=self.shared.device)
        shared_coefficients = plain if shared_coefficients is None else shared_coefficients.to(plain)
        if self.method == "per_loss":
            with torch.no_grad(), _full_precision(plain.device):
                values = torch.stack([(loss if eps is None else torch.log(loss + eps)).reshape(())
                                      for loss, eps in zip(self.losses, self._log_eps)])
                value = values @ plain.to(values.dtype)
            return self._replay(value, shared_coefficients, coefficients)
        value = sum(c * loss for c, loss in zip(coefficients, self.losses))
        if shared_coefficients is plain:
            return value
        # an ordinary backward of `value`, corrected on the shared parameters by detached inner products
        with _full_precision(self.shared.device):
            delta = self._split_shared((shared_coefficients - plain) @ self.shared)
        correction = sum((p * g).sum() for p, g in zip(self.shared_parameters, delta))
        return value + (correction - correction.detach())

    def _replay(self, value: Tensor, shared_coefficients: Tensor, coefficients: list[float]) -> Tensor:
        """``value`` as one autograd node whose backward hands out the weighted per-loss gradients."""
        leaves, grads = [], []
        if self._reached:
            with _full_precision(self.shared.device):
                split = self._split_shared(shared_coefficients @ self.shared)
            for param, grad in zip(self.shared_parameters, split):
                if id(param) in self._reached:  # a parameter no loss reaches gets no gradient, as in backward
                    leaves.append(param)
                    grads.append(grad)
        # other leaves: usually reached by one loss each (a head); a leaf reached by several is summed
        position: dict[int, int] = {}
        for coefficient, pairs in zip(coefficients, self._other):
            if not pairs:
                continue
            weighted = [g for _, g in pairs]
            if coefficient != 1.0:  # one fused op per loss, not one per tensor
                weighted = torch._foreach_mul(weighted, coefficient)
            for (leaf, _), grad in zip(pairs, weighted):
                if id(leaf) in position:
                    grads[position[id(leaf)]] = grads[position[id(leaf)]] + grad
                else:
                    position[id(leaf)] = len(leaves)
                    leaves.append(leaf)
                    grads.append(grad)
        return _ReplayGradients.apply(value, grads, *leaves)


class _ReplayGradients(torch.autograd.Function):
    """A scalar node whose backward hands precomputed gradients (times the incoming one) to leaves."""

    @staticmethod
    def forward(ctx, value: Tensor, grads: list[Tensor], *leaves: Tensor) -> Tensor:
        ctx.grads = grads
        return value.clone()

    @staticmethod
    def backward(ctx, grad_out: Tensor) -> tuple:
        # grad_out is the loss scale under 16-mixed, else 1; one fused op for all the leaves. On the CPU a 1 is
        # seen without a device sync, and handing the stored gradients over unmultiplied saves a pass over all
        # the parameters (~0.2 ms of a ~12 ms update, scripts/benchmark_olaux_cost.py).
        grads = ctx.grads or []
        if grads and not (grad_out.device.type == "cpu" and grad_out.numel() == 1 and grad_out.item() == 1.0):
            grads = torch._foreach_mul(grads, grad_out)
        ctx.grads = None  # free them: the node is not run twice
        return (None, None, *grads)
