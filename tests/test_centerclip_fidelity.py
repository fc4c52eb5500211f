"""CenterCLIP equals the official code on inputs captured inside it (docs/algorithms.md §3).

The fixture is a cut of inputs captured inside the official CenterCLIP code (ViT-B/32, seeded
random weights, the token stream at the input of block 6) with the medoids and assignments the
official ``batch_fast_kmedoids_with_split`` returned on them (see tests/fixtures/README.md).
"""

from __future__ import annotations

import logging
from pathlib import Path

import pytest
import torch
from tokred_methods.centerclip import CenterCLIP
from tokred_methods.segments import split_segments

from tokred import TokenState
from tokred.spec import BackboneSpec
from tokred.toolkits.cluster import kmedoids

FIXTURE = Path(__file__).parent / "fixtures" / "centerclip_official_kmedoids.pt"
CASES = ["B6-4,49", "B6-3,49"]


@pytest.fixture(scope="module")
def official():
    return torch.load(FIXTURE, weights_only=True)


@pytest.mark.parametrize("case", CASES)
def test_kmedoids_returns_the_official_medoids_row_for_row(official, case):
    ref, kw = official[case], official["kwargs"]
    x = official["points"][:, : ref["n"]]  # [2, n, 768]
    got = kmedoids(x, official["K"], distance=kw["distance"], p=kw["norm_p"],
                   iters=kw["iter_limit"], threshold=kw["threshold"], split_size=kw["split_size"])
    for r in range(2):
        assert got.medoids[r].tolist() == ref["medoids"][r].tolist()
    assert torch.equal(got.assign, ref["assign"])


@pytest.mark.parametrize("case", CASES)
def test_exact_distances_depart_from_the_official_medoids(official, case):
    # why the default keeps cdist's values: with an exact zero diagonal 2-22 % of the medoids
    # of these segments differ (ties within the rounding noise break the other way)
    ref = official[case]
    x = official["points"][:, : ref["n"]]
    got = kmedoids(x, official["K"], exact=True).medoids
    for r in range(2):
        same = len(set(got[r].tolist()) & set(ref["medoids"][r].tolist()))
        assert 0.75 * official["K"] <= same < official["K"]


B32 = BackboneSpec("ViT-B-32", 768, 12, 12, 3072, 32, 224, 7, frames=12)


def _state(points: torch.Tensor, frames_per_segment: int) -> TokenState:
    """Block-6 state whose segment 0 of each of 2 videos holds the captured points."""
    b, c = points.shape[0], points.shape[-1]
    x = torch.randn(b * 12, 50, c, generator=torch.Generator().manual_seed(0))
    for v in range(b):
        rows = points[v, : frames_per_segment * 49].reshape(frames_per_segment, 49, c)
        x[v * 12 : v * 12 + frames_per_segment, 1:] = rows
    return TokenState.start(x, 12)


@pytest.mark.parametrize("case, segments, fd", [("B6-4,49", 4, 3), ("B6-3,49", 3, 4)])
def test_reducer_keeps_the_official_medoid_tokens(official, case, segments, fd):
    red = CenterCLIP(segments=segments, k=49)
    red.setup(B32)
    s = _state(official["points"], fd)
    out = red.pre_block(s, 6)
    _, points = split_segments(s.x, 1, fd)  # [2*S, n, C] video-major
    for v in range(2):
        med = official[case]["medoids"][v]
        assert torch.equal(out.x[v * segments, 1:], points[v * segments, med])


def test_segments_are_clustered_segment_major_in_chunks(monkeypatch):
    # official order: all videos' segment 0, then segment 1, ...; chunks of split_size rows
    import tokred_methods.centerclip as cc

    seen = []

    def spy(x, k, **kw):
        seen.append((x.clone(), kw["split_size"]))
        return kmedoids(x, k, **kw)

    monkeypatch.setattr(cc, "kmedoids", spy)
    g = torch.Generator().manual_seed(3)
    points = torch.randn(3 * 4, 60, 16, generator=g) * 4  # 3 videos x 4 segments, video-major
    red = CenterCLIP(segments=4, k=6, split_size=2)
    red.setup(B32)
    got = red.select(points, 6, 3, segments=4)
    seg_major = points.reshape(3, 4, 60, 16).transpose(0, 1).reshape(12, 60, 16)
    assert len(seen) == 1 and torch.equal(seen[0][0], seg_major) and seen[0][1] == 2
    ref = kmedoids(seg_major, 6, split_size=2).medoids.reshape(4, 3, 6).transpose(0, 1)
    assert torch.equal(got, ref.reshape(12, 6))  # answers back in video-major rows


def test_split_size_follows_the_official_backbone_rule():
    red = CenterCLIP()
    red.setup(B32)
    assert red.chunk() == 16
    red.setup(BackboneSpec("ViT-B-16", 768, 12, 12, 3072, 16, 224, 14, frames=12))
    assert red.chunk() == 4
    assert CenterCLIP(split_size=8).chunk() == 8


def test_spectral_empty_graph_is_positional_counted_and_warned_once(official, caplog):
    import tokred_methods.centerclip as cc

    cc._WARNED.clear()
    red = CenterCLIP(segments=4, k=49, algorithm="spectral")  # the paper's sigma = 2
    red.setup(B32)
    s = _state(official["points"], 3)
    with caplog.at_level(logging.WARNING, logger="tokred_methods.centerclip"):
        out = red.pre_block(s, 6)
        red.pre_block(s, 6)
    _, points = split_segments(s.x, 1, 3)
    assert torch.equal(out.x[:, 1:], points[:, :49])  # the first 49 tokens of every segment
    assert red.diagnostics() == {"spectral_segments": 16, "spectral_empty_graph": 16,
                                 "spectral_svd_retried": 0}
    warnings = [r for r in caplog.records if "affinity graph at layer 6 is empty" in r.message]
    assert len(warnings) == 1
    assert "in 8 of 8 segments (sigma=2" in warnings[0].message and "sigma ~" in warnings[0].message
    red.reset_diagnostics()
    assert red.diagnostics()["spectral_segments"] == 0
    assert CenterCLIP().diagnostics() == {}


def test_nan_tokens_name_the_video():
    red = CenterCLIP(segments=4, k=10)
    red.setup(B32)
    s = TokenState.start(torch.randn(3 * 12, 50, 16), 12)
    s.x[12 + 5, 7, 3] = float("nan")  # video 1, frame 5
    with pytest.raises(ValueError, match=r"video\(s\) \[1\] of the batch have NaN or inf tokens"):
        red.pre_block(s, 6)
