"""A user's second hour: evaluate and watch a checkpoint (``a2ls evaluate``), many seeds at once
(``a2ls fit --seeds``), one folder per run across resumes, and ``a2ls plot FOLDER``. The ``a2ls`` command runs in
this process (the seeds of ``--seeds`` in their own, as always)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from conftest import SEEDS_TINY as TINY  # action repeat 8: 125 agent steps per episode, short evaluations
from conftest import a2ls_in_process as a2ls  # in-process: these tests are not about start-up

from a2ls_lightning.data.video import count_frames

DATA = Path(__file__).parent / "data" / "checkpoint_v0_1"


@pytest.fixture(scope="module")
def trained(tmp_path_factory) -> Path:
    """A tiny run of 100 updates, then resumed to 150: one version folder."""
    root = tmp_path_factory.mktemp("trained")
    out = a2ls("fit", *TINY, "--trainer.max_steps=100", "--trainer.default_root_dir=run", cwd=root)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "a2ls: done: update 100, final eval/return" in out.stderr
    out = a2ls("fit", *TINY, "--trainer.max_steps=150", "--trainer.default_root_dir=run",
               "--ckpt_path=run/lightning_logs/version_0/checkpoints/last.ckpt", cwd=root)
    assert out.returncode == 0, out.stderr[-3000:]
    return root


def test_a_resumed_run_keeps_writing_into_its_own_version_folder(trained):
    versions = sorted(p.name for p in (trained / "run" / "lightning_logs").iterdir())
    assert versions == ["version_0"]
    checkpoints = trained / "run" / "lightning_logs" / "version_0" / "checkpoints"
    assert torch.load(checkpoints / "last.ckpt", weights_only=False)["global_step"] == 150
    assert not list(checkpoints.glob("last-v*.ckpt"))
    out = a2ls("plot", "--group", "run/lightning_logs/version_*", "--out", "one.png", cwd=trained)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "| 1 |" in out.stdout  # one run, its curve continuous across the resume


def test_resuming_a_finished_run_says_so_and_creates_nothing(trained, tmp_path):
    before = sorted(str(p) for p in (trained / "run").rglob("*"))
    out = a2ls("fit", *TINY, "--trainer.max_steps=150", "--trainer.default_root_dir=run",
               "--ckpt_path=run/lightning_logs/version_0/checkpoints/last.ckpt", cwd=trained)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "is already at update 150 >= trainer.max_steps=150; nothing to do" in out.stderr
    assert sorted(str(p) for p in (trained / "run").rglob("*")) == before


def test_evaluate_prints_writes_json_repeats_and_records_a_video(trained, tmp_path):
    ckpt = trained / "run" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    video = tmp_path / "episode.mp4"
    out = a2ls("evaluate", f"--ckpt_path={ckpt}", "--episodes=2", "--seed=11", f"--video={video}",
               "--video_size=64", f"--out={tmp_path / 'a.json'}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "eval/return" in out.stdout and "over 2 episodes" in out.stdout and "episode 1: return" in out.stdout
    first = json.loads((tmp_path / "a.json").read_text())
    assert first["update"] == 150 and len(first["returns"]) == 2 and first["seed"] == 11
    assert count_frames(video) == 125 + 1  # one frame at the start and one per agent step (1000 / 8 steps)
    again = a2ls("evaluate", f"--ckpt_path={ckpt}", "--episodes=2", "--seed=11", f"--out={tmp_path / 'b.json'}",
                 cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-2000:]
    assert json.loads((tmp_path / "b.json").read_text())["returns"] == first["returns"]


def test_evaluate_reads_a_version_0_1_checkpoint(tmp_path):
    from a2ls_lightning.runs import evaluate_checkpoint

    result = evaluate_checkpoint(DATA / "checkpoints" / "last.ckpt", episodes=1, seed=3, out=tmp_path / "r.json")
    assert result.update == 60 and result.task == "cheetah-run" and len(result.returns) == 1


def test_many_seeds_skip_finished_ones_and_resume_interrupted_ones(tmp_path):
    args = ("fit", "--seeds", "1,2", "--jobs", "2", *TINY, "--trainer.default_root_dir=multi")
    out = a2ls(*args, "--trainer.max_steps=100", cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "| 1 | done |" in out.stdout and "| 2 | done |" in out.stdout and "mean ± std (2 seeds)" in out.stdout
    # Seed 2 as if interrupted after its checkpoint at update 100: no result; the rerun resumes it, skips seed 1.
    (tmp_path / "multi_seeds" / "seed_2" / "result.json").unlink()
    out = a2ls(*args, "--trainer.max_steps=150", cwd=tmp_path)
    assert out.returncode == 0, out.stdout[-2000:] + out.stderr[-2000:]
    assert "| 1 | recorded |" in out.stdout and "| 2 | done |" in out.stdout
    assert "seed 2: resuming from" in out.stdout
    last = tmp_path / "multi_seeds" / "seed_2" / "lightning_logs" / "version_0" / "checkpoints" / "last.ckpt"
    assert torch.load(last, weights_only=False)["global_step"] == 150
    plot = a2ls("plot", "multi_seeds", "--out", "seeds.png", cwd=tmp_path)  # a folder is a group: no --group
    assert plot.returncode == 0, plot.stderr[-2000:]
    assert "| multi_seeds (*) | 2 |" in plot.stdout  # seed 1 at 100 updates, seed 2 at 150: said


def test_plot_skips_a_run_without_evaluations_in_one_line(trained, tmp_path):
    out = a2ls("fit", *TINY, "--data.eval_episodes=0", "--trainer.max_steps=20",
               f"--trainer.default_root_dir={tmp_path / 'group' / 'silent'}", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    import shutil

    shutil.copytree(trained / "run", tmp_path / "group" / "evaluated")
    out = a2ls("plot", "group", "--out", "g.png", cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "skipping" in out.stdout and "silent" in out.stdout and "| group | 1 |" in out.stdout


def test_a_refused_run_leaves_no_empty_folders(tmp_path, capsys):
    from a2ls_lightning.cli import main

    root = tmp_path / "new" / "run"
    with pytest.raises(SystemExit) as stop:
        main(["fit", "--data.batch_size=0", f"--trainer.default_root_dir={root}", "--trainer.max_steps=5"])
    assert stop.value.code == 2 and "batch_size=0" in capsys.readouterr().err
    assert not (tmp_path / "new").exists()


def test_video_every_records_evaluation_episodes_during_fit(tmp_path):
    out = a2ls("fit", *TINY, "--trainer.max_steps=60", "--data.video_every=2", "--trainer.default_root_dir=v",
               cwd=tmp_path)
    assert out.returncode == 0, out.stderr[-2000:]
    videos = sorted((tmp_path / "v" / "lightning_logs" / "version_0" / "videos").iterdir())
    # evaluations at 400 and 800 env steps (the last, at the end): every 2nd one and the last are recorded
    assert [v.name for v in videos] == ["eval_000000800.mp4"]
    assert count_frames(videos[0]) == 126


def test_resume_compares_resolved_settings(tmp_path, capsys):
    import shutil

    from conftest import run

    run_dir = tmp_path / "run"
    shutil.copytree(DATA, run_dir)
    # The checkpoint recorded action_repeat: null (cheetah's default, 4); an explicit 4 means the same.
    code, stderr = run(["fit", f"--config={run_dir / 'config.yaml'}", "--data.action_repeat=4",
                        "--trainer.max_steps=61", f"--trainer.default_root_dir={tmp_path / 'out'}",
                        f"--ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}"], capsys)
    assert code == 0, stderr[-2000:]
    assert "differ" not in stderr
    code, stderr = run(["fit", f"--config={run_dir / 'config.yaml'}", "--data.action_repeat=2",
                        "--trainer.max_steps=61", f"--trainer.default_root_dir={tmp_path / 'out2'}",
                        f"--ckpt_path={run_dir / 'checkpoints' / 'last.ckpt'}"], capsys)
    assert code == 2 and "data.action_repeat=2 (checkpoint: 4)" in stderr
