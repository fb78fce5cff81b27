"""SimbaV2's parts as SACModule options (Lee et al. 2025, "Hyperspherical Normalization for Scalable Deep RL"):
learning-rate decay, the categorical critic with reward normalisation, hyperspherical networks; each trains through the real ``a2ls fit`` on cheetah-run, checkpoints and resumes exactly, and
bad settings are refused in one line."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from conftest import tiny_module
from tensordict import TensorDict

from a2ls_lightning import SACModule
from a2ls_lightning.data.returns import ReturnStatistics
from a2ls_lightning.modules.distributional import categorical_loss, categorical_projection, expected_value
from a2ls_lightning.modules.hyperspherical import HyperLinear, hyper_mlp, project_weights_
from a2ls_lightning.modules.optim import check_lr_schedule, lr_schedule, make_optimizer
from a2ls_lightning.modules.sac import Critic
from a2ls_lightning.modules.settings import OptimizerSettings, flatten_model_settings

logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

TINY = ["--model.network.hidden_dim=32", "--model.network.feature_dim=16", "--model.network.encoder_hidden_dim=16",
        "--data.batch_size=8", "--data.capacity=500", "--data.warmup_steps=16", "--data.eval_episodes=0",
        "--trainer.enable_progress_bar=false", "--trainer.log_every_n_steps=1", "--seed_everything=3",
        "--trainer.callbacks.every_n_train_steps=4", "--trainer.callbacks.save_top_k=-1"]

#: Each option as ``a2ls fit`` arguments, and the settings its checkpoint must record.
OPTIONS = {
    "lr_decay": (["--model.optim.lr_decay_to=0.5"], {"lr_decay_to": 0.5}),
    "categorical": (["--model.network.critic_bins=11", "--model.sac.reward_norm_g_max=5",
                     "--model.aux_losses={fwd: forward_dynamics}"], {"critic_bins": 11, "reward_norm_g_max": 5.0}),
    "categorical_one_q": (["--model.network.critic_bins=7", "--model.network.num_q=1",
                           "--model.network.critic_min_value=-2", "--model.network.critic_max_value=3"],
                          {"critic_bins": 7, "num_q": 1, "critic_min_value": -2.0, "critic_max_value": 3.0}),
    "hyperspherical": (["--model.network.hyperspherical=true", "--model.network.critic_blocks=1",
                        "--model.network.actor_blocks=1", "--model.network.input_shift=2"],
                       {"hyperspherical": True, "input_shift": 2.0}),
    # every part at once, as SimbaV2 (no encoder, one Q-network), with an auxiliary loss and resets on top
    "simbav2": (["--model.network.hyperspherical=true", "--model.network.critic_blocks=2",
                 "--model.network.actor_blocks=1", "--model.network.encoder=identity", "--model.network.obs_norm=true",
                 "--model.network.num_q=1", "--model.network.critic_bins=21", "--model.sac.reward_norm_g_max=5",
                 "--model.optim.lr_decay_to=0.5", "--model.sac.reset_every=3",
                 "--model.aux_losses={fwd: forward_dynamics}"],
                {"hyperspherical": True, "critic_bins": 21, "lr_decay_to": 0.5, "reward_norm_g_max": 5.0}),
}
# ... and under OL-AUX, which takes each loss's gradients before the step, so before the projection. OL-AUX weighs
# the losses by their gradients on the shared encoder: with encoder=identity there is none (every weight stays 1),
# so here the state encoder is the mlp one, whose features the hyperspherical networks read.
OPTIONS["simbav2_olaux"] = (OPTIONS["simbav2"][0] + ["--model.network.encoder=mlp",
                                                     "--model.aux_losses={fwd: forward_dynamics, inv: inverse_dynamics}",
                                                     "--trainer.callbacks+=a2ls_lightning.callbacks.OLAux",
                                                     "--trainer.callbacks.n_steps=2",
                                                     "--trainer.callbacks.lr=1.0"], OPTIONS["simbav2"][1])


def _fit(root: Path, args: list[str], ckpt: Path | None = None) -> dict[int, dict]:
    """``a2ls fit`` in this process for 8 updates (saving at 4 and 8): ``{update: checkpoint}``."""
    from a2ls_lightning.cli import main

    main(["fit", *TINY, *args, "--trainer.max_steps=8", f"--trainer.default_root_dir={root}",
          *([f"--ckpt_path={ckpt}"] if ckpt else [])])
    saved = [torch.load(p, map_location="cpu", weights_only=False) for p in root.rglob("epoch=*.ckpt")]
    return {c["global_step"]: c for c in saved}


# --- learning-rate decay ------------------------------------------------------------------------------------------
def test_lr_decay_is_linear_to_the_fraction_and_leaves_the_temperature_alone():
    module = tiny_module(lr_decay_to=0.25, critic_lr=1e-3, actor_lr=2e-3, alpha_lr=1e-4)
    module.build((17,), 6)
    opt = make_optimizer(module.learner, module.optim, torch.device("cpu"))
    schedule = lr_schedule(opt, module.optim, max_steps=4)
    seen = []
    for _ in range(6):  # past max_steps the rate stays at the final fraction
        seen.append({g["name"]: g["lr"] for g in opt.param_groups})
        opt.step()
        schedule.step()
    # by hand: lr · (1 − 0.75·t/4) for t = 0..4, then constant
    assert [round(s["critic"] / 1e-3, 9) for s in seen] == [1.0, 0.8125, 0.625, 0.4375, 0.25, 0.25]
    assert [round(s["actor"] / 2e-3, 9) for s in seen] == [1.0, 0.8125, 0.625, 0.4375, 0.25, 0.25]
    assert [s["encoder"] for s in seen] == [s["critic"] for s in seen]
    assert all(s["alpha"] == 1e-4 for s in seen)
    assert lr_schedule(opt, OptimizerSettings(), max_steps=4) is None


# --- the categorical critic and reward normalisation -------------------------------------------------------------
def test_categorical_projection_by_hand():
    support = torch.tensor([-1.0, -0.5, 0.0, 0.5, 1.0])  # 5 atoms, 0.5 apart
    probs = torch.tensor([[0.0, 0.5, 0.0, 0.5, 0.0], [0.0, 0.5, 0.0, 0.5, 0.0], [0.2, 0.2, 0.2, 0.2, 0.2]])
    reward = torch.tensor([[0.1], [3.0], [-2.0]])
    not_terminal = torch.tensor([[1.0], [0.0], [1.0]])
    entropy = torch.tensor([[0.25], [0.25], [0.0]])  # α log π(a'|s')
    out = categorical_projection(probs, support, reward, not_terminal, 0.8, entropy)
    # row 0: atom −0.5 → 0.1 + 0.8·(−0.5 − 0.25) = −0.5 (exactly an atom); atom 0.5 → 0.1 + 0.8·0.25 = 0.3, 0.6 of
    # the way from 0 to 0.5: 0.4 of its 0.5 on 0, 0.6 on 0.5. Row 1: terminal, r = 3 clipped to 1. Row 2: every
    # atom at −2 + 0.8·z <= −1.2, clipped to −1.
    expected = torch.tensor([[0.0, 0.5, 0.2, 0.3, 0.0], [0.0, 0.0, 0.0, 0.0, 1.0], [1.0, 0.0, 0.0, 0.0, 0.0]])
    assert torch.allclose(out, expected, atol=1e-6)
    # inside the support the projection keeps the mean: 0.5·(−0.5) + 0.5·0.3 = −0.1
    assert torch.allclose((out[0] * support).sum(), torch.tensor(-0.1), atol=1e-6)
    logits = torch.log(expected[:1] * 0.999 + 0.0002)
    assert categorical_loss(logits, expected[:1]) < categorical_loss(torch.zeros(1, 5), expected[:1])


def test_categorical_critic_gives_the_expectation_and_the_actor_its_gradient():
    critic = Critic(8, 2, 16, num_q=2, bins=11, v_min=-5, v_max=5)
    features, action = torch.randn(4, 8), torch.rand(4, 2, requires_grad=True)
    l1, l2 = critic.logits(features, action)
    q1, q2 = critic(features, action)
    assert l1.shape == (4, 11) and q1.shape == (4, 1)
    assert torch.allclose(q1, (torch.softmax(l1, -1) * torch.linspace(-5, 5, 11)).sum(-1, keepdim=True))
    assert torch.allclose(q2, expected_value(l2, critic.support))
    q1.sum().backward()
    assert action.grad.abs().sum() > 0  # the actor's objective reaches the action through the expectation
    assert "support" in critic.state_dict() and "support" not in Critic(8, 2, 16).state_dict()


def _batch(rewards: torch.Tensor) -> TensorDict:
    b = rewards.shape[0]
    gen = torch.Generator().manual_seed(0)
    return TensorDict({"observation": torch.randn(b, 2, 17, generator=gen),
                       "action": torch.rand(b, 2, 6, generator=gen) * 2 - 1, "reward": rewards,
                       "terminated": torch.zeros(b, 2, 1, dtype=torch.bool)}, batch_size=[b, 2])


@pytest.mark.parametrize("bins", [0, 11])
def test_reward_scale_divides_the_rewards_of_the_update(bins):
    module = tiny_module(critic_bins=bins, reward_norm_g_max=5.0)
    module.build((17,), 6)
    rewards = torch.rand(6, 2, 1, generator=torch.Generator().manual_seed(1)) * 8
    learner = module.learner
    learner.observe(_batch(rewards), reward_scale=1.0)
    torch.manual_seed(0)
    halved = learner.main_loss(_batch(rewards / 4))
    learner.observe(_batch(rewards), reward_scale=4.0)
    torch.manual_seed(0)
    scaled = learner.main_loss(_batch(rewards))
    torch.manual_seed(0)
    learner.observe(_batch(rewards), reward_scale=1.0)
    raw = learner.main_loss(_batch(rewards))
    assert torch.allclose(halved, scaled) and not torch.allclose(raw, scaled)


def test_return_statistics_follow_episodes_and_bound_the_returns():
    stats, returns = ReturnStatistics(0.9), []
    rewards = [1.0, 2.0, 0.5, 3.0, 1.0]
    g = 0.0
    for i, r in enumerate(rewards):  # two episodes: the third step ends the first
        g = r + 0.9 * g
        returns.append(g)
        stats.update(r, episode_end=i == 2)
        if i == 2:
            g = 0.0
    ref = torch.tensor(returns, dtype=torch.float64)
    assert stats.count == 5 and abs(stats.mean - ref.mean().item()) < 1e-12
    assert abs(stats.m2 / 5 - ref.var(unbiased=False).item()) < 1e-12 and stats.max_abs == max(returns)
    scale = stats.scale(g_max=1.0)
    assert scale == pytest.approx(max(ref.var(unbiased=False).sqrt().item(), max(returns)))
    assert max(returns) / scale <= 1.0 + 1e-12  # every return seen so far within ±g_max


# --- hyperspherical networks --------------------------------------------------------------------------------------
def _row_norms(module: torch.nn.Module) -> torch.Tensor:
    return torch.cat([m.weight.norm(dim=1) for m in module.modules() if isinstance(m, HyperLinear)])


def test_hyperspherical_weights_are_unit_rows_after_a_step_and_features_unit_vectors():
    module = tiny_module(hyperspherical=True, critic_blocks=1, actor_blocks=1)
    module.build((17,), 6)
    learner, opt = module.learner, make_optimizer(module.learner, module.optim, torch.device("cpu"))
    nets = [learner.actor, learner.critic]
    assert torch.allclose(_row_norms(learner.critic), torch.ones(()), atol=1e-6)  # from the start
    before = [p.detach().clone() for p in learner.critic.parameters()]
    main, _, _ = learner.losses(_batch(torch.rand(6, 2, 1)), update_actor=True)
    (main["critic"] + main["actor"]).backward()
    opt.step()
    assert not torch.allclose(_row_norms(learner.critic), torch.ones(()), atol=1e-4)  # Adam leaves the sphere
    learner.project_weights()
    for net in nets:
        assert torch.allclose(_row_norms(net), torch.ones(()), atol=1e-6)
    assert any(not torch.equal(a, b) for a, b in zip(before, learner.critic.parameters()))
    # every hidden feature is a unit vector: the embedding's and each block's output
    net, seen = hyper_mlp(5, 8, 2, 3), []
    for layer in list(net)[:-1]:
        layer.register_forward_hook(lambda m, args, out: seen.append(out))
    net(torch.randn(4, 5) * 10)
    assert len(seen) == 3 and all(torch.allclose(h.norm(dim=-1), torch.ones(4), atol=1e-6) for h in seen)
    project_weights_([torch.nn.Linear(3, 3)])  # no hyperspherical layer: nothing to do


def test_input_shift_keeps_the_input_norm():
    net = hyper_mlp(3, 8, 0, 2, shift=3.0)
    x = torch.tensor([[1.0, 0.0, 0.0]])
    assert not torch.allclose(net(x), net(2 * x))  # the appended constant makes 2x a different direction
    without = hyper_mlp(3, 8, 0, 2, shift=0.0)
    assert torch.allclose(without(x), without(2 * x), atol=1e-6)  # without the shift the norm is lost


# --- every option: a2ls fit, checkpoint, exact resume -------------------------------------------------------------
@pytest.mark.parametrize("name", list(OPTIONS))
def test_option_trains_through_a2ls_fit_and_resumes_exactly(tmp_path, name):
    args, recorded = OPTIONS[name]
    straight = _fit(tmp_path / "straight", args)
    assert sorted(straight) == [4, 8]
    assert {k: v for k, v in flatten_model_settings(straight[8]["hyper_parameters"]).items() if k in recorded} \
        == recorded
    state = straight[8]["state_dict"]
    assert all(torch.isfinite(v).all() for v in state.values() if v.is_floating_point())
    loaded = SACModule.load_from_checkpoint(next((tmp_path / "straight").rglob("epoch=0-step=8.ckpt")))
    assert all(torch.equal(v, state[k]) for k, v in loaded.state_dict().items())  # a policy loads for evaluation
    assert loaded.act(torch.zeros(3, *straight[8]["env_spec"][0])).shape == (3, straight[8]["env_spec"][1])
    # A resumed run continues in its checkpoint's run folder: the straight run's last save is moved out of the way.
    for path in (tmp_path / "straight").rglob("epoch=0-step=8*.ckpt"):
        path.unlink()
    resumed = _fit(tmp_path / "straight", args, ckpt=next((tmp_path / "straight").rglob("epoch=0-step=4.ckpt")))
    again = resumed[8]["state_dict"]
    assert state.keys() == again.keys()
    for key in state:
        assert torch.equal(state[key], again[key]), key
    opt_a, opt_b = straight[8]["optimizer_states"][0], resumed[8]["optimizer_states"][0]
    assert [g["lr"] for g in opt_a["param_groups"]] == [g["lr"] for g in opt_b["param_groups"]]
    for key, sa in opt_a["state"].items():
        assert all(torch.equal(sa[f], opt_b["state"][key][f]) for f in ("exp_avg", "exp_avg_sq", "step")), key
    if "--model.network.hyperspherical=true" in args:  # the saved weights are on the sphere
        rows = [v.norm(dim=1) for k, v in state.items() if k.endswith(".weight") and ("actor.net" in k or
                "critic.q1" in k) and not k.startswith("learner.target") and v.dim() == 2]
        assert rows and all(torch.allclose(r, torch.ones(()), atol=1e-5) for r in rows)
    if name == "simbav2_olaux":  # OL-AUX moved its weights, and resumed to the same ones
        weights = [v["weights"] for k, v in straight[8]["callbacks"].items() if k.startswith("OLAux")]
        assert weights and weights[0] != {"fwd": 1.0, "inv": 1.0}
        assert weights[0] == [v["weights"] for k, v in resumed[8]["callbacks"].items() if k.startswith("OLAux")][0]
    if name == "lr_decay":  # the schedule reached half the rate at update 8 and was saved and restored
        assert [g["lr"] for g in opt_a["param_groups"]] == [5e-4, 5e-4, 5e-4, 1e-4]
        assert straight[4]["lr_schedulers"][0]["last_epoch"] == 4


# --- refusals -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,fragment", [
    (dict(lr_decay_to=1.5), "model.optim.lr_decay_to=1.5 must be in [0, 1]"),
    (dict(lr_decay_to=float("nan")), "model.optim.lr_decay_to=nan must be a finite number"),
    (dict(critic_bins=1), "model.network.critic_bins=1 must be 0 (off) or an integer >= 2"),
    (dict(critic_bins=-3), "model.network.critic_bins=-3 must be 0 (off) or an integer >= 2"),
    (dict(critic_min_value=5.0), "model.network.critic_min_value=5.0 must be < critic_max_value=5.0"),
    (dict(reward_norm_g_max=0.0), "model.sac.reward_norm_g_max=0.0 is not allowed"),
    (dict(input_shift=float("inf")), "model.network.input_shift=inf must be a finite number"),
    (dict(hyperspherical=True, cudagraphs=True), "model.network.hyperspherical=true projects the weights"),
])
def test_bad_simbav2_setting_is_one_line(kwargs, fragment):
    with pytest.raises(ValueError) as err:
        SACModule.from_settings(**kwargs)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_lr_decay_with_cudagraphs_is_refused_in_one_line():
    with pytest.raises(ValueError) as err:
        check_lr_schedule(OptimizerSettings(lr_decay_to=0.5), 100, cudagraphs=True)
    assert "lr_decay_to=0.5: a CUDA-graph-captured step keeps its learning rate constant" in str(err.value)
    assert "\n" not in str(err.value)


def test_lr_decay_without_max_steps_is_refused_in_one_line(tmp_path, capsys):
    from a2ls_lightning.cli import main

    with pytest.raises(SystemExit):
        main(["fit", *TINY, "--model.optim.lr_decay_to=0.5", "--trainer.max_steps=-1",
              f"--trainer.default_root_dir={tmp_path}"])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("a2ls: error:")]
    assert len(errors) == 1 and "lr_decay_to=0.5 decays over trainer.max_steps; needs trainer.max_steps >= 1" \
        in errors[0]
    assert not list(tmp_path.rglob("*.ckpt"))


def test_every_part_at_once_under_ddp_resumes_exactly(tmp_path):
    # Two CPU ranks (gloo): each rank normalises its rewards by its own collector's returns, the gradients are
    # averaged, every rank projects the same stepped weights. 8 updates straight == 4, checkpoint, 4 more.
    from conftest import a2ls

    def fit(root: Path, ckpt: Path | None = None) -> dict:
        out = a2ls("fit", *TINY, *OPTIONS["simbav2_olaux"][0], "--trainer.max_steps=8", "--trainer.strategy=ddp",
                   "--trainer.devices=2", "--trainer.accelerator=cpu", f"--trainer.default_root_dir={root}",
                   *([f"--ckpt_path={ckpt}"] if ckpt else []), cwd=tmp_path, timeout=600)
        assert out.returncode == 0, out.stderr[-3000:]
        return torch.load(next(root.rglob("epoch=0-step=8*.ckpt")), map_location="cpu", weights_only=False)

    straight = fit(tmp_path / "run")
    for path in (tmp_path / "run").rglob("epoch=0-step=8*.ckpt"):
        path.unlink()
    resumed = fit(tmp_path / "run", ckpt=next((tmp_path / "run").rglob("epoch=0-step=4.ckpt")))
    assert straight["global_step"] == resumed["global_step"] == 8
    for key, value in straight["state_dict"].items():
        assert torch.equal(value, resumed["state_dict"][key]), key
