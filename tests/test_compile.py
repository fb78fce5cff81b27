"""``SACModule(compile=True)``: the same updates as eager, within float tolerance (CPU, tiny networks)."""

from __future__ import annotations

import re
import shutil

import lightning.pytorch as pl
import pytest
import torch
from conftest import tiny_data, tiny_module, tiny_trainer

from a2ls_lightning.callbacks import FixedWeights, OLAux

UPDATES = 8
#: The bias of the Linear layer in front of an auxiliary predictor's BatchNorm, and that BatchNorm's running mean:
#: the bias has no gradient in exact arithmetic (BatchNorm removes the mean), so Adam turns float rounding noise
#: (~1e-9, different in a fused kernel) into steps of ±lr: eager and compiled differ there by construction.
PRE_BATCHNORM = r"predictor\.0\.bias$|predictor\.1\.running_mean$"


def _compile_works() -> str | None:
    """``None`` when torch.compile (inductor) runs here, else the reason it cannot."""
    if shutil.which("gcc") is None and shutil.which("cc") is None and shutil.which("clang") is None:
        return "no C++ compiler for torch.compile's CPU backend"
    try:
        torch.compile(lambda x: x * 2 + 1, dynamic=False)(torch.ones(2))
    except Exception as err:  # noqa: BLE001 - any failure means: compile unusable on this machine
        return f"torch.compile does not work here: {type(err).__name__}: {err}"
    return None


@pytest.fixture(scope="module", autouse=True)
def _needs_compile():
    reason = _compile_works()
    if reason:
        pytest.skip(reason)
    # Compiled random ops (the actor's rsample) use inductor's own RNG unless told to fall back to eager's.
    config = torch._inductor.config
    old = config.fallback_random
    config.fallback_random = True
    yield
    config.fallback_random = old
    torch._dynamo.reset()


def _train(tmp_path, compile: bool, weighting=None, cudagraphs: bool = False) -> dict[str, torch.Tensor]:
    pl.seed_everything(0)
    kwargs = {"aux_losses": {"fwd": "forward_dynamics"}} if weighting is not None else {}
    module = tiny_module(compile=compile, cudagraphs=cudagraphs, **kwargs)
    callbacks = [weighting()] if weighting is not None else []
    trainer = tiny_trainer(tmp_path, UPDATES, callbacks=callbacks)
    trainer.fit(module, tiny_data())
    assert trainer.global_step == UPDATES
    return {k: v.detach().clone() for k, v in module.state_dict().items()}


@pytest.mark.parametrize(("weighting", "cudagraphs"), [(None, False), (FixedWeights, False), (FixedWeights, True)],
                         ids=["sac", "aux_fixed_weights", "aux_fixed_weights_whole_update_graphed"])
@pytest.mark.filterwarnings("ignore:model.runtime.cudagraphs=true without a CUDA device")
def test_compiled_updates_equal_eager(tmp_path, weighting, cudagraphs):
    # The last case: the compiled losses inside the whole-update function that CUDA captures (uncaptured here).
    eager = _train(tmp_path / "eager", compile=False, weighting=weighting)
    compiled = _train(tmp_path / "compiled", compile=True, weighting=weighting, cudagraphs=cudagraphs)
    assert eager.keys() == compiled.keys()
    bad = []
    for name in eager:
        if re.search(PRE_BATCHNORM, name):
            continue
        if not torch.allclose(compiled[name], eager[name], rtol=1e-4, atol=1e-5):
            bad.append(f"{name}: max diff {float((compiled[name] - eager[name]).abs().max()):.3g}")
    assert not bad, bad


def test_olaux_falls_back_to_eager_losses(tmp_path):
    # OLAux walks each loss's own graph (per-loss gradients), which a compiled graph hides: the module hands it the
    # eager losses, so the run is exactly the eager one.
    weighting = lambda: OLAux(n_steps=2)
    eager = _train(tmp_path / "eager", compile=False, weighting=weighting)
    compiled = _train(tmp_path / "compiled", compile=True, weighting=weighting)
    for name in eager:
        assert torch.equal(compiled[name], eager[name]), name


def test_compile_is_off_by_default_and_resumable():
    from a2ls_lightning.modules.run_checks import RESUMABLE_CHANGES

    assert tiny_module().runtime.compile is False
    assert "compile" in RESUMABLE_CHANGES["model"]
    module = tiny_module()
    module.build((5,), 2)
    assert module.losses_fn == module.learner.losses  # eager: the learner's own method, unchanged
