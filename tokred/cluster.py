"""Segment token clustering (CenterCLIP): pure tensor maths, batched over rows.

Every function takes ``R`` independent point sets ``[R, n, C]`` (one per segment of every video)
and returns indices; nothing here knows about models. Selection runs under ``no_grad`` in fp32
with autocast disabled, so the caller gathers the chosen tokens outside and keeps gradients.
Memory is ``O(R n^2)`` (one distance matrix per row); no ``[R, K, n, n]`` tensor is formed.

Reference: Zhao et al., "CenterCLIP: Token Clustering for Efficient Text-Video Retrieval",
SIGIR 2022 (k-medoids++ = KKZ initialisation + alternating k-medoids; spectral variant).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import NamedTuple

import torch
from torch import Tensor

DISTANCES = ("euclidean", "cosine")
GRAPHS = ("heat", "knn")


class Clusters(NamedTuple):
    """Result of a clustering of ``R`` point sets.

    Attributes:
        medoids: ``[R, K]`` indices of the chosen points, ascending.
        assign: ``[R, n]`` cluster of every point (position in ``medoids``).
        iters: assignment/update rounds run (the maximum over rows).
    """

    medoids: Tensor
    assign: Tensor
    iters: int


@contextmanager
def _fp32(x: Tensor) -> Iterator[None]:
    """``no_grad`` + autocast off on the tensor's device: clustering always runs in fp32."""
    with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
        yield


def pairwise_distance(x: Tensor, distance: str = "euclidean", p: float = 2.0) -> Tensor:
    """``[R, n, C]`` -> ``[R, n, n]`` fp32 distances with an exact zero diagonal.

    Args:
        x: points.
        distance: ``"euclidean"`` (Minkowski with exponent ``p``, not squared) or ``"cosine"``
            (``1 - cos``).
        p: Minkowski exponent of the euclidean distance.
    """
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
    with _fp32(x):
        x = x.detach().float()
        if distance == "cosine":
            u = x / (x.norm(dim=-1, keepdim=True) + 1e-6)
            d = 1.0 - u @ u.transpose(1, 2)  # [R, n, n]
        elif p == 2.0:  # ||a||^2 + ||b||^2 - 2 a.b: one bmm, as cdist's mm mode, fewer passes
            sq = (x * x).sum(dim=-1)  # [R, n]
            d = torch.baddbmm(sq[:, :, None], x, x.transpose(1, 2), alpha=-2.0)
            d = d.add_(sq[:, None, :]).clamp_min_(0.0).sqrt_()
        else:
            d = torch.cdist(x, x, p=p)
        d.diagonal(dim1=1, dim2=2).zero_()  # the mm form leaves rounding noise there
        return d


def kkz_init(x: Tensor, dist: Tensor, k: int) -> Tensor:
    """Deterministic "k-medoids++" (KKZ) seeds: ``[R, K]`` indices in the order chosen.

    The first seed is the point of largest L2 norm; each next one is the point farthest from its
    nearest seed. Ties go to the lowest index; a chosen point is never chosen again.
    """
    rows, n = dist.shape[:2]
    flat = dist.reshape(rows * n, n)  # row r*n + i = distances from point i of set r
    offset = torch.arange(rows, device=dist.device) * n
    seeds = torch.empty(rows, k, dtype=torch.long, device=dist.device)
    seed = x.float().norm(dim=-1).argmax(dim=-1)  # [R]
    seeds[:, 0] = seed
    nearest = flat.index_select(0, seed + offset)  # [R, n] distance to the nearest seed
    for i in range(1, k):
        nearest.scatter_(1, seed[:, None], -1.0)  # below every real distance: never re-chosen
        seed = nearest.argmax(dim=-1)
        seeds[:, i] = seed
        torch.minimum(nearest, flat.index_select(0, seed + offset), out=nearest)
    return seeds


def assign_points(dist: Tensor, medoids: Tensor) -> Tensor:
    """Nearest medoid of every point, ``[R, n]`` positions in ``medoids``.

    Ties go to the earliest medoid; a medoid always belongs to its own cluster (even when another
    medoid is a duplicate point at distance 0), so no cluster is empty.
    """
    rows, k = medoids.shape
    assign = rows_gather(dist, medoids).min(dim=1).indices  # [R, K, n] -> [R, n], first min
    slots = torch.arange(k, device=dist.device).expand(rows, k)
    return assign.scatter(1, medoids, slots)


