"""``SACModule(cudagraphs=True)``: the whole update as one function of the batch (CPU: the function CUDA captures,
run uncaptured by tensordict's CudaGraphModule), equal to the eager update; what cannot be captured is refused or
runs eagerly."""

from __future__ import annotations

import warnings

import lightning.pytorch as pl
import pytest
import torch
from conftest import tiny_data, tiny_module, tiny_trainer

from a2ls_lightning.callbacks import FixedWeights, GradientBalancing, OLAux
from a2ls_lightning.modules.graphed import GraphedUpdate

UPDATES = 12  # past the 3 warm-up calls of each of the update kinds (actor/no actor x targets/no targets)


def _train(tmp_path, cudagraphs: bool, weighting=None, precision="32-true", **module_kwargs) -> tuple[dict, object]:
    pl.seed_everything(0)
    if weighting is not None:
        module_kwargs.setdefault("aux_losses", {"fwd": "forward_dynamics", "rew": "reward_prediction"})
    module = tiny_module(cudagraphs=cudagraphs, **module_kwargs)
    trainer = tiny_trainer(tmp_path, UPDATES, callbacks=[weighting()] if weighting is not None else [],
                           log_every_n_steps=5, precision=precision)
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*without a CUDA device.*")
        trainer.fit(module, tiny_data())
    assert trainer.global_step == UPDATES  # Lightning counted every step that ran inside the update function
    return {k: v.detach().clone() for k, v in module.state_dict().items()}, module


@pytest.mark.parametrize("weighting", [None, FixedWeights, GradientBalancing],
                         ids=["sac", "aux_fixed_weights", "aux_gradient_balancing"])
def test_the_graphed_update_equals_the_eager_update(tmp_path, weighting):
    eager, _ = _train(tmp_path / "eager", cudagraphs=False, weighting=weighting)
    graphed, module = _train(tmp_path / "graphed", cudagraphs=True, weighting=weighting)
    assert module._graphed is not None and len(module._graphed._graphs) == 2  # actor+targets, neither
    assert eager.keys() == graphed.keys()
    # The same ops in the same order on the same batches and RNG stream: equal, not merely close.
    different = [k for k in eager if not torch.equal(eager[k], graphed[k])]
    assert not different, different


def test_the_graphed_update_equals_the_eager_update_under_bf16_mixed(tmp_path):
    eager, _ = _train(tmp_path / "eager", cudagraphs=False, weighting=FixedWeights, precision="bf16-mixed")
    graphed, _ = _train(tmp_path / "graphed", cudagraphs=True, weighting=FixedWeights, precision="bf16-mixed")
    different = [k for k in eager if not torch.equal(eager[k], graphed[k])]
    assert not different, different


def test_olaux_runs_the_eager_update(tmp_path):
    # OL-AUX differentiates each loss on its own and moves its weights between updates: not capturable.
    _, module = _train(tmp_path, cudagraphs=True, weighting=lambda: OLAux(n_steps=2))
    assert module._graphed is None


def test_the_guard_sees_a_non_finite_captured_update(tmp_path):
    from a2ls_lightning.modules.guard import NonFiniteError

    class Poison(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            if trainer.global_step == 7:
                batch["reward"].fill_(float("nan"))

    pl.seed_everything(0)
    module = tiny_module(cudagraphs=True)
    trainer = tiny_trainer(tmp_path, UPDATES, callbacks=[Poison()], log_every_n_steps=5)
    with pytest.raises(NonFiniteError, match="non-finite values at update 7"), warnings.catch_warnings():
        warnings.filterwarnings("ignore", message=".*without a CUDA device.*")
        trainer.fit(module, tiny_data())


def test_settings_that_cannot_be_captured_are_refused_in_one_line():
    with pytest.raises(ValueError, match="cudagraphs=true needs nonfinite=stop"):
        tiny_module(cudagraphs=True, nonfinite="skip")


def test_graphed_update_steps_only_what_the_update_trains():
    # An update without the actor leaves the actor (and its Adam state) alone, as the eager update does.
    torch.manual_seed(0)
    shared, critic, actor = torch.nn.Linear(3, 4), torch.nn.Linear(4, 1), torch.nn.Linear(4, 1)
    params = [*shared.parameters(), *critic.parameters(), *actor.parameters()]
    opt = torch.optim.Adam(params, lr=0.1)

    def losses(batch, update_actor):
        z = shared(batch["x"])
        main = {"critic": critic(z).pow(2).mean()}
        if update_actor:
            main["actor"] = actor(z.detach()).mean()
        return main, {}, {}

    from a2ls_lightning.weighting import UnitWeights

    graphed = GraphedUpdate(losses, UnitWeights(), list(shared.parameters()), params, opt, lambda: None, warmup=1)
    before = [p.detach().clone() for p in actor.parameters()]
    main, aux, metrics, grad_norm = graphed({"x": torch.randn(8, 3)}, update_actor=False, update_targets=False)
    assert set(main) == {"critic"} and grad_norm > 0
    assert all(torch.equal(a, b) for a, b in zip(before, actor.parameters()))
    assert not any(p in opt.state for p in actor.parameters())
    graphed({"x": torch.randn(8, 3)}, update_actor=True, update_targets=False)
    assert not all(torch.equal(a, b) for a, b in zip(before, actor.parameters()))


def test_cudagraphs_is_off_by_default_and_resumable():
    from a2ls_lightning.modules.run_checks import RESUMABLE_CHANGES

    assert tiny_module().runtime.cudagraphs is False
    assert "cudagraphs" in RESUMABLE_CHANGES["model"]
