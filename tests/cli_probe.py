"""A callback the CLI tests load with ``--trainer.callbacks+=cli_probe.RankProbe`` (tests/ on PYTHONPATH).

Each rank writes what a DDP test needs to compare: its env's first observation, the episode ids and a digest of
the batches it trained on, and its final weights.
"""

from __future__ import annotations

from pathlib import Path

import lightning.pytorch as pl
import torch


class RankProbe(pl.Callback):
    def __init__(self, out_dir: str) -> None:
        self.out_dir = out_dir
        self.batch_sums: list[float] = []

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        self.batch_sums.append(float(batch["observation"].float().sum()))

    def on_train_end(self, trainer, pl_module) -> None:
        dm = trainer.datamodule
        sampler = dm.replay.sampler
        first = dm.replay.buffer.storage._storage["observation"][0]
        Path(self.out_dir).mkdir(parents=True, exist_ok=True)
        torch.save(
            {
                "rank": trainer.global_rank,
                "world_size": trainer.world_size,
                "first_obs": first.clone(),
                "batch_sums": self.batch_sums,
                "params": torch.cat([p.detach().flatten() for p in pl_module.parameters()]),
                "global_step": trainer.global_step,
                "n_stored": int((sampler.episode >= 0).sum()),
            },
            Path(self.out_dir) / f"rank{trainer.global_rank}.pt",
        )
