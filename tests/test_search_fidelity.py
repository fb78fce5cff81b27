"""The fidelity statistics (``a2ls search fidelity``) against a by-hand computation on the stored records."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pytest
from scipy import stats

from a2ls_lightning.search.fidelity import (
    Fidelity,
    correlations,
    curve_score,
    fidelity_markdown,
    kendall_tau_b,
    load_records,
    paired_scores,
    spearman,
)

ROOT = Path(__file__).resolve().parents[1]
RUNS = ROOT / "docs" / "benchmarks" / "runs"
SETTING = "planet/cartpole-swingup"


def by_hand_eval(path: Path) -> dict[int, float]:
    """``{env steps: eval return}`` read straight from a record, first value of a repeated env-step count."""
    scalars = json.loads(path.read_text())["scalars"]
    steps = {int(s): int(v) for s, v in scalars["eval/env_steps"]}
    out: dict[int, float] = {}
    for step, value in scalars["eval/return"]:
        out.setdefault(steps[int(step)], value)
    return out


def test_scores_and_rank_correlations_match_a_by_hand_computation():
    folder = RUNS / SETTING
    variants = sorted(p.name for p in folder.iterdir())
    cheap, target = [], []
    for variant in variants:
        seeds = sorted(folder.glob(f"{variant}/seed*.json"), key=lambda p: int(p.stem[4:]))
        first = by_hand_eval(seeds[0])
        cheap.append((first[10_000] + first[20_000]) / 2)  # AULC at 20k env steps of the first seed
        aulcs = []
        for path in seeds:  # AULC at 100k: mean of the 10 evaluations 10k..100k
            evals = by_hand_eval(path)
            aulcs.append(sum(evals[k * 10_000] for k in range(1, 11)) / 10)
        target.append(sum(aulcs) / len(aulcs))
    n = len(variants)
    assert n == 4 and len(set(cheap)) == n and len(set(target)) == n  # no ties: the textbook formulas apply
    rank_x = {v: r for r, v in enumerate(sorted(cheap))}
    rank_y = {v: r for r, v in enumerate(sorted(target))}
    d2 = sum((rank_x[x] - rank_y[y]) ** 2 for x, y in zip(cheap, target))
    rho = 1 - 6 * d2 / (n * (n * n - 1))
    pairs = list(itertools.combinations(range(n), 2))
    concordant = sum((cheap[i] - cheap[j]) * (target[i] - target[j]) > 0 for i, j in pairs)
    tau = (2 * concordant - len(pairs)) / len(pairs)

    curves = load_records(RUNS)
    groups = paired_scores(curves, Fidelity("aulc", 20_000, 1), "aulc")
    names, x, y = groups[SETTING]
    assert names == variants
    np.testing.assert_allclose(x, cheap)
    np.testing.assert_allclose(y, target)
    result = correlations(groups, [SETTING], reps=500, seed=1)
    assert result["spearman"][0] == pytest.approx(rho)
    assert result["kendall"][0] == pytest.approx(tau)
    assert result["n"] == [4.0, 1.0]
    for name in ("spearman", "kendall"):
        point, lo, hi = result[name]
        assert -1 <= lo <= hi <= 1 and lo < hi


def test_held_out_target_uses_only_the_seeds_the_cheap_score_did_not():
    curves = [c for c in load_records(RUNS) if c.setting == SETTING]
    groups = paired_scores(curves, Fidelity("final", 50_000, 2), "final", held_out=True)
    names, x, y = groups[SETTING]
    for name, xi, yi in zip(names, x, y):
        runs = sorted((c for c in curves if c.variant == name), key=lambda c: c.seed)
        assert [c.seed for c in runs] == [1, 2, 3]
        assert xi == pytest.approx(np.mean([curve_score(c, "final", 50_000) for c in runs[:2]]))
        assert yi == pytest.approx(curve_score(runs[2], "final", 100_000))


def test_pooled_correlation_standardises_within_each_setting():
    curves = load_records(RUNS)
    groups = paired_scores(curves, Fidelity("aulc", 50_000, 1), "aulc")
    chosen = [SETTING, "planet/walker-walk"]

    def z(v):
        return (v - v.mean()) / v.std()

    x = np.concatenate([z(groups[s][1]) for s in chosen])
    y = np.concatenate([z(groups[s][2]) for s in chosen])
    result = correlations(groups, chosen, reps=200)
    assert result["spearman"][0] == pytest.approx(stats.spearmanr(x, y).statistic)
    assert result["kendall"][0] == pytest.approx(stats.kendalltau(x, y).statistic)
    assert result["n"] == [8.0, 2.0]


def test_vectorised_statistics_agree_with_scipy_with_ties():
    rng = np.random.default_rng(0)
    x, y = rng.integers(0, 4, size=(5, 9)).astype(float), rng.integers(0, 4, size=(5, 9)).astype(float)
    for row in range(5):
        assert spearman(x, y)[row] == pytest.approx(stats.spearmanr(x[row], y[row]).statistic)
        assert kendall_tau_b(x, y)[row] == pytest.approx(stats.kendalltau(x[row], y[row]).statistic)


def test_bad_input_is_one_line():
    curves = load_records(RUNS)
    with pytest.raises(ValueError, match="^--target='best' is not allowed; allowed: aulc, final$"):
        fidelity_markdown(curves, [Fidelity("aulc", 20_000, 1)], "full", target="best")
    with pytest.raises(ValueError, match="no evaluation at 25000 env steps"):
        curve_score(curves[0], "aulc", 25_000)
    with pytest.raises(ValueError, match="^--records: .* is not a folder$"):
        load_records(RUNS / "nowhere")


def test_cli_prints_the_table(capsys):
    from a2ls_lightning.cli.search import main

    main(["fidelity", "--steps", "50000", "--seeds", "2", "--reps", "50"])
    out = capsys.readouterr().out
    assert "| AULC @ 50k, 2 seeds | 1.0 |" in out and "| final @ 50k, 2 seeds | 1.0 |" in out
    with pytest.raises(ValueError, match="^--within='nowhere' is not a setting"):
        main(["fidelity", "--within", "nowhere"])
