"""SAC pieces: loss values, log-probabilities, and which parameters each loss reaches."""

from __future__ import annotations

import math

import pytest
import torch
from tensordict import TensorDict

from a2ls_lightning.modules.learner import SACLearner
from a2ls_lightning.modules.sac import (
    Actor,
    Critic,
    actor_loss,
    critic_loss,
    ema_,
    soft_target,
    temperature_loss,
)
from a2ls_lightning.modules.settings import NetworkSettings, SACSettings


def _learner(obs_shape=(5,), encoder="mlp", aux=None) -> SACLearner:
    torch.manual_seed(0)
    network = NetworkSettings(encoder, 8, 8, 1 if encoder != "pixel" else 2, 4, 16, 16)
    return SACLearner(obs_shape, 2, network, SACSettings(init_temperature=0.1, target_entropy=-2.0), aux)


def _batch(obs_shape=(5,), b=6, length=2) -> TensorDict:
    obs = torch.randn(b, length, *obs_shape) if len(obs_shape) == 1 else \
        torch.randint(0, 255, (b, length, *obs_shape), dtype=torch.uint8)
    return TensorDict({"observation": obs, "action": torch.rand(b, length, 2) * 2 - 1,
                       "reward": torch.rand(b, length, 1), "terminated": torch.zeros(b, length, 1, dtype=torch.bool)},
                      batch_size=[b, length])


def test_critic_loss_and_soft_target_values():
    q1, q2, target = torch.tensor([[1.0], [2.0]]), torch.tensor([[0.0], [2.0]]), torch.tensor([[1.0], [1.0]])
    assert critic_loss(q1, q2, target).item() == pytest.approx(0.5 + 1.0)
    t = soft_target(torch.tensor([[1.0], [1.0]]), torch.tensor([[1.0], [0.0]]), torch.tensor([[3.0], [3.0]]),
                    torch.tensor([[2.0], [5.0]]), torch.tensor([[-1.0], [-1.0]]), torch.tensor(0.5), 0.9)
    assert torch.allclose(t, torch.tensor([[1.0 + 0.9 * (2.0 + 0.5)], [1.0]]))


def test_temperature_loss_value_and_no_gradient_to_actor():
    log_alpha = torch.tensor(math.log(0.2), requires_grad=True)
    log_prob = torch.tensor([[-1.0], [-3.0]], requires_grad=True)
    loss = temperature_loss(log_alpha, log_prob, target_entropy=-2.0)
    assert loss.item() == pytest.approx(-0.2 * ((-1.0 - 2.0) + (-3.0 - 2.0)) / 2)
    loss.backward()
    assert log_prob.grad is None and log_alpha.grad is not None


def test_actor_log_prob_matches_tanh_normal_density():
    torch.manual_seed(1)
    actor = Actor(4, 3, 16)
    feats = torch.randn(64, 4)
    action, log_prob = actor(feats)
    mu, log_std = actor.net(feats).chunk(2, dim=-1)
    log_std = -10 + 0.5 * 12 * (torch.tanh(log_std) + 1)
    pre = torch.atanh(action.clamp(-1 + 1e-6, 1 - 1e-6)).double()
    normal = torch.distributions.Normal(mu.double(), log_std.exp().double())
    expected = (normal.log_prob(pre) - torch.log1p(-torch.tanh(pre) ** 2)).sum(-1, keepdim=True)
    assert log_prob.dtype == torch.float32
    ok = action.abs().max(-1).values < 0.999  # away from the saturated ends where atanh loses precision
    assert torch.allclose(log_prob[ok].double(), expected[ok], atol=1e-3)
    det, _ = actor(feats, deterministic=True)
    assert torch.allclose(det, torch.tanh(mu))


def test_actor_loss_reaches_only_the_actor():
    critic, actor = Critic(4, 2, 8), Actor(4, 2, 8)
    feats = torch.randn(5, 4, requires_grad=True)
    action, log_prob = actor(feats.detach())
    actor_loss(critic, feats, action, log_prob, torch.tensor(0.1)).backward()
    assert all(p.grad is None for p in critic.parameters()) and feats.grad is None
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in actor.parameters())


def _grads(module: torch.nn.Module) -> dict[str, bool]:
    return {n: p.grad is not None and bool(p.grad.abs().sum() > 0) for n, p in module.named_parameters()}


@pytest.mark.parametrize("encoder,obs_shape", [("mlp", (5,)), ("ofe", (5,)), ("pixel", (6, 20, 20))])
def test_gradient_routing_of_one_update(encoder, obs_shape):
    learner = _learner(obs_shape, encoder)
    batch = _batch(obs_shape)
    main, aux, _ = learner.losses(batch, update_actor=False)
    main["critic"].backward()
    assert all(_grads(learner.encoder).values()) and all(_grads(learner.critic).values())
    assert not any(_grads(learner.actor).values()) and not any(_grads(learner.actor_head).values())
    assert learner.log_alpha.grad is None
    learner.zero_grad(set_to_none=True)
    main, _, _ = learner.losses(batch, update_actor=True)
    (main["actor"] + main["temperature"]).backward()
    # the actor trains its own head on detached trunk features; the critic and the shared encoder get nothing
    assert all(_grads(learner.actor).values()) and all(_grads(learner.actor_head).values())
    assert not any(_grads(learner.encoder).values()) and not any(_grads(learner.critic).values())
    assert learner.log_alpha.grad is not None
    # targets are never trained
    assert all(not p.requires_grad for p in [*learner.target_encoder.parameters(), *learner.target_critic.parameters()])


def test_ema_moves_targets_by_tau():
    learner = _learner()
    with torch.no_grad():
        for p in learner.encoder.parameters():
            p.add_(1.0)
    before = [p.clone() for p in learner.target_encoder.parameters()]
    learner.update_targets(critic_tau=0.01, encoder_tau=0.05)
    for b, t, o in zip(before, learner.target_encoder.parameters(), learner.encoder.parameters()):
        assert torch.allclose(t, b + 0.05 * (o - b))
    target = torch.nn.Linear(2, 2)
    ema_(target, target, 0.5)  # a module with itself is a fixed point


def test_terminal_transitions_do_not_bootstrap():
    learner = _learner()
    batch = _batch()
    batch["terminated"][:, 0] = True
    batch["reward"][:, 0] = 0.0
    with torch.no_grad():
        learner.critic.q1[-1].bias.fill_(3.0)
    main, _, _ = learner.losses(batch, update_actor=False)
    q1, q2 = learner.critic(learner.encoder(batch["observation"][:, 0]), batch["action"][:, 0])
    assert main["critic"].item() == pytest.approx(critic_loss(q1, q2, torch.zeros_like(q1)).item(), rel=1e-5)
