"""Backbone options of SACModule: SimBa residual networks, observation normalisation, AdamW, one Q-network, target
entropy coefficient, fused Adam, periodic resets; real runs on cheetah-run, exact resume, one-line refusals."""

from __future__ import annotations

import logging

import lightning.pytorch as pl
import pytest
import torch
from conftest import fused_on_cpu, tiny_data, tiny_module, tiny_trainer
from tensordict import TensorDict

from a2ls_lightning import SACModule
from a2ls_lightning.modules import optim as agent_optim
from a2ls_lightning.modules.blocks import ResidualBlock, residual_mlp, residual_trunk
from a2ls_lightning.modules.normalizer import ObsNormalizer
from a2ls_lightning.modules.resets import reset_learner
from a2ls_lightning.modules.settings import flatten_model_settings

logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")

FRONTIER = dict(critic_blocks=2, actor_blocks=1, encoder_blocks=1, obs_norm=True, weight_decay=1e-2, num_q=1,
                target_entropy_coef=0.5, reset_every=3)


_fused_on_cpu = fused_on_cpu


# --- pieces -----------------------------------------------------------------------------------------------------
def test_simba_block_shapes_and_its_identity_path():
    block = ResidualBlock(8)
    assert block.inner.weight.shape == (32, 8) and block.outer.weight.shape == (8, 32)
    x = torch.randn(3, 5, 8)
    with torch.no_grad():  # the residual branch silenced: the block is the identity
        block.outer.weight.zero_()
        block.outer.bias.zero_()
    assert torch.equal(block(x), x)
    trunk, net = residual_trunk(17, 8, 2), residual_mlp(17, 8, 2, 3)
    assert trunk(torch.randn(4, 17)).shape == (4, 8) and net(torch.randn(4, 17)).shape == (4, 3)
    assert isinstance(trunk[-1], torch.nn.LayerNorm) and isinstance(net[-1], torch.nn.Linear)
    assert sum(isinstance(m, ResidualBlock) for m in net) == 2


def test_normalizer_statistics_clip_and_ranks(monkeypatch):
    norm, data = ObsNormalizer(3), torch.randn(50, 3, dtype=torch.float64) * torch.tensor([1.0, 5.0, 0.1]) + 3
    assert torch.equal(norm(torch.ones(2, 3)), torch.ones(2, 3))  # before any update: the identity
    for chunk in data.split([7, 30, 13]):
        norm.update(chunk.float())
    assert norm.count.item() == 50
    assert torch.allclose(norm.mean, data.float().double().mean(0), atol=1e-9)
    assert torch.allclose(norm.m2 / norm.count, data.float().double().var(0, unbiased=False), rtol=1e-9)
    out = norm(torch.tensor([[3.0, 3.0, 1e6]]))
    assert abs(out[0, 0]) < 0.5 and out[0, 2] == 10.0  # clipped at +10
    # Under DDP the batch's count, sums and squares are summed over ranks: a fake second rank holding `other`.
    other = torch.randn(20, 3, dtype=torch.float64)
    monkeypatch.setattr(torch.distributed, "is_initialized", lambda: True)
    monkeypatch.setattr(torch.distributed, "all_reduce", lambda t: t.add_(torch.cat(
        [t.new_tensor([20.0]), other.sum(0), other.pow(2).sum(0)])))
    ranks = ObsNormalizer(3)
    ranks.update(data.float())
    both = torch.cat([data.float().double(), other])
    assert ranks.count.item() == 70 and torch.allclose(ranks.mean, both.mean(0), atol=1e-9)
    assert torch.allclose(ranks.m2 / 70, both.var(0, unbiased=False), rtol=1e-8)


def _batch(b: int = 6, length: int = 2) -> TensorDict:
    return TensorDict({"observation": torch.randn(b, length, 17) * 4 + 1, "action": torch.rand(b, length, 6) * 2 - 1,
                       "reward": torch.rand(b, length, 1), "terminated": torch.zeros(b, length, 1, dtype=torch.bool)},
                      batch_size=[b, length])


