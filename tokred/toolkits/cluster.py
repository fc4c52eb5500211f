"""k-medoids++ of point sets (CenterCLIP's token clustering): pure tensor maths, batched over rows.

Every function takes ``R`` independent point sets ``[R, n, C]`` (one per segment of every video)
and returns indices; nothing here knows about models. Selection runs under ``no_grad`` in fp32
with autocast disabled, so the caller gathers the chosen tokens outside and keeps gradients.
Memory is ``O(R n^2)`` (one distance matrix per row); no ``[R, K, n, n]`` tensor is formed.

Two numerical modes (``exact``):

- ``exact=False`` (default) reproduces the official CenterCLIP code bit for bit: distances are
  ``torch.cdist``'s values (its matrix-multiply path leaves rounding noise of up to ~0.02 on the
  diagonal for 768-dim tokens), shifted negative by the maximum of the *chunk* of
  ``split_size`` rows they are clustered with, and a chunk stops iterating when the mean medoid
  movement of its rows falls below the threshold. At real sizes (147-588 points of 768 dims)
  many medoid candidates tie within that noise, so these values decide 2-22 % of the medoids
  and the published numbers depend on them. A row's result depends on the other rows of its
  chunk, as in the official code.
- ``exact=True``: exact distances (zero diagonal), every row clustered on its own (a row's
  medoids do not depend on the batch). Mathematically the same algorithm, but it departs from
  the official code's (and the published results') medoids wherever the noise decided.

The spectral variant is :mod:`tokred.toolkits.spectral`. Reference: Zhao et al., "CenterCLIP:
Token Clustering for Efficient Text-Video Retrieval", SIGIR 2022 (k-medoids++ = KKZ
initialisation + alternating k-medoids); docs/algorithms.md §3.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from contextlib import contextmanager
from typing import NamedTuple

import torch
from torch import Tensor

from tokred.toolkits.merge import keep_tokens

DISTANCES = ("euclidean", "cosine")
SPLIT_SIZE = 16  # rows clustered together by the official code (4 for ViT-B/16)


class GraphStats(NamedTuple):
    """Per-row facts about a spectral affinity graph ``W`` (``[R]`` each).

    Attributes:
        empty: no two distinct points have a non-zero affinity (fp32 underflow): the Laplacian
            is zero, the embedding degenerates and the selection is positional.
        max_affinity: the largest off-diagonal affinity.
        min_sq_dist: the smallest squared distance between two distinct points.
        svd_retried: the batched SVD failed to converge and this row was decomposed on its
            own (see :func:`tokred.toolkits.spectral.svd_rows`).
    """

    empty: Tensor
    max_affinity: Tensor
    min_sq_dist: Tensor
    svd_retried: Tensor | None = None


class Clusters(NamedTuple):
    """Result of a clustering of ``R`` point sets.

    Attributes:
        medoids: ``[R, K]`` indices of the chosen points, ascending.
        assign: ``[R, n]`` cluster of every point (position in ``medoids``).
        iters: assignment/update rounds run (the maximum over rows).
        graph: for spectral clustering, facts about the affinity graph (None otherwise).
    """

    medoids: Tensor
    assign: Tensor
    iters: int
    graph: GraphStats | None = None


@contextmanager
def fp32_no_grad(x: Tensor) -> Iterator[None]:
    """``no_grad`` + autocast off on the tensor's device: clustering always runs in fp32."""
    with torch.no_grad(), torch.autocast(x.device.type, enabled=False):
        yield


def pairwise_distance(
    x: Tensor, distance: str = "euclidean", p: float = 2.0, exact: bool = False
) -> Tensor:
    """``[R, n, C]`` -> ``[R, n, n]`` fp32 distances.

    Args:
        x: points.
        distance: ``"euclidean"`` (Minkowski with exponent ``p``, not squared) or ``"cosine"``
            (``1 - cos``, norms offset by 1e-6 as in the official code).
        p: Minkowski exponent of the euclidean distance.
        exact: False: the official values (``torch.cdist``, whose matrix-multiply path leaves
            rounding noise on the diagonal). True: the same distances with an exact zero
            diagonal (one ``baddbmm`` for ``p=2``).
    """
    if distance not in DISTANCES:
        raise ValueError(f"distance must be one of {DISTANCES}, got {distance!r}")
    with fp32_no_grad(x):
        x = x.detach().float()
        if distance == "cosine":
            u = x / (x.norm(dim=-1, keepdim=True) + 1e-6)
            d = 1.0 - torch.bmm(u, u.transpose(1, 2))  # [R, n, n]
        elif exact and p == 2.0:  # ||a||^2 + ||b||^2 - 2 a.b: fewer passes than cdist
            sq = (x * x).sum(dim=-1)  # [R, n]
            d = torch.baddbmm(sq[:, :, None], x, x.transpose(1, 2), alpha=-2.0)
            d = d.add_(sq[:, None, :]).clamp_min_(0.0).sqrt_()
        else:
            d = torch.cdist(x, x, p=p)
        if exact:
            d.diagonal(dim1=1, dim2=2).zero_()
        return d


