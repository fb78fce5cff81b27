"""AuxLoss and the operators: values, bounds, learning, gradient routing, shapes, dtypes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from a2ls_lightning.modules.auxiliary import (
    OPERATORS,
    AuxLoss,
    AuxLossSpec,
    operator_loss,
)

FEATURE_DIM, ACTION_DIM = 8, 3


@pytest.fixture(autouse=True, scope="module")
def single_thread():
    """These tensors are tiny: one thread is faster, and immune to a busy machine's thread contention."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def window(spec: AuxLossSpec, batch: int = 16, feature_dim: int = FEATURE_DIM, extra_steps: int = 0, seed: int = 0):
    """Random ``(input_states, target_states, actions, rewards)`` shaped for ``spec``."""
    generator = torch.Generator().manual_seed(seed)
    steps = spec.horizon + extra_steps
    return (
        torch.randn(batch, len(spec.input_state_offsets), feature_dim, generator=generator),
        torch.randn(batch, len(spec.target_state_offsets), feature_dim, generator=generator),
        torch.randn(batch, steps, ACTION_DIM, generator=generator),
        torch.randn(batch, steps, 1, generator=generator),
    )


def lower_bound(operator: str, negatives: bool, batch: int, dim: int) -> float:
    """A bound no loss value may go below (the operators are all bounded below)."""
    if operator == "nmse":
        return -4.0 / dim if negatives else 0.0  # normalised vectors: squared distances in [0, 4]
    if operator == "cosine":  # logits in [-1, 1]
        if negatives:
            return -1.0 + math.log(math.e + (batch - 1) * math.exp(-1.0))
        return -1.0 + math.log(math.e + batch - 1)  # off-diagonal logits are zeros
    return 0.0  # cross-entropies and squared errors


# --------------------------------------------------------------------------- operator values
@pytest.mark.parametrize("operator", ["mse", "nmse"])
def test_squared_error_operators_are_zero_when_prediction_equals_target(operator: str) -> None:
    x = torch.randn(10, 6)
    assert operator_loss(operator, x, x.clone()).item() == 0.0
    if operator == "nmse":  # scale-invariant
        assert operator_loss(operator, x, 3.0 * x).item() == pytest.approx(0.0, abs=1e-7)


def test_mse_is_mean_over_batch_and_dims() -> None:
    p, t = torch.zeros(4, 5), torch.zeros(4, 5)
    t[0, 0] = 2.0
    assert operator_loss("mse", p, t).item() == pytest.approx(4.0 / 20)


@pytest.mark.parametrize("operator", ["inner", "bilinear", "cosine"])
@pytest.mark.parametrize("negatives", [False, True])
def test_cross_entropy_operators_match_the_official_logit_matrices(operator: str, negatives: bool) -> None:
    torch.manual_seed(0)
    p, t, w = torch.randn(12, 5), torch.randn(12, 5), torch.rand(5, 5)
    if operator == "inner":
        scores = p @ t.T
    elif operator == "bilinear":
        scores = t @ w @ p.T
    else:
        scores = F.normalize(p, dim=1) @ F.normalize(t, dim=1).T
    # Official: with negatives the full matrix, row max subtracted; without, the diagonal and zeros.
    logits = scores - scores.max(dim=1, keepdim=True).values if negatives else torch.diag(torch.diag(scores))
    expected = F.cross_entropy(logits, torch.arange(12))
    actual = operator_loss(operator, p, t, negatives=negatives, bilinear_weight=w)
    assert actual.item() == pytest.approx(expected.item(), rel=1e-5)


def test_mse_with_negatives_is_infonce_over_negative_squared_distances() -> None:
    torch.manual_seed(0)
    p, t = torch.randn(12, 5), torch.randn(12, 5)
    expected = F.cross_entropy(-torch.cdist(p, t).pow(2), torch.arange(12))
    assert operator_loss("mse", p, t, negatives=True).item() == pytest.approx(expected.item(), rel=1e-4)


def test_mse_with_negatives_is_bounded_below_even_for_huge_vectors() -> None:
    torch.manual_seed(0)
    t = torch.randn(16, 4)
    for scale in (1.0, 1e2, 1e4):
        p = scale * torch.randn(16, 4)
        loss = operator_loss("mse", p, t, negatives=True)
        assert torch.isfinite(loss) and loss.item() >= 0.0
    # The best it can do is separate the pairs: the loss tends to 0, never below.
    assert operator_loss("mse", 1e3 * t, 1e3 * t, negatives=True).item() == pytest.approx(0.0, abs=1e-6)


def test_nmse_with_negatives_subtracts_the_error_against_another_sample() -> None:
    torch.manual_seed(0)
    p, t = torch.randn(12, 5), torch.randn(12, 5)
    unit_p, unit_t = F.normalize(p, dim=1), F.normalize(t, dim=1)
    expected = F.mse_loss(unit_p, unit_t) - F.mse_loss(unit_p, unit_t.roll(1, dims=0))
    assert operator_loss("nmse", p, t, negatives=True).item() == pytest.approx(expected.item(), rel=1e-5)
    # Its negative pairing never matches a sample with itself: identical rows give the minimum.
    assert operator_loss("nmse", t, t, negatives=True).item() < 0.0


