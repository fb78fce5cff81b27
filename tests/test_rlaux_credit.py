"""Per-example credit (RL-AUX's default and the look-ahead rule): the credit against brute force, opposing examples
weighed down before the main loss degrades, no divergence, exact resume, DDP, bad settings, and a plain module
through the documented contract (``tests/contract_mixed_aux.py``)."""

import logging
import math

import lightning.pytorch as pl
import pytest
import torch
from conftest import TinyContractModule as TinyModule
from conftest import fit_with_callback as fit
from contract_mixed_aux import OracleWeights, train
from torch import nn

from a2ls_lightning.callbacks import LookaheadWeights, RLAux
from a2ls_lightning.callbacks.credit import example_credit, heldout_gradient
from a2ls_lightning.callbacks.labeller import tilt_for_mean

logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


def brute_force_credit(losses, params, g):
    """``[B, K]``: one backward pass per example and loss."""
    out = torch.zeros(losses[0].shape[0], len(losses))
    for k, loss in enumerate(losses):
        for b in range(loss.shape[0]):
            grads = torch.autograd.grad(loss[b], params, retain_graph=True, allow_unused=True)
            out[b, k] = torch.cat([(gr if gr is not None else torch.zeros_like(p)).reshape(-1)
                                   for gr, p in zip(grads, params)]) @ g
    return out


def test_credit_equals_brute_force_per_example_dot_products():
    torch.manual_seed(0)
    encoder = nn.Sequential(nn.Linear(3, 6), nn.Tanh(), nn.Linear(6, 5), nn.LayerNorm(5))
    heads = nn.ModuleList([nn.Linear(5, 2), nn.Linear(5, 1)])
    params = list(encoder.parameters())
    z = encoder(torch.randn(9, 3))
    losses = [(heads[0](z) - 1).pow(2).sum(1), heads[1](z).squeeze(1).abs(),
              heads[1](torch.randn(9, 5)).squeeze(1).pow(2)]  # the last one does not reach the encoder
    heldout = (heads[0](encoder(torch.randn(32, 3))) + 0.5).pow(2).mean()
    g = heldout_gradient(heldout, params)
    credit = example_credit(losses, params, g)
    assert credit.shape == (9, 3) and credit.abs().max() > 1e-2 and torch.equal(credit[:, 2], torch.zeros(9))
    torch.testing.assert_close(credit, brute_force_credit(losses, params, g), rtol=0, atol=1e-5)
    sum(loss.mean() for loss in losses).backward()  # the module's own backward still works afterwards
    assert all(p.grad is not None for p in params)


def test_the_untrained_policy_and_network_weigh_one_on_average():
    rule = RLAux()
    lam = tilt_for_mean(rule.factors, 1.0)
    prior = torch.softmax(lam * rule.factors.double().log(), 0)
    assert float((prior * rule.factors.double()).sum()) == pytest.approx(1.0, abs=1e-9)
    toy, look = Opposing(), LookaheadWeights()
    rule.attach(toy)
    look.attach(toy)
    with torch.no_grad():  # builds them without a learning step
        for r in (rule, look):
            r.combine(torch.tensor(0.0), {"aux": torch.ones(8)}, [toy.theta], example_features=toy.probe[:8])
    torch.testing.assert_close(rule.expected_weights(toy.probe), torch.ones(256, 1), rtol=0, atol=1e-5)
    assert torch.equal(look.example_weights(toy.probe), torch.ones(256, 1))
    # the authors' start: uniform over the grid, mean factor 6.28
    uniform = RLAux(initial_weight=None)
    uniform.attach(toy)
    with torch.no_grad():
        uniform.combine(torch.tensor(0.0), {"aux": torch.ones(8)}, [], example_features=toy.probe[:8])
    assert float(uniform.expected_weights(toy.probe).mean()) == pytest.approx(6.28, abs=0.01)


