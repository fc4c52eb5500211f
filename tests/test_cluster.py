"""The shared clustering routine equals plain loop implementations written here."""

from __future__ import annotations

import pytest
import torch

from tokred.cluster import (
    assign_points,
    kkz_init,
    kmedoids,
    pairwise_distance,
    plan_segments,
    spectral_embedding,
    spectral_kmedoids,
    split_segments,
    update_medoids,
)
from tokred.spec import BackboneSpec


def _points(rows=3, n=30, c=8, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(rows, n, c, generator=g) * 3


# ---------------------------------------------------------------- plain references (one set)


def ref_distance(pts, distance="euclidean", p=2.0):
    n = len(pts)
    d = [[0.0] * n for _ in range(n)]
    for i in range(n):
        for j in range(n):
            if i == j:
                continue
            a, b = pts[i].double(), pts[j].double()
            if distance == "cosine":
                d[i][j] = float(1 - (a @ b) / (a.norm() * b.norm()))
            else:
                d[i][j] = float((a - b).abs().pow(p).sum() ** (1 / p))
    return d


def ref_kkz(pts, d, k):
    n = len(pts)
    norms = [float(pts[i].double().norm()) for i in range(n)]
    chosen = [max(range(n), key=lambda i: (norms[i], -i))]  # largest norm, lowest index
    while len(chosen) < k:
        best, best_d = None, -1.0
        for i in range(n):
            if i in chosen:
                continue
            near = min(d[i][m] for m in chosen)
            if near > best_d:  # strict: ties keep the lowest index
                best, best_d = i, near
        chosen.append(best)
    return chosen


def ref_assign(d, med):
    out = []
    for i in range(len(d)):
        if i in med:
            out.append(med.index(i))
            continue
        out.append(min(range(len(med)), key=lambda s: (d[i][med[s]], s)))
    return out


def ref_update(d, assign, k):
    med = []
    for c in range(k):
        members = [i for i in range(len(d)) if assign[i] == c]
        med.append(min(members, key=lambda i: (sum(d[i][j] for j in members), i)))
    return med


def ref_kmedoids(pts, k, distance="euclidean", p=2.0, iters=100, threshold=1e-6):
    d = ref_distance(pts, distance, p)
    med = ref_kkz(pts, d, k)
    for _ in range(iters):
        new = ref_update(d, ref_assign(d, med), k)
        shift = sum(d[a][b] for a, b in zip(new, med))
        med = new
        if shift < threshold:
            break
    med = sorted(med)
    return med, ref_assign(d, med)


# ---------------------------------------------------------------- tests


@pytest.mark.parametrize("distance, p", [("euclidean", 2.0), ("euclidean", 1.0), ("cosine", 2.0)])
def test_pairwise_distance_equals_loops(distance, p):
    x = _points(2, 12)
    d = pairwise_distance(x, distance, p)
    for r in range(2):
        ref = torch.tensor(ref_distance(x[r], distance, p), dtype=torch.float64)
        assert torch.allclose(d[r].double(), ref, atol=1e-4)
        assert torch.equal(d[r].diagonal(), torch.zeros(12))


def test_kkz_seeds_equal_reference():
    x = _points(4, 40)
    d = pairwise_distance(x)
    seeds = kkz_init(x, d, 9)
    for r in range(4):
        assert seeds[r].tolist() == ref_kkz(x[r], ref_distance(x[r]), 9)
        assert seeds[r, 0] == x[r].norm(dim=-1).argmax()


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("distance, p", [("euclidean", 2.0), ("euclidean", 1.0), ("cosine", 2.0)])
def test_kmedoids_equals_reference(seed, distance, p):
    x = _points(3, 36, seed=seed)
    got = kmedoids(x, 6, distance=distance, p=p)
    for r in range(3):
        med, assign = ref_kmedoids(x[r], 6, distance, p)
        assert got.medoids[r].tolist() == med
        assert got.assign[r].tolist() == assign


def test_update_on_hand_made_clusters():
    pts = torch.tensor([0.0, 1.0, 2.0, 10.0, 11.0, 30.0])[None, :, None]  # [1, 6, 1]
    d = pairwise_distance(pts)
    assign = torch.tensor([[0, 0, 0, 1, 1, 2]])
    # middle of {0,1,2}; {10,11} tie -> lowest index; singleton {30}
    assert update_medoids(d, assign, 3).tolist() == [[1, 3, 5]]
    assert assign_points(d, torch.tensor([[1, 3, 5]])).tolist() == [[0, 0, 0, 1, 1, 2]]


def test_medoids_distinct_in_own_cluster_and_deterministic():
    x = _points(5, 60, 16, seed=3)
    a, b = kmedoids(x, 12), kmedoids(x, 12)
    assert torch.equal(a.medoids, b.medoids) and torch.equal(a.assign, b.assign)
    for r in range(5):
        med = a.medoids[r]
        assert len(set(med.tolist())) == 12
        assert torch.equal(med, med.sort().values)
        assert torch.equal(a.assign[r, med], torch.arange(12))  # each medoid in its own cluster


def test_duplicate_points_still_give_distinct_medoids():
    x = torch.zeros(2, 10, 4)
    x[1, 5:] = 1.0  # row 1: two distinct values, five copies each
    res = kmedoids(x, 4)
    for r in range(2):
        assert len(set(res.medoids[r].tolist())) == 4
        assert torch.equal(res.assign[r, res.medoids[r]], torch.arange(4))


def test_a_row_alone_equals_inside_the_batch():
    x = _points(6, 50, 12, seed=5)
    together = kmedoids(x, 7).medoids
    alone = torch.cat([kmedoids(x[r : r + 1], 7).medoids for r in range(6)])
    assert torch.equal(together, alone)


def test_fp32_under_bf16_autocast_and_no_grad_selection():
    x = _points(3, 40, 16, seed=7).requires_grad_()
    ref = kmedoids(x, 8).medoids
    with torch.autocast("cpu", dtype=torch.bfloat16):
        got = kmedoids(x, 8)
        d = pairwise_distance(x)
    assert torch.equal(got.medoids, ref)
    assert d.dtype == torch.float32 and not d.requires_grad
    assert torch.equal(kmedoids(x.detach().bfloat16(), 8).medoids,
                       kmedoids(x.detach().bfloat16().float(), 8).medoids)


def test_k_out_of_range_is_named():
    with pytest.raises(ValueError, match=r"k=11 with 10 points"):
        kmedoids(torch.randn(1, 10, 3), 11)


def test_spectral_k_distinct_sorted_medoids():
    x = _points(4, 48, 16, seed=2)
    for graph in ("heat", "knn"):
        res = spectral_kmedoids(x, 6, sigma=4.0, graph=graph, knn=8)
        assert res.medoids.shape == (4, 6)
        for r in range(4):
            assert len(set(res.medoids[r].tolist())) == 6
            assert torch.equal(res.medoids[r], res.medoids[r].sort().values)


def test_spectral_first_eigenvector_is_sqrt_degree():
    # L_sym's null vector is D^1/2 * 1: with k=1 every normalised row is the same +-1.
    q = spectral_embedding(_points(2, 20, 4), 1, sigma=3.0)
    assert torch.allclose(q.abs(), torch.ones_like(q), atol=1e-4)
    assert (q.sign() == q[:, :1].sign()).all()


def test_split_segments_hand_made():
    x = torch.arange(4 * 3 * 2, dtype=torch.float32).reshape(4, 3, 2)  # 4 rows [CLS, p, p]
    cls, patches = split_segments(x, prefix=1, join=2)
    assert torch.equal(cls, (x[0::2, :1] + x[1::2, :1]) / 2)
    assert torch.equal(patches[0], torch.cat([x[0, 1:], x[1, 1:]]))
    assert torch.equal(patches[1], torch.cat([x[2, 1:], x[3, 1:]]))


SPEC = BackboneSpec("ViT-B-32", 768, 12, 12, 3072, 32, 224, 7, frames=12)


def test_plan_segments_two_layers():
    a, b = plan_segments(SPEC, [6, 9], [4, 2], [49, 30])
    assert (a.layer, a.segments, a.join, a.points, a.k) == (6, 4, 3, 147, 49)
    assert (b.layer, b.segments, b.join, b.points, b.k) == (9, 2, 2, 98, 30)


@pytest.mark.parametrize("kw, match", [
    (dict(layer=6, segments=5, k=49), r"12 frames .* segments=5 .*\[1, 2, 3, 4, 6, 12\]"),
    (dict(layer=6, segments=4, k=148), r"k=148 .* only 147 patch tokens \(3 x 49\)"),
    (dict(layer=12, segments=4, k=49), r"layer 12 is out of range.*0\.\.11"),
    (dict(layer=[6, 9], segments=[4, 3], k=49), r"4 segments at layer 9 .* segments=3"),
    (dict(layer=[9, 6], segments=4, k=49), r"strictly increasing"),
    (dict(layer=[6, 9], segments=[4, 2, 1], k=49), r"3 values for 2 layers"),
])
def test_plan_segments_errors_name_the_numbers(kw, match):
    with pytest.raises(ValueError, match=match):
        plan_segments(SPEC, **kw)


def test_memory_stays_at_a_few_n_by_n_matrices():
    # ViT-B/16 segment: n = 588 points, K = 160. A [K, n, n] fp32 tensor would be 221 MB.
    from torch.profiler import ProfilerActivity, profile

    x = _points(1, 588, 64, seed=1)
    with profile(activities=[ProfilerActivity.CPU], profile_memory=True) as prof:
        kmedoids(x, 160)
    peak_op = max(e.self_cpu_memory_usage for e in prof.key_averages())
    assert 0 < peak_op <= 4 * 588 * 588 * 4  # at most a few [n, n] fp32 matrices per op
