"""Exact resume: N updates straight == N/2, checkpoint, a fresh Trainer resuming, N/2 more (CPU, <= 1e-6)."""

from __future__ import annotations

from conftest import assert_same_state, resume_run


def test_resume_matches_uninterrupted_run(tmp_path):
    # 300 updates with warm-up 40: the cut at 150 falls mid-episode (episodes are 250 agent steps).
    straight, d_straight, _ = resume_run(tmp_path / "a", 300)
    ckpt = tmp_path / "b" / "half.ckpt"
    resume_run(tmp_path / "b", 150, ckpt_out=ckpt)
    assert d_straight.collector.episodes >= 1
    resumed, d_resumed, trainer = resume_run(tmp_path / "b", 300, ckpt_in=str(ckpt))
    assert trainer.global_step == 300
    assert_same_state(straight, resumed, d_straight, d_resumed)
    # History-free evaluation: the cut run evaluated at its end (760 env steps, a final evaluation the straight run
    # did not make);
    # every evaluation after the resume still plays the straight run's episodes.
    assert 760 not in d_straight.evaluations
    after = sorted(d_resumed.evaluations)
    assert after == [900, 1200, 1360] and all(d_resumed.evaluations[e] == d_straight.evaluations[e] for e in after)
    # the side file of every rank sits next to the checkpoint folder
    assert list((tmp_path / "b" / "replay").glob("step*-rank0.pt"))