def update_medoids(dist: Tensor, assign: Tensor, k: int) -> Tensor:
    """Per cluster, the member with the smallest sum of distances to the other members.

    Computed for all clusters at once: ``dist @ onehot(assign)`` gives every point's summed
    distance to every cluster ``[R, n, K]`` (one bmm; no ``[K, n, n]`` tensor, no loop over
    clusters). Ties go to the lowest point index. Returns ``[R, K]``.
    """
    rows, n = assign.shape
    onehot = dist.new_zeros(rows, n, k).scatter_(2, assign[..., None], 1.0)  # [R, n, K]
    cost = torch.bmm(dist, onehot).gather(2, assign[..., None]).squeeze(2)  # [R, n] own cluster
    best = cost.new_full((rows, k), float("inf")).scatter_reduce(1, assign, cost, "amin")
    point = torch.arange(n, device=dist.device).expand(rows, n)
    cand = torch.where(cost == best.gather(1, assign), point, n)  # [R, n]
    return torch.full((rows, k), n, device=dist.device).scatter_reduce(1, assign, cand, "amin")


def kmedoids(
    x: Tensor,
    k: int,
    distance: str = "euclidean",
    p: float = 2.0,
    iters: int = 100,
    threshold: float = 1e-6,
    dist: Tensor | None = None,
) -> Clusters:
    """k-medoids++ of each of ``R`` point sets ``x [R, n, C]`` into ``k`` clusters.

    Alternates assignment and medoid update from the KKZ seeds. A row stops when the summed
    movement of its medoids ``sum_k d(new_k, old_k)`` falls below ``threshold``, ``d`` being the
    clustering distance (the official code stops the whole batch on the batch mean of the L2
    movement, which is the same quantity for the default euclidean distance; stopping per row
    makes a video's result independent of the other videos in its batch). Medoids are returned
    ascending.

    Args:
        x: ``[R, n, C]`` points (any dtype; clustered in fp32).
        k: clusters per row, ``1 <= k <= n``.
        distance, p: see :func:`pairwise_distance`.
        iters: maximum assignment/update rounds.
        threshold: per-row convergence threshold on the medoid movement.
        dist: a precomputed ``[R, n, n]`` distance matrix (computed from ``x`` if None).
    """
    rows, n, _ = x.shape
    if not 1 <= k <= n:
        raise ValueError(f"k-medoids needs 1 <= k <= points per set, got k={k} with {n} points")
    with _fp32(x):
        x = x.detach().float()
        dist = pairwise_distance(x, distance, p) if dist is None else dist.float()
        med = kkz_init(x, dist, k)
        active = torch.ones(rows, dtype=torch.bool, device=x.device)
        rounds = 0
        while rounds < iters and bool(active.any()):
            rounds += 1
            new = update_medoids(dist, assign_points(dist, med), k)
            shift = _pair_distance(dist, new, med).sum(dim=-1)  # [R]
            med = torch.where(active[:, None], new, med)  # converged rows stay frozen
            active &= shift >= threshold
        med = med.sort(dim=-1).values
        return Clusters(med, assign_points(dist, med), rounds)


def spectral_embedding(
    x: Tensor, k: int, sigma: float = 2.0, graph: str = "heat", knn: int = 10
) -> Tensor:
    """Rows of the ``k`` eigenvectors of the smallest eigenvalues of ``L_sym``, L2-normalised.

    ``W = exp(-||xi - xj||^2 / (2 sigma^2))`` (``graph="heat"``), optionally kept only between
    ``knn`` nearest neighbours, symmetrised by union (``graph="knn"``);
    ``L_sym = I - D^-1/2 W D^-1/2``. Returns ``[R, n, k]`` fp32.
    """
    if graph not in GRAPHS:
        raise ValueError(f"graph must be one of {GRAPHS}, got {graph!r}")
    with _fp32(x):
        x = x.detach().float()
        sq = pairwise_distance(x, "euclidean").square_()  # [R, n, n]
        w = torch.exp(sq / (-2.0 * sigma**2))
        if graph == "knn":
            kth = w.topk(min(knn, w.shape[-1]), dim=-1).values[..., -1:]  # [R, n, 1]
            near = w >= kth
            w = w * (near | near.transpose(1, 2))
        d_inv = w.sum(dim=-1).rsqrt()  # [R, n]; >= 1 thanks to the unit diagonal
        norm_w = d_inv[:, :, None] * w * d_inv[:, None, :]
        lap = torch.eye(w.shape[-1], device=w.device) - norm_w
        _, vec = torch.linalg.eigh(lap)  # ascending eigenvalues
        q = vec[..., :k]  # [R, n, k]
        return q / (q.norm(dim=-1, keepdim=True) + 1e-6)


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
) -> Clusters:
    """Spectral clustering: k-medoids++ on the :func:`spectral_embedding` rows of ``x``.

    The medoid indices refer to the original points, so the caller keeps original tokens.
    """
    q = spectral_embedding(x, k, sigma=sigma, graph=graph, knn=knn)
    return kmedoids(q, k, distance=distance, p=p, iters=iters, threshold=threshold)


def _pair_distance(dist: Tensor, a: Tensor, b: Tensor) -> Tensor:
    """``dist[r, a[r, j], b[r, j]]`` for index pairs ``a, b [R, K]`` -> ``[R, K]``."""
    rows, n = dist.shape[:2]
    base = torch.arange(rows, device=dist.device)[:, None] * (n * n)
    return dist.reshape(-1)[base + a * n + b]


