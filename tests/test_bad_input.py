"""Every bad input of the ``a2ls`` command stops it in one line, naming the field or file, before any env step.

Table-driven: each case runs the real command in this process (``a2ls_lightning.cli.main``) with one bad
setting on top of tiny valid ones, and checks: exit code 2, exactly one stderr line ``a2ls: error: ...`` that
contains the expected fragment (the field or file), no traceback, and no environment step taken (the collector's
``step`` is watched).
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import QUICK as TINY
from conftest import assert_one_line, run  # run: test_second_hour imports it from here

DATA = Path(__file__).parent / "data" / "checkpoint_v0_1"
OLAUX = "--trainer.callbacks+=a2ls_lightning.callbacks.OLAux"
RLAUX = "--trainer.callbacks+=a2ls_lightning.callbacks.RLAux"
FWD = "--model.aux_losses={fwd: forward_dynamics}"

CASES = [
    # data
    (["--data.batch_size=5000", "--data.capacity=1000"], "batch_size=5000 must be <= capacity=1000"),
    (["--data.frame_stack=0"], "frame_stack=0"),
    (["--data.task=cheeta-run"], "task='cheeta-run'"),
    (["--data.task=cheetah-fly"], "cheetah-fly"),
    # a typo gets "did you mean", after the field and the list of valid values
    (["--data.task=cheeta-run"], "swimmer, walker; did you mean 'cheetah-run'?"),
    (["--data.task=walker-wlak"], "domain 'walker' has the tasks run, stand, walk; did you mean 'walker-walk'?"),
    (["--data.action_repeat=0"], "action_repeat=0"),
    (["--data.capacity=1"], "capacity=1"),
    (["--data.warmup_steps=-1"], "warmup_steps=-1"),
    (["--data.eval_interval=0"], "eval_interval=0"),
    (["--data.eval_episodes=-1"], "eval_episodes=-1"),
    (["--data.buffer_device=gpu"], "buffer_device='gpu'"),
    (["--data.keep_replay_snapshots=0"], "keep_replay_snapshots=0"),
    (["--data.slice_length=1"], "slice_length=1"),
    (["--data.env_steps_per_update=0"], "env_steps_per_update=0"),
    (["--data.image_size=8"], "image_size=8"),
    (["--data.batch_size=abc"], "data.batch_size"),
    (["--data.no_such_setting=1"], "no_such_setting"),
    # model
    (["--model.optim.actor_lr=-0.1"], "actor_lr=-0.1"),
    (["--model.optim.actor_lr=.inf"], "actor_lr=inf"),
    (["--model.optim.critic_lr=.nan"], "critic_lr=nan"),
    (["--model.network.encoder=resnet"], "encoder='resnet' is unknown; allowed: pixel, mlp, ofe, identity"),
    (["--model.network.encoder=pixel"], "encoder='pixel'"),
    (["--model.sac.discount=1.5"], "discount=1.5"),
    (["--model.sac.critic_tau=0"], "critic_tau=0"),
    (["--model.network.hidden_dim=0"], "hidden_dim=0"),
    (["--model.network.log_std_min=3"], "log_std_min=3"),
    (["--model.runtime.nonfinite=ignore"], "nonfinite='ignore'"),
    (["--model.network.num_q=3"], "num_q=3 is not allowed; allowed: 1, 2"),
    (["--model.sac.target_entropy_coef=0.5", "--model.sac.target_entropy=-3"],
     "target_entropy_coef=0.5 and target_entropy"),
    (["--model.runtime.cudagraphs=true", "--model.runtime.nonfinite=skip"], "cudagraphs=true needs nonfinite=stop"),
    (["--model.runtime.cudagraphs=true", "--trainer.strategy=ddp", "--trainer.devices=2", "--trainer.accelerator=cpu"],
     "model.runtime.cudagraphs=true captures the update on one device; it is not allowed with trainer.strategy=ddp"),
    (["--model.aux_losses={fwd: h=0 s0 -> s1 mse}"], "aux_losses.fwd"),
    (["--model.aux_losses={x: not_a_preset}"], "aux_losses.x: unknown preset 'not_a_preset'; presets: a2_winner,"),
    (["--model.aux_losses={x: forward_dynamic}"], "e.g. 'h=1 s0,a0 -> s1 mse'; did you mean 'forward_dynamics'?"),
    # trainer
    (["--seed_everything=-1"], "seed_everything=-1 is out of range; allowed: an integer from 0 to 4294967295"),
    (["--seed_everything=4294967296"], "seed_everything=4294967296 is out of range"),
    (["--trainer.log_every_n_steps=0"], "log_every_n_steps=0"),
    (["--trainer.max_steps=-5"], "max_steps"),
    (["--trainer.max_steps=0"], "max_steps=0"),
    (["--trainer.precision=banana"], "precision"),
    (["--trainer.accelerator=tpu"], "tpu"),
    (["--trainer.devices=0"], "devices"),
    (["--threads=0"], "threads=0"),
    # callbacks
    ([OLAUX, "--trainer.callbacks.lr=.inf", FWD], "OLAux.lr=inf"),
    ([OLAUX, "--trainer.callbacks.bogus=1", FWD], "bogus"),
    ([RLAUX, "--trainer.callbacks.bins=1", FWD], "RLAux.bins=1"),
    ([RLAUX, "--trainer.callbacks.max_factor=0.1", FWD], "RLAux.max_factor=0.1"),
    ([RLAUX, "--trainer.callbacks.mode=weight", FWD], "RLAux: mode: Expected a typing.Literal"),
    ([RLAUX, "--trainer.callbacks.mode=labels", FWD], "SACModule declares none"),
    ([RLAUX, "--trainer.callbacks.reward_every=0", FWD], "RLAux.reward_every=0"),
    ([RLAUX, "--trainer.callbacks.initial_weight=0.1", FWD], "RLAux.initial_weight=0.1"),
    (["--trainer.callbacks+=a2ls_lightning.callbacks.LookaheadWeights", "--trainer.callbacks.max_weight=0.5", FWD],
     "LookaheadWeights.max_weight=0.5"),
    (["--trainer.callbacks+=a2ls_lightning.callbacks.NoSuchCallback"], "NoSuchCallback"),
    (["--trainer.callbacks+=a2ls_lightning.callbacks.OLAx", FWD],
     "trainer.callbacks: a2ls_lightning.callbacks.OLAx: module 'a2ls_lightning.callbacks' has no attribute 'OLAx'; "
     "did you mean 'a2ls_lightning.callbacks.OLAux'?"),
    (["--trainer.callbacks+=a2ls_lightning.callbacks.GradientBalancer"],
     "did you mean 'a2ls_lightning.callbacks.GradientBalancing'?"),
    (["--trainer.callbacks+=OLAx", FWD], "OLAx either not accessible or invalid - Does not validate against any "
                                         "of the Union subtypes; did you mean 'a2ls_lightning.callbacks.OLAux'?"),
    (["--trainer.callbacks+=a2ls_lightning.callbacks.FixedWeights", "--trainer.callbacks.weights={unknown: 1}", FWD],
     "unknown"),
    (["--trainer.callbacks+=a2ls_lightning.callbacks.GradientBalancing", "--trainer.callbacks.eps=0"],
     "GradientBalancing.eps=0"),
    (["--trainer.callbacks+=a2ls_lightning.callbacks.CosineGating", "--trainer.callbacks.gradient_method=magic"],
     "gradient_method"),
]


@pytest.mark.parametrize("bad,fragment", CASES, ids=[" ".join(c[0])[-60:] for c in CASES])
def test_bad_setting_is_one_line_before_any_env_step(tmp_path, capsys, no_env_steps, bad, fragment):
    code, stderr = run(["fit", *TINY, f"--trainer.default_root_dir={tmp_path}", *bad], capsys)
    assert_one_line(code, stderr, fragment, no_env_steps)
    assert not list(tmp_path.rglob("*.ckpt"))


def _checkpoint_copy(tmp_path: Path) -> Path:
    run_dir = tmp_path / "run"
    shutil.copytree(DATA, run_dir)
    return run_dir


def _files(tmp_path: Path) -> dict[str, Path]:
    truncated = tmp_path / "truncated.ckpt"
    truncated.write_bytes((DATA / "checkpoints" / "last.ckpt").read_bytes()[:5000])
    text = tmp_path / "notes.ckpt"
    text.write_text("not a checkpoint")
    bad_yaml = tmp_path / "bad.yaml"
    bad_yaml.write_text("model:\n  hidden_dim: [32\ndata: {}\n")
    unknown_key = tmp_path / "unknown.yaml"
    unknown_key.write_text("model:\n  hiden_dim: 32\n")
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    ckpt_in_file = tmp_path / "ckpt_in_file.yaml"
    ckpt_in_file.write_text(
        "trainer:\n  callbacks:\n    - class_path: lightning.pytorch.callbacks.ModelCheckpoint\n"
        f"      init_args: {{dirpath: {blocker}/checkpoints}}\n")
    return {"truncated": truncated, "text": text, "bad_yaml": bad_yaml, "unknown_key": unknown_key,
            "blocker": blocker, "ckpt_in_file": ckpt_in_file}


FILE_CASES = [
    (lambda f, run_dir: ["--ckpt_path=missing.ckpt"], "ckpt_path: missing.ckpt does not exist"),
    (lambda f, run_dir: [f"--ckpt_path={f['truncated']}"], "truncated.ckpt is not a readable checkpoint"),
    (lambda f, run_dir: [f"--ckpt_path={f['text']}"], "notes.ckpt is not a readable checkpoint"),
    (lambda f, run_dir: [f"--ckpt_path={run_dir}"], "(it is a folder)"),
    (lambda f, run_dir: [f"--config={run_dir / 'config.yaml'}", f"--ckpt_path={run_dir / 'checkpoints/last.ckpt'}",
                         "--model.network.hidden_dim=64"], "model.network.hidden_dim=64 (checkpoint: 32)"),
    (lambda f, run_dir: [f"--config={run_dir / 'config.yaml'}", f"--ckpt_path={run_dir / 'checkpoints/last.ckpt'}",
                         "--data.batch_size=8"], "data.batch_size=8 (checkpoint: 16)"),
    (lambda f, run_dir: ["--config=missing.yaml"], "missing.yaml"),
    (lambda f, run_dir: [f"--config={f['bad_yaml']}"], "bad.yaml"),
    (lambda f, run_dir: [f"--config={f['unknown_key']}"], "hiden_dim"),
    (lambda f, run_dir: [f"--trainer.default_root_dir={f['blocker']}/runs"], "trainer.default_root_dir"),
    (lambda f, run_dir: [f"--config={f['ckpt_in_file']}"], "checkpoint folder"),
]


@pytest.mark.parametrize("make,fragment", FILE_CASES, ids=[c[1][:40] for c in FILE_CASES])
def test_bad_file_or_resume_is_one_line_before_any_env_step(tmp_path, capsys, no_env_steps, make, fragment):
    run_dir = _checkpoint_copy(tmp_path)
    files = _files(tmp_path)
    args = make(files, run_dir)
    root = [] if any("default_root_dir" in a for a in args) else [f"--trainer.default_root_dir={tmp_path / 'out'}"]
    code, stderr = run(["fit", *TINY, *root, *args], capsys)
    assert_one_line(code, stderr, fragment, no_env_steps)


SEARCH = Path(__file__).parents[1] / "configs" / "search_smoke.yaml"


def _search_config(tmp_path: Path, **search) -> Path:
    import yaml

    config = yaml.safe_load(SEARCH.read_text())
    config["search"].update(run_dir=str(tmp_path / "search"), **search)
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


SEARCH_CASES = [
    (lambda tmp: ["search", "--config", str(tmp / "missing.yaml")], "missing.yaml"),
    (lambda tmp: ["search", "--config", str(_search_config(tmp, population=1))], "search.population=1"),
    (lambda tmp: ["search", "--config", str(_search_config(tmp, survivor_fraction=1.5))], "search.survivor_fraction"),
    (lambda tmp: ["search", "--config", str(_search_config(tmp, operators=["l1"]))], "l1"),
    (lambda tmp: ["search", "--config", str(_search_config(tmp, budget_env_steps=10))], "search.budget_env_steps=10"),
    (lambda tmp: ["search", "--config", str(_search_config(tmp)), "--workers", "many"], "--workers"),
    (lambda tmp: ["search", "--config", str(_search_config(tmp)), "--bogus"], "--bogus"),
    (lambda tmp: ["search", "report"], "storage"),
    (lambda tmp: ["search", "--config", str(_search_config(tmp)), "--run-dir", str(tmp / "a_file" / "x")],
     "search.run_dir"),
]


@pytest.mark.parametrize("make,fragment", SEARCH_CASES, ids=[c[1] for c in SEARCH_CASES])
def test_bad_search_input_is_one_line_before_any_env_step(tmp_path, capsys, no_env_steps, make, fragment):
    (tmp_path / "a_file").write_text("")
    code, stderr = run(make(tmp_path), capsys)
    assert_one_line(code, stderr, fragment, no_env_steps)
