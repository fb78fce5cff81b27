"""What the learning benchmark's records and options say: each record's Adam step (foreach by default, fused where a
command or config asks) and the pixels suite on another config (``--pixel-config``, e.g. the papers' size on a GPU)."""

from __future__ import annotations

import sys

import pytest
from conftest import benchmark_script

BENCH = benchmark_script()


def test_a_records_adam_step_follows_the_command_then_the_config_then_the_default():
    assert BENCH._adam_step(BENCH.CONFIG, []) == "foreach"
    assert BENCH._adam_step(BENCH.CONFIG, BENCH.VARIANTS["sac_fused"]) == "fused"
    flip = ["--model.optim.fused_adam=true", "--model.optim.fused_adam=false"]
    assert BENCH._adam_step(BENCH.CONFIG, flip) == "foreach"
    assert BENCH._adam_step(BENCH.FRONTIER_CONFIG, []) == "fused"  # the config sets it


def test_pixel_config_names_the_sizes_of_the_config_it_runs(monkeypatch):
    assert BENCH._pixel_sizes().startswith(
        "64-pixel renders randomly cropped to 56, frame stack 3, 4 conv layers of 16")
    monkeypatch.setattr(BENCH, "PIXEL_CONFIG", BENCH.ROOT / "configs" / "sac_cheetah_pixels.yaml")
    sizes = BENCH._pixel_sizes()
    assert "100-pixel renders randomly cropped to 84" in sizes and "1024-wide" in sizes and "batch 512" in sizes


@pytest.mark.parametrize("argv,fragment", [
    (["--suite", "core", "--pixel-config", "configs/sac_cheetah_pixels.yaml"], "only with --suite pixels"),
    (["--suite", "pixels", "--pixel-config", "configs/nope.yaml"], "is not a config file of this repository"),
])
def test_pixel_config_is_refused_before_any_work(monkeypatch, capsys, argv, fragment):
    monkeypatch.setattr(sys, "argv", ["benchmark_learning.py", *argv])
    monkeypatch.setattr(BENCH, "run_task_suite", lambda *a, **k: pytest.fail("no run may start"))
    with pytest.raises(SystemExit):
        BENCH.main()
    assert fragment in capsys.readouterr().err


def test_a_comparison_waits_for_a_run_on_both_sides():
    assert BENCH._versus_sac([], [20.0], "pixel_a2_winner") == ("–", "–")  # A2-winner not run yet: no "nan"
    assert BENCH._versus_sac([30.0], [], "pixel_a2_winner") == ("–", "–")
    assert BENCH._versus_sac([30.0], [20.0], "pixel_a2_winner") == ("+10.0 (1 seed)", "–")


def test_the_aggregates_give_a_to_b_pairs_asked_for_with_the_point_estimate_by_hand(monkeypatch, tmp_path):
    import json
    import re

    import numpy as np

    monkeypatch.setattr(BENCH, "ROOT", tmp_path)  # the profile PNG goes to tmp_path/docs
    (tmp_path / "docs").mkdir()
    runs = BENCH.RUNS / "pixels"
    groups = {v: sorted(runs.glob(f"*/{v}/seed*.json")) for v in ("pixel_sac", "pixel_curl", "pixel_a2_winner")}
    assert all(len(files) >= 2 for files in groups.values())
    text = BENCH.aggregate_section(groups, "x", "pixel_sac", reps=50, versus=[("pixel_a2_winner", "pixel_curl")])
    found = re.findall(r"P\(pixel_a2_winner > pixel_curl\) \[95% CI\]: ([0-9.]+) \[", text)
    assert len(found) == 2  # under the final-return table and under the AULC table

    def scores(v: str, aulc: bool) -> dict[str, list[float]]:
        out: dict[str, list[float]] = {}
        for f in groups[v]:
            record = json.loads(f.read_text())
            y = np.array(record["scalars"]["eval/return"])[:, 1]
            out.setdefault(record["task"], []).append(float(y.mean() if aulc else y[-1]))
        return out

    for value, aulc in zip(found, (False, True)):
        x, y = scores("pixel_a2_winner", aulc), scores("pixel_curl", aulc)
        nx, ny = min(map(len, x.values())), min(map(len, y.values()))  # a group keeps each task's first n runs
        per_task = [np.mean([(a > b) + 0.5 * (a == b) for a in x[t][:nx] for b in y[t][:ny]]) for t in x]
        assert float(value) == pytest.approx(np.mean(per_task), abs=0.005)
