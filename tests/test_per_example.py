"""Per-example auxiliary losses through the weighting contract: every existing rule behaves exactly as before."""

import pytest
import torch

from a2ls_lightning.callbacks import CosineGating, FixedWeights, GradientBalancing, OLAux
from a2ls_lightning.modules.aux_operators import OPERATORS, operator_loss
from a2ls_lightning.modules.harmful import AdversarialLoss, NoiseTargetLoss
from a2ls_lightning.weighting import UnitWeights

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


@pytest.mark.parametrize("negatives", [False, True])
@pytest.mark.parametrize("operator", OPERATORS)
def test_operator_per_example_mean_equals_the_batch_loss(operator, negatives):
    g = torch.Generator().manual_seed(0)
    p, t, w = torch.randn(12, 6, generator=g), torch.randn(12, 6, generator=g), torch.rand(6, 6, generator=g)
    per = operator_loss(operator, p, t, negatives, w, reduction="none")
    assert per.shape == (12,)
    torch.testing.assert_close(per.mean(), operator_loss(operator, p, t, negatives, w), rtol=1e-5, atol=1e-6)


def test_experiment_losses_per_example_mean_equals_the_batch_loss():
    critic = torch.nn.Linear(5, 1)

    class Twin(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.q = critic

        def forward(self, f, a):
            return self.q(torch.cat([f, a], 1)), 2 * self.q(torch.cat([f, a], 1))

    context = {"features": torch.randn(8, 3), "action": torch.randn(8, 2), "target_q": torch.randn(8, 1),
               "critic": Twin(), "episode": torch.arange(8), "step": torch.arange(8)}
    for loss in (AdversarialLoss(), NoiseTargetLoss(3)):
        per = loss(context, reduction="none")
        assert per.shape == (8,)
        torch.testing.assert_close(per.mean(), loss(context), rtol=1e-5, atol=1e-6)


RULES = [lambda: FixedWeights({"a": 0.5, "b": 2.0}), lambda: GradientBalancing(), lambda: OLAux(n_steps=1, lr=0.1),
         lambda: CosineGating(weighted=True), UnitWeights]


@pytest.mark.parametrize("make_rule", RULES, ids=["fixed", "balancing", "olaux", "cosine", "unit"])
def test_a_per_example_loss_into_a_scalar_rule_gives_exactly_what_its_mean_gives(make_rule):
    def run(per_example: bool):
        torch.manual_seed(0)
        enc, main_head, heads = torch.nn.Linear(3, 4), torch.nn.Linear(4, 1), torch.nn.ModuleList(
            torch.nn.Linear(4, 2) for _ in range(2))
        rule = make_rule()
        x = torch.randn(10, 3)
        z = enc(x)
        per = {n: h(z).pow(2).mean(1) + 0.1 for n, h in zip("ab", heads)}  # [B], positive
        aux = per if per_example else {n: v.mean() for n, v in per.items()}
        total = rule.combine(main_head(z).pow(2).mean(), aux, enc.parameters(), example_features=x)
        total.backward()
        rule.after_update()
        return total.detach(), [p.grad.clone() for p in enc.parameters()], rule.weights

    (t1, g1, w1), (t2, g2, w2) = run(True), run(False)
    assert torch.equal(t1, t2) and w1 == w2
    for a, b in zip(g1, g2):
        assert torch.equal(a, b)


def test_sac_learner_per_example_losses_and_features(make_module, make_data, make_trainer):
    module = make_module(aux_losses={"fwd": "forward_dynamics", "v": "a2_winner_v", "adv": "adversarial",
                                     "noise": "noise_target"})
    trainer = make_trainer(1)
    data = make_data(eval_episodes=0)
    trainer.fit(module, data)
    batch = data.replay.sample()
    learner = module.learner
    torch.manual_seed(0)
    main, aux, metrics = learner.losses(batch, update_actor=True)
    torch.manual_seed(0)
    main_pe, aux_pe, metrics_pe = learner.losses(batch, update_actor=True, per_example=True)
    assert torch.equal(main["critic"], main_pe["critic"]) and torch.equal(main["actor"], main_pe["actor"])
    features = metrics_pe.pop("example_features")
    assert features.shape == (batch.shape[0], 16) and not features.requires_grad
    for name, loss in aux.items():
        assert aux_pe[name].shape == (batch.shape[0],)
        torch.testing.assert_close(aux_pe[name].mean(), loss, rtol=1e-5, atol=1e-6)
