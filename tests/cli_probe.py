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


class PoisonAt(pl.Callback):
    """Makes training diverge at update ``step`` (on rank ``rank`` only, or every rank when ``rank`` is -1).

    ``what="weights"``: a critic weight becomes NaN before that update; ``what="batch"``: that update's rewards
    are NaN (``every=True``: every update from ``step`` on).
    """

    def __init__(self, step: int, rank: int = -1, what: str = "weights", every: bool = False) -> None:
        self.step, self.rank, self.what, self.every = step, rank, what, every
        self.fired = 0

    def _due(self, trainer) -> bool:
        # Once, unless `every`: a skipped update does not advance global_step, so "== step" would hold again.
        at = trainer.global_step >= self.step if self.every else (trainer.global_step == self.step and not self.fired)
        return at and self.rank in (-1, trainer.global_rank)

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if not self._due(trainer):
            return
        self.fired += 1
        if self.what == "batch":
            batch["reward"].fill_(float("nan"))
        else:
            with torch.no_grad():
                next(pl_module.learner.critic.parameters()).view(-1)[0] = float("nan")


class Progress(pl.Callback):
    """Writes the number of finished updates to ``path`` after each update (rank 0; for the kill tests)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_rank != 0:  # one writer
            return
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(str(trainer.global_step))
        tmp.replace(self.path)


class RaiseAt(pl.Callback):
    """Raises ``FloatingPointError`` (a failure the command reports in one line) at update ``step`` on ``rank``."""

    def __init__(self, step: int, rank: int = 0) -> None:
        self.step, self.rank = step, rank

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx) -> None:
        if trainer.global_step == self.step and trainer.global_rank == self.rank:
            raise FloatingPointError(f"injected failure on rank {self.rank} at update {self.step}")


class EvalLog(pl.Callback):
    """Appends ``<env steps> <eval return>`` to ``path`` after every evaluation (through the datamodule's listener)."""

    def __init__(self, path: str) -> None:
        self.path = Path(path)

    def setup(self, trainer, pl_module, stage) -> None:
        def write(env_steps: int, value: float) -> None:
            with open(self.path, "a") as handle:
                handle.write(f"{env_steps} {value!r}\n")

        trainer.datamodule.add_eval_listener(write)


class SignalDuringSave(pl.Callback):
    """Sends this process ``signum`` while the checkpoint that a signal requested is being written."""

    def __init__(self, signum: int = 2) -> None:
        self.signum = signum

    def on_save_checkpoint(self, trainer, pl_module, checkpoint) -> None:
        import os

        from a2ls_lightning.callbacks import GracefulPreemption

        if any(isinstance(c, GracefulPreemption) and c.saving for c in trainer.callbacks):
            os.kill(os.getpid(), self.signum)
