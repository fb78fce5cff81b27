"""Experiment losses known to hurt do what they claim: the adversarial loss's gradient on the encoder is minus the
critic's (per example), the noise target is fixed per stored transition (and after a resume), and both train
through ``a2ls fit`` under every weighting rule."""

from __future__ import annotations

import pytest
import torch
from conftest import QUICK as TINY
from conftest import run

from a2ls_lightning.modules.harmful import NoiseTargetLoss
from a2ls_lightning.modules.learner import SACLearner
from a2ls_lightning.modules.sac import critic_loss


def _learner(**aux) -> SACLearner:
    from a2ls_lightning.modules.aux_registry import build_aux_losses, resolve_aux_losses
    from a2ls_lightning.modules.settings import NetworkSettings, SACSettings

    specs = resolve_aux_losses(aux)
    torch.manual_seed(0)
    return SACLearner((17,), 6, NetworkSettings(feature_dim=16, encoder_hidden_dim=16, num_filters=8, hidden_dim=32),
                      SACSettings(), aux_losses=build_aux_losses(specs, 16, 6, False))


def _batch(b: int) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(1)
    return {"observation": torch.randn(b, 2, 17, generator=g), "action": torch.rand(b, 2, 6, generator=g) * 2 - 1,
            "reward": torch.rand(b, 2, 1, generator=g), "terminated": torch.zeros(b, 2, 1, dtype=torch.bool),
            "episode": torch.arange(b)[:, None].repeat(1, 2), "step": torch.arange(2).repeat(b, 1)}


def _encoder_grad(learner: SACLearner, loss: torch.Tensor) -> torch.Tensor:
    grads = torch.autograd.grad(loss, list(learner.encoder.parameters()), retain_graph=True, allow_unused=True)
    return torch.cat([g.flatten() for g in grads if g is not None])


@pytest.mark.parametrize("b", [1, 8], ids=["one example", "a batch"])
def test_the_adversarial_loss_pushes_the_encoder_exactly_against_the_critic(b):
    learner = _learner(adv="adversarial")
    main, aux, _ = learner.losses(_batch(b), update_actor=False)
    critic_grad, adversarial_grad = _encoder_grad(learner, main["critic"]), _encoder_grad(learner, aux["adv"])
    assert critic_grad.abs().sum() > 0
    torch.testing.assert_close(adversarial_grad, -critic_grad, rtol=0, atol=1e-7)
    assert float(aux["adv"]) == pytest.approx(float(main["critic"]), rel=1e-6)  # its value: the critic loss (>= 0)
    critic_params = [p for p in learner.critic.parameters()]
    assert all(g is None for g in torch.autograd.grad(aux["adv"], critic_params, allow_unused=True))


def test_critic_loss_is_what_the_adversary_negates():
    q, t = torch.tensor([[1.0], [2.0]]), torch.tensor([[0.0], [0.0]])
    assert float(critic_loss(q, q, t)) == pytest.approx(5.0)


def test_the_noise_target_is_fixed_per_transition_and_survives_a_resume():
    loss = NoiseTargetLoss(feature_dim=16)
    episode, step = torch.tensor([3, 3, 4, 3]), torch.tensor([10, 11, 10, 10])
    target = loss.target(episode, step)
    assert torch.equal(target[0], target[3])  # the same transition: the same target, whenever sampled
    assert not torch.allclose(target[0], target[1]) and not torch.allclose(target[0], target[2])
    assert target.abs().max() <= 1.0 and target.std() > 0.3  # spread like noise
    restored = NoiseTargetLoss(feature_dim=16)
    restored.load_state_dict(loss.state_dict())
    assert torch.equal(restored.target(episode, step), target)


@pytest.mark.parametrize("rule", ["FixedWeights", "GradientBalancing", "CosineGating", "OLAux"])
def test_harmful_losses_train_through_a2ls_fit_under_every_rule(tmp_path, capsys, rule):
    code, stderr = run(["fit", *TINY, "--trainer.max_steps=12", f"--trainer.default_root_dir={tmp_path}",
                        "--model.aux_losses={fwd: forward_dynamics, adv: adversarial, noise: noise_target}",
                        f"--trainer.callbacks+=a2ls_lightning.callbacks.{rule}"], capsys)
    assert code == 0, stderr[-2000:]
    assert "a2ls: done: update 12" in stderr
