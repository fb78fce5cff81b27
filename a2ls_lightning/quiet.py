"""Third-party messages that are wrong or say nothing to this package's users, filtered at their source, each
with the reason. Warnings that matter (GPU availability, real deprecations in user code) stay.
"""

from __future__ import annotations

import logging
import warnings

#: Python warnings: (message regex, category, why it is filtered).
WARNING_FILTERS: tuple[tuple[str, type[Warning], str], ...] = (
    ("Using ModelCheckpoint with manual optimization and every_n_train_steps", UserWarning,
     ("SACModule saves after the optimizer step on purpose: a checkpoint at update N holds the state after N "
      "updates, and resume is exact")),
    (r"`isinstance\(treespec, LeafSpec\)` is deprecated", Warning,
     "raised inside Lightning's own pytree helper on every run, about Lightning's code, not the user's"),
)

#: Log records: (logger name, text in the message, why it is dropped).
LOG_FILTERS: tuple[tuple[str, str, str], ...] = (
    ("absl", "'settotalmass' is deprecated",
     "dm_control's own model files use the attribute; MuJoCo warns twice per environment built"),
    ("lightning.pytorch.utilities.rank_zero", "💡 Tip:", "advertisements for optional cloud services"),
    ("lightning.fabric.utilities.rank_zero", "💡 Tip:", "advertisements for optional cloud services"),
    ("torchrl", "Initialized LazyTensorStorage", "an info line per replay buffer, with nothing to act on"),
    ("tensordict", "Setting up CudaGraphModule", "an info line per captured update kind (model.cudagraphs)"),
)


class _DropMessages(logging.Filter):
    def __init__(self, fragments: list[str]) -> None:
        super().__init__()
        self.fragments = fragments

    def filter(self, record: logging.LogRecord) -> bool:
        message = record.getMessage()
        return not any(fragment in message for fragment in self.fragments)


def install() -> None:
    """Add the filters (idempotent)."""
    for message, category, _why in WARNING_FILTERS:
        warnings.filterwarnings("ignore", message=message, category=category)
    by_logger: dict[str, list[str]] = {}
    for name, fragment, _why in LOG_FILTERS:
        by_logger.setdefault(name, []).append(fragment)
    for name, fragments in by_logger.items():
        logger = logging.getLogger(name)
        if not any(isinstance(f, _DropMessages) for f in logger.filters):
            logger.addFilter(_DropMessages(fragments))
