"""The simple weighting rules on small fixed problems: values, and the gradients that reach each parameter."""

import math

import pytest
import torch
from torch import nn

from a2ls_lightning.callbacks import (
    AuxWeighting,
    CosineGating,
    FixedWeights,
    GradientBalancing,
    default_weighting,
)


def grads_of(total, params):
    for p in params:
        p.grad = None
    total.backward()
    return [p.grad.clone() for p in params]


# --- fixed weights -------------------------------------------------------------------------------------
def test_default_weighting_is_fixed_weights_of_one():
    weighting = default_weighting()
    assert isinstance(weighting, FixedWeights) and isinstance(weighting, AuxWeighting)
    total = weighting.combine(torch.tensor(1.0), {"a": torch.tensor(2.0), "b": torch.tensor(3.0)}, [])
    assert total.item() == 6.0
    assert weighting.weights == {"a": 1.0, "b": 1.0}


def test_fixed_weights_by_name_scale_value_and_gradient():
    theta = nn.Parameter(torch.tensor([1.0, -2.0]))
    weighting = FixedWeights({"a": 0.5, "b": 0.0})
    main, aux = theta.pow(2).sum(), {"a": theta.sum() * 3, "b": theta.prod()}
    total = weighting.combine(main, aux, [theta])
    assert total.item() == pytest.approx(5.0 + 0.5 * -3.0)
    (grad,) = grads_of(total, [theta])
    torch.testing.assert_close(grad, 2 * theta.detach() + 0.5 * 3)
    assert weighting.weights == {"a": 0.5, "b": 0.0}


def test_fixed_weights_rejects_unknown_and_missing_names():
    losses = {"forward": torch.tensor(1.0), "reward": torch.tensor(1.0)}
    unknown = r"unknown auxiliary losses \['inverse'\].*allowed names: \['forward', 'reward'\]"
    with pytest.raises(ValueError, match=unknown):
        FixedWeights({"forward": 1.0, "reward": 1.0, "inverse": 2.0}).combine(torch.tensor(0.0), losses, [])
    with pytest.raises(ValueError, match="no entry for auxiliary loss 'reward'"):
        FixedWeights({"forward": 1.0}).combine(torch.tensor(0.0), losses, [])


@pytest.mark.parametrize("weights", [-1.0, float("nan"), {"a": -0.1}, "one"])
def test_fixed_weights_rejects_bad_values(weights):
    with pytest.raises(ValueError, match=r"FixedWeights\.weights.*allowed: a finite number >= 0"):
        FixedWeights(weights)


# --- gradient balancing --------------------------------------------------------------------------------
def test_gradient_balancing_divides_each_gradient_by_its_loss():
    theta = nn.Parameter(torch.tensor([0.5, 1.5]))
    weighting = GradientBalancing(eps=0.02)
    main, aux = theta.pow(2).sum(), {"a": 10 * (theta - 1).pow(2).sum()}
    total = weighting.combine(main, aux, [theta])
    l0, l1 = 2.5, 10 * 0.5
    assert total.item() == pytest.approx(math.log(l0 + 0.02) + math.log(l1 + 0.02))
    (grad,) = grads_of(total, [theta])
    t = theta.detach()
    torch.testing.assert_close(grad, 2 * t / (l0 + 0.02) + 20 * (t - 1) / (l1 + 0.02))
    assert weighting.weights == {"a": 1.0}


def test_gradient_balancing_rejects_bad_eps_and_negative_losses():
    with pytest.raises(ValueError, match=r"GradientBalancing\.eps=0.*> 0"):
        GradientBalancing(eps=0)
    with pytest.raises(ValueError, match="loss 'a' = -1 but log balancing needs loss \\+ 0.02 > 0"):
        GradientBalancing().combine(torch.tensor(1.0), {"a": torch.tensor(-1.0)}, [])


# --- cosine gating -------------------------------------------------------------------------------------
def gating_problem():
    """Shared θ [2] and one head scalar per auxiliary loss. ∇θ L0 = (1, 0); ∇θ Lb = φb·(1, 1) agrees with it
    (cos = 1/√2); ∇θ Lc = φc·(-1, 0.5) conflicts (cos < 0)."""
    theta = nn.Parameter(torch.tensor([0.3, -0.2]))
    phi_b, phi_c = nn.Parameter(torch.tensor(2.0)), nn.Parameter(torch.tensor(1.5))
    main = theta @ torch.tensor([1.0, 0.0])
    aux = {"b": phi_b * (theta @ torch.tensor([1.0, 1.0])), "c": phi_c * (theta @ torch.tensor([-1.0, 0.5]))}
    return (theta, phi_b, phi_c), main, aux


@pytest.mark.parametrize("method", ["per_loss", "batched"])
@pytest.mark.parametrize("weighted", [False, True])
def test_cosine_gating_gates_only_the_shared_gradient(method, weighted):
    (theta, phi_b, phi_c), main, aux = gating_problem()
    weighting = CosineGating(weighted=weighted, gradient_method=method)
    total = weighting.combine(main, aux, [theta])
    assert total.item() == pytest.approx(0.3 + 2 * 0.1 + 1.5 * -0.4)  # the value: the unweighted sum
    grad_theta, grad_b, grad_c = grads_of(total, [theta, phi_b, phi_c])
    gate_b = 1 / math.sqrt(2) if weighted else 1.0
    torch.testing.assert_close(grad_theta, torch.tensor([1.0 + 2 * gate_b, 2 * gate_b]))  # c never reaches θ
    # each head still learns from its own loss, gated or not
    torch.testing.assert_close(grad_b, torch.tensor(0.1))
    torch.testing.assert_close(grad_c, torch.tensor(-0.4))
    assert weighting.weights == pytest.approx({"b": gate_b, "c": 0.0})


@pytest.mark.parametrize("method", ["per_loss", "batched"])
def test_cosine_gating_on_a_network_follows_the_rule(method):
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 8), nn.LayerNorm(8))
    heads = nn.ModuleList(nn.Linear(8, 1) for _ in range(4))
    x, targets = torch.randn(16, 4), torch.randn(4, 16, 1)
    shared = list(encoder.parameters())

    def losses():
        z = encoder(x)
        values = [(head(z) - t).pow(2).mean() for head, t in zip(heads, targets)]
        return values[0], dict(zip("abc", values[1:]))

    main, aux = losses()
    per_loss = [torch.autograd.grad(loss, shared + list(head.parameters()), retain_graph=True)
                for loss, head in zip([main, *aux.values()], heads)]
    flat = [torch.cat([g.reshape(-1) for g in grads[:len(shared)]]) for grads in per_loss]
    gates = [float(torch.nn.functional.cosine_similarity(flat[0], f, dim=0) >= 0) for f in flat[1:]]
    assert 0.0 in gates and 1.0 in gates  # the seed gives both cases

    weighting = CosineGating(gradient_method=method)
    params = shared + list(heads.parameters())
    got = grads_of(weighting.combine(*losses(), shared), params)
    expected_shared = [per_loss[0][i] + sum(g * grads[i] for g, grads in zip(gates, per_loss[1:]))
                       for i in range(len(shared))]
    expected_heads = [g for k, grads in enumerate(per_loss) for g in grads[len(shared):]]
    for g, e in zip(got, expected_shared + expected_heads):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-6)
    assert list(weighting.weights.values()) == gates


def test_cosine_gating_rejects_unknown_gradient_method():
    with pytest.raises(ValueError, match="CosineGating.gradient_method='vmap'.*allowed: per_loss, batched"):
        CosineGating(gradient_method="vmap")
