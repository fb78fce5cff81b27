"""OL-AUX: the update rule, per-loss gradients, non-finite steps, resume, mixed precision, DDP, the contract."""

import csv
import io
import logging
import math

import lightning.pytorch as pl
import pytest
import torch
from conftest import fit_with_callback
from lightning.pytorch.plugins import MixedPrecision
from torch import nn

from a2ls_lightning.callbacks import (
    CosineGating,
    FixedWeights,
    GradientBalancing,
    OLAux,
)
from a2ls_lightning.callbacks.gradients import LossGradients

logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning", "ignore::DeprecationWarning")


# --- a small network: shared encoder with LayerNorm, a main head, auxiliary heads with BatchNorm ---------
class Net(nn.Module):
    def __init__(self, aux: int = 3, seed: int = 0) -> None:
        super().__init__()
        torch.manual_seed(seed)
        self.encoder = nn.Sequential(nn.Linear(5, 12), nn.ReLU(), nn.Linear(12, 8), nn.LayerNorm(8))
        self.main_head = nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 1))
        self.aux_heads = nn.ModuleList(
            nn.Sequential(nn.Linear(8, 16), nn.BatchNorm1d(16), nn.ReLU(), nn.Linear(16, 8)) for _ in range(aux))
        self.x, self.y, self.targets = torch.randn(32, 5), torch.randn(32, 1), torch.randn(aux, 32, 8)

    def shared(self):
        return list(self.encoder.parameters())

    def losses(self):
        """(main, {"aux<i>": loss}) on the fixed batch, all positive."""
        z = self.encoder(self.x)
        main = (self.main_head(z) - self.y).pow(2).mean()
        return main, {f"aux{i}": (h(z) - t).pow(2).mean() for i, (h, t) in enumerate(zip(self.aux_heads, self.targets))}


def flat_grad(loss, params):
    grads = torch.autograd.grad(loss, params, retain_graph=True, allow_unused=True)
    return torch.cat([(g if g is not None else torch.zeros_like(p)).reshape(-1) for g, p in zip(grads, params)])


def reference_dots(main, aux_losses, params, log_eps=None, log_main=True):
    """⟨∇M, ∇A_i⟩ over params, one plain autograd.grad per loss (M, A_i logged under log balancing)."""
    g0 = flat_grad(torch.log(main + log_eps) if log_eps and log_main else main, params)
    return torch.stack([g0 @ flat_grad(torch.log(a + log_eps) if log_eps else a, params) for a in aux_losses])


# --- arguments -------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs, field", [
    ({"n_steps": 0}, "n_steps"), ({"n_steps": 2.5}, "n_steps"), ({"lr": -1e-3}, "lr"), ({"lr": math.inf}, "lr"),
    ({"log_eps": 0.0}, "log_eps"), ({"init_weight": -0.5}, "init_weight"), ({"min_weight": math.nan}, "min_weight"),
    ({"gradient_method": "vmap"}, "gradient_method"),
])
def test_rejects_bad_arguments(kwargs, field):
    with pytest.raises(ValueError, match=rf"OLAux\.{field}=.*allowed"):
        OLAux(**kwargs)


def test_log_balance_rejects_a_negative_aux_loss():
    with pytest.raises(ValueError, match="OLAux: loss 'bad' = -0.5"):
        OLAux().combine(torch.tensor(1.0), {"bad": torch.tensor(-0.5)}, [])


