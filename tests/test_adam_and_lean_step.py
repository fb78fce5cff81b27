"""The fused Adam default (``fused_adam=null``: fused where torch can; a resume keeps its checkpoint's step) and the
lean update path (``loss.backward()`` and ``optimizer.step()`` called directly where Lightning's wrappers would add
nothing): the same results as Lightning's path, and Lightning's path wherever a hook or plugin needs it."""

from __future__ import annotations

import logging

import lightning.pytorch as pl
import pytest
import torch
from conftest import tiny_data, tiny_module, tiny_trainer

from a2ls_lightning.modules import agent
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
    assert lean._lean_steps and lean_trainer.global_step == 12
    counter = CountSteps()
    wrapped, trainer = _fit(tmp_path / "b", 12, callbacks=[counter])
    assert not wrapped._lean_steps and trainer.global_step == 12
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

    assert not wrappers_idle(tiny_trainer(tmp_path, 1), Hooked(hidden_dim=32, feature_dim=16))


@pytest.mark.skipif(not agent.can_fuse_adam(torch.device("cpu")), reason="this torch cannot fuse Adam on the CPU")
def test_fused_adam_by_default_where_torch_can_and_foreach_when_asked(tmp_path):
    assert _fused(_fit(tmp_path / "a", 2)[0])
    assert not _fused(_fit(tmp_path / "b", 2, fused_adam=False)[0])


def test_default_falls_back_to_foreach_where_torch_cannot_fuse(tmp_path, monkeypatch):
    def cannot(device, capturable):
        raise RuntimeError("no fused kernel here")

    monkeypatch.setattr(agent, "_fused_adam_step", cannot)
    assert not _fused(_fit(tmp_path, 2)[0])


@pytest.mark.parametrize("recorded", [False, "missing"])
def test_resume_keeps_the_checkpoints_foreach_step_and_is_exact(tmp_path, recorded):
    # A run made with the foreach step (fused_adam=false, or a checkpoint from before the option) resumed with
    # the default continues with the foreach step, exactly as an uninterrupted foreach run.
    straight, _ = _fit(tmp_path / "a", 10, fused_adam=False)
    ckpt = tmp_path / "b" / "half.ckpt"
    _fit(tmp_path / "b", 5, ckpt_out=ckpt, fused_adam=False)
    if recorded == "missing":
        state = torch.load(ckpt, weights_only=False)
        del state["hyper_parameters"]["fused_adam"]
        torch.save(state, ckpt)
    resumed, _ = _fit(tmp_path / "b", 10, ckpt_in=str(ckpt))
    assert resumed.hparams.fused_adam is None and not _fused(resumed)
    a, b = straight.state_dict(), resumed.state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)


def test_resume_refuses_an_explicit_change_of_the_adam_step_in_one_line(tmp_path):
    ckpt = tmp_path / "half.ckpt"
    _fit(tmp_path, 3, ckpt_out=ckpt, fused_adam=False)
    with pytest.raises(ValueError) as err:
        _fit(tmp_path, 6, ckpt_in=str(ckpt), fused_adam=True)
    assert "model.fused_adam=True (checkpoint: False)" in str(err.value) and "\n" not in str(err.value)
