"""CenterCLIP and the segment baselines: token schedules of docs/algorithms.md §3, layout,
validation at construction, gradients."""

from __future__ import annotations

import pytest
import torch
from tokred_methods.centerclip import CenterCLIP
from tokred_methods.segments import SegmentPooling, SparseSampling, split_segments, uniform_offsets

from tokred import Chain, TokenState, create_reducer
from tokred.cost.analytic import block_macs, gmacs
from tokred.encoder import Trace, VideoEncoder
from tokred.toolkits.cluster import kmedoids


def _state(b=2, t=12, n=50, c=16, seed=0, grad=False):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(b * t, n, c, generator=g).requires_grad_(grad)
    return TokenState.start(x, t)


def _setup(reducer, spec):
    reducer.setup(spec.with_frames(12))
    return reducer


# ------------------------------------------------------------------ traces (docs/algorithms.md §3)


@pytest.mark.parametrize("opts, before, after, layer, ref_gmacs", [
    (dict(), 600, 200, 6, 35.73),
    (dict(segments=3), 600, 150, 6, 33.58),
    (dict(segments=6), 600, 300, 6, 40.02),
    (dict(layer=7), 600, 200, 7, 38.59),
])
def test_b32_traces_and_gmacs(b32, opts, before, after, layer, ref_gmacs):
    enc = VideoEncoder(b32, create_reducer("centerclip", **opts), 12)
    tr = enc.trace()
    assert tr.attn_tokens() == [before] * layer + [after] * (12 - layer)
    assert tr.mlp_tokens() == tr.attn_tokens()
    assert (tr.out_seqs, tr.out_tokens) == (opts.get("segments", 4), 50)
    assert round(gmacs(tr), 2) == ref_gmacs


def test_b16_b6_4_160_trace_and_gmacs(b16):
    enc = VideoEncoder(b16, create_reducer("centerclip", k=160), 12)
    tr = enc.trace()
    assert tr.attn_tokens() == [2364] * 6 + [644] * 6
    assert (tr.out_seqs, tr.out_tokens) == (4, 161)
    # An earlier reference listed 138.54 for this row, but its own formula on its own schedule (the one
    # asserted above; the same formula reproduces its B/16 ToMe figure, 144.04) gives 134.38.
    by_hand = (12 * 196 * 3 * 16**2 * 768 + 6 * 12 * block_macs(197, 197, 768, 3072)
               + 6 * 4 * block_macs(161, 161, 768, 3072))
    assert b16.spec.grid == 14 and round(by_hand / 1e9, 2) == 134.38
    assert round(gmacs(tr), 2) == 134.38


def test_two_clustering_layers_recluster_within_segments(scale):
    enc = VideoEncoder(scale, create_reducer(
        "centerclip", layer=[6, 9], segments=[4, 2], k=[49, 30]), 12)
    tr = enc.trace()
    assert tr.attn_tokens() == [600] * 6 + [200] * 3 + [62] * 3
    assert (tr.out_seqs, tr.out_tokens) == (2, 31)
    tr = VideoEncoder(scale, create_reducer(
        "centerclip", layer=[6, 9], segments=4, k=[49, 20]), 12).trace()
    assert tr.attn_tokens()[9:] == [84] * 3


@pytest.mark.parametrize("name, opts, after", [
    ("pooling", dict(), 200), ("pooling", dict(segments=3), 150),
    ("sparse", dict(), 200), ("sparse", dict(segments=6, k=20), 126),
    ("centerclip", dict(algorithm="spectral"), 200),
])
def test_segment_baselines_traces(scale, name, opts, after):
    tr = VideoEncoder(scale, create_reducer(name, **opts), 12).trace()
    assert tr.attn_tokens() == [600] * 6 + [after] * 6


def test_chain_with_tome_after_clustering(scale):
    enc = VideoEncoder(scale, Chain(CenterCLIP(), create_reducer("tome", r=2)), 12)
    tr = enc.trace()
    assert tr.attn_tokens()[5:8] == [12 * 40, 4 * 50, 4 * 48]


# ------------------------------------------------------------------ layout and values


@pytest.mark.parametrize("algorithm", ["kmedoids", "spectral"])
def test_pre_block_keeps_medoids_and_mean_cls(scale, algorithm):
    red = _setup(CenterCLIP(segments=4, k=10, algorithm=algorithm, sigma=8.0), scale.spec)
    s = _state()
    out = red.pre_block(s, 6)
    assert red.pre_block(s, 5) is s
    assert (out.groups, out.prefix, out.tokens, out.x.shape[0]) == (4, 1, 11, 8)
    assert torch.equal(out.size, torch.ones(8, 11, 1))
    cls, points = split_segments(s.x, 1, 3)
    assert torch.allclose(out.x[:, 0], s.x[:, 0].reshape(8, 3, 16).mean(1))
    med = red.select(points, 10, 3, segments=4)
    for r in range(8):
        assert len(set(med[r].tolist())) == 10
        assert torch.equal(out.x[r, 1:], points[r, med[r]])
    if algorithm == "kmedoids":
        assert torch.equal(med, kmedoids(points, 10).medoids)


