"""a2ls_lightning: sample-efficient RL with auxiliary losses (A2LS, OL-AUX) on PyTorch Lightning and TorchRL.

The public classes are imported on first use (PEP 562), so that ``a2ls --help``, ``a2ls losses`` and other
commands that need neither torch nor Lightning start in a fraction of a second.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from a2ls_lightning import quiet

if TYPE_CHECKING:
    from a2ls_lightning.data.datamodule import ReplayDataModule
    from a2ls_lightning.modules.agent import SACModule
    from a2ls_lightning.modules.aux_registry import AuxContext, register_aux_loss
    from a2ls_lightning.modules.aux_spec import AuxLossSpec
    from a2ls_lightning.modules.settings import NetworkSettings, OptimizerSettings, RuntimeSettings, SACSettings
    from a2ls_lightning.runs.policy import Policy, load_policy

__all__ = ["AuxContext", "AuxLossSpec", "NetworkSettings", "OptimizerSettings", "Policy", "ReplayDataModule",
           "RuntimeSettings", "SACModule", "SACSettings", "load_policy", "register_aux_loss"]
__version__ = "0.1.0"

_LAZY = {
    "ReplayDataModule": "a2ls_lightning.data.datamodule",
    "SACModule": "a2ls_lightning.modules.agent",
    "AuxLossSpec": "a2ls_lightning.modules.aux_spec",
    "AuxContext": "a2ls_lightning.modules.aux_registry",
    "register_aux_loss": "a2ls_lightning.modules.aux_registry",
    **{name: "a2ls_lightning.modules.settings"
       for name in ("NetworkSettings", "OptimizerSettings", "RuntimeSettings", "SACSettings")},
    "Policy": "a2ls_lightning.runs.policy",  # a trained checkpoint's policy: load_policy(path).act(obs)
    "load_policy": "a2ls_lightning.runs.policy",
}

quiet.install()


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'a2ls_lightning' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_LAZY])
