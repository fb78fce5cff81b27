"""a2ls_lightning: sample-efficient RL with auxiliary losses (A2LS, OL-AUX) on PyTorch Lightning and TorchRL."""

from a2ls_lightning import quiet
from a2ls_lightning.data.datamodule import ReplayDataModule
from a2ls_lightning.modules.agent import SACModule
from a2ls_lightning.modules.auxiliary import AuxLossSpec

__all__ = ["AuxLossSpec", "ReplayDataModule", "SACModule"]
__version__ = "0.1.0"

quiet.install()
