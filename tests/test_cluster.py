"""The shared clustering routine equals plain loop implementations written here.

Two modes (tokred.toolkits.cluster): ``exact=True`` is checked against loops over exact distances;
the default (official) mode against loops over the official distance values, chunk by chunk.
Equality with the official code itself: tests/test_centerclip_fidelity.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from tokred_methods.segments import plan_segments, split_segments

from tokred.spec import BackboneSpec
from tokred.toolkits.cluster import (
    assign_points,
    kkz_init,
    kmedoids,
    nearest_self,
    pairwise_distance,
    update_medoids,
)
from tokred.toolkits.spectral import (
    affinity,
    sigma_floor,
    spectral_embedding,
    spectral_kmedoids,
    sq_distance,
)


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
        best, best_d = None, float("-inf")
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


def ref_shift(pts, new, old):
    return sum(float((pts[a].double() - pts[b].double()).norm()) for a, b in zip(new, old))


def ref_kmedoids(pts, k, distance="euclidean", p=2.0, iters=100, threshold=1e-6):
    d = ref_distance(pts, distance, p)
    med = ref_kkz(pts, d, k)
    for _ in range(iters):
        new = ref_update(d, ref_assign(d, med), k)
        shift = ref_shift(pts, new, med)
        med = new
        if shift < threshold:
            break
    med = sorted(med)
    return med, ref_assign(d, med)


def ref_chunk(pts_rows, k, iters=100, threshold=1e-6):
    """The official rule over one chunk, in loops: the shifted values of the chunk's official
    distance matrix (tokred's own, so only the algorithm is compared), one stop rule for all."""
    d = nearest_self(pairwise_distance(torch.stack(pts_rows))).tolist()
    med = [ref_kkz(pts, d[r], k) for r, pts in enumerate(pts_rows)]
    for _ in range(iters):
        new = [ref_update(d[r], ref_assign(d[r], med[r]), k) for r in range(len(pts_rows))]
        shift = sum(ref_shift(pts, a, b) for pts, a, b in zip(pts_rows, new, med)) / len(med)
        med = new
        if shift < threshold:
            break
    med = [sorted(m) for m in med]
    return med, [ref_assign(d[r], m) for r, m in enumerate(med)]


# ---------------------------------------------------------------- tests


@pytest.mark.parametrize("distance, p", [("euclidean", 2.0), ("euclidean", 1.0), ("cosine", 2.0)])
def test_pairwise_distance_equals_loops(distance, p):
    x = _points(2, 12)
    exact = pairwise_distance(x, distance, p, exact=True)
    official = pairwise_distance(x, distance, p)
    for r in range(2):
        ref = torch.tensor(ref_distance(x[r], distance, p), dtype=torch.float64)
        assert torch.allclose(exact[r].double(), ref, atol=1e-4)
        assert torch.allclose(official[r].double(), ref, atol=1e-4)
        assert torch.equal(exact[r].diagonal(), torch.zeros(12))
    if distance == "euclidean":  # the official values are torch.cdist's, rounding included
        assert torch.equal(official, torch.cdist(x, x, p=p))


def test_official_values_keep_cdist_diagonal_noise():
    # 147 points of 768 dims (a ViT-B/32 segment): cdist's mm path leaves noise on the diagonal
    x = _points(1, 147, 768, seed=4)
    d = pairwise_distance(x)
    assert d.diagonal(dim1=1, dim2=2).abs().max() > 0
    assert torch.equal(pairwise_distance(x, exact=True).diagonal(dim1=1, dim2=2), torch.zeros(1, 147))


def test_nearest_self_shifts_by_the_chunk_maximum():
    d = torch.tensor([[[0.0, 2.0], [2.0, 0.0]], [[0.0, 5.0], [5.0, 0.0]]])
    assert nearest_self(d).tolist() == [[[-7.0, -4.0], [-4.0, -7.0]], [[-7.0, -1.0], [-1.0, -7.0]]]


def test_kkz_seeds_equal_reference():
    x = _points(4, 40)
    d = pairwise_distance(x, exact=True)
    seeds = kkz_init(x, d, 9)
    for r in range(4):
        assert seeds[r].tolist() == ref_kkz(x[r], ref_distance(x[r]), 9)
        assert seeds[r, 0] == x[r].norm(dim=-1).argmax()


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("distance, p", [("euclidean", 2.0), ("euclidean", 1.0), ("cosine", 2.0)])
def test_exact_kmedoids_equals_reference(seed, distance, p):
    x = _points(3, 36, seed=seed)
    got = kmedoids(x, 6, distance=distance, p=p, exact=True)
    for r in range(3):
        med, assign = ref_kmedoids(x[r], 6, distance, p)
        assert got.medoids[r].tolist() == med
        assert got.assign[r].tolist() == assign


@pytest.mark.parametrize("seed", range(3))
def test_official_kmedoids_equals_chunk_reference(seed):
    x = _points(5, 30, seed=seed)
    got = kmedoids(x, 5, split_size=2)  # chunks: rows 0-1, 2-3, 4
    for lo in (0, 2, 4):
        rows = list(x[lo : lo + 2])
        med, assign = ref_chunk(rows, 5)
        assert got.medoids[lo : lo + 2].tolist() == med
        assert got.assign[lo : lo + 2].tolist() == assign


def test_chunks_are_clustered_independently():
    x = _points(6, 40, 12, seed=9)
    whole = kmedoids(x, 7, split_size=2).medoids
    parts = torch.cat([kmedoids(x[i : i + 2], 7).medoids for i in (0, 2, 4)])
    assert torch.equal(whole, parts)


def test_update_on_hand_made_clusters():
    pts = torch.tensor([0.0, 1.0, 2.0, 10.0, 11.0, 30.0])[None, :, None]  # [1, 6, 1]
    d = pairwise_distance(pts, exact=True)
    assign = torch.tensor([[0, 0, 0, 1, 1, 2]])
    # middle of {0,1,2}; {10,11} tie -> lowest index; singleton {30}
    assert update_medoids(d, assign, 3).tolist() == [[1, 3, 5]]
    assert assign_points(d, torch.tensor([[1, 3, 5]])).tolist() == [[0, 0, 0, 1, 1, 2]]


@pytest.mark.parametrize("exact", [False, True])
def test_medoids_distinct_in_own_cluster_and_deterministic(exact):
    x = _points(5, 60, 16, seed=3)
    a, b = kmedoids(x, 12, exact=exact), kmedoids(x, 12, exact=exact)
    assert torch.equal(a.medoids, b.medoids) and torch.equal(a.assign, b.assign)
    for r in range(5):
        med = a.medoids[r]
        assert len(set(med.tolist())) == 12
        assert torch.equal(med, med.sort().values)
        assert torch.equal(a.assign[r, med], torch.arange(12))  # each medoid in its own cluster


@pytest.mark.parametrize("exact", [False, True])
def test_duplicate_points_still_give_distinct_medoids(exact):
    x = torch.zeros(2, 10, 4)
    x[1, 5:] = 1.0  # row 1: two distinct values, five copies each
    res = kmedoids(x, 4, exact=exact)
    for r in range(2):
        assert len(set(res.medoids[r].tolist())) == 4
        assert torch.equal(res.assign[r, res.medoids[r]], torch.arange(4))


def test_exact_mode_a_row_alone_equals_inside_the_batch():
    x = _points(6, 50, 12, seed=5)
    together = kmedoids(x, 7, exact=True).medoids
    alone = torch.cat([kmedoids(x[r : r + 1], 7, exact=True).medoids for r in range(6)])
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


def test_non_finite_points_are_refused_naming_the_rows():
    x = _points(3, 10, 4)
    x[1, 4, 2] = float("nan")
    with pytest.raises(ValueError, match=r"point sets \[1\] contain NaN or inf"):
        kmedoids(x, 3)


def test_given_distances_are_used_and_validated():
    x = _points(2, 20, 4, seed=6)
    d = pairwise_distance(x)
    assert torch.equal(kmedoids(x, 4, dist=d).medoids, kmedoids(x, 4).medoids)
    with pytest.raises(ValueError, match=r"negative entries .* plain distances"):
        kmedoids(x, 4, dist=nearest_self(d))
    with pytest.raises(ValueError, match=r"shape \[R, n, n\] = \[2, 20, 20\]"):
        kmedoids(x, 4, dist=d[:, :10])
    with pytest.raises(ValueError, match=r"NaN or inf"):
        kmedoids(x, 4, dist=d.clone().fill_(float("inf")))


def test_spectral_k_distinct_sorted_medoids():
    x = _points(4, 48, 16, seed=2)
    for graph in ("heat", "knn"):
        res = spectral_kmedoids(x, 6, sigma=4.0, graph=graph, knn=8)
        assert res.medoids.shape == (4, 6)
        for r in range(4):
            assert len(set(res.medoids[r].tolist())) == 6
            assert torch.equal(res.medoids[r], res.medoids[r].sort().values)


def test_spectral_first_eigenvector_is_sqrt_degree():
    # L_sym's null vector is D^1/2 * 1: with k=1 every normalised row is the same +-1, and
    # the official sign rule makes it +1.
    w = affinity(sq_distance(_points(2, 20, 4)), sigma=3.0)
    q, retried = spectral_embedding(w, 1)
    assert not retried.any()
    assert torch.allclose(q.abs(), torch.ones_like(q), atol=1e-4)
    assert (q.sign() == q[:, :1].sign()).all()


def test_empty_graph_selects_the_first_points_as_the_official_code():
    # tokens ~40 apart with sigma=2: every off-diagonal affinity is exp(-200) = 0 in fp32,
    # L_sym = 0, the sign rule zeroes the embedding, and every point ties.
    x = _points(3, 30, 64, seed=8) * 5
    res = spectral_kmedoids(x, 6, sigma=2.0)
    assert res.graph.empty.tolist() == [True] * 3
    assert res.graph.max_affinity.tolist() == [0.0] * 3
    assert res.medoids.tolist() == [list(range(6))] * 3
    # without the sign correction the embedding is not zero and the choice differs
    assert spectral_kmedoids(x, 6, sigma=2.0, correct_sign=False).medoids.tolist() != \
        [list(range(6))] * 3
    floor = sigma_floor(float(res.graph.min_sq_dist.max()))  # every row gets an edge
    assert not spectral_kmedoids(x, 6, sigma=1.05 * floor).graph.empty.any()
    assert spectral_kmedoids(x, 6, sigma=0.95 * floor).graph.empty.any()


def test_well_separated_graph_finds_the_clusters():
    g = torch.Generator().manual_seed(1)
    centres = torch.tensor([[0.0, 0.0], [20.0, 0.0], [0.0, 20.0]])
    x = (centres.repeat_interleave(8, 0) + 0.3 * torch.randn(24, 2, generator=g))[None]
    res = spectral_kmedoids(x, 3, sigma=2.0)
    assert not res.graph.empty.any()
    assert sorted(m // 8 for m in res.medoids[0].tolist()) == [0, 1, 2]  # one per cluster
    assert res.assign[0].tolist() == [i // 8 for i in range(24)]


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


def test_a_failed_batched_svd_is_redone_row_by_row_and_flagged(monkeypatch):
    # MKL's batched SVD can fail on an element it decomposes fine alone (the official code
    # then stops); the fallback decomposes the rows one by one and flags them
    import tokred.toolkits.spectral as sp

    x = _points(3, 20, 4, seed=11)
    w = affinity(sq_distance(x), sigma=3.0)
    ref, flags = spectral_embedding(w, 4)
    assert not flags.any()
    real = torch.linalg.svd

    def flaky(a, full_matrices=True):
        if a.shape[0] > 1:
            raise torch.linalg.LinAlgError("linalg.svd: (Batch element 1): failed to converge")
        return real(a, full_matrices=full_matrices)

    monkeypatch.setattr(sp.torch.linalg, "svd", flaky)
    q, flags = spectral_embedding(w, 4)
    assert flags.tolist() == [True] * 3
    assert torch.allclose(q.abs(), ref.abs(), atol=1e-5)
    res = spectral_kmedoids(x, 4, sigma=3.0)
    assert res.graph.svd_retried.all()


def test_a_nan_from_the_batched_svd_is_redone_for_that_row_only(monkeypatch):
    # MKL's SVD can also return NaN for a finite matrix without raising: the row is decomposed
    # again (alone, then in float64) and flagged; the other rows keep the batched result bit
    # for bit (the official code's rounding)
    import tokred.toolkits.spectral as sp

    x = _points(3, 20, 4, seed=11)
    lap = sp.laplacian(affinity(sq_distance(x), sigma=3.0))
    real = torch.linalg.svd
    ref = real(lap, full_matrices=False)

    def nan_row_1(a, full_matrices=True):
        u, s, vh = real(a, full_matrices=full_matrices)
        if a.shape[0] > 1:
            u[1, 0, 0] = float("nan")
        return u, s, vh

    monkeypatch.setattr(sp.torch.linalg, "svd", nan_row_1)
    u, s, vh, flags = sp.svd_rows(lap.clone())
    assert flags.tolist() == [False, True, False]
    assert torch.isfinite(u).all()
    for r in (0, 2):
        assert torch.equal(u[r], ref[0][r]) and torch.equal(s[r], ref[1][r])
    torch.testing.assert_close(s[1], ref[1][1])


def test_a_laplacian_whose_fp32_svd_is_nan_gets_finite_medoid_inputs():
    # a segment of the trained default-sweep scale model (block 6, 147 tokens, heat graph,
    # sigma 2): torch 2.14's CPU SVD returns NaN for it in float32, batched or alone
    path = Path(__file__).parent / "fixtures" / "spectral_svd_nan_laplacian.pt"
    lap = torch.load(path, weights_only=True)[None]
    from tokred.toolkits.spectral import svd_rows

    batch = lap.repeat(2, 1, 1)  # MKL's result depends on the position in the batch
    u, s, vh, flags = svd_rows(batch)
    assert torch.isfinite(u).all() and torch.isfinite(s).all() and torch.isfinite(vh).all()
    plain = torch.linalg.svd(batch, full_matrices=False)[0]
    assert flags.tolist() == [not bool(torch.isfinite(row).all()) for row in plain]
    assert 0 <= s.min() and s.max() <= 2 + 1e-4  # L_sym's spectrum lies in [0, 2]
    eye = torch.eye(lap.shape[-1])
    torch.testing.assert_close(u[0].T @ u[0], eye, atol=1e-4, rtol=0)  # orthonormal vectors