def test_only_a_training_batch_moves_the_statistics_and_every_encoder_input_is_normalised():
    module = tiny_module(**FRONTIER)
    module.build((17,), 6)
    learner, batch = module.learner, _batch()
    learner.act(batch["observation"][:, 0])
    learner.main_loss(batch)
    assert learner.obs_normalizer.count.item() == 0
    learner.observe(batch)
    assert learner.obs_normalizer.count.item() == 12  # every state of the window
    seen = []
    learner.encoder.trunk.register_forward_pre_hook(lambda m, args: seen.append(args[0]))
    learner.act(batch["observation"][:, 0])
    assert torch.allclose(seen[-1], learner.obs_normalizer(batch["observation"][:, 0]))
    assert seen[-1].abs().max() < 3  # not the raw observations (std 4)


def test_reset_last_reinitialises_the_output_layers_their_targets_and_their_adam_state():
    module = tiny_module(critic_blocks=1, reset_every=5)
    module.build((17,), 6)
    learner = module.learner
    opt = module.configure_optimizers()
    main, _, _ = learner.losses(_batch(), update_actor=True)
    (main["critic"] + main["actor"] + main["temperature"]).backward()
    opt.step()
    before = {k: v.clone() for k, v in learner.state_dict().items()}
    last = ["actor.net.4", "critic.q1.3", "critic.q2.3", "target_critic.q1.3", "target_critic.q2.3"]
    reset = reset_learner(learner, module._make_learner, "last", 123, opt)
    assert len(reset) == 10  # weight and bias of the output layers: actor, two Q-networks, two target Q-networks
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(123)
        fresh = module._make_learner().state_dict()
    expected = {f"{m}.{p}" for m in last for p in ("weight", "bias")}
    for key, value in learner.state_dict().items():
        assert torch.equal(value, fresh[key] if key in expected else before[key]), key
    assert not torch.equal(before["actor.net.4.weight"], fresh["actor.net.4.weight"])
    assert torch.equal(learner.critic.q1[3].weight, learner.target_critic.q1[3].weight)
    assert all(float(s["step"]) == 0 and not s["exp_avg"].any() for p, s in opt.state.items()
               if any(p is q for q in reset))
    assert all(float(s["step"]) == 1 for p, s in opt.state.items() if not any(p is q for q in reset))
    again = {k: v.clone() for k, v in learner.state_dict().items()}
    reset_learner(learner, module._make_learner, "last", 123, opt)  # same seed: same values
    assert all(torch.equal(v, again[k]) for k, v in learner.state_dict().items())


# --- real runs ------------------------------------------------------------------------------------------------------
OPTIONS = {
    "blocks": dict(critic_blocks=1, actor_blocks=1, encoder_blocks=1, critic_block_width=24, actor_block_width=8,
                   encoder_block_width=12),
    "ofe_blocks": dict(encoder="ofe", encoder_blocks=1),
    "obs_norm": dict(obs_norm=True),
    "weight_decay": dict(weight_decay=1e-2),
    "num_q_1": dict(num_q=1),
    "entropy_coef": dict(target_entropy_coef=0.5),
    "fused_adam": dict(fused_adam=True),
    "reset_last": dict(reset_every=2),
    "reset_all": dict(reset_every=2, reset_scope="all"),
    "frontier_last": dict(FRONTIER, fused_adam=_fused_on_cpu()),
    "frontier_all": dict(FRONTIER, reset_scope="all", fused_adam=_fused_on_cpu()),
}


@pytest.mark.parametrize("name", list(OPTIONS))
def test_option_trains_on_cheetah_run_and_checkpoints(tmp_path, name):
    if OPTIONS[name].get("fused_adam") and not _fused_on_cpu():
        pytest.skip(f"torch {torch.__version__} cannot fuse Adam on this CPU")
    pl.seed_everything(3)
    aux = {"fwd": "forward_dynamics"} if name.startswith("frontier") else None
    module, data = tiny_module(aux_losses=aux, **OPTIONS[name]), tiny_data(seed=3, warmup_steps=16, batch_size=8)
    trainer = tiny_trainer(tmp_path, 4)
    trainer.fit(module, data)
    assert trainer.global_step == 4
    trainer.save_checkpoint(tmp_path / "c.ckpt")
    loaded = SACModule.load_from_checkpoint(tmp_path / "c.ckpt")
    stored = flatten_model_settings(loaded.hparams)
    assert {k: v for k, v in stored.items() if k in OPTIONS[name]} == OPTIONS[name]
    state = module.state_dict()
    assert all(torch.equal(v, state[k]) for k, v in loaded.state_dict().items())
    assert all(torch.isfinite(p).all() for p in module.parameters())
    if module.network.obs_norm:
        assert loaded.learner.obs_normalizer.count.item() == 4 * 8 * module.required_slice_length


