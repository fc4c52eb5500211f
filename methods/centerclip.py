"""CenterCLIP: multi-segment token clustering (Zhao et al., SIGIR 2022)."""

from __future__ import annotations

import logging

import torch
from tokred_methods.segments import (
    IntOrList,
    SegmentReducer,
    SegmentStep,
    plan_segments,
    split_segments,
)
from torch import Tensor

from tokred import TokenState, register_reducer
from tokred.toolkits.cluster import DISTANCES, Clusters, kmedoids
from tokred.toolkits.merge import keep_tokens
from tokred.toolkits.spectral import GRAPHS, sigma_floor, spectral_kmedoids

log = logging.getLogger(__name__)
_WARNED: set[tuple] = set()  # (layer, sigma, graph) whose empty spectral graph was reported

ALGORITHMS = ("kmedoids", "spectral")
ITERS_ESTIMATE = 10  # k-medoids rounds assumed by work_macs (4-8 seen on random-weight ViT-B)


@register_reducer("centerclip")
class CenterCLIP(SegmentReducer):
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
        split_size: segments clustered together (they share the distance shift and the stop
            rule, see :mod:`tokred.toolkits.cluster`); None = the official 4 for ViT-B/16, 16 otherwise.
        exact: exact distances (zero diagonal) and every segment clustered on its own, so a
            video's tokens do not depend on the rest of its batch. Departs from the official
            code and from the published results (2-22 % of the medoids differ at real sizes).
        pre_norm: cluster L2-normalised tokens (the official ``pre_norm``; k-medoids only).
        correct_sign: the official SVD sign correction of the spectral embedding.

    Segments are clustered in the official order and chunks: all videos' first segments, then
    all second segments, ..., in chunks of ``split_size``; so with ``exact=False`` (the
    default) the kept tokens of a video can depend on the other videos of its batch, exactly
    as in the official code.

    Modifications (vs. the official code):
        - Sizes: CenterCLIP tracks no token sizes and has no proportional attention; the kept
          tokens get size 1 (a medoid stands for itself), so a later size-aware reducer
          (e.g. ``Chain(CenterCLIP(), ToMe())``) starts from unit sizes.
        - Clustering runs in fp32 with autocast disabled on every device (the official
          ``torch.cuda.amp.custom_fwd`` casts only under CUDA autocast, so CPU bf16 autocast
          would cluster in bf16 there). As there, selection is under ``no_grad`` and the medoid
          gather outside it, so gradients reach the kept tokens.
        - ``O(n^2)`` memory per segment (the official medoid update forms a ``[B, K, n, n]``
          tensor); the values and the order they are summed in are the same, and the medoids,
          assignments and spectral embeddings equal the official ones bit for bit on CPU
          (tests/test_centerclip_fidelity.py, on inputs captured inside the official code).
        - Spectral variant: ``D^-1/2 L D^-1/2`` as two elementwise products instead of two
          ``bmm`` with diagonal matrices (the same values). An empty affinity graph (sigma too
          small for the token distances, e.g. the paper's sigma=2 on ViT-B tokens: every
          off-diagonal affinity underflows to 0) is reported: a warning once per run with a
          sigma that would connect the nearest tokens, and a count in :meth:`diagnostics`.
          The selection on such a graph is positional (the first ``k`` tokens of the
          segment), as in the official code.
        - A segment with NaN or inf tokens is refused with an error naming its video.
        - Several clustering layers take one ``layer`` list with per-layer ``segments``/``k``
          lists (the official code configures them through per-block argparse lists).
        - Not implemented: the official ``aggregation`` (mean of each cluster instead of its
          medoid), cluster/frame embeddings and the spatio-temporal graph mask.
    """

    name = "centerclip"
    presets = {  # CenterCLIP Table 3: "B_l - S, K"; docs/algorithms.md §3
        "B6-4-49": {"layer": 6, "segments": 4, "k": 49},
        "B6-3-49": {"layer": 6, "segments": 3, "k": 49},
        "B6-6-49": {"layer": 6, "segments": 6, "k": 49},
        "B7-4-49": {"layer": 7, "segments": 4, "k": 49},
        "B6-4-160": {"layer": 6, "segments": 4, "k": 160},  # ViT-B/16
        "spectral-B6-4-49": {"layer": 6, "segments": 4, "k": 49, "algorithm": "spectral"},
        "spectral-B6-3-49": {"layer": 6, "segments": 3, "k": 49, "algorithm": "spectral"},
    }
    paper = {"ViT-B-32": ("B6-4-49", "B6-3-49", "spectral-B6-4-49", "spectral-B6-3-49"),
             "ViT-B-16": ("B6-4-160",)}

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
        split_size: int | None = None,
        exact: bool = False,
        pre_norm: bool = False,
        correct_sign: bool = True,
    ) -> None:
        super().__init__(layer, segments, k)
        _check_choice("algorithm", algorithm, ALGORITHMS)
        _check_choice("distance", distance, DISTANCES)
        _check_choice("graph", graph, GRAPHS)
        if iters < 1 or threshold < 0 or sigma <= 0 or p <= 0:
            raise ValueError(f"centerclip: need iters >= 1, threshold >= 0, sigma > 0, p > 0; "
                             f"got iters={iters}, threshold={threshold}, sigma={sigma}, p={p}")
        if (split_size is not None and split_size < 1) or (knn is not None and knn < 1):
            raise ValueError(f"centerclip: need split_size >= 1 and knn >= 1 (or None); got "
                             f"split_size={split_size}, knn={knn}")
        self.algorithm, self.distance, self.p = algorithm, distance, p
        self.iters, self.threshold = iters, threshold
        self.sigma, self.graph, self.knn = sigma, graph, knn
        self.split_size, self.exact = split_size, exact
        self.pre_norm, self.correct_sign = pre_norm, correct_sign
        self.reset_diagnostics()

    def chunk(self) -> int:
        """Segments clustered together: ``split_size``, or the official 4 (ViT-B/16) / 16."""
        if self.split_size is not None:
            return self.split_size
        spec = self.spec
        return 4 if spec is not None and (spec.patch_size, spec.width) == (16, 768) else 16

    def reset_diagnostics(self) -> None:
        """Zero the spectral-graph counters read by :meth:`diagnostics`."""
        self._segments = self._empty = self._svd_retried = 0

    def diagnostics(self) -> dict:
        """Spectral variant: segments clustered and how many had an empty affinity graph.

        Counters only (the forward never reads them); a sweep records them per trial.
        """
        if self.algorithm != "spectral":
            return {}
        return {"spectral_segments": self._segments, "spectral_empty_graph": self._empty,
                "spectral_svd_retried": self._svd_retried}

    def pre_block(self, s: TokenState, layer: int) -> TokenState:
        step = self.steps.get(layer)
        if step is None:
            return s
        join = self._join(s, step)
        cls, points = split_segments(s.x, s.prefix, join)  # [B*S, p, C], [B*S, n, C]
        if step.k > points.shape[1]:
            raise ValueError(f"centerclip: k={step.k} at layer {layer} exceeds the "
                             f"{points.shape[1]} patch tokens of a segment")
        try:  # [B*S, K], selected under no_grad
            medoids = self.select(points, step.k, join, step.segments, layer)
        except ValueError as err:
            named = _name_videos(err, s, step)
            if named is None:
                raise
            raise named from err
        x = torch.cat([cls, keep_tokens(points, medoids)], dim=1)  # [B*S, p + K, C]
        size = x.new_ones(x.shape[0], x.shape[1], 1)
        return s.replace(x=x, size=size, groups=step.segments)

    def select(
        self, points: Tensor, k: int, join: int, segments: int = 1, layer: int | None = None
    ) -> Tensor:
        """Ascending medoid indices ``[R, k]`` of ``points [R, n, C]``.

        Args:
            points: segments' patch tokens, video-major (row ``b * segments + s``).
            k: medoids per segment.
            join: sequences joined into each segment (``fd`` at the first step).
            segments: segments per video; rows are clustered segment-major (all videos'
                segment 0, then segment 1, ...) in chunks, as the official code does.
            layer: block index, for the empty-graph report.
        """
        rows = points.shape[0]
        order = torch.arange(rows, device=points.device).view(-1, segments).t().flatten()
        opts = dict(distance=self.distance, p=self.p, iters=self.iters, threshold=self.threshold,
                    split_size=self.chunk(), exact=self.exact)
        if self.algorithm == "spectral":
            res = spectral_kmedoids(points[order], k, sigma=self.sigma, graph=self.graph,
                                    knn=self.knn_for(join, points.shape[1] // join),
                                    correct_sign=self.correct_sign, **opts)
            self._report_graph(res, layer)
        else:
            res = kmedoids(points[order], k, pre_norm=self.pre_norm, **opts)
        return res.medoids[order.argsort()]  # back to video-major rows

    def _report_graph(self, res: Clusters, layer: int | None) -> None:
        empty = int(res.graph.empty.sum())
        self._segments += len(res.graph.empty)
        self._empty += empty
        retried = int(res.graph.svd_retried.sum())
        self._svd_retried += retried
        if retried and ("svd", layer) not in _WARNED:
            _WARNED.add(("svd", layer))
            log.warning("centerclip spectral: the batched SVD at layer %s failed to converge or "
                        "returned NaN; %d segments were decomposed one by one (the official code "
                        "stops with an error or clusters NaN here)", layer, retried)
        key = (layer, self.sigma, self.graph)
        if empty and key not in _WARNED:
            _WARNED.add(key)
            floor = sigma_floor(float(res.graph.min_sq_dist.max()))
            log.warning(
                "centerclip spectral: the affinity graph at layer %s is empty in %d of %d "
                "segments (sigma=%g, largest off-diagonal affinity %.3g, smallest squared token "
                "distance %.4g): every affinity underflows to 0 and the selection is positional "
                "(the first k tokens of each segment), as in the official code. Every segment's "
                "graph has an edge from sigma ~ %.3g on.", layer, empty, len(res.graph.empty),
                self.sigma, float(res.graph.max_affinity.max()),
                float(res.graph.min_sq_dist.min()), floor)

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
        ``K n`` (KKZ), and per round ``K n`` (assignment) + ``n^2`` (the masked row sums of the
        medoid update);
        the spectral variant adds the graph (``n^2 C``), ``~3 n^3`` for the eigendecomposition
        and a distance matrix of the ``K``-dimensional embedding (``n^2 K``).
        """
        spec = trace.spec
        total = 0.0
        for st in plan_segments(spec, self.layer, self.segments, self.k, name="centerclip"):
            n, k = st.points, st.k
            per_seg = n * n * spec.width + k * n + ITERS_ESTIMATE * (k * n + n * n)
            if self.algorithm == "spectral":
                per_seg += 3.0 * n**3 + n * n * k
            total += st.segments * per_seg
        return float(total)

    def extra_repr(self) -> str:
        return f"{super().extra_repr()}, algorithm={self.algorithm!r}, distance={self.distance!r}"


def _name_videos(err: ValueError, s: TokenState, step: SegmentStep) -> ValueError | None:
    """Say which videos a non-finite-points error came from (rows are video-major); None for
    any other error (re-raised as it is)."""
    msg = str(err)
    if "NaN or inf" not in msg:
        return None
    bad = sorted({i // step.segments for i in _bad_rows(s, step)})
    return ValueError(f"centerclip: video(s) {bad} of the batch have NaN or inf tokens at the "
                      f"input of block {step.layer} (check those videos' frames); {msg}")


def _bad_rows(s: TokenState, step: SegmentStep) -> list[int]:
    rows = s.x.shape[0] // (s.groups // step.segments)
    finite = torch.isfinite(s.x.detach()).reshape(rows, -1).all(dim=1)
    return (~finite).nonzero().flatten().tolist()


def _check_choice(field: str, value: str, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise ValueError(f"centerclip: {field}={value!r} is not one of {choices}")
