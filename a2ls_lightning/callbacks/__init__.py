"""Pluggable behaviour as Lightning callbacks: auxiliary-loss weighting (the weighting contract, OL-AUX, RL-AUX,
look-ahead reweighting), a progress bar in updates and env steps, and graceful preemption (save and stop on a
signal)."""

from a2ls_lightning.callbacks.olaux import OLAux
from a2ls_lightning.callbacks.preemption import GracefulPreemption, Preempted
from a2ls_lightning.callbacks.progress import UpdateProgressBar
from a2ls_lightning.callbacks.reweight import LookaheadWeights
from a2ls_lightning.callbacks.rlaux import RLAux
from a2ls_lightning.callbacks.weighting import (
    AuxWeighting,
    CosineGating,
    FixedWeights,
    GradientBalancing,
    default_weighting,
)

__all__ = ["AuxWeighting", "CosineGating", "FixedWeights", "GracefulPreemption", "GradientBalancing", "LookaheadWeights",
           "OLAux", "Preempted", "RLAux", "UpdateProgressBar", "default_weighting"]
