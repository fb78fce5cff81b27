"""RL-AUX: per-example weights learned from the held-out reward (toy), the reward, exact resume, DDP, the SAC module."""

import logging

import lightning.pytorch as pl
import pytest
import torch
from conftest import TinyContractModule as TinyModule
from conftest import fit_with_callback as fit  # the same one-callback Trainer as OL-AUX's tests

from a2ls_lightning.callbacks import RLAux

logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


# --- a toy: linear regression with one shared parameter; odd examples carry an opposing auxiliary loss ------------
class Toy:
    """``y = w*·x``; every update starts from the same ``θ`` (a one-step bandit with a steady signal). Auxiliary loss
    of example ``b``: its main loss (helpful) or ``2·sg(l) − l`` (gradient minus the main one's) when ``b`` is odd;
    the policy sees ``[x, bit]``."""

    def __init__(self, dim: int = 4, batch: int = 16) -> None:
        torch.manual_seed(0)
        self.w_star, self.batch_size = torch.randn(dim), batch
        self.theta = torch.zeros(dim, requires_grad=True)
        self.generator = torch.Generator().manual_seed(1)
        self.optimizer = torch.optim.SGD([self.theta], lr=0.002)
        self.kept = None

    def sample(self, n):
        x = torch.randn(n, self.w_star.shape[0], generator=self.generator)
        return x, x @ self.w_star

    def heldout_main_loss(self, resample: bool = True, with_graph: bool = False) -> torch.Tensor:
        if resample:
            self.kept = self.sample(256)
        x, y = self.kept
        with torch.set_grad_enabled(with_graph):
            return ((x @ self.theta - y) ** 2).mean()

    def step(self, rule: RLAux) -> torch.Tensor:
        with torch.no_grad():
            self.theta.copy_(self.w_star + 1.0)
        x, y = self.sample(self.batch_size)
        bad = torch.arange(self.batch_size) % 2 == 1
        per = (x @ self.theta - y) ** 2  # [B]
        aux = torch.where(bad, 2 * per.detach() - per, per)
        features = torch.cat([x, bad.float()[:, None]], 1)  # [B, D + 1]
        total = rule.combine(per.mean(), {"aux": aux}, [self.theta], example_features=features)
        self.optimizer.zero_grad()
        total.backward()
        self.optimizer.step()
        rule.after_update()
        return features

    def expected_weights(self, rule: RLAux, features: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            p = torch.softmax(rule.policy.weight_logits(features), -1)  # [B, 1, bins]
            return (p * rule.factors).sum(-1)[:, 0]


BATCH = {"credit": "batch", "initial_weight": None}  # version 0.3's estimator and start (the authors')


def test_batch_credit_learns_low_weights_for_exactly_the_examples_whose_aux_loss_opposes_the_main_one():
    toy, rule = Toy(), RLAux(lr=3e-3, reward_every=1, seed=0, **BATCH)
    rule.attach(toy)
    for _ in range(1500):
        features = toy.step(rule)
    w = toy.expected_weights(rule, features)
    bad = features[:, -1] == 1
    assert w[~bad].min() > 4 * w[bad].max(), (w[~bad], w[bad])  # every helpful example above every harmful one
    assert w[~bad].mean() > 15 and w[bad].mean() < 4


def test_reward_is_the_heldout_loss_before_minus_after_the_update():
    toy, rule = Toy(), RLAux(lr=1e-2, reward_every=1, **BATCH)
    rule.attach(toy)
    seen = []
    original = toy.heldout_main_loss
    toy.heldout_main_loss = lambda resample=True: seen.append(original(resample)) or seen[-1]
    toy.step(rule)
    theta_after = toy.theta.detach().clone()
    x, y = toy.kept
    before_by_hand = ((x @ (toy.w_star + 1.0) - y) ** 2).mean()
    after_by_hand = ((x @ theta_after - y) ** 2).mean()
    assert len(seen) == 2 and torch.equal(seen[0], before_by_hand) and torch.equal(seen[1], after_by_hand)
    assert float(rule._last["reward"]) == pytest.approx(float(before_by_hand - after_by_hand), rel=1e-6)
    assert rule.metrics()["rlaux/reward"] == pytest.approx(float(before_by_hand - after_by_hand), rel=1e-6)


def test_state_dict_round_trip_mid_training_continues_exactly(tmp_path):
    def run(toy, rule, steps):
        for _ in range(steps):
            features = toy.step(rule)
        return features

    straight_toy, straight = Toy(), RLAux(lr=1e-2, seed=3)
    straight.attach(straight_toy)
    run(straight_toy, straight, 40)

    toy, first = Toy(), RLAux(lr=1e-2, seed=3)
    first.attach(toy)
    run(toy, first, 20)
    torch.save({"rule": first.state_dict(), "gen": toy.generator.get_state()}, tmp_path / "s.pt")
    saved = torch.load(tmp_path / "s.pt", weights_only=False)
    resumed_toy, resumed = Toy(), RLAux(lr=1e-2, seed=3)
    resumed_toy.generator.set_state(saved["gen"])
    resumed.load_state_dict(saved["rule"])
    resumed.attach(resumed_toy)
    run(resumed_toy, resumed, 20)
    for a, b in zip(resumed.policy.parameters(), straight.policy.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert resumed.weights == straight.weights
    torch.testing.assert_close(resumed._stats, straight._stats, rtol=0, atol=0)


def test_validation_pass_uses_the_most_likely_bins_and_learns_nothing():
    toy, rule = Toy(), RLAux()
    rule.attach(toy)
    toy.step(rule)
    state = {k: v.clone() for k, v in rule.policy.state_dict().items()}
    x, y = toy.sample(8)
    with torch.no_grad():
        total = rule.combine(torch.tensor(1.0), {"aux": torch.ones(8)}, [], example_features=torch.zeros(8, 5))
    assert rule._pending is None and total > 1.0
    for k, v in rule.policy.state_dict().items():
        assert torch.equal(v, state[k])


@pytest.mark.parametrize("kwargs, fragment", [
    ({"mode": "label"}, "RLAux.mode='label'"), ({"bins": 1}, "RLAux.bins=1"), ({"min_factor": 0}, "RLAux.min_factor"),
    ({"max_factor": 0.1}, "RLAux.max_factor"), ({"lr": 0}, "RLAux.lr"), ({"entropy_coef": -1}, "RLAux.entropy_coef"),
    ({"baseline_decay": 1.0}, "RLAux.baseline_decay"), ({"reward_every": 0}, "RLAux.reward_every"),
])
def test_bad_settings_are_refused_in_one_line(kwargs, fragment):
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(")) as info:
        RLAux(**kwargs)
    assert "\n" not in str(info.value)


def test_a_module_without_the_hooks_is_refused_in_one_line():
    with pytest.raises(ValueError, match="heldout_main_loss"):
        RLAux().attach(object())
    with pytest.raises(ValueError, match="declares none"):
        RLAux(mode="labels").attach(Toy())
    with pytest.raises(ValueError, match="per-example auxiliary losses"):
        toy, rule = Toy(), RLAux()
        rule.attach(toy)
        rule.combine(torch.tensor(1.0), {"aux": torch.tensor(2.0)}, [], example_features=torch.zeros(4, 5))


@pytest.mark.parametrize("mode", ["labels", "labels+weights"])
@pytest.mark.parametrize("credit", ["example", "batch"])
def test_labels_mode_picks_allowed_slots_and_learns(credit, mode):
    class Labelled(Toy):
        def aux_label_slots(self):
            return {"aux": 6}

        def aux_loss_names(self):
            return ["aux"]

    toy, rule = Labelled(), RLAux(mode=mode, lr=1e-2, reward_every=1, credit=credit)
    rule.attach(toy)
    features = torch.randn(16, 5)
    allowed = torch.zeros(16, 6, dtype=torch.bool)
    allowed[:, :3] = True
    toy.heldout_main_loss(True)
    labels = rule.choose_labels("aux", features, allowed)
    assert labels.shape == (16,) and labels.dtype == torch.long and (labels < 3).all()
    before = {k: v.clone() for k, v in rule.policy.state_dict().items()}
    total = rule.combine(torch.tensor(1.0, requires_grad=True), {"aux": torch.ones(16, requires_grad=True)},
                         [toy.theta], example_features=features)
    total.backward()
    rule.after_update()
    assert rule._label_log_p == {} and rule._weight_log_p is None and rule._rewards_seen == 1
    assert rule._names == ["aux"]  # the label's credit column (a labels-only policy was built before combine)
    assert not torch.equal(rule.policy.state_dict()["label_heads.aux.weight"], before["label_heads.aux.weight"])


# --- Lightning: a tiny module, DDP ----------------------------------------------------------------------------
def test_trainer_checkpoint_resume_is_exact(tmp_path):
    # reward_every=3 and a checkpoint after update 4: the resume lands between two rewards
    straight, rule = TinyModule(), RLAux(lr=1e-2, reward_every=3)
    fit(straight, rule, 8)
    first = RLAux(lr=1e-2, reward_every=3)
    trainer = fit(TinyModule(), first, 4)
    trainer.save_checkpoint(tmp_path / "mid.ckpt")
    resumed, fresh = TinyModule(), RLAux(lr=1e-2, reward_every=3)
    fit(resumed, fresh, 8, ckpt_path=tmp_path / "mid.ckpt")
    for a, b in zip(fresh.policy.parameters(), rule.policy.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for a, b in zip(resumed.parameters(), straight.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_ddp_two_ranks_hold_identical_policies(tmp_path):
    fit(TinyModule(out_dir=str(tmp_path)), RLAux(lr=1e-2, reward_every=1, **BATCH), 5, strategy="ddp_spawn",
        devices=2)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert rank0["state"]["rewards_seen"] == 5
    for key, value in rank0["state"]["policy"].items():
        torch.testing.assert_close(rank1["state"]["policy"][key], value, rtol=0, atol=0)
    torch.testing.assert_close(rank0["state"]["stats"], rank1["state"]["stats"], rtol=0, atol=0)
    for key, value in rank0["params"].items():  # and DDP kept the module identical too
        torch.testing.assert_close(rank1["params"][key], value, rtol=0, atol=0)


# --- the real SACModule ----------------------------------------------------------------------------------------
def test_rlaux_trains_the_sac_module_and_logs(make_module, make_data, make_trainer, tmp_path):
    import csv

    rule = RLAux(lr=1e-2)
    module = make_module(aux_losses={"fwd": "forward_dynamics", "adv": "adversarial", "noise": "noise_target"})
    trainer = make_trainer(12, callbacks=[rule], log_every_n_steps=4,
                           logger=pl.loggers.CSVLogger(tmp_path, name="", version=""))
    trainer.fit(module, make_data(eval_episodes=0))
    # the default reward_every=4: a reward (and a policy step) after updates 1, 5 and 9
    assert trainer.global_step == 12 and module.aux_weighting is rule and rule._rewards_seen == 3
    assert set(rule.weights) == {"fwd", "adv", "noise"} and all(0.125 <= w <= 32 for w in rule.weights.values())
    with open(tmp_path / "metrics.csv") as f:
        rows = [row for row in csv.DictReader(f) if row.get("rlaux/reward")]
    assert rows and rows[-1]["rlaux/mean_weight/fwd"] and rows[-1]["aux_weight/adv"] and rows[-1]["rlaux/entropy"]
    # the per-example spread of the weights: 10th <= mean-ish <= 90th percentile, on the grid's range
    p10, p90 = float(rows[-1]["rlaux/weight_p10/fwd"]), float(rows[-1]["rlaux/weight_p90/fwd"])
    assert 0.125 <= p10 < p90 <= 32


def test_sac_heldout_main_loss_repeats_exactly_without_resampling(make_module, make_data, make_trainer):
    module = make_module()
    trainer = make_trainer(2)
    trainer.fit(module, make_data(eval_episodes=0))
    rng = torch.get_rng_state()
    first = module.heldout_main_loss(resample=True)
    assert torch.equal(module.heldout_main_loss(resample=False), first)  # same batch, crops and samples
    assert torch.equal(torch.get_rng_state(), rng)  # the global generator is untouched
    assert first.shape == () and not first.requires_grad


def test_labels_modes_are_refused_for_the_sac_module(make_module, make_data, make_trainer):
    with pytest.raises(ValueError, match="declares none"):
        make_trainer(2, callbacks=[RLAux(mode="labels")]).fit(make_module(aux_losses={"fwd": "forward_dynamics"}),
                                                              make_data(eval_episodes=0))


def test_a_few_updates_through_the_real_a2ls_fit(tmp_path, capsys):
    from a2ls_lightning.cli import main

    args = ["fit", "--model.network.hidden_dim=32", "--model.network.feature_dim=16",
            "--model.network.encoder_hidden_dim=16",
            "--data.batch_size=16", "--data.capacity=300", "--data.warmup_steps=40", "--data.eval_episodes=0",
            "--trainer.max_steps=6", "--trainer.enable_progress_bar=false", "--trainer.logger=false",
            "--trainer.enable_checkpointing=false", f"--trainer.default_root_dir={tmp_path}",
            "--model.aux_losses={fwd: forward_dynamics, adv: adversarial}",
            "--trainer.callbacks+=a2ls_lightning.callbacks.RLAux", "--trainer.callbacks.reward_every=2",
            "--trainer.callbacks.lr=0.01"]
    try:
        main(args)
    except SystemExit as exit_:
        assert not exit_.code, capsys.readouterr().err[-2000:]
