"""A user's third hour: plots and tables that never mix budgets silently, ``--seeds`` beside the run (never inside
it), and a resumed run's repeated evaluation."""

from __future__ import annotations

import re
import shlex

import numpy as np
import pytest
from conftest import SEEDS_TINY as TINY
from conftest import run_main

from a2ls_lightning.plotting import eval_curve, markdown_table, plot_groups, read_scalars

pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec")


def test_the_newcomer_sequence_puts_seeds_beside_the_run_and_plots_exactly_them(tmp_path, capsys, monkeypatch):
    """Quickstart-like run, then ``--seeds 1,2`` with another budget, then the ``a2ls plot`` the runner prints."""
    monkeypatch.chdir(tmp_path)
    code, _, err = run_main(["fit", *TINY, "--trainer.max_steps=100", "--trainer.default_root_dir=runs/quick"],
                            capsys)
    assert code == 0, err[-2000:]
    single = sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "runs" / "quick").rglob("*"))
    code, out, err = run_main(["fit", "--seeds", "1,2", "--jobs", "2", *TINY, "--trainer.max_steps=60",
                               "--trainer.default_root_dir=runs/quick"], capsys)
    assert code == 0, out[-2000:] + err[-2000:]
    # beside the single run, which is left as it was
    assert sorted(p.name for p in (tmp_path / "runs" / "quick_seeds").iterdir() if p.is_dir()) == ["seed_1",
                                                                                                  "seed_2"]
    assert sorted(str(p.relative_to(tmp_path)) for p in (tmp_path / "runs" / "quick").rglob("*")) == single
    assert out.splitlines()[0].startswith("a2ls: 2 seeds into runs/quick_seeds/seed_<n>/")
    # (40 warm-up + 60 updates) x action repeat 8: every seed's last evaluation at 800 env steps, said in the table
    assert re.search(r"^\| mean ± std \(2 seeds\) \| \| \S+ ± \S+ \| \S+ ± \S+ \| 800 \| \|$", out, re.M), out
    command = re.search(r"^plot them: (a2ls plot .+)$", out, re.M)[1]
    assert command == "a2ls plot runs/quick_seeds"
    code, out, err = run_main([*shlex.split(command)[1:], "--out", "seeds.png"], capsys)
    assert code == 0, err
    assert re.search(r"^\| quick_seeds \| 2 \| \S+ ± \S+ \| \S+ ± \S+ \| 800 \|$", out, re.M), out
    assert "different env steps" not in out
    # the single run and the seeds side by side: two groups, each with its own budget
    code, out, err = run_main(["plot", "runs/quick", "runs/quick_seeds", "--out", "both.png"], capsys)
    assert code == 0, err
    assert re.search(r"^\| quick \| 1 \| \S+ \| \S+ \| 1120 \|$", out, re.M), out
    # mixed into one group on purpose: said before the table, naming each run, and marked in the table
    code, out, err = run_main(["plot", "--group", "mixed=runs/quick|runs/quick_seeds/seed_*", "--out", "m.png"],
                              capsys)
    assert code == 0, err
    said = [line for line in out.splitlines() if "different env steps" in line and line.startswith("a2ls plot:")]
    assert len(said) == 1 and "runs/quick (3 evaluations, last at 1120)" in said[0], out
    assert "runs/quick_seeds/seed_2 (2 evaluations, last at 800)" in said[0]
    assert re.search(r"^\| mixed \(\*\) \| 3 \| .* \| 800–1120 \|$", out, re.M), out
    assert "(*) mixed: its runs were evaluated at different env steps" in out
    # the --seeds table of a later call with another budget says that its seeds' budgets differ
    (tmp_path / "runs" / "quick_seeds" / "seed_2" / "result.json").unlink()
    code, out, err = run_main(["fit", "--seeds", "1,2", *TINY, "--trainer.max_steps=110",
                               "--trainer.default_root_dir=runs/quick"], capsys)
    assert code == 0, out[-2000:] + err[-2000:]
    assert re.search(r"^\| mean ± std \(2 seeds; budgets differ\) \| .* \| 800–1200 \| \|$", out, re.M), out


def test_seeds_root_inside_a_single_run_is_refused_and_another_call_plots_exactly_its_seeds(tmp_path, capsys):
    from a2ls_lightning.cli.multi import check_seeds_root, plot_command, seeds_root

    (tmp_path / "run" / "lightning_logs").mkdir(parents=True)
    with pytest.raises(ValueError, match=r"--seeds_root .*/run: holds a single run's files"):
        check_seeds_root(str(tmp_path / "run"))
    code, _, err = run_main(["fit", "--seeds", "1", "--seeds_root", str(tmp_path / "run")], capsys)
    assert code == 2 and err.strip().startswith(f"a2ls: error: --seeds_root {tmp_path / 'run'}: holds a single run")
    assert seeds_root(["--trainer.default_root_dir=runs/x/"]) == "runs/x_seeds"
    assert seeds_root([]) == "runs/quickstart_seeds"
    root = tmp_path / "s"
    for seed in (1, 2, 3):
        (root / f"seed_{seed}").mkdir(parents=True)
    assert plot_command(str(root), [1, 2, 3]) == f"a2ls plot {root}"
    assert plot_command(str(root), [3]) == f"a2ls plot --group 's={root}/seed_3'"


