"""A trained policy from Python (``a2ls_lightning.load_policy``) and for deployment (``a2ls export``: ``torch.export``,
run with torch alone), on real checkpoints of tiny ``a2ls fit`` runs, state and pixels."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import SEEDS_TINY as TINY
from conftest import run_main

ROOT = Path(__file__).resolve().parents[1]
PIXELS = [f"--config={ROOT / 'configs' / 'benchmark_pixels_cpu.yaml'}", "--data.task=cartpole-swingup",
          "--model.network.num_filters=4", "--model.network.hidden_dim=16", "--model.network.feature_dim=8", "--data.batch_size=4",
          "--data.capacity=200", "--data.warmup_steps=12", "--data.eval_episodes=0", "--trainer.max_steps=3",
          "--trainer.callbacks.every_n_train_steps=3", "--trainer.enable_progress_bar=false"]
pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter", "ignore:.*LeafSpec")


def _fit(args: list[str], root: Path) -> Path:
    from a2ls_lightning.cli import main

    main(["fit", *args, f"--trainer.default_root_dir={root}"])
    return next(root.rglob("last.ckpt"))


@pytest.fixture(scope="module")
def state_ckpt(tmp_path_factory) -> Path:
    return _fit([*TINY, "--trainer.max_steps=50", "--model.network.obs_norm=true"], tmp_path_factory.mktemp("state"))


def _observations(policy, n: int) -> np.ndarray:
    """``n`` real observations of the checkpoint's task (random actions), as the environment gives them."""
    env = policy.make_env(seed=3)
    td = env.reset()
    frames = []
    for _ in range(n):
        frames.append(td["observation"].numpy())
        td = env.step(td.set("action", env.action_spec.rand()))["next"]
    return np.stack(frames)


def test_load_policy_acts_on_numpy_and_tensors_single_or_batched_as_evaluation_does(state_ckpt):
    import a2ls_lightning
    from a2ls_lightning.builder import read_checkpoint
    from a2ls_lightning.runs.evaluate import load_policy as load_agent

    policy = a2ls_lightning.load_policy(state_ckpt)
    assert isinstance(policy.module, torch.nn.Module) and not list(policy.module.buffers()) == []  # normaliser
    assert policy.obs_shape == (17,) and policy.action_dim == 6 and policy.settings["task"] == "cheetah-run"
    obs = _observations(policy, 5)  # [5, 17] float64, as dm_control gives them
    agent = load_agent(read_checkpoint(state_ckpt))
    expected = agent.act_deterministic(torch.as_tensor(obs, dtype=torch.float32))  # what evaluation plays
    batch = policy.act(obs)
    assert isinstance(batch, np.ndarray) and batch.shape == (5, 6) and batch.dtype == np.float32
    np.testing.assert_array_equal(batch, expected.numpy())
    single = policy.act(obs[2])
    assert single.shape == (6,)
    np.testing.assert_allclose(single, expected[2].numpy(), atol=1e-5)  # another batch size: rounding
    as_tensor = policy.act(torch.as_tensor(obs))
    assert isinstance(as_tensor, torch.Tensor) and torch.equal(as_tensor, expected)
    assert torch.equal(policy.module(torch.as_tensor(obs, dtype=torch.float32)), expected)
    sampled = policy.act(obs, deterministic=False)
    assert sampled.shape == (5, 6) and np.abs(sampled).max() <= 1 and not np.array_equal(sampled, batch)
    with pytest.raises(ValueError, match=r"^obs: shape \(5, 16\); allowed: \(17,\) or \(N, 17\)$"):
        policy.act(obs[:, :16])