def rows_gather(x: Tensor, idx: Tensor) -> Tensor:
    """``x [R, n, ...]``, ``idx [R, K]`` -> ``[R, K, ...]``; differentiable in ``x``.

    Flat row indexing: several times faster on CPU than ``gather`` with an expanded index.
    """
    rows, n = x.shape[:2]
    flat = idx + torch.arange(rows, device=idx.device)[:, None] * n  # [R, K]
    return x.flatten(0, 1)[flat]


# --- segment layout shared by the segment-level reducers (CenterCLIP, pooling, sparse) ---


@dataclass(frozen=True)
class SegmentStep:
    """One segment reduction at the input of block ``layer``.

    Attributes:
        layer: block index (0-based).
        segments: sequences per video after this step.
        join: incoming sequences joined into one segment (``fd`` frames at the first step).
        points: patch tokens per segment entering the step (``join * patches per sequence``).
        k: tokens kept per segment (None: the reducer keeps a fixed layout, e.g. pooling).
    """

    layer: int
    segments: int
    join: int
    points: int
    k: int | None


def split_segments(x: Tensor, prefix: int, join: int) -> tuple[Tensor, Tensor]:
    """Cut rows into segments of ``join`` consecutive rows.

    ``x [R, N, C]`` -> (segment CLS = mean of the rows' prefix tokens ``[R/join, prefix, C]``,
    the rows' patch tokens row-major ``[R/join, join*(N-prefix), C]``).
    """
    rows, n, c = x.shape
    x = x.reshape(rows // join, join, n, c)  # [R/j, j, N, C]
    cls = x[:, :, :prefix].mean(dim=1)  # [R/j, prefix, C]
    patches = x[:, :, prefix:].reshape(rows // join, join * (n - prefix), c)
    return cls, patches


def plan_segments(
    spec, layer: int | list[int], segments: int | list[int], k: int | list[int] | None = None,
    name: str = "segments",
) -> list[SegmentStep]:
    """Resolve and validate a (multi-layer) segment schedule for ``spec`` (a BackboneSpec).

    The first step cuts the ``spec.frames`` frames into ``segments`` segments; a later step cuts
    the current segments again (its ``segments`` must divide the previous one; equal values
    recluster every segment on its own).

    Args:
        spec: backbone spec with ``frames``, ``layers``, ``patches``, ``name``.
        layer: block index or strictly increasing list of block indices.
        segments: segments per video, one value or one per layer.
        k: tokens kept per segment, one value or one per layer; None keeps every position.
        name: reducer name used in error messages.

    Raises:
        ValueError: naming the numbers (layer out of range, T not divisible, k too large).
    """
    layers = _as_list(layer, "layer", name)
    n = len(layers)
    segs = _per_layer(segments, n, "segments", name)
    ks = [None] * n if k is None else _per_layer(k, n, "k", name)
    steps: list[SegmentStep] = []
    groups, per_seq, unit = spec.frames, spec.patches, "frames"
    for i, (lay, s, kk) in enumerate(zip(layers, segs, ks)):
        if not 0 <= lay < spec.layers:
            raise ValueError(f"{name}: layer {lay} is out of range: {spec.name} has blocks "
                             f"0..{spec.layers - 1} (layers are 0-based; the paper's B_6 is 6)")
        if i and lay <= layers[i - 1]:
            raise ValueError(f"{name}: layers must be strictly increasing, got {layers}")
        if s < 1 or groups % s:
            ok = [d for d in range(1, groups + 1) if groups % d == 0]
            raise ValueError(f"{name}: {groups} {unit} at layer {lay} cannot be cut into "
                             f"segments={s} equal segments; use one of {ok}")
        join = groups // s
        points = join * per_seq
        if kk is not None and not 1 <= kk <= points:
            raise ValueError(f"{name}: k={kk} at layer {lay} but a segment has only {points} "
                             f"patch tokens ({join} x {per_seq}); use 1 <= k <= {points}")
        steps.append(SegmentStep(lay, s, join, points, kk))
        groups, per_seq, unit = s, (per_seq if kk is None else kk), "segments"
    return steps


def _as_list(v, field: str, name: str) -> list[int]:
    vals = list(v) if isinstance(v, (list, tuple)) else [v]
    if not vals or any(not isinstance(x, int) or isinstance(x, bool) for x in vals):
        raise ValueError(f"{name}: {field} must be an int or a non-empty list of ints, got {v!r}")
    return vals


def _per_layer(v, n: int, field: str, name: str) -> list[int]:
    vals = _as_list(v, field, name)
    if len(vals) == 1:
        return vals * n
    if len(vals) != n:
        raise ValueError(f"{name}: {field}={vals} gives {len(vals)} values for {n} layers; "
                         f"give one value or one per layer")
    return vals
