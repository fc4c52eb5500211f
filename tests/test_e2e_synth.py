"""End to end on the synthetic benchmark: generate, train the scale model briefly, evaluate."""

from __future__ import annotations

import json
import time

import pytest
import torch

from tokred.retrieval.evaluate import format_metrics
from tokred.scale_bench import BenchConfig, evaluate_reducer, load_data, prepare_synth, train_base
from tokred.synth import SynthConfig

# Static captions only at test time ("a red circle and a blue square"): learnable in a minute.
SYNTH = SynthConfig(
    train_videos=192,
    test_videos=20,
    frames=4,
    size=32,
    test_mix=(1, 0, 0, 0),
    small_prob=0.0,
    workers=1,
)


@pytest.mark.slow
def test_scale_model_learns_synthetic_retrieval(tmp_path):
    t0 = time.perf_counter()
    root = tmp_path / "synth"
    prepare_synth(root, SYNTH)
    data = load_data(root, train_frames=2, eval_frames=4, finetune=False)
    cfg = BenchConfig(  # 60 steps: too short for the benchmark's frame pool / patch dropout
        out=str(tmp_path),
        train_frames=2,
        frame_pool=0,
        patch_dropout=0.0,
        eval_frames=4,
        batch_size=32,
        steps=60,
        lr=1e-3,
        warmup=0.1,
        time_budget=None,
        threads=1,
    )
    base = train_base(cfg, data, root)
    assert base["steps"] == 60 and base["loss"] < base["first_loss"]
    res = evaluate_reducer(base["checkpoint"], "none", {}, data, out=tmp_path / "eval")
    print(format_metrics(res), f"\ntotal {time.perf_counter() - t0:.0f}s")
    assert res["dataset"] == "synthetic" and res["num_videos"] == 20
    # chance: R@1 5 %, median rank 10.5; an untrained model stays there
    assert res["t2v_R@1"] >= 4 * res["chance_R@1"]
    assert res["t2v_MdR"] <= 10.5 / 3
    saved = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert saved["t2v_R@1"] == res["t2v_R@1"]
    from tokred.retrieval.metrics import load_similarity

    sim, cap_video, meta = load_similarity(tmp_path / "eval" / "sim.npz")
    assert sim.shape == (20, 20) and meta["dataset"] == "synthetic"
    assert torch.equal(torch.as_tensor(cap_video), torch.arange(20))