def test_diagonal_cross_entropy_handles_a_batch_of_one() -> None:
    p = torch.randn(1, 4, requires_grad=True)
    loss = operator_loss("inner", p, torch.randn(1, 4))
    loss.backward()
    assert loss.item() == 0.0 and torch.isfinite(p.grad).all()


def test_operator_loss_validates_its_arguments() -> None:
    with pytest.raises(ValueError, match=r"^operator: .*mse, nmse, inner, bilinear, cosine"):
        operator_loss("l1", torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"^bilinear_weight: "):
        operator_loss("bilinear", torch.zeros(2, 3), torch.zeros(2, 3))
    with pytest.raises(ValueError, match=r"^prediction/target: "):
        operator_loss("mse", torch.zeros(2, 3), torch.zeros(2, 4))


@pytest.mark.parametrize("operator", OPERATORS)
def test_operators_compute_in_float32_under_autocast(operator: str) -> None:
    p, t = torch.randn(8, 6, dtype=torch.bfloat16), torch.randn(8, 6, dtype=torch.bfloat16)
    weight = torch.rand(6, 6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = operator_loss(operator, p, t, negatives=True, bilinear_weight=weight)
    assert loss.dtype == torch.float32
    expected = operator_loss(operator, p.float(), t.float(), negatives=True, bilinear_weight=weight)
    assert loss.item() == pytest.approx(expected.item(), rel=1e-5)


def test_module_loss_is_float32_under_autocast() -> None:
    spec = AuxLossSpec.preset("a2_winner")
    module = AuxLoss(spec, FEATURE_DIM, ACTION_DIM)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        loss = module(*window(spec))
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


# --------------------------------------------------------------------------- learning
@pytest.mark.parametrize("negatives", [False, True], ids=["plain", "negatives"])
@pytest.mark.parametrize("operator", OPERATORS)
def test_each_operator_loss_falls_when_optimised(operator: str, negatives: bool) -> None:
    torch.manual_seed(0)
    spec = AuxLossSpec(1, (("s", 0), ("a", 0)), (("s", 1),), operator, negatives)
    module = AuxLoss(spec, FEATURE_DIM, ACTION_DIM)
    batch = window(spec, batch=32)
    optimizer = torch.optim.Adam(module.parameters(), lr=1e-2)
    bound = lower_bound(operator, negatives, batch=32, dim=FEATURE_DIM)
    losses = []
    for _ in range(200):
        loss = module(*batch)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert all(math.isfinite(value) and value >= bound - 1e-5 for value in losses)
    # At least a third of the way from the first value down to the operator's lower bound.
    assert losses[-1] < losses[0] - (losses[0] - bound) / 3, (losses[0], losses[-1], bound)


# --------------------------------------------------------------------------- gradient routing
def test_gradient_reaches_inputs_and_predictor_but_never_targets() -> None:
    spec = AuxLossSpec.parse("h=2 s0,s2,a0,r1 -> s1,a1,r0 bilinear +neg")
    module = AuxLoss(spec, FEATURE_DIM, ACTION_DIM, embed_actions_rewards=True)
    input_states, target_states, actions, rewards = (x.requires_grad_() for x in window(spec))
    module(input_states, target_states, actions, rewards).backward()

    assert target_states.grad is None  # detached inside, even though it asked for a gradient
    assert (input_states.grad.abs().sum(dim=(0, 2)) > 0).all()  # every input state slot
    assert actions.grad[:, 0].abs().sum() > 0 and actions.grad[:, 1].abs().sum() == 0  # a0 input, a1 target
    assert rewards.grad[:, 1].abs().sum() > 0 and rewards.grad[:, 0].abs().sum() == 0  # r1 input, r0 target
    for name, parameter in module.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


@pytest.mark.parametrize("name", sorted(AuxLossSpec.presets()))
@pytest.mark.parametrize("embed", [False, True], ids=["raw", "embedded"])
def test_every_parameter_gets_a_gradient_for_every_preset(name: str, embed: bool) -> None:
    # DDP fails on a registered parameter without gradient, so unused parts must not be created.
    spec = AuxLossSpec.preset(name)
    module = AuxLoss(spec, FEATURE_DIM, ACTION_DIM, embed_actions_rewards=embed)
    module(*window(spec, batch=6)).backward()
    missing = [n for n, p in module.named_parameters() if p.grad is None]
    assert not missing


# --------------------------------------------------------------------------- shapes and selection
def test_predictor_dimensions_follow_the_spec() -> None:
    spec = AuxLossSpec.preset("a2_winner")  # 1 state, 4 actions, 3 rewards -> 4 states
    module = AuxLoss(spec, feature_dim=50, action_dim=6)
    assert (module.input_dim, module.output_dim) == (50 + 4 * 6 + 3, 4 * 50)
    linear_in, batch_norm, _, linear_out = module.predictor
    assert (linear_in.in_features, linear_in.out_features) == (77, 154)
    assert batch_norm.num_features == 154
    assert (linear_out.in_features, linear_out.out_features) == (154, 200)
    assert module.bilinear is None and module.action_embedding is None and module.reward_embedding is None

    embedded = AuxLoss(spec, feature_dim=50, action_dim=6, embed_actions_rewards=True)
    assert (embedded.input_dim, embedded.output_dim) == (50 + 7 * 50, 200)  # targets stay raw

    winner_v = AuxLoss("a2_winner_v", feature_dim=50, action_dim=6)
    assert winner_v.output_dim == 4 * 50 + 6


def test_bilinear_matrix_is_square_and_uniform_on_unit_interval() -> None:
    module = AuxLoss("curl", feature_dim=50, action_dim=6)
    assert module.bilinear.shape == (50, 50)
    assert module.bilinear.min() >= 0.0 and module.bilinear.max() < 1.0


def test_inputs_and_targets_are_grouped_by_kind_in_offset_order() -> None:
    spec = AuxLossSpec.preset("a2_winner_v")
    module = AuxLoss(spec, FEATURE_DIM, ACTION_DIM)
    input_states, target_states, actions, rewards = window(spec, batch=4)
    seen = {}
    module.predictor[0].register_forward_pre_hook(lambda _, args: seen.setdefault("x", args[0]))
    prediction, target = module.predict(input_states, target_states, actions, rewards)

    in_a, in_r = list(spec.input_action_offsets), list(spec.input_reward_offsets)
    expected_input = torch.cat([input_states.flatten(1), actions[:, in_a].flatten(1), rewards[:, in_r].flatten(1)], 1)
    expected_target = torch.cat([target_states.flatten(1), actions[:, [4]].flatten(1)], 1)
    assert torch.equal(seen["x"], expected_input)
    assert torch.equal(target, expected_target)
    assert prediction.shape == target.shape == (4, module.output_dim)


def test_forward_returns_a_scalar_and_accepts_a_longer_window() -> None:
    spec = AuxLossSpec.preset("a2_winner")
    module = AuxLoss(spec, FEATURE_DIM, ACTION_DIM)
    exact = window(spec, extra_steps=0)
    extra = window(spec, extra_steps=5, seed=1)
    longer = (*exact[:2], torch.cat([exact[2], extra[2]], 1), torch.cat([exact[3], extra[3]], 1))
    loss = module(*exact)
    assert loss.shape == ()
    assert module(*longer).item() == pytest.approx(loss.item())
    # Rewards may also come as [B, H].
    assert module(exact[0], exact[1], exact[2], exact[3].squeeze(-1)).item() == pytest.approx(loss.item())


def test_eval_mode_works_with_a_single_sample() -> None:
    spec = AuxLossSpec.preset("forward_dynamics")
    module = AuxLoss(spec, FEATURE_DIM, ACTION_DIM).eval()
    assert torch.isfinite(module(*window(spec, batch=1)))


def test_target_states_may_be_none_without_target_states() -> None:
    spec = AuxLossSpec.preset("inverse_dynamics")
    module = AuxLoss(spec, FEATURE_DIM, ACTION_DIM)
    input_states, target_states, actions, rewards = window(spec)
    assert target_states.shape[1] == 0
    assert module(input_states, None, actions, rewards).item() == pytest.approx(
        module(input_states, target_states, actions, rewards).item()
    )


@pytest.mark.parametrize(
    ("field", "change"),
    [
        ("input_states", lambda b: (b[0][:, :0], *b[1:])),
        ("target_states", lambda b: (b[0], b[1][:, :2], *b[2:])),
        ("actions", lambda b: (*b[:2], b[2][:, :3], b[3])),
        ("rewards", lambda b: (*b[:3], b[3].expand(-1, -1, 2))),
    ],
)
def test_forward_rejects_mismatched_shapes_naming_the_argument(field: str, change) -> None:
    spec = AuxLossSpec.preset("a2_winner")
    module = AuxLoss(spec, FEATURE_DIM, ACTION_DIM)
    with pytest.raises(ValueError, match=rf"^{field}: expected"):
        module(*change(window(spec)))


def test_constructor_validates_dimensions_and_coerces_specs() -> None:
    with pytest.raises(ValueError, match=r"^feature_dim: "):
        AuxLoss("curl", feature_dim=0, action_dim=2)
    with pytest.raises(ValueError, match=r"^action_dim: "):
        AuxLoss("curl", feature_dim=4, action_dim=-1)
    assert AuxLoss("h=1 s0,a0 -> s1 mse", 4, 2).spec == AuxLossSpec.preset("forward_dynamics")