def _run(tmp_path, steps: int, ckpt_in=None, ckpt_out=None):
    pl.seed_everything(7)
    module = tiny_module(obs_norm=True, num_q=1, critic_blocks=1, reset_every=5, reset_scope="all",
                         aux_losses={"fwd": "forward_dynamics"})
    data = tiny_data(seed=7, warmup_steps=16, batch_size=8, eval_interval=10_000)
    trainer = tiny_trainer(tmp_path, steps)
    trainer.fit(module, data, ckpt_path=ckpt_in)
    if ckpt_out is not None:
        trainer.save_checkpoint(ckpt_out)
    return module


def test_exact_resume_with_obs_norm_and_resets_straddling_the_checkpoint(tmp_path):
    # resets after updates 4, 9 (the last before the cut at 10: the checkpoint holds its fresh values), 14, 19
    straight = _run(tmp_path / "a", 20)
    _run(tmp_path / "b", 10, ckpt_out=tmp_path / "b" / "half.ckpt")
    resumed = _run(tmp_path / "b", 20, ckpt_in=str(tmp_path / "b" / "half.ckpt"))
    a, b = straight.state_dict(), resumed.state_dict()
    assert a.keys() == b.keys() and any(k.startswith("learner.obs_normalizer.") for k in a)
    for key in a:
        assert torch.equal(a[key], b[key]), key
    oa, ob = straight.optimizers().optimizer.state_dict(), resumed.optimizers().optimizer.state_dict()
    for key, sa in oa["state"].items():
        assert all(torch.equal(sa[f], ob["state"][key][f]) for f in ("exp_avg", "exp_avg_sq", "step")), key


# --- refusals -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,fragment", [
    (dict(num_q=3), "num_q=3 is not allowed; allowed: 1, 2"),
    (dict(reset_scope="x"), "reset_scope='x' is not allowed; allowed: last, all"),
    (dict(reset_every=-1), "reset_every=-1 must be an integer >= 0"),
    (dict(weight_decay=-0.1), "weight_decay=-0.1 is not allowed; allowed: a finite number >= 0"),
    (dict(target_entropy=-3.0, target_entropy_coef=0.5), "target_entropy_coef=0.5 and target_entropy=-3.0"),
    (dict(target_entropy_coef=0.0), "target_entropy_coef=0.0 is not allowed"),
    (dict(encoder="pixel", obs_norm=True), "obs_norm=true normalises state observations; not allowed with"),
    (dict(encoder="pixel", encoder_blocks=1), "encoder_blocks=1 needs encoder=mlp or ofe, not 'pixel'"),
    (dict(critic_blocks=-1), "critic_blocks=-1 must be an integer >= 0"),
    (dict(actor_block_width=0), "actor_block_width=0 must be an integer >= 1"),
    (dict(num_q=1, aux_losses={"adv": "adversarial"}), "num_q=1: the adversarial experiment loss needs two"),
])
def test_bad_backbone_setting_is_one_line(kwargs, fragment):
    with pytest.raises(ValueError) as err:
        SACModule.from_settings(**kwargs)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_fused_adam_refused_in_one_line_where_torch_cannot(monkeypatch):
    def cannot(device, capturable):
        raise RuntimeError("`fused=True` requires all the params to be floating point Tensors of\nsupported devices")

    monkeypatch.setattr(agent_optim, "_fused_adam_step", cannot)
    module = tiny_module(fused_adam=True)
    module.build((17,), 6)
    with pytest.raises(ValueError) as err:
        module.configure_optimizers()
    message = str(err.value)
    assert message.startswith(f"model.optim.fused_adam=true: torch {torch.__version__} cannot fuse Adam on cpu: ")
    assert "\n" not in message
