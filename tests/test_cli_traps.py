"""The command line without traps: no prefix of an option taken for the option, "did you mean" for an unknown one,
the runner's options in ``a2ls fit --help``, no Lightning noise on a resume or a signal, outputs that are never
overwritten silently, the seeds' progress, and the run folder said first. In-process wherever the process itself is
not what is tested."""

from __future__ import annotations

import logging
import os
import signal
from pathlib import Path

import lightning.pytorch as pl
import pytest
from conftest import SEEDS_TINY as TINY
from conftest import run_main, tiny_data, tiny_module, tiny_trainer

pytestmark = pytest.mark.filterwarnings("ignore:LightningCLI's args parameter", "ignore:.*LeafSpec")


@pytest.mark.parametrize("args, error", [
    (["fit", "--trainer.max_step", "2000", "--print_config"],
     "unrecognized arguments: --trainer.max_step 2000; did you mean --trainer.max_steps?"),
    (["fit", "--data.tsk=walker-walk", "--print_config"],
     "unrecognized arguments: --data.tsk=walker-walk; did you mean --data.task?"),
    (["evaluate", "--ckpt_path=x.ckpt", "--episode=3"],
     "a2ls evaluate: unrecognized arguments: --episode=3; did you mean --episodes? (see a2ls evaluate --help)"),
    (["plot", "runs", "--tite", "x"], "unrecognized arguments: --tite x; did you mean --title?"),
    (["export", "--ckpt=x.ckpt"],
     "a2ls export: the following arguments are required: --ckpt_path (see a2ls export --help)"),
    (["fit", "--jobs", "2"], "--jobs: only with --seeds (e.g. a2ls fit --seeds 1,2,3 --jobs ...)"),
])
def test_no_prefix_matching_and_a_suggestion_for_an_unknown_option(capsys, args, error):
    code, _, err = run_main(args, capsys)
    assert code == 2 and err.strip().splitlines() == [f"a2ls: error: {error}"], err


def test_fit_help_shows_the_runners_options(capsys):
    code, out, _ = run_main(["fit", "--help"], capsys)
    assert code == 0
    many = out[out.index("Many seeds at once"):]
    for option in ("--seeds SEEDS", "--jobs N", "--seeds_root DIR", "--threads N"):
        assert option in many.replace("\n", " "), option


class _SignalAt(pl.Callback):
    def __init__(self, step: int) -> None:
        self.step = step

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), signal.SIGTERM)


def test_a_save_on_a_signal_says_weights_only_and_lightning_logs_nothing_about_it(tmp_path, caplog):
    from a2ls_lightning.callbacks.preemption import GracefulPreemption, Preempted

    caplog.set_level(logging.INFO, logger="lightning.pytorch")
    trainer = tiny_trainer(tmp_path, 50, enable_checkpointing=True, callbacks=[_SignalAt(10), GracefulPreemption()])
    with pytest.raises(Preempted):
        trainer.fit(tiny_module(), tiny_data(eval_episodes=0))
    assert list(tmp_path.rglob("last.ckpt"))
    assert not [r for r in caplog.records if "weights_only" in r.getMessage()]


def test_a_resume_prints_the_run_folder_first_and_no_checkpoint_folder_warning(tmp_path, capsys, recwarn):
    root = tmp_path / "run"
    code, _, err = run_main(["fit", *TINY, "--trainer.max_steps=50", f"--trainer.default_root_dir={root}"], capsys)
    assert code == 0, err[-2000:]
    folder = root / "lightning_logs" / "version_0"
    lines = [line for line in err.splitlines() if line.startswith("a2ls:")]
    assert lines[0] == f"a2ls: run folder {folder}" and lines[-1].startswith("a2ls: done:"), lines
    recwarn.clear()
    ckpt = folder / "checkpoints" / "last.ckpt"
    code, _, err = run_main(["fit", *TINY, "--trainer.max_steps=100", f"--trainer.default_root_dir={root}",
                             f"--ckpt_path={ckpt}"], capsys)
    assert code == 0, err[-2000:]
    assert [line for line in err.splitlines() if line.startswith("a2ls:")][0] == f"a2ls: run folder {folder}"
    said = err + " ".join(str(w.message) for w in recwarn)
    assert "exists and is not empty" not in said and "weights_only" not in said


def test_plot_and_evaluate_never_overwrite_silently_and_plot_goes_to_the_folder(tmp_path, capsys, monkeypatch):
    from torch.utils.tensorboard import SummaryWriter

    monkeypatch.chdir(tmp_path)
    with SummaryWriter(str(tmp_path / "runs" / "a" / "seed_1")) as writer:
        for step in (1, 2):
            writer.add_scalar("eval/return", float(step), step)
    code, out, err = run_main(["plot", "runs/a"], capsys)
    assert code == 0, err
    assert (tmp_path / "runs" / "a" / "plot.png").is_file() and not (tmp_path / "plot.png").exists()
    before = (tmp_path / "runs" / "a" / "plot.md").read_text()
    code, _, err = run_main(["plot", "runs/a", "--digits", "3"], capsys)
    assert code == 2 and err.strip() == ("a2ls: error: --out runs/a/plot.png: runs/a/plot.png, runs/a/plot.md "
                                         "exist(s) (an earlier a2ls plot?); give --force to overwrite, or another "
                                         "--out")
    assert (tmp_path / "runs" / "a" / "plot.md").read_text() == before
    code, _, err = run_main(["plot", "runs/a", "--digits", "3", "--force"], capsys)
    assert code == 0 and "| a | 1 | 2.000 | 1.500 | 2 |" in (tmp_path / "runs" / "a" / "plot.md").read_text()
    # evaluate: an existing record or video stops it before any work; by default one record per update and seed
    ckpt = next(Path(__file__).parent.joinpath("data", "checkpoint_v0_1").rglob("last.ckpt"))
    code, out, err = run_main(["evaluate", f"--ckpt_path={ckpt}", "--episodes=1", "--seed=5",
                               f"--out={tmp_path / 'r.json'}"], capsys)
    assert code == 0, err
    code, _, err = run_main(["evaluate", f"--ckpt_path={ckpt}", "--episodes=1", "--seed=5",
                             f"--out={tmp_path / 'r.json'}"], capsys)
    assert code == 2 and err.strip() == (f"a2ls: error: --out {tmp_path / 'r.json'}: exists (an earlier a2ls "
                                         "evaluate?); give --force to overwrite it, or another --out")
    (tmp_path / "v.mp4").write_bytes(b"")
    code, _, err = run_main(["evaluate", "--ckpt_path", str(ckpt), "--out=new.json", "--video=v.mp4"], capsys)
    assert code == 2 and "--video v.mp4: exists" in err and not (tmp_path / "new.json").exists()
    from a2ls_lightning.runs.evaluate import default_record

    assert default_record(ckpt, 60, 5) == ckpt.parent / "last.update60.seed5.eval.json"
