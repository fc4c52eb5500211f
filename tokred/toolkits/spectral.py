"""Spectral clustering of point sets (CenterCLIP's spectral variant), as the official code computes it.

Heat-kernel (or KNN) affinity graph, ``L_sym = D^-1/2 (D - W) D^-1/2``, an SVD with the official
sign correction, the rows of the ``k`` smallest singular vectors, then the same k-medoids as
:func:`tokred.toolkits.cluster.kmedoids` on them. LAPACK's batched SVD rounds differently
depending on a matrix's position in the batch (and the thread count), so the rows are passed in
the official order (see ``CenterCLIP.select``). docs/algorithms.md §3.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from tokred.toolkits.cluster import SPLIT_SIZE, Clusters, GraphStats, fp32_no_grad, kmedoids

GRAPHS = ("heat", "knn")


# exp(-a) falls below the smallest fp32 subnormal (and rounds to 0.0) for a above ~103.3
_FP32_EXP_ZERO = -math.log(torch.finfo(torch.float32).smallest_normal * 2.0**-23)


def sq_distance(x: Tensor) -> Tensor:
    """Squared euclidean distances ``[R, n, n]`` as the official spectral code forms them:
    ``||a||^2 + ||b||^2 - 2 a.b`` (one ``baddbmm``, not clamped: the diagonal keeps its noise)."""
    with fp32_no_grad(x):
        x = x.detach().float()
        sq = x.pow(2).sum(dim=-1, keepdim=True)  # [R, n, 1]
        return torch.baddbmm(sq.transpose(1, 2), x, x.transpose(1, 2), alpha=-2).add(sq)


def affinity(sq: Tensor, sigma: float = 2.0, graph: str = "heat", knn: int = 10) -> Tensor:
    """Heat-kernel graph ``W = exp(-sq / (2 sigma^2))`` ``[R, n, n]`` from squared distances.

    ``graph="knn"`` keeps ``W`` only between each point's ``knn`` largest affinities (itself
    included), symmetrised by union, as the official ``KNN`` graph.
    """
    if graph not in GRAPHS:
        raise ValueError(f"graph must be one of {GRAPHS}, got {graph!r}")
    w = torch.exp(-1.0 * sq / (2 * sigma**2))
    if graph == "knn":
        kth = torch.topk(w, min(knn, w.shape[-1]), dim=-1).values[..., -1:]  # [R, n, 1]
        near = w >= kth
        w = w * (near | near.transpose(1, 2))
    return w


def graph_stats(w: Tensor, sq: Tensor) -> GraphStats:
    """Whether each row's graph ``w`` is empty, its largest off-diagonal affinity and the
    smallest squared distance ``sq`` between two of its points (for a sigma suggestion)."""
    eye = torch.eye(w.shape[-1], dtype=torch.bool, device=w.device)
    top = w.masked_fill(eye, 0.0).amax(dim=(1, 2))
    near = sq.masked_fill(eye, math.inf).amin(dim=(1, 2)).clamp_min(0.0)
    return GraphStats(top == 0, top, near)


def sigma_floor(min_sq_dist: float) -> float:
    """The smallest sigma at which two points at ``min_sq_dist`` get a non-zero fp32 affinity."""
    return math.sqrt(max(min_sq_dist, 0.0) / (2.0 * _FP32_EXP_ZERO))


def laplacian(w: Tensor) -> Tensor:
    """``L_sym = D^-1/2 (D - W) D^-1/2`` ``[R, n, n]``, rounded as the official two ``bmm``."""
    deg = w.sum(dim=-1)  # [R, n]
    inv = torch.pow(deg, -0.5)
    lap = torch.diag_embed(deg) - w
    return inv[:, :, None] * lap * inv[:, None, :]  # == D^-1/2 @ L @ D^-1/2, same rounding


def svd_rows(lap: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """``torch.linalg.svd`` of a batch, as the official code calls it, plus a fallback.

    MKL's batched SVD sometimes fails on a batch element that it decomposes fine alone: it
    raises (seen on trained scale-model segments: "Parameter 4 was incorrect on entry to
    SLASCL") or returns NaN for that element without raising; the official code then crashes
    or clusters NaN. Here a failed batch is decomposed row by row, and a row with a non-finite
    result alone again (float64 for a row that fails alone too); those rows are flagged.
    Returns ``u, s, vh`` and ``retried [R]`` (bool).
    """
    retried = torch.zeros(lap.shape[0], dtype=torch.bool, device=lap.device)
    try:
        u, s, vh = torch.linalg.svd(lap, full_matrices=False)
    except torch.linalg.LinAlgError:
        parts = [_svd_one(row[None]) for row in lap]
        retried[:] = True
        return (*(torch.cat([p[i] for p in parts]) for i in range(3)), retried)
    bad = ~(_finite(u) & _finite(s) & _finite(vh))
    for r in bad.nonzero().flatten().tolist():
        u[r], s[r], vh[r] = (t[0] for t in _svd_one(lap[r : r + 1]))
    return u, s, vh, retried | bad


def _finite(t: Tensor) -> Tensor:
    """``[R]``: whether every value of row ``r`` of ``t`` is finite."""
    return torch.isfinite(t).flatten(1).all(dim=1)


def _svd_one(lap: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    try:
        u, s, vh = torch.linalg.svd(lap, full_matrices=False)
        if bool(torch.isfinite(u).all() and torch.isfinite(s).all() and torch.isfinite(vh).all()):
            return u, s, vh
    except torch.linalg.LinAlgError:
        pass
    u, s, vh = torch.linalg.svd(lap.double(), full_matrices=False)
    return u.float(), s.float(), vh.float()


def spectral_embedding(w: Tensor, k: int, correct_sign: bool = True) -> tuple[Tensor, Tensor]:
    """Rows of the ``k`` smallest singular vectors of ``L_sym``, L2-normalised: ``[R, n, k]``.

    ``L_sym`` (:func:`laplacian`) is decomposed by an SVD as in the official code (singular
    values descending; the last ``k`` columns are taken). ``correct_sign`` applies its sign rule
    (Bro et al.): column ``j`` is multiplied by ``sign(sum_i sign(s_j v_ji) (s_j v_ji)^2)``,
    which is 0 for a zero singular value: on an empty graph (``L_sym = 0``) every embedding row
    is zero, every point ties and k-medoids returns the first ``k`` points.

    Returns:
        The embedding and the ``[R]`` flags of rows whose SVD needed :func:`svd_rows`' fallback.
    """
    with fp32_no_grad(w):
        u, s, vh, retried = svd_rows(laplacian(w.float()))
        if correct_sign:
            sv = s[:, :, None] * vh  # [R, n, n], row j = s_j * v_j
            u = u * torch.sign((torch.sign(sv) * sv.square()).sum(dim=2))[:, None, :]
        q = u[:, :, -k:]
        return q / (q.norm(p=2, dim=-1, keepdim=True) + 1e-6), retried


def spectral_kmedoids(
    x: Tensor,
    k: int,
    sigma: float = 2.0,
    graph: str = "heat",
    knn: int = 10,
    distance: str = "euclidean",
    p: float = 2.0,
    iters: int = 100,
    threshold: float = 1e-6,
    split_size: int = SPLIT_SIZE,
    correct_sign: bool = True,
    exact: bool = False,
) -> Clusters:
    """Spectral clustering: k-medoids++ on the :func:`spectral_embedding` rows of ``x``.

    The medoid indices refer to the original points, so the caller keeps original tokens.
    ``Clusters.graph`` says which rows had an empty graph (see :class:`GraphStats`).
    """
    sq = sq_distance(x)
    with fp32_no_grad(x):
        w = affinity(sq, sigma=sigma, graph=graph, knn=knn)
        q, retried = spectral_embedding(w, k, correct_sign=correct_sign)
        stats = graph_stats(w, sq)._replace(svd_retried=retried)
    res = kmedoids(q, k, distance=distance, p=p, iters=iters, threshold=threshold,
                   split_size=split_size, exact=exact)
    return res._replace(graph=stats)
