"""The private Lightning state the package relies on (a2ls_lightning/lightning_private.py) exists in the installed
Lightning and does what we use it for: this fails the day Lightning renames or removes one of them."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from lightning.pytorch.strategies import DDPStrategy

from a2ls_lightning import lightning_private


class _Tiny(pl.LightningModule):
    def __init__(self) -> None:
        super().__init__()
        self.automatic_optimization = False
        self.w = torch.nn.Parameter(torch.ones(1))

    def training_step(self, batch, batch_idx):
        opt = self.optimizers()
        opt.zero_grad()
        self.manual_backward((self.w * batch).sum())
        lightning_private.counted_step(opt, opt.optimizer.step)  # counted like opt.step()
        lightning_private.count_logging_step(self.trainer)

    def configure_optimizers(self):
        return torch.optim.SGD(self.parameters(), lr=0.1)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.ones(8, 1), batch_size=1)


def test_every_private_attribute_is_where_we_use_it(tmp_path):
    module = _Tiny()
    trainer = pl.Trainer(max_steps=3, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, default_root_dir=tmp_path, accelerator="cpu")
    trainer.fit(module)
    assert trainer.global_step == 3  # counted_step: Lightning's step counting, max_steps honoured
    # count_logging_step: one extra logging step per update on top of Lightning's own one per batch
    assert trainer.fit_loop.epoch_loop._batches_that_stepped == 6
    assert module.w.item() != 1.0  # the step itself ran
    assert lightning_private.cluster_environment(trainer) is not None
    strategy = DDPStrategy()
    lightning_private.allow_unused_parameters(strategy)
    assert strategy._ddp_kwargs["find_unused_parameters"] is True
