"""The real ``a2ls`` command: a smoke run, --help, --print_config, DDP on 2 CPU ranks, and one-line errors."""

from __future__ import annotations

import math
from pathlib import Path

import pytest
import torch
from conftest import CLI_TINY as TINY
from conftest import a2ls, run_main  # test_newcomer imports them from here too


def _scalars(root: Path) -> dict[str, list[float]]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    events = sorted(root.rglob("events.out.tfevents*"))
    assert events, f"no TensorBoard events under {root}"
    acc = EventAccumulator(str(events[-1].parent))
    acc.Reload()
    return {tag: [e.value for e in acc.Scalars(tag)] for tag in acc.Tags()["scalars"]}


def test_fit_smoke_run_trains_and_logs(tmp_path):
    out = a2ls("fit", *TINY, "--trainer.max_steps=300", f"--trainer.default_root_dir={tmp_path}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-3000:]
    ckpts = sorted(tmp_path.rglob("*.ckpt"))
    assert ckpts, "no checkpoint written"
    assert torch.load(ckpts[-1], weights_only=False)["global_step"] == 300
    scalars = _scalars(tmp_path)
    for tag in ("train/critic_loss", "train/actor_loss", "train/alpha", "train/env_steps", "eval/return"):
        assert tag in scalars and all(math.isfinite(v) for v in scalars[tag]), tag
    assert scalars["train/env_steps"][-1] == (100 + 300) * 4
    # one point per evaluation (at 600, 1200 env steps and the final one at 1600), each written once
    assert scalars["eval/env_steps"] == [600.0, 1200.0, 1600.0] and len(scalars["eval/return"]) == 3
    assert list((tmp_path).rglob("replay/step*-rank0.pt")), "the rank's replay side file is missing"


def test_help_documents_every_argument(capsys):
    code, stdout, _ = run_main(["fit", "--help"], capsys)
    assert code == 0
    for arg in ("--model.network.encoder", "--model.network.hidden_dim", "--model.aux_losses", "--model.sac.critic_tau",
                "--data.task", "--data.action_repeat", "--data.frame_stack", "--data.slice_length",
                "--data.warmup_steps", "--data.env_steps_per_update", "--data.eval_interval", "--seed_everything"):
        assert arg in stdout, arg
    assert "random-crop side for pixel observations" in stdout  # docstring lines become the help


def test_print_config_shows_the_quickstart_defaults(capsys):
    code, stdout, _ = run_main(["fit", "--print_config"], capsys)
    assert code == 0
    assert "task: cheetah-run" in stdout and "hidden_dim: 256" in stdout and "max_steps: 24000" in stdout


@pytest.mark.parametrize(
    "args,field",
    [
        (["--data.batch_size=5000", "--data.capacity=1000"], "batch_size=5000 must be <= capacity=1000"),
        (["--model.optim.actor_lr=-0.1"], "actor_lr=-0.1 must be > 0"),
        (["--model.network.encoder=resnet"], "encoder='resnet' is unknown; allowed: pixel, mlp, ofe, identity"),
        (["--model.network.encoder=pixel"], "encoder='pixel' needs pixel observations"),
        (["--data.frame_stack=0"], "frame_stack=0 must be >= 1"),
        (["--data.task=cheeta-run"], "task='cheeta-run' is not a 'domain-task'"),
        (["--model.aux_losses={fwd: h=0 s0 -> s1 mse}"], "aux_losses.fwd"),
    ],
)
def test_bad_input_is_one_line_before_training(tmp_path, capsys, args, field):
    code, _, stderr = run_main(["fit", *args, "--trainer.max_steps=5", f"--trainer.default_root_dir={tmp_path}",
                                "--trainer.enable_progress_bar=false"], capsys)
    assert code == 2
    assert "Traceback" not in stderr
    errors = [line for line in stderr.splitlines() if line.startswith("a2ls: error:")]
    assert len(errors) == 1 and field in errors[0], stderr[-2000:]
    assert not list(tmp_path.rglob("*.ckpt"))


def test_bad_input_from_the_console_script_has_no_traceback(tmp_path):
    out = a2ls("fit", "--data.frame_stack=0", f"--trainer.default_root_dir={tmp_path}", cwd=tmp_path)
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert out.stderr.strip().splitlines()[-1] == "a2ls: error: frame_stack=0 must be >= 1"


def test_losses_command_prints_the_presets(capsys):
    code, stdout, _ = run_main(["losses"], capsys)
    assert code == 0
    for name in ("a2_winner", "a2_winner_v", "curl", "forward_dynamics", "inverse_dynamics"):
        assert name in stdout
    assert "s0,s2,s8,a0-a5,a7,a8,r3,r4,r8 -> s1,s3,s6,s9,a4" in stdout


def test_ddp_two_cpu_ranks_differ_in_data_and_agree_in_weights(tmp_path):
    probe = tmp_path / "probe"
    out = a2ls(
        "fit", *TINY, "--trainer.max_steps=40", "--trainer.strategy=ddp", "--trainer.devices=2",
        "--model.aux_losses={fwd: forward_dynamics}",
        "--trainer.accelerator=cpu", f"--trainer.default_root_dir={tmp_path}", "--data.eval_episodes=0",
        "--trainer.callbacks+=cli_probe.RankProbe", f"--trainer.callbacks.out_dir={probe}",
        cwd=tmp_path, timeout=600,
    )
    assert out.returncode == 0, out.stderr[-3000:]
    r0, r1 = torch.load(probe / "rank0.pt"), torch.load(probe / "rank1.pt")
    assert r0["world_size"] == r1["world_size"] == 2 and r0["global_step"] == r1["global_step"] == 40
    assert not torch.equal(r0["first_obs"], r1["first_obs"]), "both ranks started from the same env seed"
    assert r0["batch_sums"] != r1["batch_sums"], "both ranks trained on the same data"
    assert torch.allclose(r0["params"], r1["params"], atol=1e-6), "weights diverged across ranks"
    assert list(tmp_path.rglob("replay/step*-rank1.pt")), "rank 1 did not write its own replay"
