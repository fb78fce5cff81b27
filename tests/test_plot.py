"""``a2ls_lightning.plotting`` and ``a2ls plot`` on the TensorBoard event files of real (tiny) training runs."""

from __future__ import annotations

import ast
import math
import os
import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from conftest import tiny_data, tiny_module, tiny_trainer
from lightning.pytorch.loggers import TensorBoardLogger

from a2ls_lightning.plotting import (
    eval_curve,
    markdown_table,
    mean_std,
    plot_groups,
    read_scalars,
    summarize,
    welch_p_value,
)

WARMUP, UPDATES, EVAL_INTERVAL, REPEAT = 40, 120, 200, 4  # cheetah-run: action repeat 4
pytestmark = pytest.mark.filterwarnings("ignore:.*LeafSpec")  # lightning's own deprecation, not ours


def _train(root: Path, seed: int) -> dict:
    """One tiny run logged by a TensorBoardLogger under ``root``; what it evaluated and its final metrics."""
    import lightning.pytorch as pl

    pl.seed_everything(seed, verbose=False)
    data = tiny_data(eval_interval=EVAL_INTERVAL, eval_episodes=1, warmup_steps=WARMUP, seed=seed)
    evaluations: list[tuple[int, float]] = []
    data.add_eval_listener(lambda env_steps, value: evaluations.append((env_steps, value)))
    trainer = tiny_trainer(root, UPDATES, logger=TensorBoardLogger(str(root), name="", version=""))
    trainer.fit(tiny_module(), datamodule=data)
    return {"dir": root, "evaluations": evaluations, "last": float(trainer.callback_metrics["eval/return"])}


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> list[dict]:
    base = tmp_path_factory.mktemp("runs")
    return [_train(base / f"seed{seed}", seed) for seed in (1, 2)]


