"""Pluggable behaviour as Lightning callbacks: auxiliary-loss weighting (the weighting contract, OL-AUX) and a
progress bar in updates and env steps."""

from a2ls_lightning.callbacks.olaux import OLAux
from a2ls_lightning.callbacks.progress import UpdateProgressBar
from a2ls_lightning.callbacks.weighting import (
    AuxWeighting,
    CosineGating,
    FixedWeights,
    GradientBalancing,
    default_weighting,
)

__all__ = ["AuxWeighting", "CosineGating", "FixedWeights", "GradientBalancing", "OLAux", "UpdateProgressBar",
           "default_weighting"]
