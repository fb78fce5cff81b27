"""Warnings of third-party libraries that are wrong or say nothing to this package's users, filtered at their
source, each with the reason. Warnings that matter stay.
"""

from __future__ import annotations

import warnings

#: (message regex, category, why it is filtered)
FILTERS: tuple[tuple[str, type[Warning], str], ...] = (
    ("Using ModelCheckpoint with manual optimization and every_n_train_steps", UserWarning,
     ("SACModule saves after the optimizer step on purpose: a checkpoint at update N holds the state after N "
      "updates, and resume is exact")),
)


def install() -> None:
    """Add the filters (idempotent: ``warnings`` ignores an identical filter added twice)."""
    for message, category, _why in FILTERS:
        warnings.filterwarnings("ignore", message=message, category=category)