def a2ls_plot(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([sys.executable, "-m", "a2ls_lightning.cli", "plot", *args], cwd=cwd, env=env, text=True,
                          capture_output=True, timeout=120, check=False)


def test_read_scalars_and_eval_curve_return_the_logged_evaluations(runs):
    for run in runs:
        scalars = read_scalars(run["dir"])
        assert {"eval/return", "eval/env_steps", "train/critic_loss"} <= set(scalars)
        steps = [s for s, _ in scalars["eval/return"]]
        assert steps == [s for s, _ in scalars["eval/env_steps"]] == sorted(steps)  # logged together, step order
        x, y = eval_curve(scalars)
        # every evaluation the datamodule made, once, at its env step: 200, 400, 600 and the final one
        expected = run["evaluations"]
        assert len(expected) == 4 and expected[-1][0] == (WARMUP + UPDATES) * REPEAT
        np.testing.assert_array_equal(x, [e for e, _ in expected])
        np.testing.assert_allclose(y, [v for _, v in expected], rtol=1e-6)
        assert y[-1] == pytest.approx(run["last"], rel=1e-6)  # trainer.callback_metrics["eval/return"]
        only = read_scalars(run["dir"], tags=["eval/return", "no/such_tag"])
        assert list(only) == ["eval/return"] and only["eval/return"] == scalars["eval/return"]
        # without the env-step tag the logged step (the update count) is x
        x_updates, y_updates = eval_curve({"eval/return": scalars["eval/return"]})
        np.testing.assert_array_equal(x_updates, steps)
        np.testing.assert_array_equal(y_updates, y)


def test_a2ls_plot_writes_png_and_table(runs, tmp_path):
    base = runs[0]["dir"].parent
    out = tmp_path / "compare.png"
    proc = a2ls_plot("--group", f"tiny={base}/seed*", "--group", str(base / "seed1"), "--out", str(out),
                     "--title", "tiny", "--digits", "4", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    png = out.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000
    table = out.with_suffix(".md").read_text()
    assert table.splitlines()[0] == "| group | runs | final (mean ± std) | AULC (mean ± std) | env steps |"
    assert table.split("\n\n")[0] in proc.stdout
    row = re.search(r"^\| tiny \| 2 \| (\S+) ± (\S+) \| (\S+) ± (\S+) \| 640 \|$", table, re.MULTILINE)
    assert row, table
    lasts = [r["last"] for r in runs]
    assert float(row[1]) == pytest.approx(np.mean(lasts), abs=1e-4)
    assert float(row[2]) == pytest.approx(np.std(lasts), abs=1e-4)
    aulc = [np.mean([v for _, v in r["evaluations"]]) for r in runs]
    assert float(row[3]) == pytest.approx(np.mean(aulc), abs=1e-4)
    # a bare GLOB is its own label
    assert re.search(rf"^\| {re.escape(str(base / 'seed1'))} \| 1 \| ", table, re.MULTILINE), table


def test_a2ls_plot_bad_glob_exits_2_with_one_line_naming_the_option(tmp_path):
    proc = a2ls_plot("--group", "sac=no/such/folder/*", "--out", str(tmp_path / "x.png"), cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "a2ls: error: --group sac=no/such/folder/*: matched no folder with TensorBoard event files (or benchmark "
        "record)"], proc.stderr
    assert not (tmp_path / "x.png").exists()


@pytest.mark.parametrize("args, message", [
    ([], "give FOLDER arguments or --group LABEL=GLOB (see a2ls plot --help)"),
    (["--group", "=x"], "--group =x: expected LABEL=GLOB"),
    (["--group", "a={run}", "--group", "a={run}"], "group a={run}: label 'a' given twice"),
    (["--group", "{run}", "--tag", "eval/nope"],
     "group {run}: none of its 1 run(s) has 'eval/nope' scalars (see --tag)"),
    (["--group", "{run}", "--out", "{tmp}/p.svg"], "--out {tmp}/p.svg: must end in .png"),
    (["--group", "{run}", "--out", "{tmp}/no/p.png"], "--out {tmp}/no/p.png: folder {tmp}/no does not exist"),
    (["--group", "{run}", "--bogus"], "unrecognized arguments: --bogus"),
])
def test_a2ls_plot_bad_input_in_process(runs, tmp_path, capsys, args, message):
    from a2ls_lightning.cli import main

    fill = {"run": str(runs[0]["dir"]), "tmp": str(tmp_path)}
    argv = [a.format(**fill) for a in args]
    if "--out" not in argv:
        argv += ["--out", str(tmp_path / "p.png")]
    with pytest.raises(SystemExit) as exit_info:
        main(["plot", *argv])
    assert exit_info.value.code == 2
    assert capsys.readouterr().err.splitlines() == [f"a2ls: error: {message.format(**fill)}"]
    assert not list(tmp_path.rglob("p.*"))


def test_summarize_on_hand_made_curves():
    x = np.array([10.0, 20.0, 30.0])
    curves = [(x, np.array([0.0, 2.0, 4.0])), (x, np.array([2.0, 4.0, 6.0]))]  # finals 4, 6; AULCs 2, 4
    s = summarize(curves)
    assert s["n"] == 2
    assert s["final_mean"] == pytest.approx(5.0) and s["final_std"] == pytest.approx(1.0)  # population std
    assert s["aulc_mean"] == pytest.approx(3.0) and s["aulc_std"] == pytest.approx(1.0)
    # finals 3, 6; AULC = mean over the evaluation points: 2 and 14/3, mean 10/3, std 4/3
    curves = [(x, np.array([1.0, 2.0, 3.0])), (x, np.array([4.0, 4.0, 6.0]))]
    s = summarize(curves)
    assert s["aulc_mean"] == pytest.approx(10 / 3) and s["aulc_std"] == pytest.approx(4 / 3)
    assert s["final_mean"] == pytest.approx(4.5) and s["final_std"] == pytest.approx(1.5)
    assert markdown_table({"a": curves}).splitlines()[2] == "| a | 2 | 4.5 ± 1.5 | 3.3 ± 1.3 | 30 |"
    with pytest.raises(ValueError):
        summarize([])
    assert markdown_table({"one": curves[:1]}).splitlines()[2] == "| one | 1 | 3.0 | 2.0 | 30 |"  # one run: no "± 0.0"
    assert mean_std(1.25, 0.0, 2, n=1) == "1.25" and mean_std(1.25, 0.0, 2, n=2) == "1.25 ± 0.00"


def test_welch_p_value_is_the_unequal_variance_test_from_its_formula():
    from scipy import stats

    a, b = np.array([1.0, 2.0, 3.0]), np.array([0.0, 10.0, 20.0, 30.0])
    va, vb = a.var(ddof=1) / len(a), b.var(ddof=1) / len(b)
    t = (a.mean() - b.mean()) / np.sqrt(va + vb)
    df = (va + vb) ** 2 / (va**2 / (len(a) - 1) + vb**2 / (len(b) - 1))  # Welch-Satterthwaite
    expected = 2 * stats.t.sf(abs(t), df)
    assert welch_p_value(a, b) == pytest.approx(expected, rel=1e-9)
    assert abs(welch_p_value(a, b) - stats.ttest_ind(a, b).pvalue) > 1e-3  # not the pooled-variance test
    assert math.isnan(welch_p_value([1.0], [1.0, 2.0]))
    assert welch_p_value([2.0, 2.0], [2.0, 2.0]) == 1.0 and welch_p_value([2.0, 2.0], [3.0, 3.0]) == 0.0


def test_eval_curve_pairs_by_step_and_drops_repeated_evaluations():
    scalars = {
        "eval/return": [[100, 1.0], [200, 2.0], [250, 2.5], [300, 3.0]],  # 250: 800 env steps again (the latest)
        "eval/env_steps": [[100, 400.0], [200, 800.0], [250, 800.0], [300, 1200.0]],
        "train/x": [[1, 0.0]],
    }
    x, y = eval_curve(scalars)
    np.testing.assert_array_equal(x, [400, 800, 1200])
    np.testing.assert_array_equal(y, [1, 2.5, 3])
    with pytest.raises(KeyError, match="eval/nope"):
        eval_curve(scalars, tag="eval/nope")


def test_read_scalars_merges_event_files_later_writes_win(tmp_path):
    from torch.utils.tensorboard import SummaryWriter

    for folder, points in (("version_0", [(0, 1.0), (1, 2.0), (2, 3.0)]), ("version_1", [(2, 30.0), (3, 40.0)])):
        with SummaryWriter(str(tmp_path / folder)) as writer:  # a resumed run: a second file, step 2 rewritten
            for step, value in points:
                writer.add_scalar("eval/return", value, step)
    assert read_scalars(tmp_path) == {"eval/return": [(0, 1.0), (1, 2.0), (2, 30.0), (3, 40.0)]}
    with pytest.raises(FileNotFoundError):
        read_scalars(tmp_path / "empty")


def test_plot_groups_into_given_axes_of_a_grid(tmp_path):
    from matplotlib.figure import Figure

    fig = Figure()
    axes = fig.subplots(1, 2)
    x = np.arange(1.0, 4.0)
    groups = {"a": [(x, x), (x, 2 * x)], "b": [(x[:2], x[:2])], "empty": []}
    assert plot_groups(groups, ax=axes[1], title="right") is fig
    assert [t.get_text() for t in axes[1].get_legend().get_texts()] == ["a (n=2)", "b (n=1)"]
    np.testing.assert_allclose(axes[1].lines[0].get_ydata(), 1.5 * x)
    assert not axes[0].lines
    out = tmp_path / "own.png"
    plot_groups(groups, out)
    assert out.read_bytes()[:4] == b"\x89PNG"


def test_plotting_is_the_lowest_layer():
    # Only the ground-layer statistics (rliable's aggregates) below it.
    tree = ast.parse(Path(sys.modules[summarize.__module__].__file__).read_text())
    imported = [n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom) and n.module]
    imported += [a.name for n in ast.walk(tree) if isinstance(n, ast.Import) for a in n.names]
    assert not [m for m in imported if m.startswith("a2ls_lightning") and m != "a2ls_lightning.stats"], imported
    assert all(math.isfinite(v) for v in summarize([(np.ones(1), np.ones(1))]).values())


def test_a2ls_plot_aggregate_equals_rliable_called_directly(runs, tmp_path, capsys):
    import json

    from rliable import library, metrics

    from a2ls_lightning.cli import main
    from a2ls_lightning.stats import aggregate

    a, b = str(runs[0]["dir"]), str(runs[1]["dir"])
    main(["plot", "--group", f"x={a}|{b}", "--group", f"y={a}", "--aggregate", "--reps", "300", "--seed", "4",
          "--json", str(tmp_path / "agg.json"), "--out", str(tmp_path / "p.png")])
    result = json.loads((tmp_path / "agg.json").read_text())
    assert result["tasks"] == ["cheetah-run"] and (tmp_path / "p_profile.png").is_file()
    x = np.array([[runs[0]["last"] / 1000], [runs[1]["last"] / 1000]])  # [runs, tasks]: the final evaluations
    y = np.array([[runs[0]["last"] / 1000]])
    np.random.seed(4)  # arch 7's bootstrap also draws from numpy's global generator: a2ls seeds both
    points, intervals = library.get_interval_estimates(
        {"x": x, "y": y}, lambda m: np.array([metrics.aggregate_iqm(m), metrics.aggregate_mean(m)]), reps=300,
        random_state=np.random.RandomState(4))
    for group in ("x", "y"):
        assert result["groups"][group]["iqm"] == pytest.approx(points[group][0])
        assert result["groups"][group]["mean_ci"] == pytest.approx(list(intervals[group][:, 1]))
    np.random.seed(4)
    p, ci = library.get_interval_estimates({"x\x00y": [x, y], "y\x00x": [y, x]}, metrics.probability_of_improvement,
                                           reps=300, random_state=np.random.RandomState(4))
    assert result["groups"]["x"]["p_improvement"]["y"] == pytest.approx([float(p["x\x00y"]), *ci["x\x00y"][:, 0]])
    assert "P(group > x)" in capsys.readouterr().out
    again = aggregate(result_scores := {k: np.asarray(v) for k, v in result["scores"].items()}, reps=300, seed=4)
    assert again == aggregate(result_scores, reps=300, seed=4)  # the same seed, the same intervals
    assert again["x"]["iqm_ci"] == pytest.approx(result["groups"]["x"]["iqm_ci"])


def test_a2ls_plot_aggregate_without_rliable_says_what_to_install_in_one_line(runs, tmp_path, capsys, monkeypatch):
    from a2ls_lightning.cli import main

    monkeypatch.setitem(sys.modules, "rliable", None)  # an import of it now fails
    with pytest.raises(SystemExit) as exit_info:
        main(["plot", "--group", str(runs[0]["dir"]), "--aggregate", "--out", str(tmp_path / "p.png")])
    assert exit_info.value.code == 2
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and "pip install 'a2ls_lightning[stats]'" in err[0]
    assert not (tmp_path / "p.png").exists()


def test_a2ls_plot_aggregates_stored_benchmark_records_across_tasks(tmp_path):
    """Records (``docs/benchmarks/runs/**/*.json``) are runs too: their task is their ``task`` field, their score the
    last ``eval/return`` (or the curve's mean for AULC) over 1000, and the aggregate is rliable's on that matrix."""
    import json

    from a2ls_lightning.cli import main
    from a2ls_lightning.stats import aggregate

    runs = Path(__file__).resolve().parents[1] / "docs" / "benchmarks" / "runs"
    globs = {"sac": [runs / "full" / "sac", runs / "planet" / "walker-walk" / "sac"],
             "fwd": [runs / "full" / "forward_dynamics", runs / "planet" / "walker-walk" / "forward_dynamics"]}
    args = ["plot", "--aggregate", "--score", "aulc", "--reps", "200", "--seed", "1", "--baseline", "sac",
            "--json", str(tmp_path / "agg.json"), "--out", str(tmp_path / "p.png")]
    for name, folders in globs.items():
        args += ["--group", f"{name}=" + "|".join(f"{f}/seed[123].json" for f in folders)]
    main(args)
    result = json.loads((tmp_path / "agg.json").read_text())
    assert sorted(result["tasks"]) == ["cheetah-run", "walker-walk"]

    def aulc(path: Path) -> float:  # the mean of the run's evaluation curve (one point per evaluation)
        return float(np.mean(eval_curve(json.loads(path.read_text())["scalars"])[1])) / 1000

    expected = {name: np.array([[aulc(f / f"seed{s}.json") for f in folders] for s in (1, 2, 3)])
                for name, folders in globs.items()}  # [seeds, tasks]
    by_hand = aggregate(expected, reps=200, seed=1)
    for name in globs:
        assert result["groups"][name]["mean"] == pytest.approx(float(expected[name].mean()))
        assert result["groups"][name]["iqm_ci"] == pytest.approx(by_hand[name]["iqm_ci"])
