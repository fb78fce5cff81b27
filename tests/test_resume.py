"""Exact resume: N updates straight == N/2, checkpoint, a fresh Trainer resuming, N/2 more (CPU, <= 1e-6)."""

from __future__ import annotations

import lightning.pytorch as pl
import torch
from conftest import tiny_data, tiny_module, tiny_trainer


def _run(tmp_path, steps: int, ckpt_in=None, ckpt_out=None, module_settings=None, **data_settings):
    pl.seed_everything(7)
    module = tiny_module(**{"aux_losses": None, **(module_settings or {})})
    data = tiny_data(seed=7, eval_interval=300, **data_settings)
    data.evaluations = {}
    data.add_eval_listener(lambda env_steps, value: data.evaluations.__setitem__(env_steps, value))
    trainer = tiny_trainer(tmp_path, steps)
    trainer.fit(module, data, ckpt_path=ckpt_in)
    if ckpt_out is not None:
        trainer.save_checkpoint(ckpt_out)
    return module, data, trainer


def _assert_same_state(a, b, da, db) -> None:
    for (name, pa), (_, pb) in zip(a.state_dict().items(), b.state_dict().items()):
        assert torch.allclose(pa.float(), pb.float(), atol=1e-6, rtol=0), name
    oa, ob = a.optimizers().optimizer.state_dict(), b.optimizers().optimizer.state_dict()
    for key, sa in oa["state"].items():
        for field in ("exp_avg", "exp_avg_sq", "step"):
            assert torch.allclose(sa[field].float(), ob["state"][key][field].float(), atol=1e-6, rtol=0), (key, field)
    assert torch.equal(a.learner.log_alpha, b.learner.log_alpha)
    sa, sb = da.replay.buffer.storage._storage, db.replay.buffer.storage._storage
    assert len(da.replay) == len(db.replay)
    for key in sa.keys():
        assert torch.equal(sa[key][: len(da.replay)], sb[key][: len(db.replay)]), key
    assert sorted(da.replay.sampler.valid_starts()) == sorted(db.replay.sampler.valid_starts())
    assert da.collector.env_steps == db.collector.env_steps and da.collector.episodes == db.collector.episodes


def test_resume_matches_uninterrupted_run(tmp_path):
    # 300 updates with warm-up 40: the cut at 150 falls mid-episode (episodes are 250 agent steps).
    straight, d_straight, _ = _run(tmp_path / "a", 300)
    ckpt = tmp_path / "b" / "half.ckpt"
    _run(tmp_path / "b", 150, ckpt_out=ckpt)
    assert d_straight.collector.episodes >= 1
    resumed, d_resumed, trainer = _run(tmp_path / "b", 300, ckpt_in=str(ckpt))
    assert trainer.global_step == 300
    _assert_same_state(straight, resumed, d_straight, d_resumed)
    # History-free evaluation: the cut run evaluated at its end (760 env steps, a final evaluation the straight run
    # did not make);
    # every evaluation after the resume still plays the straight run's episodes.
    assert 760 not in d_straight.evaluations
    after = sorted(d_resumed.evaluations)
    assert after == [900, 1200, 1360] and all(d_resumed.evaluations[e] == d_straight.evaluations[e] for e in after)
    # the side file of every rank sits next to the checkpoint folder
    assert list((tmp_path / "b" / "replay").glob("step*-rank0.pt"))