# --- per-loss gradients ----------------------------------------------------------------------------------
@pytest.mark.parametrize("scale", [None, torch.tensor(2.0**14)])
def test_log_eps_gives_the_gradients_of_log_in_the_graph_bit_for_bit(scale):
    # per_loss applies log balancing as the incoming gradient 1/(L + eps) instead of a log node: same bits
    coefficients = [1.0, 0.7, 2.5, 0.0]
    results = []
    for in_graph in (True, False):
        net = Net()
        main, aux = net.losses()
        aux = list(aux.values())
        losses = [main, *([torch.log(a + 0.02) for a in aux] if in_graph else aux)]
        log_eps = None if in_graph else [None, 0.02, 0.02, 0.02]
        grads = LossGradients(losses, net.shared(), scale=scale, log_eps=log_eps)
        total = grads.combine(coefficients)
        (total * scale if scale is not None else total).backward()
        results.append([grads.shared, total.detach(), *(p.grad for p in net.parameters())])
    for logged, cotangent in zip(*results):
        assert torch.equal(logged, cotangent)


@pytest.mark.parametrize("scale", [None, torch.tensor(2.0**14)])
def test_per_loss_engine_call_equals_autograd_grad_bit_for_bit(monkeypatch, scale):
    # per_loss calls the engine as torch.autograd.grad does, without its argument handling; a torch without that
    # private entry point, or one whose signature changed, gets torch.autograd.grad itself: all give the same bits
    from a2ls_lightning.callbacks import gradients

    def changed_signature(*args, **kwargs):
        raise TypeError("run_backward() got an unexpected keyword argument 'accumulate_grad'")

    engine_calls, engine = [], gradients._engine_run_backward

    def counted(*args, **kwargs):
        engine_calls.append(1)
        return engine(*args, **kwargs)

    results = []
    for engine_in_use in (counted, None, changed_signature):
        monkeypatch.setattr(gradients, "_engine_run_backward", engine_in_use)
        net = Net()
        main, aux = net.losses()
        grads = LossGradients([main, *aux.values()], net.shared(), scale=scale, log_eps=[None, 0.02, 0.02, 0.02])
        grads.combine([1.0, 0.7, 2.5, 0.0]).backward()
        results.append([grads.shared, *(p.grad for p in net.parameters())])
    assert len(engine_calls) == 4  # the first pass took the direct path, once per loss
    for direct, public, fallback in zip(*results):
        assert torch.equal(direct, public) and torch.equal(direct, fallback)


