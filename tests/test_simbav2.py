"""SimbaV2's parts as SACModule options (Lee et al. 2025, "Hyperspherical Normalization for Scalable Deep RL"):
learning-rate decay; each trains through the real ``a2ls fit`` on cheetah-run, checkpoints and resumes exactly, and
bad settings are refused in one line."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from conftest import tiny_module

from a2ls_lightning import SACModule
from a2ls_lightning.modules.optim import lr_schedule, make_optimizer
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
}


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
    if name == "lr_decay":  # the schedule reached half the rate at update 8 and was saved and restored
        assert [g["lr"] for g in opt_a["param_groups"]] == [5e-4, 5e-4, 5e-4, 1e-4]
        assert straight[4]["lr_schedulers"][0]["last_epoch"] == 4


# --- refusals -------------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs,fragment", [
    (dict(lr_decay_to=1.5), "model.optim.lr_decay_to=1.5 must be in [0, 1]"),
    (dict(lr_decay_to=float("nan")), "model.optim.lr_decay_to=nan must be a finite number"),
])
def test_bad_simbav2_setting_is_one_line(kwargs, fragment):
    with pytest.raises(ValueError) as err:
        SACModule.from_settings(**kwargs)
    assert fragment in str(err.value) and "\n" not in str(err.value)


def test_lr_decay_without_max_steps_is_refused_in_one_line(tmp_path, capsys):
    from a2ls_lightning.cli import main

    with pytest.raises(SystemExit):
        main(["fit", *TINY, "--model.optim.lr_decay_to=0.5", "--trainer.max_steps=-1",
              f"--trainer.default_root_dir={tmp_path}"])
    errors = [line for line in capsys.readouterr().err.splitlines() if line.startswith("a2ls: error:")]
    assert len(errors) == 1 and "lr_decay_to=0.5 decays over trainer.max_steps; needs trainer.max_steps >= 1" \
        in errors[0]
    assert not list(tmp_path.rglob("*.ckpt"))