def test_export_writes_a_program_that_runs_with_torch_alone(state_ckpt, tmp_path, capsys):
    import a2ls_lightning

    out = tmp_path / "policy.pt2"
    code, stdout, err = run_main(["export", f"--ckpt_path={state_ckpt}", f"--out={out}"], capsys)
    assert code == 0, err
    assert stdout.startswith(f"wrote {out}: cheetah-run policy at update 50, observations (N, 17) float32")
    policy = a2ls_lightning.load_policy(state_ckpt)
    obs = torch.as_tensor(_observations(policy, 4), dtype=torch.float32)
    torch.save(obs, tmp_path / "obs.pt")
    # A fresh process that imports torch only: importing this package there would fail.
    script = ("import sys, json, torch; sys.modules['a2ls_lightning'] = None\n"
              "extra = {'a2ls.json': ''}\n"
              "p = torch.export.load(sys.argv[1], extra_files=extra).module()\n"
              "obs = torch.load(sys.argv[2])\n"
              "torch.save({'batch': p(obs), 'one': p(obs[:1]), 'meta': json.loads(extra['a2ls.json'])}, sys.argv[3])\n")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", script, str(out), str(tmp_path / "obs.pt"), str(tmp_path / "a.pt")],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = torch.load(tmp_path / "a.pt")
    assert torch.equal(result["batch"], policy.act(obs)) and torch.equal(result["one"], policy.act(obs[:1]))
    assert result["meta"]["obs_shape"] == [17] and result["meta"]["action_dim"] == 6
    assert result["meta"]["task"] == "cheetah-run" and result["meta"]["obs_dtype"] == "float32"
    # an existing file is kept unless --force
    before = out.read_bytes()
    code, _, err = run_main(["export", f"--ckpt_path={state_ckpt}", f"--out={out}"], capsys)
    assert code == 2
    assert err.strip() == f"a2ls: error: --out {out}: exists; give --force to overwrite it, or another --out"
    assert out.read_bytes() == before
    code, _, err = run_main(["export", f"--ckpt_path={state_ckpt}", f"--out={out}", "--force"], capsys)
    assert code == 0, err
    # by default, into the run's folder (beside checkpoints/)
    code, stdout, err = run_main(["export", f"--ckpt_path={state_ckpt}"], capsys)
    assert code == 0, err
    assert (state_ckpt.parent.parent / "policy.pt2").is_file() and str(state_ckpt.parent.parent) in stdout


def test_a_pixel_policy_exports_and_gives_the_same_actions(tmp_path, capsys):
    import a2ls_lightning

    ckpt = _fit(PIXELS, tmp_path / "pixels")
    policy = a2ls_lightning.load_policy(ckpt)
    assert policy.obs_shape == (9, 64, 64) and policy.settings["from_pixels"] and policy.settings["frame_stack"] == 3
    frames = _observations(policy, 4)  # [4, 3, 64, 64] uint8: single frames; the policy reads 3 stacked
    assert frames.dtype == np.uint8
    obs = np.stack([np.concatenate(frames[i:i + 3]) for i in range(2)])  # [2, 9, 64, 64]
    code, _, err = run_main(["export", f"--ckpt_path={ckpt}", f"--out={tmp_path / 'pixels.pt2'}"], capsys)
    assert code == 0, err
    extra = {"a2ls.json": ""}
    loaded = torch.export.load(str(tmp_path / "pixels.pt2"), extra_files=extra).module()
    assert json.loads(extra["a2ls.json"])["obs_dtype"] == "uint8"
    actions = policy.act(obs)
    assert actions.shape == (2, 1)
    assert torch.equal(loaded(torch.as_tensor(obs)), torch.as_tensor(actions))
    np.testing.assert_allclose(policy.act(obs[1]), actions[1], atol=1e-5)  # another batch size: rounding


def test_the_readme_example_runs(state_ckpt):
    import re

    readme = (ROOT / "README.md").read_text()
    block = re.search(r"## A trained policy in Python\n\n```python\n(.*?)```", readme, re.S)[1]
    assert len(block.strip().splitlines()) == 5
    scope: dict = {}
    exec(block.replace("runs/quickstart/lightning_logs/version_0/checkpoints/last.ckpt", str(state_ckpt)), scope)
    assert scope["action"].shape == (6,) and isinstance(scope["policy"].module, torch.nn.Module)