def test_batched_and_per_loss_gradients_agree():
    net = Net()
    main, aux = net.losses()
    losses, shared = [main, *aux.values()], net.shared()
    per_loss = LossGradients(losses, shared, "per_loss").shared
    batched = LossGradients(losses, shared, "batched").shared
    loop = torch.stack([flat_grad(loss, shared) for loss in losses])
    assert per_loss.shape == (4, sum(p.numel() for p in shared))
    torch.testing.assert_close(per_loss, loop, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(batched, loop, rtol=1e-5, atol=1e-7)
    dots = lambda g: g[1:] @ g[0]
    torch.testing.assert_close(dots(batched), dots(per_loss), rtol=1e-5, atol=1e-7)


def test_batched_falls_back_to_the_loop_without_batching_rules(monkeypatch):
    net = Net()
    main, aux = net.losses()
    losses, shared = [main, *aux.values()], net.shared()
    expected = LossGradients(losses, shared, "per_loss").shared
    original = torch.autograd.grad

    def no_vmap(*args, **kwargs):
        if kwargs.get("is_grads_batched"):
            raise RuntimeError("Batching rule not implemented for aten::something")
        return original(*args, **kwargs)

    monkeypatch.setattr(torch.autograd, "grad", no_vmap)
    torch.testing.assert_close(LossGradients(losses, shared, "batched").shared, expected, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("method", ["per_loss", "batched"])
def test_combined_loss_backward_equals_the_weighted_sum(method):
    net = Net()
    params = list(net.parameters())
    main, aux = net.losses()
    coefficients = [1.0, 0.3, 2.0, 0.0]
    expected = torch.autograd.grad(sum(c * l for c, l in zip(coefficients, [main, *aux.values()])), params,
                                   retain_graph=True)
    combined = LossGradients([main, *aux.values()], net.shared(), method).combine(coefficients)
    torch.testing.assert_close(combined, main + 0.3 * aux["aux0"] + 2 * aux["aux1"])
    for g, e in zip(torch.autograd.grad(combined, params), expected):
        torch.testing.assert_close(g, e, rtol=1e-5, atol=1e-7)


def test_gradients_of_a_scaled_loss_are_unscaled():
    net = Net()
    main, aux = net.losses()
    plain = LossGradients([main, *aux.values()], net.shared()).shared
    scaled = LossGradients([main, *aux.values()], net.shared(), scale=torch.tensor(2.0**14)).shared
    torch.testing.assert_close(scaled, plain)


# --- the update rule -------------------------------------------------------------------------------------
@pytest.mark.parametrize("method", ["per_loss", "batched"])
@pytest.mark.parametrize("log_balance", [False, True])
def test_weights_follow_the_summed_dot_products(method, log_balance):
    net = Net()
    olaux = OLAux(n_steps=3, lr=0.05, log_balance=log_balance, gradient_method=method)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05)
    expected = torch.zeros(3, dtype=torch.float64)
    for step in range(3):
        main, aux = net.losses()
        expected += reference_dots(main, aux.values(), net.shared(), 0.02 if log_balance else None).double()
        total = olaux.combine(main, aux, net.shared())
        optimizer.zero_grad()
        total.backward()
        optimizer.step()
        olaux.after_update()
        if step < 2:
            assert olaux.weights == {"aux0": 1.0, "aux1": 1.0, "aux2": 1.0}  # nothing before the window ends
    got = torch.tensor(list(olaux.weights.values()), dtype=torch.float64)
    torch.testing.assert_close(got, (1.0 + 0.05 * expected).clamp_min(0.0), rtol=1e-5, atol=1e-7)
    assert (got != 1.0).all()


def test_weights_are_clipped_at_min_weight_and_new_names_start_at_init_weight():
    theta = nn.Parameter(torch.tensor([1.0, 2.0]))
    olaux = OLAux(n_steps=1, lr=1.0, log_balance=False, init_weight=0.5, min_weight=0.1)
    olaux.combine(theta.pow(2).sum(), {"against": -theta.pow(2).sum()}, [theta]).backward()
    olaux.after_update()
    assert olaux.weights == {"against": 0.1}  # 0.5 - |∇|² = 0.5 - 20, clipped
    olaux.combine(theta.pow(2).sum(), {"against": -theta.sum(), "new": theta.sum()}, [theta])
    assert olaux.weights == {"against": 0.1, "new": 0.5}
    olaux.after_update()
    olaux.combine(theta.pow(2).sum(), {"new": theta.sum()}, [theta])  # a step with only some of the losses
    olaux.after_update()
    assert olaux.weights == {"against": 0.1, "new": pytest.approx(0.5 + 6 + 6)}  # ⟨(2, 4), (1, 1)⟩ = 6 twice


def test_non_finite_gradients_skip_the_update():
    theta = nn.Parameter(torch.tensor([1.0, 2.0]))
    main = lambda: theta.pow(2).sum()
    olaux = OLAux(n_steps=1, lr=0.1, log_balance=False)
    olaux.combine(main(), {"a": theta.sum() * math.nan}, [theta])
    olaux.after_update()
    assert olaux.weights == {"a": 1.0} and olaux.skipped_steps == 1

    # in a window of two, the finite step counts and the non-finite one does not
    olaux = OLAux(n_steps=2, lr=0.1, log_balance=False)
    olaux.combine(main(), {"a": theta.sum()}, [theta])  # ⟨(2, 4), (1, 1)⟩ = 6
    olaux.after_update()
    olaux.combine(main(), {"a": theta.sum() * math.inf}, [theta])
    olaux.after_update()
    assert olaux.weights["a"] == pytest.approx(1.0 + 0.1 * 6) and olaux.skipped_steps == 1


def test_combine_without_grad_returns_the_weighted_loss_and_counts_nothing():
    net, olaux = Net(), OLAux(n_steps=1, lr=0.05, log_balance=False)
    with torch.no_grad():
        main, aux = net.losses()
        total = olaux.combine(main, aux, net.shared())
    torch.testing.assert_close(total, main + sum(aux.values()))
    olaux.after_update()
    assert olaux.weights == {"aux0": 1.0, "aux1": 1.0, "aux2": 1.0} and olaux.state_dict()["steps_in_window"] == 0


def test_state_dict_round_trip_continues_exactly():
    def run(steps, olaux, net, optimizer):
        for _ in range(steps):
            main, aux = net.losses()
            optimizer.zero_grad()
            olaux.combine(main, aux, net.shared()).backward()
            optimizer.step()
            olaux.after_update()

    net = Net()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05)
    straight = OLAux(n_steps=3, lr=0.05)
    run(4, straight, net, optimizer)  # one full window, one step into the next
    state = straight.state_dict()
    assert state["steps_in_window"] == 1 and state["window"][0].abs().sum() > 0 and state["window"][1:].eq(0).all()
    resumed = OLAux(n_steps=3, lr=0.05)
    resumed.load_state_dict(torch.load(_save(state), weights_only=False))
    assert resumed.weights == straight.weights
    snapshot = {k: v.clone() for k, v in net.state_dict().items()}
    run(2, straight, net, optimizer)
    net.load_state_dict(snapshot)
    run(2, resumed, net, optimizer)
    assert resumed.weights == straight.weights and resumed.weights != state["weights"]