def test_gradients_reach_exactly_the_kept_tokens(scale):
    red = _setup(CenterCLIP(segments=4, k=10), scale.spec)
    s = _state(b=1, grad=True)
    out = red.pre_block(s, 6)
    out.x.sum().backward()
    grad = s.x.grad.abs().sum(-1)  # [12, 50]
    med = red.select(split_segments(s.x.detach(), 1, 3)[1], 10, 3)  # [4, 10] in fd*49 points
    expect = torch.zeros(12, 50)
    expect[:, 0] = 16 / 3  # CLS: mean of 3 frames, 16 channels
    for seg in range(4):
        for m in med[seg].tolist():
            expect[3 * seg + m // 49, 1 + m % 49] = 16
    assert torch.allclose(grad, expect)


def test_pooling_is_the_token_wise_frame_mean(scale):
    red = _setup(SegmentPooling(segments=3), scale.spec)
    s = _state()
    out = red.pre_block(s, 6)
    assert (out.groups, out.tokens) == (3, 50)
    for r in range(6):
        assert torch.allclose(out.x[r], s.x[4 * r : 4 * r + 4].mean(0))
    assert torch.equal(out.size, torch.full((6, 50, 1), 4.0))


def test_sparse_sampling_offsets_and_tokens(scale):
    assert uniform_offsets(147, 49).tolist() == [list(range(1, 147, 3))]
    assert uniform_offsets(10, 4).tolist() == [[1, 3, 6, 8]]
    red = _setup(SparseSampling(segments=4, k=49), scale.spec)
    s = _state()
    out = red.pre_block(s, 6)
    cls, points = split_segments(s.x, 1, 3)
    assert torch.equal(out.x[:, 1:], points[:, 1::3])
    assert torch.allclose(out.x[:, :1], cls)


# ------------------------------------------------------------------ validation


@pytest.mark.parametrize("name, opts, match", [
    ("centerclip", dict(segments=5), r"12 frames at layer 6 cannot be cut into segments=5"),
    ("centerclip", dict(k=148), r"k=148 at layer 6 but a segment has only 147"),
    ("centerclip", dict(layer=12), r"layer 12 is out of range: \S+ has blocks 0\.\.11"),
    ("centerclip", dict(layer=-1), r"layer -1 is out of range"),
    ("pooling", dict(segments=7), r"pooling: 12 frames .* segments=7"),
    ("sparse", dict(segments=6, k=99), r"sparse: k=99 .* only 98"),
])
def test_bad_configuration_raises_at_construction(scale, name, opts, match):
    with pytest.raises(ValueError, match=match):
        VideoEncoder(scale, create_reducer(name, **opts), 12)


def test_bad_choices_raise():
    with pytest.raises(ValueError, match=r"algorithm='kmeans'"):
        CenterCLIP(algorithm="kmeans")
    with pytest.raises(ValueError, match=r"distance='l2'"):
        CenterCLIP(distance="l2")
    with pytest.raises(TypeError, match=r"segment"):
        create_reducer("centerclip", segment=4)


def test_changing_frames_revalidates(scale):
    enc = VideoEncoder(scale, create_reducer("centerclip"), 12)
    with pytest.raises(ValueError, match=r"10 frames .* segments=4"):
        enc(torch.zeros(1, 10, 3, 56, 56))
    assert enc(torch.randn(1, 8, 3, 56, 56)).shape[0] == 1  # 8 frames: 4 segments of 2


def test_work_macs_grows_with_segment_size(b32):
    trace = Trace(b32.spec.with_frames(12))  # work_macs reads the spec and its own schedule

    def work(**opts):
        return create_reducer("centerclip", **opts).work_macs(trace)

    w4 = work()
    assert 0 < w4 < work(segments=3) and w4 < work(algorithm="spectral")
    assert work(layer=[6, 9], segments=[4, 2], k=[49, 30]) > w4


@pytest.fixture
def one_thread():
    """Timing tests run single-threaded: on a loaded 2-core box 2 OpenMP threads stall ~40x."""
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)


def test_site_timing_times_the_clustering_step_on_its_real_input(one_thread):
    from tokred.cost import compare, site_timing
    from tokred.cost.build import build
    from tokred.cost.measure import measure

    none = site_timing(build("scale-B32", "none").encoder, 12, batch=1, warmup=0, repeats=1)
    cc = site_timing(build("scale-B32", "centerclip", {"segments": 3}).encoder, 12, batch=1,
                     warmup=0, repeats=1)
    assert none.inputs == {} and list(cc.inputs) == ["pre_block@6"]
    assert cc.inputs["pre_block@6"] == (1, 12, 50)  # (videos, groups, tokens): block-6 input
    assert 0 < cc.share < 1 and len(cc.forward.times) == 1
    fast = dict(batch_sizes=(1,), repeats=1, warmup=0, fvcore=False, activation=False)
    base = measure("scale-B32", "none", {}, 12, **fast)
    row = measure("scale-B32", "centerclip", {"segments": 3}, 12, site_share=True, **fast)
    row.update(compare(row, base))
    assert row["attn_tokens"] == [600] * 6 + [150] * 6
    assert row["ideal_speedup"] == pytest.approx(row["speedup"] / row["ratio"])
    assert 0 < row["site_share"] < 1 and list(row["site_seconds"]) == ["pre_block@6"]
