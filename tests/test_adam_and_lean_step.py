"""The Adam step (foreach by default, fused on request: equal up to rounding) and the lean update path
(``loss.backward()`` and ``optimizer.step()`` called directly where Lightning's wrappers would add nothing): the same
results as Lightning's path, and Lightning's path wherever a hook or plugin needs it."""

from __future__ import annotations

import logging

import lightning.pytorch as pl
import pytest
import torch
from conftest import fused_on_cpu as _fused_on_cpu
from conftest import tiny_data, tiny_module, tiny_trainer

from a2ls_lightning.modules.lean_step import wrappers_idle

logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _fit(tmp_path, steps: int, callbacks=(), ckpt_in=None, ckpt_out=None, **module_kwargs):
    pl.seed_everything(5)
    module = tiny_module(**module_kwargs)
    data = tiny_data(seed=5, warmup_steps=16, batch_size=8, eval_interval=10_000)
    trainer = tiny_trainer(tmp_path, steps, callbacks=list(callbacks))
    trainer.fit(module, data, ckpt_path=ckpt_in)
    if ckpt_out is not None:
        trainer.save_checkpoint(ckpt_out)
    return module, trainer


def _fused(module) -> bool:
    return bool(module.optimizers().optimizer.defaults.get("fused"))


class CountSteps(pl.Callback):
    """Overrides two of the wrappers' hooks: Lightning's path must be taken, and the hooks called every update."""

    def __init__(self) -> None:
        self.before_step = self.after_backward = 0

    def on_after_backward(self, trainer, pl_module) -> None:
        self.after_backward += 1

    def on_before_optimizer_step(self, trainer, pl_module, optimizer) -> None:
        self.before_step += 1


def test_lean_path_gives_exactly_lightnings_results_and_steps_aside_for_hooks(tmp_path):
    lean, lean_trainer = _fit(tmp_path / "a", 12)
    assert lean.lean_steps and lean_trainer.global_step == 12
    counter = CountSteps()
    wrapped, trainer = _fit(tmp_path / "b", 12, callbacks=[counter])
    assert not wrapped.lean_steps and trainer.global_step == 12
    assert counter.before_step == counter.after_backward == 12  # the hooks saw every update
    a, b = lean.state_dict(), wrapped.state_dict()
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_wrappers_idle_only_for_one_device_full_precision_and_no_hooks(tmp_path):
    module = tiny_module()
    assert wrappers_idle(tiny_trainer(tmp_path, 1), module)
    assert not wrappers_idle(tiny_trainer(tmp_path, 1, callbacks=[CountSteps()]), module)
    assert not wrappers_idle(tiny_trainer(tmp_path, 1, precision="bf16-mixed"), module)

    class Hooked(type(module)):
        def on_before_backward(self, loss) -> None:
            pass

    assert not wrappers_idle(tiny_trainer(tmp_path, 1), Hooked.from_settings(hidden_dim=32, feature_dim=16))


def test_foreach_step_by_default_and_fused_on_request_equal_up_to_rounding(tmp_path):
    foreach, _ = _fit(tmp_path / "a", 1)
    assert not _fused(foreach) and foreach.optimizers().optimizer.defaults["foreach"]
    if not _fused_on_cpu():
        pytest.skip(f"torch {torch.__version__} cannot fuse Adam on this CPU")
    fused, _ = _fit(tmp_path / "b", 1, fused_adam=True)
    assert _fused(fused)
    a, b = foreach.state_dict(), fused.state_dict()
    # One update from the same start: the same arithmetic, rounded differently (not bit for bit, hence a setting).
    assert all(torch.allclose(a[k].float(), b[k].float(), rtol=1e-6, atol=1e-7) for k in a)


def test_resume_may_change_the_adam_step_like_other_runtime_settings(tmp_path):
    # The fused and the foreach step keep the same optimizer state (the same arithmetic up to rounding): a resume may
    # switch, as it may switch compile or nonfinite; a change of what the networks are is still refused.
    if not _fused_on_cpu():
        pytest.skip(f"torch {torch.__version__} cannot fuse Adam on this CPU")
    ckpt = tmp_path / "half.ckpt"
    _fit(tmp_path, 3, ckpt_out=ckpt, fused_adam=False)
    resumed, trainer = _fit(tmp_path, 6, ckpt_in=str(ckpt), fused_adam=True)
    assert trainer.global_step == 6 and _fused(resumed)
    with pytest.raises(ValueError) as err:
        _fit(tmp_path, 6, ckpt_in=str(ckpt), hidden_dim=48)
    assert "model.network.hidden_dim=48 (checkpoint: 32)" in str(err.value) and "\n" not in str(err.value)