def test_curves_of_different_schedules_are_aligned_on_env_steps_never_on_index():
    every_1k = (np.array([1000.0, 2000.0, 3000.0, 4000.0]), np.array([10.0, 20.0, 30.0, 40.0]))
    every_2k = (np.array([2000.0, 4000.0]), np.array([0.0, 100.0]))
    fig = plot_groups({"g": [every_1k, every_2k]})
    band, *own = fig.axes[0].lines
    # the mean only where both were evaluated, each at its env step: (20 + 0) / 2 at 2000, (40 + 100) / 2 at 4000
    np.testing.assert_array_equal(band.get_xdata(), [2000, 4000])
    np.testing.assert_allclose(band.get_ydata(), [10.0, 70.0])
    assert [list(line.get_xdata()) for line in own] == [list(every_1k[0]), list(every_2k[0])]  # each on its own x
    assert [t.get_text() for t in fig.axes[0].get_legend().get_texts()] == ["g (n=2, own x)"]
    table = markdown_table({"g": [every_1k, every_2k], "same": [every_1k, every_1k]})
    assert "| g (*) | 2 | 70.0 ± 30.0 | 37.5 ± 12.5 | 4000 |" in table  # same budget, another schedule
    assert "| same | 2 | 40.0 ± 0.0 | 25.0 ± 0.0 | 4000 |" in table
    assert table.splitlines()[-1].startswith("(*) g: its runs were evaluated at different env steps")
    # a run still training (a prefix of the others' schedule): band over the shared prefix, said in the table
    fig = plot_groups({"p": [every_1k, (every_1k[0][:2], every_1k[1][:2] + 2)]})
    np.testing.assert_array_equal(fig.axes[0].lines[0].get_xdata(), [1000, 2000])
    np.testing.assert_allclose(fig.axes[0].lines[0].get_ydata(), [11.0, 21.0])
    assert "| 2000–4000 |" in markdown_table({"p": [every_1k, (every_1k[0][:2], every_1k[1][:2])]})
    # no shared env step at all: no band, each run drawn on its own x, one legend entry
    fig = plot_groups({"none": [(np.array([1.0]), np.array([1.0])), (np.array([2.0]), np.array([2.0]))]})
    assert [list(line.get_xdata()) for line in fig.axes[0].lines] == [[1.0], [2.0]]
    assert not fig.axes[0].collections


def test_a_resumed_runs_repeated_evaluation_keeps_the_latest(tmp_path):
    """A run evaluated at 800 env steps (update 200), stopped before its next checkpoint, resumed from update 150:
    it evaluates at 800 env steps again (in a new event file, and once more at a later update after a change of
    replay ratio). The curve has each env step once, with the value the run went on from."""
    from torch.utils.tensorboard import SummaryWriter

    folder = tmp_path / "lightning_logs" / "version_0"
    writes = [[(100, 400, 1.0), (200, 800, 2.0)], [(200, 800, 5.0), (250, 800, 7.0), (300, 1200, 8.0)]]
    for points in writes:  # the same folder: a second event file, written later
        with SummaryWriter(str(folder)) as writer:
            for step, env_steps, value in points:
                writer.add_scalar("eval/return", value, step)
                writer.add_scalar("eval/env_steps", env_steps, step)
    x, y = eval_curve(read_scalars(tmp_path))
    np.testing.assert_array_equal(x, [400, 800, 1200])
    np.testing.assert_array_equal(y, [1.0, 7.0, 8.0])
    assert len(list(folder.glob("events.out.tfevents*"))) == 2


def test_the_aggregate_says_when_a_tasks_runs_mix_budgets(tmp_path):
    import json

    from a2ls_lightning.plotting import aggregate_runs

    pytest.importorskip("rliable")
    runs = {"a": ([100, 200], [1.0, 2.0]), "b": ([100], [3.0]), "c": ([100, 200], [4, 5])}
    for name, (steps, values) in runs.items():
        record = {"task": "cheetah-run", "scalars": {"eval/return": [[s, v] for s, v in zip(steps, values)],
                                                     "eval/env_steps": [[s, 4 * s] for s in steps]}}
        (tmp_path / f"{name}.json").write_text(json.dumps(record))
    result = aggregate_runs({"x": [tmp_path / "a.json", tmp_path / "b.json"], "y": [tmp_path / "c.json"]}, reps=50)
    assert result["mixed_budgets"] == {"cheetah-run": [400.0, 800.0]}
    same = aggregate_runs({"x": [tmp_path / "a.json"], "y": [tmp_path / "c.json"]}, reps=50)
    assert same["mixed_budgets"] == {}