def _save(obj):
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    buffer.seek(0)
    return buffer


# --- Lightning: the contract, logging, resume, precision, DDP --------------------------------------------
class TinyModule(pl.LightningModule):
    """Shared encoder + main head + two auxiliary heads; the batch of update ``t`` on rank ``r`` is drawn
    from seed ``1000·t + r``. ``data_ranks`` concatenates several ranks' batches in one process."""

    def __init__(self, data_ranks: tuple[int, ...] | None = None, out_dir: str | None = None) -> None:
        super().__init__()
        self.data_ranks, self.out_dir = data_ranks, out_dir
        self.automatic_optimization = False
        torch.manual_seed(0)
        self.encoder = nn.Sequential(nn.Linear(4, 16), nn.Tanh(), nn.Linear(16, 8), nn.LayerNorm(8))
        self.main_head, self.head_a, self.head_b = nn.Linear(8, 1), nn.Linear(8, 3), nn.Linear(8, 2)
        self.aux_weighting = None
        self.seen_weights: list[dict[str, float]] = []

    def shared_parameters(self):
        return list(self.encoder.parameters())

    def batch(self, step: int):
        ranks = self.data_ranks or (self.global_rank,)
        parts = []
        for rank in ranks:
            g = torch.Generator().manual_seed(1000 * step + rank)
            x = torch.randn(16, 4, generator=g)
            parts.append((x, x.sum(1, keepdim=True).sin(), x[:, :3] * 2, torch.randn(16, 2, generator=g)))
        return [torch.cat(p).to(self.device) for p in zip(*parts)]

    def training_step(self, batch, batch_idx):
        x, y, ya, yb = self.batch(self.global_step)
        z = self.encoder(x)
        main = (self.main_head(z).float() - y).pow(2).mean()
        aux = {"a": (self.head_a(z).float() - ya).pow(2).mean(), "b": (self.head_b(z).float() - yb).pow(2).mean()}
        total = self.aux_weighting.combine(main, aux, self.shared_parameters())
        optimizer = self.optimizers()
        optimizer.zero_grad()
        self.manual_backward(total)
        optimizer.step()

    def on_train_batch_end(self, outputs, batch, batch_idx):
        self.seen_weights.append(self.aux_weighting.weights)

    def on_train_end(self):
        if self.out_dir:
            torch.save({"weights": self.aux_weighting.weights, "state": self.aux_weighting.state_dict(),
                        "params": {k: v.detach().cpu() for k, v in self.state_dict().items()}},
                       f"{self.out_dir}/rank{self.global_rank}.pt")

    def configure_optimizers(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)

    def train_dataloader(self):
        return torch.utils.data.DataLoader(torch.zeros(1000, 1), batch_size=1)


