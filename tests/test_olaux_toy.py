"""The OL-AUX paper's toy problem (§5.1) through the real callbacks and a real Trainer: Figure 2's behaviour."""

import importlib.util
import logging
import sys
from pathlib import Path

import pytest

from a2ls_lightning.callbacks import FixedWeights

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "olaux_toy.py"


@pytest.fixture(scope="module")
def toy():
    spec = importlib.util.spec_from_file_location("olaux_toy", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    sys.modules["olaux_toy"] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    logging.getLogger("lightning.pytorch").setLevel(logging.ERROR)
    return module


@pytest.fixture(scope="module")
def runs(toy):
    return {
        "fixed": [toy.run_toy(FixedWeights(1.0), start) for start in toy.STARTS],
        "olaux": [toy.run_toy(toy.olaux_for_toy(), start) for start in toy.STARTS],
    }


def test_fixed_weights_end_at_the_auxiliary_optimum(runs):
    # L0 + L1 + L2 = L1: the adversarial loss cancels the main one
    for run in runs["fixed"]:
        assert run.end == pytest.approx((0.5, 0.5), abs=1e-3), run.start
        assert len(run.path) == 1001  # 1000 real optimizer steps


def test_olaux_reaches_the_main_optimum_from_every_start(runs):
    for run in runs["olaux"]:
        assert run.final_main_loss < 1e-2, run.start
        assert run.final_main_loss < 1e-4  # in fact it gets all the way (paper's Figure 2)


def test_olaux_drops_the_adversarial_weight_quickly(runs):
    for run in runs["olaux"]:
        w2 = run.weights["adversarial"]
        assert w2[0] < 1.0  # falls from the first update
        assert max(w2[50:]) < 1e-6, run.start  # at zero within 50 iterations, and stays there (clipped)


def test_olaux_useful_weight_rises_then_falls(runs):
    for run in runs["olaux"]:
        w1 = run.weights["useful"]
        peak = max(range(len(w1)), key=w1.__getitem__)
        assert w1[peak] > 1.5, run.start  # rises well above w0 = 1 while it helps
        assert 5 < peak < 200, run.start
        assert w1[-1] < 0.05 * w1[peak], run.start  # and falls once the main optimum is close
