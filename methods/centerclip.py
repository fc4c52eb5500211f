"""CenterCLIP: multi-segment token clustering (Zhao et al., SIGIR 2022)."""

from __future__ import annotations

from typing import Union

import torch
from torch import Tensor

from tokred import BackboneSpec, TokenReducer, TokenState, register_reducer
from tokred.cluster import (
    DISTANCES,
    GRAPHS,
    SegmentStep,
    kmedoids,
    plan_segments,
    rows_gather,
    spectral_kmedoids,
    split_segments,
)

IntOrList = Union[int, list]
ALGORITHMS = ("kmedoids", "spectral")
ITERS_ESTIMATE = 10  # k-medoids rounds assumed by work_macs (4-8 seen on random-weight ViT-B)


@register_reducer("centerclip")
class CenterCLIP(TokenReducer):
    """Keep only the medoids of each temporal segment's patch tokens.

    Zhao, Zhu, Wang, Yang, "CenterCLIP: Token Clustering for Efficient Text-Video Retrieval",
    SIGIR 2022 (official code: github.com/mzhaoshuai/CenterCLIP). Paper notation
    ``B_l - S, K`` = ``layer=l, segments=S, k=K``; the default is ``B_6 - 4, 49``.

    At the input of block ``layer`` (before its LN1) the ``T`` frames of a video are cut into
    ``segments`` consecutive segments of ``fd = T / segments`` frames. A segment's points are its
    ``fd * patches`` patch tokens (frame-major, then raster order); they are clustered into ``k``
    clusters and only the medoid tokens are kept (ascending index). The segment's CLS is the mean
    of its frames' CLS. From this block on each segment is one sequence ``[CLS, k medoids]``
    (``groups = segments``, ``prefix`` unchanged), and the readout averages the segment CLS.
    A later entry of ``layer`` reclusters: it cuts the current segments again (its ``segments``
    must divide the previous value) and keeps ``k`` medoids of their kept tokens.

    Args:
        layer: block (0-based) or list of blocks at whose input clustering happens.
        segments: segments per video ``S``, one value or one per layer.
        k: medoids kept per segment ``K``, one value or one per layer (160 is the paper's
            ViT-B/16 setting).
        algorithm: ``"kmedoids"`` (deterministic k-medoids++) or ``"spectral"``.
        distance: ``"euclidean"`` (p-norm, not squared) or ``"cosine"``.
        p: exponent of the euclidean distance.
        iters: maximum k-medoids rounds.
        threshold: convergence threshold on the medoids' summed movement.
        sigma: heat-kernel width of the spectral graph.
        graph: spectral graph, ``"heat"`` (dense heat kernel) or ``"knn"`` (heat kernel kept
            between nearest neighbours).
        knn: neighbours of the KNN graph; None = the paper's adaptive ``5 * fd``, ``+5`` when
            a frame has >= 100 patches (the 14x14 grid of ViT-B/16).

    Modifications (vs. the official code):
        - Sizes: CenterCLIP tracks no token sizes and has no proportional attention; the kept
          tokens get size 1 (a medoid stands for itself), so a later size-aware reducer
          (e.g. ``Chain(CenterCLIP(), ToMe())``) starts from unit sizes.
        - Clustering runs in fp32 with autocast disabled on every device (the official
          ``torch.cuda.amp.custom_fwd`` casts only under CUDA autocast, so CPU bf16 autocast
          would cluster in bf16 there). As there, selection is under ``no_grad`` and the medoid
          gather outside it, so gradients reach the kept tokens.
        - Batched over every segment of every video at once with ``O(n^2)`` memory per segment
          (the official medoid update forms a ``[B, K, n, n]`` tensor) and without the
          ``split_size`` chunking.
        - Convergence is decided per segment instead of on the batch mean, so a video's
          clusters do not depend on the other videos in its batch.
        - Spectral variant: ``eigh`` of ``L_sym`` instead of an SVD (same eigenvectors for this
          symmetric positive semi-definite matrix), no sign correction (distances between the
          embedded rows do not depend on eigenvector signs).
        - Several clustering layers take one ``layer`` list with per-layer ``segments``/``k``
          lists (the official code configures them through per-block argparse lists).
        - Not implemented: the official ``aggregation`` (mean of each cluster instead of its
          medoid), ``pre_norm``, cluster/frame embeddings and the spatio-temporal graph mask.
    """

    def __init__(
        self,
        layer: IntOrList = 6,
        segments: IntOrList = 4,
        k: IntOrList = 49,
        algorithm: str = "kmedoids",
        distance: str = "euclidean",
        p: float = 2.0,
        iters: int = 100,
        threshold: float = 1e-6,
        sigma: float = 2.0,
        graph: str = "heat",
        knn: int | None = None,
    ) -> None:
        super().__init__()
        _check_choice("algorithm", algorithm, ALGORITHMS)
        _check_choice("distance", distance, DISTANCES)
        _check_choice("graph", graph, GRAPHS)
        if iters < 1 or threshold < 0 or sigma <= 0 or p <= 0:
            raise ValueError(f"centerclip: need iters >= 1, threshold >= 0, sigma > 0, p > 0; "
                             f"got iters={iters}, threshold={threshold}, sigma={sigma}, p={p}")
        self.layer, self.segments, self.k = layer, segments, k
        self.algorithm, self.distance, self.p = algorithm, distance, p
        self.iters, self.threshold = iters, threshold
        self.sigma, self.graph, self.knn = sigma, graph, knn
        self.steps: dict[int, SegmentStep] = {}

    def setup(self, spec: BackboneSpec) -> None:
        super().setup(spec)
        steps = plan_segments(spec, self.layer, self.segments, self.k, name="centerclip")
        self.steps = {st.layer: st for st in steps}

    def pre_block(self, s: TokenState, layer: int) -> TokenState:
        step = self.steps.get(layer)
        if step is None:
            return s
        join = _join(s, step)
        cls, points = split_segments(s.x, s.prefix, join)  # [B*S, p, C], [B*S, n, C]
        if step.k > points.shape[1]:
            raise ValueError(f"centerclip: k={step.k} at layer {layer} exceeds the "
                             f"{points.shape[1]} patch tokens of a segment")
        medoids = self.select(points, step.k, join)  # [B*S, K], selected under no_grad
        x = torch.cat([cls, rows_gather(points, medoids)], dim=1)  # [B*S, p + K, C]
        size = x.new_ones(x.shape[0], x.shape[1], 1)
        return s.replace(x=x, size=size, groups=step.segments)

    def select(self, points: Tensor, k: int, join: int) -> Tensor:
        """Ascending medoid indices ``[R, k]`` of ``points [R, n, C]`` (``join`` = fd)."""
        opts = dict(distance=self.distance, p=self.p, iters=self.iters, threshold=self.threshold)
        if self.algorithm == "spectral":
            return spectral_kmedoids(points, k, sigma=self.sigma, graph=self.graph,
                                     knn=self.knn_for(join, points.shape[1] // join), **opts).medoids
        return kmedoids(points, k, **opts).medoids

    def knn_for(self, join: int, per_seq: int) -> int:
        """Neighbours of the KNN graph: ``knn`` if set, else the official adaptive rule.

        The rule is ``5 * fd``, plus 5 when the incoming sequences have >= 100 patch tokens
        (ViT-B/16's 14x14 grid).
        """
        if self.knn is not None:
            return self.knn
        return 5 * join + (5 if per_seq >= 100 else 0)

    def work_macs(self, trace) -> float:
        """Clustering MACs per video: distance matrices, KKZ seeding, ~10 k-medoids rounds.

        Per segment of ``n`` points and width ``C``: ``n^2 C`` (distance matrix),
        ``K n`` (KKZ), and per round ``K n`` (assignment) + ``n^2 K`` (the bmm of the medoid
        update);
        the spectral variant adds the graph (``n^2 C``), ``~3 n^3`` for the eigendecomposition
        and a distance matrix of the ``K``-dimensional embedding (``n^2 K``).
        """
        spec = trace.spec
        total = 0.0
        for st in plan_segments(spec, self.layer, self.segments, self.k, name="centerclip"):
            n, k = st.points, st.k
            per_seg = n * n * spec.width + k * n + ITERS_ESTIMATE * (k * n + n * n * k)
            if self.algorithm == "spectral":
                per_seg += 3.0 * n**3 + n * n * k
            total += st.segments * per_seg
        return float(total)

    def extra_repr(self) -> str:
        return (f"layer={self.layer!r}, segments={self.segments!r}, k={self.k!r}, "
                f"algorithm={self.algorithm!r}, distance={self.distance!r}")


def _join(s: TokenState, step: SegmentStep) -> int:
    """Incoming sequences per segment; raises if the state does not match the schedule."""
    if s.groups % step.segments:
        raise ValueError(f"centerclip: {s.groups} sequences per video at layer {step.layer} "
                         f"cannot be cut into segments={step.segments}")
    return s.groups // step.segments


def _check_choice(field: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"centerclip: {field}={value!r} is not one of {choices}")
