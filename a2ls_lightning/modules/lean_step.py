"""When Lightning's per-update wrappers of ``backward`` and ``optimizer.step`` would add nothing but their cost.

In manual optimization every update goes through ``LightningModule.manual_backward`` (strategy → precision plugin
→ ``on_before_backward`` / ``on_after_backward`` hooks → ``loss.backward()``) and ``LightningOptimizer.step``
(step counting → strategy → precision plugin → ``on_before_optimizer_step`` hooks → ``optimizer.step()``). With
one device, full precision and no hook overridden, those layers only call the two torch functions: about 0.2 ms
per update on this package's CPU benchmark config (2-3% of an update, measured by wrapping each call), which a
replay ratio above 1 pays once per update. :class:`SACModule` then calls the torch functions itself, keeping
Lightning's step counting (``trainer.global_step``, ``max_steps``, the profiler). Any other set-up (DDP, mixed
precision and its gradient scaler, a callback or module that overrides one of the hooks) takes Lightning's path.
"""

from __future__ import annotations

import lightning.pytorch as pl
from lightning.pytorch.plugins.precision import Precision
from lightning.pytorch.strategies import SingleDeviceStrategy
from lightning.pytorch.utilities.model_helpers import is_overridden

#: The hooks Lightning's two wrappers call around ``backward`` and ``optimizer.step`` in manual optimization.
WRAPPER_HOOKS = ("on_before_backward", "on_after_backward", "on_before_optimizer_step")


def wrappers_idle(trainer: pl.Trainer, module: pl.LightningModule) -> bool:
    """True when ``manual_backward(loss)`` is exactly ``loss.backward()`` and ``LightningOptimizer.step()`` exactly
    its step counting around ``optimizer.step()`` for this trainer and module."""
    # Exact types: a subclass may add work (a scaler, gradient synchronisation) to either wrapper.
    if type(trainer.strategy) is not SingleDeviceStrategy or type(trainer.precision_plugin) is not Precision:
        return False
    if any(is_overridden(hook, module, pl.LightningModule) for hook in ("backward", *WRAPPER_HOOKS)):
        return False
    return not any(is_overridden(hook, callback, pl.Callback) for callback in trainer.callbacks
                   for hook in WRAPPER_HOOKS)
