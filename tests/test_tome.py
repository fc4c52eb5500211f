"""ToMe: exact token schedules, GMACs and matching on hand-made tensors."""

from __future__ import annotations

import pytest
import torch
from tokred_methods.tome import ToMe, parse_r

from tokred import create_reducer
from tokred.cost import gmacs
from tokred.encoder import VideoEncoder
from tokred.toolkits.merge import bipartite_match, merge_wavg


def per_frame(trace):
    return [t // 12 for t in trace.attn_tokens()]


@pytest.mark.parametrize("r, frames_in, out, g", [
    (0, [50] * 12, 50, 52.90),
    (2, list(range(50, 27, -2)), 26, 40.12),
    (3, list(range(50, 16, -3)), 14, 33.76),
    (4, [50, 46, 42, 38, 34, 30, 26, 22, 18, 14, 10, 6], 4, 27.54),
    (8, [50, 42, 34, 26, 18, 10, 6, 4, 3, 2, 2, 2], 2, None),
])
def test_b32_schedules_and_gmacs(b32, r, frames_in, out, g):
    trace = VideoEncoder(b32, create_reducer("tome", r=r), 12).trace()
    assert per_frame(trace) == frames_in
    assert trace.tokens_out == 12 * out
    assert [t // 12 for t in trace.mlp_tokens()] == frames_in[1:] + [out]
    if g is not None:
        assert gmacs(trace) == pytest.approx(g, abs=0.01)


def test_b16_r10(b16):
    trace = VideoEncoder(b16, create_reducer("tome", r=10), 12).trace(batch=1)
    assert per_frame(trace) == list(range(197, 86, -10))
    assert trace.tokens_out == 12 * 77
    assert gmacs(trace) == pytest.approx(144.04, abs=0.01)


def test_parse_r_forms():
    assert parse_r(2, 4) == [2, 2, 2, 2]
    assert parse_r([1, 2], 4) == [1, 2, 0, 0]
    assert parse_r((4, 0.5), 5) == [2, 3, 4, 5, 6]
    assert parse_r(4, 5, inflection=0.5) == [2, 3, 4, 5, 6]
    for bad, msg in [(-1, "non-negative"), ([1] * 13, "13 layers.*12"), (2.5, "non-negative int"),
                     ([1, -2], "non-negative ints")]:
        with pytest.raises(ValueError, match=msg):
            parse_r(bad, 12)


def test_bad_r_fails_at_construction(b32):
    with pytest.raises(ValueError, match="ToMe r"):
        VideoEncoder(b32, create_reducer("tome", r="two"), 12)


def _handmade():
    """One row: CLS + 6 patches; A = positions 0(CLS),2,4,6; B = 1,3,5."""
    e = torch.eye(3)
    metric = torch.stack([
        torch.tensor([1.0, 1, 1]),   # 0 CLS (would match everything; must be protected)
        e[0], e[0] * 0.9 + e[1] * 0.1,  # 1 (B0), 2 (A1) -> best B0, score high
        e[1],                        # 3 (B1)
        e[1] * 0.5 + e[2] * 0.5,      # 4 (A2) -> ties B1/B2 at ~0.707, argmax -> lowest index B1
        e[2],                        # 5 (B2)
        e[2] * 0.99 + e[0] * 0.01,    # 6 (A3) -> B2, the best score of all
    ])[None]
    return metric


def test_matching_order_cls_protected_and_sizes():
    metric = _handmade()
    x = torch.arange(7, dtype=torch.float)[None, :, None].repeat(1, 1, 2)
    size = torch.ones(1, 7, 1)
    m = bipartite_match(metric, 2, prefix=1)
    # A6 (0.9999) and A2 (0.994) merge first; A4 (0.707) is kept; CLS is never a source.
    assert m.src_idx.tolist() == [[2, 0]]  # indices into A' = patches at 2, 4, 6 -> [6, 2]
    assert m.dst_idx.tolist() == [[2, 0]]  # -> B2 (5) and B0 (1)
    x2, size2 = merge_wavg(m, x, size)
    # output: [CLS, kept A (4), B0 (1+2)/2, B1 (3), B2 (5+6)/2]
    assert x2[0, :, 0].tolist() == [0.0, 4.0, 1.5, 3.0, 5.5]
    assert size2[0, :, 0].tolist() == [1.0, 1.0, 2.0, 1.0, 2.0]
    assert size2.sum() == 7


def test_matching_clamps_r():
    metric = _handmade()
    m = bipartite_match(metric, 100, prefix=1)
    assert m.r == 3  # (7 - 1) // 2
    x2, size2 = merge_wavg(m, metric, torch.ones(1, 7, 1))
    assert x2.shape[1] == 4 and size2.sum() == 7 and torch.equal(x2[:, 0], metric[:, 0])
    assert bipartite_match(metric, 0) is None


def test_weighted_average_uses_sizes():
    metric = _handmade()
    x = torch.arange(7, dtype=torch.float)[None, :, None]
    size = torch.tensor([1.0, 3, 1, 1, 1, 1, 1])[None, :, None]
    m = bipartite_match(metric, 1, prefix=1)  # merges patch 6 into 5
    x2, size2 = merge_wavg(m, x, size)
    assert x2[0, -1, 0].item() == pytest.approx(5.5)
    m = bipartite_match(metric, 2, prefix=1)  # and 2 into 1 (size 3): (3*1 + 2) / 4
    x2, size2 = merge_wavg(m, x, size)
    assert x2[0, 2, 0].item() == pytest.approx(5 / 4) and size2[0, 2, 0] == 4


def test_tome_equals_reference_loop():
    """The batched matching equals a per-row loop written from the ToMe paper."""
    torch.manual_seed(0)
    metric, x = torch.randn(3, 11, 8), torch.randn(3, 11, 4)
    m = bipartite_match(metric, 3, prefix=1)
    ours, _ = merge_wavg(m, x, torch.ones(3, 11, 1))
    for row in range(3):
        k = metric[row] / metric[row].norm(dim=-1, keepdim=True)
        a_idx, b_idx = list(range(0, 11, 2)), list(range(1, 11, 2))
        best = {i: max(b_idx, key=lambda j: (k[i] @ k[j]).item()) for i in a_idx[1:]}
        src = sorted(best, key=lambda i: -(k[i] @ k[best[i]]).item())[:3]
        groups = {j: [j] + [i for i in src if best[i] == j] for j in b_idx}
        kept = [i for i in a_idx if i not in src]
        ref = [x[row, i] for i in kept] + [x[row, groups[j]].mean(0) for j in b_idx]
        assert torch.allclose(ours[row], torch.stack(ref), atol=1e-6)


def test_prop_attn_default_and_gradients(b32):
    assert ToMe().prop_attn is True
    enc = VideoEncoder(b32, create_reducer("tome", r=4), 2)
    video = torch.randn(1, 2, 3, 224, 224, requires_grad=True)
    enc(video).sum().backward()
    assert video.grad is not None and video.grad.abs().sum() > 0