class Opposing:
    """Linear regression with label noise (std 1) trained by SGD; the auxiliary loss of an odd example is minus its main loss (its gradient
    opposes the main one), of an even one its main loss again. The rule sees ``[x, odd]``."""

    def __init__(self, dim: int = 6, batch: int = 32, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.w_star, self.batch, self.noise = torch.randn(dim, generator=g), batch, 1.0
        self.theta = torch.zeros(dim, requires_grad=True)
        self.generator = g
        self.optimizer = torch.optim.SGD([self.theta], lr=0.005)
        self.kept = None
        self.test_set = self.sample(2048)
        x = torch.randn(256, dim, generator=g)
        self.probe = torch.cat([x, (torch.arange(256) % 2).float()[:, None]], 1)  # [256, dim + 1]

    def sample(self, n):
        x = torch.randn(n, self.w_star.shape[0], generator=self.generator)
        return x, x @ self.w_star + self.noise * torch.randn(n, generator=self.generator)

    def heldout_main_loss(self, resample: bool = True, with_graph: bool = False) -> torch.Tensor:
        if resample or self.kept is None:
            self.kept = self.sample(256)
        x, y = self.kept
        with torch.set_grad_enabled(with_graph):
            return ((x @ self.theta - y) ** 2).mean()

    def test_loss(self) -> float:
        x, y = self.test_set
        with torch.no_grad():
            return float(((x @ self.theta - y) ** 2).mean())

    def step(self, rule) -> None:
        x, y = self.sample(self.batch)
        odd = torch.arange(self.batch) % 2 == 1
        per = (x @ self.theta - y) ** 2  # [B]
        total = rule.combine(per.mean(), {"aux": torch.where(odd, -per, per)}, [self.theta],
                             example_features=torch.cat([x, odd.float()[:, None]], 1))
        self.optimizer.zero_grad()
        total.backward()
        self.optimizer.step()
        rule.after_update()

    def mean_weights(self, rule) -> tuple[float, float]:
        """Mean weight of the probe's (even, odd) examples."""
        w = (rule.expected_weights(self.probe) if isinstance(rule, RLAux) else rule.example_weights(self.probe))[:, 0]
        return float(w[0::2].mean()), float(w[1::2].mean())


RULES = {"rlaux": lambda: RLAux(reward_every=1, lr=1e-3), "lookahead": lambda: LookaheadWeights(credit_every=1)}
#: Updates within which the opposing examples' weights fall 0.2 below 1 (seed 0; the toy's loss reaches its noise
#: floor after about 300 updates).
UPDATES = {"rlaux": 200, "lookahead": 100}


@pytest.mark.parametrize("name", sorted(RULES))
def test_opposing_examples_fall_below_one_before_the_main_loss_degrades(name):
    toy, rule = Opposing(seed=0), RULES[name]()
    rule.attach(toy)
    first, losses = toy.test_loss(), []
    for _ in range(UPDATES[name]):
        toy.step(rule)
        losses.append(toy.test_loss())
    even, odd = toy.mean_weights(rule)
    assert odd < 0.8, (even, odd)  # a margin of 0.2 below 1 on the opposing examples
    assert odd < even - 0.2
    assert max(losses) <= first, (first, losses[:10])  # the main loss never rose above where it started



# --- a plain module through the documented contract (the check) --------------------------------------------
STEPS = 1000


@pytest.fixture(scope="module")
def reference_errors():
    """Test error without the auxiliary loss and with the per-example oracle (seed 0, ``STEPS`` updates)."""
    return train(None, STEPS, aux="none").test_error(), train(OracleWeights(), STEPS).test_error()


@pytest.mark.parametrize("make", [RLAux, LookaheadWeights], ids=["rlaux", "lookahead"])
def test_defaults_on_a_plain_module_do_not_diverge_and_close_half_the_gap_to_the_oracle(make, reference_errors):
    none, oracle = reference_errors
    assert oracle < none - 0.2  # the check means something: the oracle's weights help
    unit = train(RLAux(initial_weight=None, credit="batch"), 300).test_error()  # version 0.3's defaults diverge
    assert not unit < 100 * none
    error = train(make(), STEPS).test_error()
    assert math.isfinite(error) and error <= none - 0.5 * (none - oracle), (error, none, oracle)


# --- exact resume, DDP, bad settings --------------------------------------------------------------------------------
def _parameters(rule):
    return list((rule.policy if isinstance(rule, RLAux) else rule.net).parameters())


@pytest.mark.parametrize("make", [lambda: RLAux(lr=1e-2, reward_every=3), lambda: LookaheadWeights(credit_every=3)],
                         ids=["rlaux", "lookahead"])
def test_trainer_checkpoint_resume_is_exact(make, tmp_path):
    # a checkpoint after update 4: the resume lands between two credit measurements
    straight, rule = TinyModule(), make()
    fit(straight, rule, 8)
    trainer = fit(TinyModule(), make(), 4)
    trainer.save_checkpoint(tmp_path / "mid.ckpt")
    resumed, fresh = TinyModule(), make()
    fit(resumed, fresh, 8, ckpt_path=tmp_path / "mid.ckpt")
    assert fresh._updates == rule._updates == 8
    for a, b in zip(_parameters(fresh), _parameters(rule)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    for a, b in zip(resumed.parameters(), straight.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


class RecordingLookahead(LookaheadWeights):
    """Records, per credit measurement, this rank's own held-out gradient, the one the credit used, the per-example
    gradients and the credit (for the DDP test)."""

    def credit(self, aux_losses, shared_parameters):
        module = self._held_module()
        params = list(shared_parameters)
        local = torch.autograd.grad(module.heldout_main_loss(resample=True, with_graph=True), params)
        per_example = torch.stack([torch.cat([g.reshape(-1) for g in torch.autograd.grad(
            aux_losses[0][b], params, retain_graph=True)]) for b in range(aux_losses[0].shape[0])])  # [B, P]
        credit = super().credit(aux_losses, shared_parameters)  # the same held-out batch (seeded by step and rank)
        module.records.append({"local": torch.cat([g.reshape(-1) for g in local]), "per_example": per_example,
                               "credit": credit.clone()})
        return credit


class RecordingModule(TinyModule):
    def __init__(self, out_dir):
        super().__init__(out_dir)
        self.records = []

    def on_train_end(self):
        torch.save({"state": self.aux_weighting.state_dict(), "records": self.records,
                    "params": {k: v.detach().cpu() for k, v in self.state_dict().items()}},
                   f"{self.out_dir}/rank{self.global_rank}.pt")


@pytest.mark.slow
def test_ddp_two_ranks_average_the_heldout_gradient_first_and_hold_identical_weights(tmp_path):
    fit(RecordingModule(str(tmp_path)), RecordingLookahead(credit_every=1, lr=1e-2), 4, strategy="ddp_spawn",
        devices=2)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert len(rank0["records"]) == len(rank1["records"]) == 4
    for r0, r1 in zip(rank0["records"], rank1["records"]):
        assert not torch.equal(r0["local"], r1["local"])  # each rank's own held-out batch
        mean = (r0["local"] + r1["local"]) / 2
        for record in (r0, r1):
            torch.testing.assert_close(record["credit"][:, 0], record["per_example"] @ mean, rtol=0, atol=1e-5)
    for key, value in rank0["state"]["net"].items():
        torch.testing.assert_close(rank1["state"]["net"][key], value, rtol=0, atol=0)
    for key, value in rank0["params"].items():
        torch.testing.assert_close(rank1["params"][key], value, rtol=0, atol=0)


@pytest.mark.slow
def test_ddp_two_ranks_hold_identical_rlaux_policies_with_example_credit(tmp_path):
    fit(TinyModule(out_dir=str(tmp_path)), RLAux(lr=1e-2, reward_every=1), 4, strategy="ddp_spawn", devices=2)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert rank0["state"]["rewards_seen"] == 4
    for key, value in rank0["state"]["policy"].items():
        torch.testing.assert_close(rank1["state"]["policy"][key], value, rtol=0, atol=0)


@pytest.mark.parametrize("make, fragment", [
    (lambda: RLAux(credit="examples"), "RLAux.credit='examples'"),
    (lambda: RLAux(initial_weight=0.1), "RLAux.initial_weight=0.1"),
    (lambda: RLAux(initial_weight=32.0), "RLAux.initial_weight=32.0"),
    (lambda: LookaheadWeights(max_weight=1.0), "LookaheadWeights.max_weight=1.0"),
    (lambda: LookaheadWeights(proximal=-1), "LookaheadWeights.proximal=-1"),
    (lambda: LookaheadWeights(lr=0), "LookaheadWeights.lr=0"),
    (lambda: LookaheadWeights(credit_every=0), "LookaheadWeights.credit_every=0"),
    (lambda: LookaheadWeights(hidden_dim=0), "LookaheadWeights.hidden_dim=0"),
    (lambda: LookaheadWeights(seed=-1), "LookaheadWeights.seed=-1"),
])
def test_bad_settings_are_refused_in_one_line(make, fragment):
    with pytest.raises(ValueError, match=fragment.replace("(", r"\(")) as info:
        make()
    assert "\n" not in str(info.value)


def test_a_module_without_the_graph_hook_is_refused_in_one_line():
    class NoGraph:
        def heldout_main_loss(self, resample=True):
            return torch.tensor(0.0)

    for rule in (RLAux(), LookaheadWeights()):
        with pytest.raises(ValueError, match="takes no with_graph argument") as info:
            rule.attach(NoGraph())
        assert "\n" not in str(info.value)
    RLAux(credit="batch").attach(NoGraph())  # version 0.3's estimator needs no graph


def test_lookahead_trains_the_sac_module_and_logs(make_module, make_data, make_trainer, tmp_path):
    import csv

    rule = LookaheadWeights()
    module = make_module(aux_losses={"fwd": "forward_dynamics", "adv": "adversarial"})
    trainer = make_trainer(9, callbacks=[rule], log_every_n_steps=4,
                           logger=pl.loggers.CSVLogger(tmp_path, name="", version=""))
    trainer.fit(module, make_data(eval_episodes=0))
    assert trainer.global_step == 9 and module.aux_weighting is rule and rule._updates == 9
    assert set(rule.weights) == {"fwd", "adv"} and all(0 < w < 4 for w in rule.weights.values())
    assert any(w != 1.0 for w in rule.weights.values())  # three network steps (updates 1, 5, 9) moved them
    with open(tmp_path / "metrics.csv") as f:
        rows = [row for row in csv.DictReader(f) if row.get("reweight/credit")]
    assert rows and rows[-1]["aux_weight/adv"] and rows[-1]["reweight/weight_p90/fwd"]


def test_lookahead_by_name_through_the_real_a2ls_fit(tmp_path, capsys):
    from a2ls_lightning.cli import main

    args = ["fit", "--model.network.hidden_dim=32", "--model.network.feature_dim=16", "--model.network.encoder_hidden_dim=16",
            "--data.batch_size=16", "--data.capacity=300", "--data.warmup_steps=40", "--data.eval_episodes=0",
            "--trainer.max_steps=6", "--trainer.enable_progress_bar=false", "--trainer.logger=false",
            "--trainer.enable_checkpointing=false", f"--trainer.default_root_dir={tmp_path}",
            "--model.aux_losses={fwd: forward_dynamics, adv: adversarial}",
            "--trainer.callbacks+=a2ls_lightning.callbacks.LookaheadWeights", "--trainer.callbacks.credit_every=2",
            "--trainer.callbacks.max_weight=2.0"]
    try:
        main(args)
    except SystemExit as exit_:
        assert not exit_.code, capsys.readouterr().err[-2000:]