def nearest_self(dist: Tensor) -> Tensor:
    """The official code's form of a distance matrix: every value negative, self nearest.

    ``dist - max(dist) - 1`` with the maximum over the whole ``[R, n, n]`` tensor (a chunk of
    rows), then 1 subtracted from the diagonal. The shift changes no choice in exact
    arithmetic; it is kept because it changes the rounding of the summed distances.
    """
    d = dist - dist.max() - 1.0
    d.diagonal(dim1=1, dim2=2).sub_(1.0)
    return d


def check_distance(dist: Tensor, rows: int, n: int) -> Tensor:
    """Validate a caller-supplied distance matrix ``[R, n, n]`` (finite, non-negative)."""
    if dist.shape != (rows, n, n):
        raise ValueError(f"dist must have shape [R, n, n] = {[rows, n, n]} for x of {rows} sets "
                         f"of {n} points, got {list(dist.shape)}")
    dist = dist.detach().float()
    if not bool(torch.isfinite(dist).all()):
        raise ValueError("dist has NaN or inf entries; pass finite distances")
    if bool((dist < 0).any()):
        raise ValueError(f"dist has negative entries (min {float(dist.min()):.4g}); pass plain "
                         "distances (>= 0): the clustering shifts them itself")
    return dist


def kkz_init(x: Tensor, dist: Tensor, k: int) -> Tensor:
    """Deterministic "k-medoids++" (KKZ) seeds: ``[R, K]`` indices in the order chosen.

    The first seed is the point of largest L2 norm; each next one is the point farthest from its
    nearest seed. Ties go to the lowest index; a chosen point is never chosen again.
    """
    rows, n = dist.shape[:2]
    flat = dist.reshape(rows * n, n)  # row r*n + i = distances from point i of set r
    offset = torch.arange(rows, device=dist.device) * n
    seeds = torch.empty(rows, k, dtype=torch.long, device=dist.device)
    seed = torch.max(x.norm(dim=-1), dim=1).indices  # [R]
    seeds[:, 0] = seed
    nearest = flat.index_select(0, seed + offset)  # [R, n] distance to the nearest seed
    for i in range(1, k):
        nearest.scatter_(1, seed[:, None], -math.inf)  # never re-chosen (duplicate points)
        seed = torch.max(nearest, dim=1).indices
        seeds[:, i] = seed
        torch.minimum(nearest, flat.index_select(0, seed + offset), out=nearest)
    return seeds


def assign_points(dist: Tensor, medoids: Tensor) -> Tensor:
    """Nearest medoid of every point, ``[R, n]`` positions in ``medoids``.

    Ties go to the earliest medoid; a medoid always belongs to its own cluster (even when another
    medoid is a duplicate point at distance 0), so no cluster is empty.
    """
    rows, k = medoids.shape
    assign = torch.min(keep_tokens(dist, medoids), dim=1).indices  # [R, K, n] -> [R, n]
    slots = torch.arange(k, device=dist.device).expand(rows, k)
    return assign.scatter(1, medoids, slots)


def update_medoids(dist: Tensor, assign: Tensor, k: int) -> Tensor:
    """Per cluster, the member with the smallest sum of distances to the members (itself too).

    Every point's summed distance to its own cluster is one masked row sum of ``dist`` (the
    official code sums the same rows inside a ``[R, K, n, n]`` tensor; the values and their
    summation order are the same). Ties go to the lowest point index. Returns ``[R, K]``.
    """
    rows, n = assign.shape
    same = assign[:, :, None] == assign[:, None, :]  # [R, n, n] same cluster
    cost = (dist * same).sum(dim=-1)  # [R, n]
    best = cost.new_full((rows, k), math.inf).scatter_reduce(1, assign, cost, "amin")
    point = torch.arange(n, device=dist.device).expand(rows, n)
    cand = torch.where(cost == best.gather(1, assign), point, n)  # [R, n]
    return torch.full((rows, k), n, device=dist.device).scatter_reduce(1, assign, cand, "amin")


