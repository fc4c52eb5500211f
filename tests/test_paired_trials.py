"""The sweep's speed-ups are paired: a cost trial and a quality trial's encoder cost each time
their reducer against ``none`` over the same weights in interleaved rounds, in one process."""

from __future__ import annotations

import json

import pytest
import torch
from tokred_experiments.quality import encoder_cost
from tokred_experiments.trials import Context, cost_trial

from tokred import create_reducer
from tokred.encoder import VideoEncoder

COST = {"backbone": "scale-B32", "weights": "random", "frames": 12, "batch_sizes": [1, 2],
        "repeats": 2, "warmup": 1, "memory": False, "fvcore": False}


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Timing on a shared 2-core machine: one thread avoids OpenMP barrier stalls."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def test_cost_trial_records_its_speedup_paired_with_none(tmp_path):
    rec = cost_trial({**COST, "reducer": "tome", "options": {"r": 2}}, Context(out=tmp_path))
    assert set(rec["paired_timings"]) == {"1", "2"}  # every batch size the trial times
    for b, p in rec["paired_timings"].items():
        assert p["rounds"] == 2 and len(p["base_s"]) == len(p["times_s"]) == 2
        assert p["ratios"] == pytest.approx([n / t for n, t in zip(p["base_s"], p["times_s"])])
        assert rec["videos_per_s"][b] == pytest.approx(int(b) / (sum(p["times_s"]) / 2))
    big = rec["paired_timings"]["2"]
    assert (rec["speedup"], rec["speedup_low"], rec["speedup_high"]) == (
        big["speedup"], min(big["ratios"]), max(big["ratios"]))
    assert rec["speedup_rounds"] == 2 and rec["speedup_batch"] == 2
    assert rec["speedup_spread"] == "min-max"
    # tome r=2 on the scale model: 1.52 / 1.14 GMACs, the ideal from none's trace in the trial
    assert rec["ideal_speedup"] == pytest.approx(1.34, abs=0.01)
    assert rec["speedup_suspect"] == (rec["speedup"] > 1.1 * rec["ideal_speedup"])
    json.dumps(rec)


def test_the_none_trial_is_its_own_baseline(tmp_path):
    rec = cost_trial({**COST, "batch_sizes": [1], "reducer": "none", "options": {}},
                     Context(out=tmp_path))
    p = rec["paired_timings"]["1"]
    assert p["ratios"] == [1.0, 1.0] and p["base_s"] == p["times_s"]
    assert (rec["speedup"], rec["speedup_low"], rec["speedup_high"]) == (1.0, 1.0, 1.0)
    assert rec["ideal_speedup"] == 1.0 and rec["speedup_suspect"] is False


def test_quality_encoder_cost_is_paired_with_none_on_the_same_weights(scale):
    enc = VideoEncoder(scale, create_reducer("tome", r=2), 8).eval()
    got = encoder_cost(enc, torch.randn(6, 8, 3, 56, 56), batch=4, rounds=3)
    p = got["paired_timing"]
    assert p["items"] == 4 and p["rounds"] == 3 and p["spread"] == "min-max"
    assert got["speedup"] == p["speedup"] and got["speedup_rounds"] == 3
    assert (got["speedup_low"], got["speedup_high"]) == (min(p["ratios"]), max(p["ratios"]))
    assert got["ideal_speedup"] == pytest.approx(1.52 / 1.14, rel=0.05)  # 8 frames, same ratio
    assert got["videos_per_s"] == pytest.approx(4 / sorted(p["times_s"])[1])
    assert got["gmacs"] > 0 and got["activation_mib"] > 0 and not enc.training
    none = encoder_cost(VideoEncoder(scale, create_reducer("none"), 8).eval(),
                        torch.randn(4, 8, 3, 56, 56), rounds=2)
    assert none["paired_timing"]["ratios"] == [1.0, 1.0] and none["speedup"] == 1.0
    assert none["ideal_speedup"] == 1.0 and none["speedup_suspect"] is False
