"""Pluggable behaviour as Lightning callbacks: auxiliary-loss weighting (the weighting contract, OL-AUX)."""

from a2ls_lightning.callbacks.olaux import OLAux
from a2ls_lightning.callbacks.weighting import (
    AuxWeighting,
    CosineGating,
    FixedWeights,
    GradientBalancing,
    default_weighting,
)

__all__ = ["AuxWeighting", "CosineGating", "FixedWeights", "GradientBalancing", "OLAux", "default_weighting"]