fit = fit_with_callback


def test_callback_installs_itself_and_logs_weights_on_log_steps(tmp_path):
    module, olaux = TinyModule(), OLAux(n_steps=2, lr=0.05)
    fit(module, olaux, 7, logger=pl.loggers.CSVLogger(tmp_path, name="", version=""), log_every_n_steps=3)
    assert module.aux_weighting is olaux
    assert module.seen_weights[0] == {"a": 1.0, "b": 1.0} and module.seen_weights[1] != {"a": 1.0, "b": 1.0}
    with open(tmp_path / "metrics.csv") as f:
        rows = [row for row in csv.DictReader(f) if row.get("aux_weight/a")]
    assert [int(row["step"]) for row in rows] == [2, 5]  # only Lightning's log steps (every 3rd)
    assert float(rows[-1]["aux_weight/b"]) == pytest.approx(module.seen_weights[5]["b"])
    # the diagnostics of the last complete window, at the same log steps
    assert rows[-1]["olaux/dot/a"] and -1.0 <= float(rows[-1]["olaux/cos/b"]) <= 1.0


def test_resume_from_a_trainer_checkpoint_mid_window(tmp_path):
    straight = TinyModule()
    fit(straight, OLAux(n_steps=3, lr=0.05), 8)

    first, olaux = TinyModule(), OLAux(n_steps=3, lr=0.05)
    trainer = fit(first, olaux, 4)
    assert olaux.state_dict()["steps_in_window"] == 1
    trainer.save_checkpoint(tmp_path / "mid.ckpt")
    resumed, fresh = TinyModule(), OLAux(n_steps=3, lr=0.05)
    fit(resumed, fresh, 8, ckpt_path=tmp_path / "mid.ckpt")
    assert fresh.weights == straight.aux_weighting.weights  # exactly
    assert fresh.weights != olaux.weights  # and it did go on learning
    for a, b in zip(resumed.parameters(), straight.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


@pytest.mark.parametrize("precision", ["bf16-mixed", "16-mixed"])
def test_mixed_precision_weights_match_full_precision(precision):
    reference = TinyModule()
    fit(reference, OLAux(n_steps=3, lr=0.05), 6)
    module, olaux = TinyModule(), OLAux(n_steps=3, lr=0.05)
    if precision == "16-mixed":  # Lightning maps 16-mixed to bf16 on CPU unless given the plugin
        scaler = torch.amp.GradScaler("cpu", init_scale=2.0**8)  # small enough not to overflow here
        fit(module, olaux, 6, plugins=[MixedPrecision("16-mixed", "cpu", scaler=scaler)])
        assert olaux._grad_scaler is scaler and scaler.get_scale() == 2.0**8  # scaled, and no step skipped
    else:
        fit(module, olaux, 6, precision=precision)
    # After each window: not off by the loss scale, within low-precision rounding (the scale-free rule divides by
    # the main loss, itself computed in low precision: a few % of the weight change).
    for step in (2, 5):
        for name, weight in module.seen_weights[step].items():
            assert weight == pytest.approx(reference.seen_weights[step][name], abs=1e-2), (step, name)
    assert abs(reference.seen_weights[2]["a"] - 1.0) > 0.05  # a change far larger than the tolerance
    assert olaux.skipped_steps == 0


def test_fp16_overflow_steps_are_left_out_of_the_window():
    olaux = OLAux(n_steps=3, lr=0.05)
    trainer = fit(TinyModule(), olaux, 6, plugins=[MixedPrecision("16-mixed", "cpu")])  # init scale 2^16
    scaler_skips = round(math.log2(2.0**16 / trainer.precision_plugin.scaler.get_scale()))
    assert scaler_skips > 0  # the scaler met inf gradients and skipped those optimizer steps
    assert olaux.skipped_steps == scaler_skips  # and OL-AUX left the same steps out of its sums
    assert all(math.isfinite(w) for w in olaux.weights.values()) and olaux.weights != {"a": 1.0, "b": 1.0}


def ddp_against_one_process(tmp_path, make_callback, steps):
    """Train on 2 DDP ranks (each its own data) and in one process on both ranks' data: what DDP must
    reproduce if gradients are averaged before the rule looks at them. Returns (rank 0, rank 1, single)."""
    single = TinyModule(data_ranks=(0, 1))
    fit(single, make_callback(), steps)
    fit(TinyModule(out_dir=str(tmp_path)), make_callback(), steps, strategy="ddp_spawn", devices=2)
    rank0, rank1 = (torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in (0, 1))
    assert rank0["weights"] == rank1["weights"]  # identical on every rank
    for key, value in single.state_dict().items():
        torch.testing.assert_close(rank0["params"][key], value, rtol=1e-4, atol=1e-6)
    for name, weight in single.aux_weighting.weights.items():
        assert rank0["weights"][name] == pytest.approx(weight, rel=1e-4, abs=1e-6)
    return rank0, rank1, single


def test_ddp_two_ranks_average_gradients_before_the_dot_products(tmp_path):
    # without log balancing: log(mean over the union) is not the mean of the ranks' logs
    rank0, rank1, single = ddp_against_one_process(tmp_path, lambda: OLAux(n_steps=2, lr=0.05, log_balance=False), 5)
    assert all(w != 1.0 for w in single.aux_weighting.weights.values())
    assert rank0["state"]["steps_in_window"] == 1 and rank0["state"]["window"][0].abs().sum() > 0  # mid-window
    torch.testing.assert_close(rank0["state"]["window"], rank1["state"]["window"], rtol=0, atol=0)


@pytest.mark.slow
def test_ddp_cosine_gating_gates_on_averaged_gradients(tmp_path):
    _, _, single = ddp_against_one_process(tmp_path, lambda: CosineGating(weighted=True), 3)
    assert all(0.0 <= g < 1.0 for g in single.aux_weighting.weights.values())  # real cosines, not just 0/1


def test_fixed_weights_callback_under_a_trainer():
    module = TinyModule()
    fit(module, FixedWeights({"a": 0.5, "b": 2.0}), 2)
    assert module.seen_weights == [{"a": 0.5, "b": 2.0}] * 2


# --- the real SACModule ----------------------------------------------------------------------------------
SAC_AUX = {"fwd": "forward_dynamics", "v": "a2_winner_v"}


@pytest.mark.parametrize("make_callback", [
    lambda: OLAux(n_steps=2, lr=0.05), lambda: CosineGating(weighted=True), GradientBalancing, FixedWeights,
], ids=["olaux", "cosine", "balancing", "fixed"])
def test_every_callback_trains_the_sac_module(make_module, make_data, make_trainer, make_callback):
    callback = make_callback()
    module = make_module(aux_losses=SAC_AUX)
    trainer = make_trainer(20, callbacks=[callback])
    trainer.fit(module, make_data(eval_episodes=0))
    assert trainer.global_step == 20 and module.aux_weighting is callback
    assert set(callback.weights) == set(SAC_AUX)
    assert all(torch.isfinite(p).all() for p in module.parameters())
    if isinstance(callback, OLAux):
        assert callback.weights != {"fwd": 1.0, "v": 1.0}


def test_sac_olaux_weights_agree_between_gradient_methods(make_module, make_data, make_trainer):
    # per_loss replays its per-loss gradients; batched does an ordinary backward: same weights
    weights = []
    for method in ("per_loss", "batched"):
        pl.seed_everything(0)
        olaux = OLAux(n_steps=2, lr=0.05, gradient_method=method)
        make_trainer(12, callbacks=[olaux]).fit(make_module(aux_losses=SAC_AUX), make_data(eval_episodes=0))
        weights.append(olaux.weights)
    assert weights[0] != {"fwd": 1.0, "v": 1.0}
    assert weights[0] == pytest.approx(weights[1], rel=1e-5)



# --- Algorithm 1's scale-free rule (issue: OL-AUX fidelity) ----------------------------------------------
def _one_window_delta(scale: float, log_main: bool) -> torch.Tensor:
    torch.manual_seed(0)
    net = Net()
    olaux = OLAux(n_steps=1, lr=0.01, log_eps=1e-9, log_main=log_main)  # small: no weight reaches the clip at 0
    main, aux = net.losses()
    olaux.combine(main * scale, aux, net.shared()).backward()
    olaux.after_update()
    return torch.tensor(list(olaux.weights.values()), dtype=torch.float64) - 1.0


def test_scale_free_rule_ignores_the_scale_of_the_main_loss_and_the_old_rule_does_not():
    new_1, new_100 = _one_window_delta(1.0, True), _one_window_delta(100.0, True)
    torch.testing.assert_close(new_100, new_1, rtol=1e-4, atol=1e-9)
    old_1, old_100 = _one_window_delta(1.0, False), _one_window_delta(100.0, False)
    torch.testing.assert_close(old_100, 100 * old_1, rtol=1e-4, atol=1e-9)
    assert (old_1.abs() > 0).all()


def test_diagnostics_dot_and_cosine_are_window_means():
    torch.manual_seed(1)
    net = Net()
    olaux = OLAux(n_steps=2, lr=0.0, log_balance=False)
    dots, coss = [], []
    for _ in range(2):
        main, aux = net.losses()
        g0 = flat_grad(main, net.shared())
        grads = [flat_grad(a, net.shared()) for a in aux.values()]
        dots.append(torch.stack([g0 @ g for g in grads]))
        coss.append(torch.stack([g0 @ g / (g0.norm() * g.norm()) for g in grads]))
        olaux.combine(main, aux, net.shared()).backward()
        olaux.after_update()
    metrics = olaux.metrics()
    for i, name in enumerate(aux):
        assert metrics[f"olaux/dot/{name}"] == pytest.approx(float((dots[0][i] + dots[1][i]) / 2), rel=1e-4)
        assert metrics[f"olaux/cos/{name}"] == pytest.approx(float((coss[0][i] + coss[1][i]) / 2), rel=1e-4)
        assert -1.0 <= metrics[f"olaux/cos/{name}"] <= 1.0


def test_train_log_main_trains_on_log_of_the_main_loss_with_the_same_weight_update():
    # The authors' variant: the combined loss holds log(L_main + eps); the weight update is the default's.
    eps = 0.02
    deltas, head_grads = [], []
    for train_log_main in (False, True):
        torch.manual_seed(0)
        net = Net()
        olaux = OLAux(n_steps=1, lr=0.01, log_eps=eps, train_log_main=train_log_main)
        main, aux = net.losses()
        expected_head = flat_grad(torch.log(main + eps) if train_log_main else main, list(net.main_head.parameters()))
        olaux.combine(main, aux, net.shared()).backward()
        olaux.after_update()
        head_grads.append((torch.cat([p.grad.reshape(-1) for p in net.main_head.parameters()]), expected_head))
        deltas.append(torch.tensor(list(olaux.weights.values())) - 1.0)
    for got, expected in head_grads:
        torch.testing.assert_close(got, expected)
    torch.testing.assert_close(deltas[1], deltas[0], rtol=1e-4, atol=1e-9)
    with pytest.raises(ValueError, match="train_log_main=True needs log_balance=True and log_main=True"):
        OLAux(train_log_main=True, log_main=False)
