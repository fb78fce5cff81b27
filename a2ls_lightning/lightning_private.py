"""Every use of Lightning's private state, in one place (Lightning 2.4-2.6).

Lightning offers no public way to do these four things; each function names the private attribute it touches, and
``tests/test_lightning_private.py`` fails the day an installed Lightning renames or removes one, instead of a
training run failing (or, worse, silently logging at the wrong steps).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["PRIVATE_ATTRIBUTES", "allow_unused_parameters", "cluster_environment", "count_logging_step",
           "counted_step"]

#: (object, attribute) pairs this module relies on; the test checks each against the installed Lightning.
PRIVATE_ATTRIBUTES = (
    ("trainer.fit_loop.epoch_loop", "_batches_that_stepped"),
    ("DDPStrategy()", "_ddp_kwargs"),
    ("LightningOptimizer", "_on_before_step"),
    ("LightningOptimizer", "_on_after_step"),
    ("trainer", "_accelerator_connector"),
)


def count_logging_step(trainer: Any) -> None:
    """One more logging step: Lightning counts logging steps in batches, ours are updates (several updates share a
    batch at a replay ratio above 1, and their logs must land on the update that made them)."""
    trainer.fit_loop.epoch_loop._batches_that_stepped += 1


def allow_unused_parameters(strategy: Any) -> None:
    """Tell a ``DDPStrategy`` that some parameters may get no gradient in an update (SAC's actor and temperature
    between actor updates), before it wraps the model; their gradients then stay ``None`` and Adam skips them."""
    strategy._ddp_kwargs["find_unused_parameters"] = True


def counted_step(optimizer: Any, step: Callable[[], object] | None = None) -> None:
    """Lightning's step counting (``trainer.global_step``, ``max_steps``, the profiler's ``optimizer_step``) around
    ``step`` (``None``: a step already taken elsewhere, e.g. inside a captured CUDA graph), without the strategy and
    precision layers of ``LightningOptimizer.step``."""
    optimizer._on_before_step()
    if step is not None:
        step()
    optimizer._on_after_step()


def cluster_environment(trainer: Any) -> Any:
    """The trainer's cluster environment (SLURM, torchelastic, ...), to learn whether the cluster requeues a run."""
    return trainer._accelerator_connector.cluster_environment
