"""Divergence guard: a training update with a non-finite loss, gradient or parameter stops the run (or is skipped).

Detected on the device without a host sync per update: each update folds "were all its losses and its gradient
norm finite?" into a device flag, recording the first bad update and its loss values; the flag is read where the
host waits for the device anyway (the end of an update, right before the next collection step reads the policy's
action) and before anything is written (checkpoints, replay side files), where the parameters are checked too.
So a run never trains on, evaluates, logs or saves past its first non-finite update.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping

import torch
from torch import Tensor

#: ``stop``: raise :class:`NonFiniteError` at the first non-finite update (nothing is saved after it);
#: ``skip``: skip that update's optimizer step and count it (one host sync per update), stop after too many in a row.
NONFINITE_MODES: tuple[str, ...] = ("stop", "skip")


class NonFiniteError(FloatingPointError):
    """Training produced a non-finite loss, gradient or parameter; the message is one line naming the update,
    what was non-finite and the last good checkpoint."""


class NonFiniteGuard:
    """Watches every update's losses and gradient norm (see the module docstring).

    Args:
        mode: ``stop`` or ``skip`` (see :data:`NONFINITE_MODES`).
        max_skips: with ``skip``, stop after this many non-finite updates in a row.
    """

    def __init__(self, mode: str = "stop", max_skips: int = 10) -> None:
        self.mode = mode
        self.max_skips = max_skips
        #: Names the state to resume from, for the messages; asked only when raising (it looks at files).
        self.last_checkpoint: Callable[[], str] = lambda: "not under a Trainer"
        self.skips = 0  # updates skipped so far (``skip`` mode)
        self._skips_in_a_row = 0
        self._first: Tensor | None = None  # [] long: first non-finite update, -1 while none
        self._first_values: dict[tuple[str, ...], Tensor] = {}  # loss names -> [K + 1] values at that update
        self._first_names: dict[tuple[str, ...], Tensor] = {}  # loss names -> [] long: update of those values

    def observe(self, update: int, losses: Mapping[str, Tensor], grads: Iterable[Tensor]) -> Tensor:
        """Record one update (after its backward, before its optimizer step).

        Args:
            update: the update's index (``trainer.global_step``).
            losses: ``name → scalar`` losses of the update.
            grads: the gradients about to be applied.

        Returns:
            ``[]`` bool tensor on the device: everything finite (no host sync here).
        """
        grads = list(grads)
        norms = torch._foreach_norm(grads) if grads else []
        grad_norm = torch.linalg.vector_norm(torch.stack(norms)) if norms else torch.zeros(())
        values = torch.stack([*(loss.detach().float() for loss in losses.values()), grad_norm.float()])  # [K + 1]
        ok = torch.isfinite(values.sum())  # one reduction: inf and nan anywhere make the sum non-finite
        if self.mode == "stop":
            if self._first is None:
                self._first = torch.full((), -1, dtype=torch.long, device=values.device)
            new = (~ok) & (self._first < 0)
            self._first = torch.where(new, update, self._first)
            names = (*losses, "gradient norm")
            if names not in self._first_values:
                self._first_values[names] = values.detach().clone()
                self._first_names[names] = torch.full((), -1, dtype=torch.long, device=values.device)
            self._first_values[names] = torch.where(new, values, self._first_values[names])
            self._first_names[names] = torch.where(new, update, self._first_names[names])
        return ok

    def skip(self, update: int, ok: Tensor) -> bool:
        """``skip`` mode: True when the update must be skipped (reads ``ok``: one host sync)."""
        if bool(ok):
            self._skips_in_a_row = 0
            return False
        self.skips += 1
        self._skips_in_a_row += 1
        if self._skips_in_a_row >= self.max_skips:
            raise NonFiniteError(f"{self._skips_in_a_row} non-finite updates in a row up to update {update} "
                                 f"(model.max_nonfinite_skips={self.max_skips}); training stopped; "
                                 f"{self.last_checkpoint()}")
        return True

    def check(self) -> None:
        """Raise :class:`NonFiniteError` if any update so far was non-finite (reads the flag: one host sync)."""
        if self._first is None or int(self._first) < 0:
            return
        first = int(self._first)
        bad: list[str] = []
        for names, at in self._first_names.items():
            if int(at) == first:
                values = self._first_values[names].tolist()
                bad = [f"{name}={value}" for name, value in zip(names, values) if not math.isfinite(value)]
        raise NonFiniteError(f"non-finite values at update {first} ({', '.join(bad) or 'unknown'}): training stopped, "
                             f"nothing was saved after update {first - 1}; {self.last_checkpoint()}")

    def check_parameters(self, named_parameters: Iterable[tuple[str, Tensor]], update: int) -> None:
        """Raise :class:`NonFiniteError` naming the first non-finite parameter (one host sync)."""
        named = [(n, p) for n, p in named_parameters]
        if not named:
            return
        norms = torch.stack(torch._foreach_norm([p.detach() for _, p in named]))
        if bool(torch.isfinite(norms).all()):
            return
        bad = [n for (n, _), norm in zip(named, norms.tolist()) if not math.isfinite(norm)]
        raise NonFiniteError(f"non-finite parameters after update {update - 1} ({', '.join(bad[:3])}"
                             f"{', ...' if len(bad) > 3 else ''}): training stopped, nothing was saved; "
                             f"{self.last_checkpoint()}")

    def state_dict(self) -> dict[str, int]:
        return {"skips": self.skips}

    def load_state_dict(self, state: dict[str, int]) -> None:
        self.skips = int(state.get("skips", 0))