def _iterate(x: Tensor, dist: Tensor, k: int, iters: int, threshold: float,
             per_row: bool) -> tuple[Tensor, int]:
    """KKZ seeds, then assignment/update rounds until the medoids stop moving.

    The movement of a row is ``sum_k ||x[new_k] - x[old_k]||``. ``per_row``: each row stops on
    its own; otherwise all rows stop together once their mean movement is below ``threshold``
    (the official rule for a chunk). Returns the ascending medoids ``[R, K]`` and the rounds.
    """
    med = kkz_init(x, dist, k)
    active = torch.ones(x.shape[0], dtype=torch.bool, device=x.device)
    rounds = 0
    while rounds < iters and bool(active.any()):
        rounds += 1
        new = update_medoids(dist, assign_points(dist, med), k)
        shift = (keep_tokens(x, new) - keep_tokens(x, med)).square().sum(-1).sqrt().sum(-1)
        if not per_row:
            shift = shift.mean().expand_as(shift)
        med = torch.where(active[:, None], new, med)  # converged rows stay frozen
        active &= shift >= threshold
    return med.sort(dim=-1).values, rounds


def kmedoids(
    x: Tensor,
    k: int,
    distance: str = "euclidean",
    p: float = 2.0,
    iters: int = 100,
    threshold: float = 1e-6,
    dist: Tensor | None = None,
    split_size: int = SPLIT_SIZE,
    exact: bool = False,
    pre_norm: bool = False,
) -> Clusters:
    """k-medoids++ of each of ``R`` point sets ``x [R, n, C]`` into ``k`` clusters.

    KKZ seeds, then alternating assignment (nearest medoid) and update (the member with the
    smallest summed distance to its cluster) until the medoids stop moving; medoids are returned
    ascending. See the module docstring for the two numerical modes.

    Args:
        x: ``[R, n, C]`` points (any dtype; clustered in fp32). Must be finite.
        k: clusters per row, ``1 <= k <= n``.
        distance, p: see :func:`pairwise_distance`.
        iters: maximum assignment/update rounds.
        threshold: convergence threshold on the summed medoid movement.
        dist: a precomputed ``[R, n, n]`` matrix of plain (non-negative) distances, used instead
            of computing them from ``x`` (``x`` still gives the KKZ seed and the movement).
        split_size: rows clustered together (official mode): the distance shift and the stop
            rule are shared within each chunk of ``split_size`` consecutive rows.
        exact: exact distances, every row on its own (departs from the official results).
        pre_norm: L2-normalise the points first (the official ``pre_norm``).

    Raises:
        ValueError: ``k`` out of range, non-finite points, an invalid ``dist``.
    """
    rows, n, _ = x.shape
    if not 1 <= k <= n:
        raise ValueError(f"k-medoids needs 1 <= k <= points per set, got k={k} with {n} points")
    if split_size < 1:
        raise ValueError(f"split_size must be >= 1, got {split_size}")
    with fp32_no_grad(x):
        x = x.detach().float()
        bad = (~torch.isfinite(x)).flatten(1).any(dim=1).nonzero().flatten().tolist()
        if bad:
            raise ValueError(f"k-medoids: point sets {bad[:10]} contain NaN or inf values")
        if pre_norm:
            x = x / (x.norm(dim=-1, keepdim=True) + 1e-6)
        if dist is not None:
            dist = check_distance(dist, rows, n)
        if exact:
            d = pairwise_distance(x, distance, p, exact=True) if dist is None else dist
            med, rounds = _iterate(x, d, k, iters, threshold, per_row=True)
            return Clusters(med, assign_points(d, med), rounds)
        parts = [_official_chunk(x[lo : lo + split_size], k, distance, p, iters, threshold,
                                 None if dist is None else dist[lo : lo + split_size])
                 for lo in range(0, rows, split_size)]
        return Clusters(torch.cat([c.medoids for c in parts]),
                        torch.cat([c.assign for c in parts]), max(c.iters for c in parts))


def _official_chunk(x: Tensor, k: int, distance: str, p: float, iters: int, threshold: float,
                    dist: Tensor | None) -> Clusters:
    """One chunk of rows ``[chunk, n, C]`` clustered together, as the official code does."""
    d = nearest_self(pairwise_distance(x, distance, p) if dist is None else dist)
    med, rounds = _iterate(x, d, k, iters, threshold, per_row=False)
    return Clusters(med, assign_points(d, med), rounds)


