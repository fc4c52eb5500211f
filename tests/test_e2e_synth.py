"""End to end on the synthetic benchmark: generate, train the scale model briefly, evaluate."""

from __future__ import annotations

import json
import time

import pytest
import torch

from tokred.data import load_split
from tokred.retrieval.evaluate import evaluate, format_metrics, load_model
from tokred.synth import SynthConfig, generate, load_meta
from tokred.training import TrainConfig, train

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
    root = generate(tmp_path / "synth", SYNTH)
    cfg = TrainConfig(  # 60 steps: too short for the benchmark's frame pool / patch dropout
        data="msrvtt", root=str(root), out=str(tmp_path / "base"), model="scale-B32",
        reducer="none", mode="scratch", frames=4, train_frames=2, batch_size=32, max_steps=60,
        lr=1e-3, warmup=0.1, threads=1,
    )
    base = train(cfg)
    assert base["steps"] == 60 and base["loss"] < base["losses"][0]
    model = load_model(base["checkpoint"], "none", {}, frames=4)
    res = evaluate(model, load_split("msrvtt", root, "test"), frames=4,
                   synth_meta=load_meta(root), out=tmp_path / "eval")
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
