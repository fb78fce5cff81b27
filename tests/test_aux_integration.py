"""Auxiliary losses inside SAC: gradient routing, windows from replay slices, pixel crops, bf16."""

from __future__ import annotations

import math

import pytest
import torch
from conftest import tiny_data, tiny_module, tiny_trainer
from tensordict import TensorDict

from a2ls_lightning.modules.augment import center_crop, random_crop
from a2ls_lightning.modules.auxiliary import AuxLoss, AuxLossSpec
from a2ls_lightning.modules.learner import SACLearner
from a2ls_lightning.modules.settings import NetworkSettings, SACSettings


def _learner(obs_shape, aux_names, encoder="mlp") -> SACLearner:
    torch.manual_seed(0)
    specs = {n: AuxLossSpec.preset(n) for n in aux_names}
    aux = {n: AuxLoss(s, 8, 2) for n, s in specs.items()}
    network = NetworkSettings(encoder, 8, 8, 2 if encoder == "pixel" else 1, 4, 16, 16)
    return SACLearner(obs_shape, 2, network, SACSettings(init_temperature=0.1, target_entropy=-2.0), aux)


def _window(obs_shape, b=8, length=10) -> TensorDict:
    obs = torch.randn(b, length, *obs_shape) if len(obs_shape) == 1 else \
        torch.randint(0, 255, (b, length, *obs_shape), dtype=torch.uint8)
    return TensorDict({"observation": obs, "action": torch.rand(b, length, 2) * 2 - 1,
                       "reward": torch.rand(b, length, 1), "terminated": torch.zeros(b, length, 1, dtype=torch.bool)},
                      batch_size=[b, length])


def _has_grad(module) -> list[bool]:
    return [p.grad is not None and bool(p.grad.abs().sum() > 0) for p in module.parameters()]


@pytest.mark.parametrize("obs_shape,encoder,names", [
    ((5,), "mlp", ["a2_winner_v", "forward_dynamics", "inverse_dynamics"]),
    ((5,), "ofe", ["reward_prediction", "state_reconstruction"]),
    ((6, 20, 20), "pixel", ["a2_winner", "curl"]),
])
def test_aux_gradients_reach_encoder_and_predictor_only(obs_shape, encoder, names):
    learner = _learner(obs_shape, names, encoder)
    _, aux, _ = learner.losses(_window(obs_shape), update_actor=True)
    assert set(aux) == set(names) and all(torch.isfinite(v) for v in aux.values())
    sum(aux.values()).backward()
    assert all(_has_grad(learner.encoder)), "the online encoder must learn from the auxiliary losses"
    for name in names:
        assert all(_has_grad(learner.aux_losses[name])), name
    assert not any(_has_grad(learner.actor)) and not any(_has_grad(learner.actor_head))
    assert not any(_has_grad(learner.critic)) and learner.log_alpha.grad is None
    assert all(p.grad is None for p in learner.target_encoder.parameters())


def test_target_states_come_from_the_ema_encoder():
    learner = _learner((5,), ["forward_dynamics"])
    with torch.no_grad():  # make the online and target encoders differ
        for p in learner.encoder.parameters():
            p.add_(0.5)
    batch = _window((5,))
    seen = {}
    module = learner.aux_losses["forward_dynamics"]
    original = module.forward
    module.forward = lambda inputs, targets, a, r, **kw: seen.update(inputs=inputs, targets=targets) or original(
        inputs, targets, a, r)
    learner.losses(batch, update_actor=False)
    obs = batch["observation"]
    assert torch.allclose(seen["targets"][:, 0], learner.target_encoder(obs[:, 1]), atol=1e-6)
    assert torch.allclose(seen["inputs"][:, 0], learner.encoder(obs[:, 0]), atol=1e-6)
    assert not seen["targets"].requires_grad and seen["inputs"].requires_grad


def test_random_crop_is_a_window_of_each_image():
    frames = torch.arange(4 * 2 * 10 * 10, dtype=torch.float32).reshape(4, 2, 10, 10)
    torch.manual_seed(0)
    crops = random_crop(frames, 6)
    assert crops.shape == (4, 2, 6, 6)
    corners = set()
    for i in range(4):
        top, left = divmod(int(crops[i, 0, 0, 0] - frames[i, 0, 0, 0]), 10)
        assert torch.equal(crops[i], frames[i, :, top:top + 6, left:left + 6])
        corners.add((top, left))
    assert len(corners) > 1, "every image should get its own offset"
    assert torch.equal(center_crop(frames, 6), frames[..., 2:8, 2:8])


def test_the_cpu_slicing_crop_equals_the_gather_of_the_accelerators():
    from a2ls_lightning.modules.augment import _gather_crop

    frames = torch.randint(0, 255, (24, 9, 16, 16), dtype=torch.uint8)
    torch.manual_seed(3)
    sliced = random_crop(frames, 12)
    torch.manual_seed(3)  # the same offsets, drawn as random_crop draws them
    top, left = torch.randint(0, 5, (24, 1, 1)), torch.randint(0, 5, (24, 1, 1))
    assert torch.equal(sliced, _gather_crop(frames, top, left, 12))


def test_windows_follow_the_longest_horizon_and_stay_in_one_episode(tmp_path):
    module = tiny_module(aux_losses={"v": "a2_winner_v", "a2": "a2_winner"})
    data = tiny_data(eval_episodes=0, warmup_steps=600)  # > two episodes: boundaries are in the buffer
    seen = []
    trainer = tiny_trainer(tmp_path, 10)

    import lightning.pytorch as pl

    class Spy(pl.Callback):
        def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
            seen.append(batch)

    trainer.callbacks.append(Spy())
    trainer.fit(module, data)
    for batch in seen:
        assert batch.batch_size == (16, 10)
        assert (batch["episode"] == batch["episode"][:, :1]).all()
        assert (batch["step"].diff(dim=1) == 1).all()


def test_aux_losses_train_under_bf16(tmp_path):
    module = tiny_module(aux_losses={"v": "a2_winner_v", "c": "h=1 s0,a0 -> s1 bilinear +neg"})
    trainer = tiny_trainer(tmp_path, 20, precision="bf16-mixed")
    trainer.fit(module, tiny_data(eval_episodes=0))
    for name in ("train/aux_v_loss", "train/aux_c_loss"):
        assert math.isfinite(float(trainer.callback_metrics[name]))
