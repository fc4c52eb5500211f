"""Temporal segments at a block's input: the schedule CenterCLIP and its baselines share, and
the two baselines from the CenterCLIP paper, token-wise pooling and sparse sampling.

All three cut the clip into consecutive segments at the input of a block (Zhao et al.,
"CenterCLIP: Token Clustering for Efficient Text-Video Retrieval", SIGIR 2022): CenterCLIP
(:mod:`tokred_methods.centerclip`) keeps each segment's medoid tokens, the baselines choose the
kept tokens without looking at them. docs/algorithms.md §3.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Union

import torch
from torch import Tensor

from tokred import BackboneSpec, TokenReducer, TokenState, register_reducer
from tokred.toolkits.merge import keep_tokens

IntOrList = Union[int, list]


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


class SegmentReducer(TokenReducer):
    """Base of the segment reducers: ``layer`` / ``segments`` (/ ``k``) resolved by
    :func:`plan_segments` at setup, one :class:`SegmentStep` per clustering layer."""

    name = "segments"

    def __init__(self, layer: IntOrList, segments: IntOrList, k: IntOrList | None) -> None:
        super().__init__()
        self.layer, self.segments, self.k = layer, segments, k
        self.steps: dict[int, SegmentStep] = {}

    def setup(self, spec: BackboneSpec) -> None:
        super().setup(spec)
        steps = plan_segments(spec, self.layer, self.segments, self.k, name=self.name)
        self.steps = {st.layer: st for st in steps}

    def _join(self, s: TokenState, step: SegmentStep) -> int:
        """Incoming sequences per segment; raises if the state does not match the schedule."""
        if s.groups % step.segments:
            raise ValueError(f"{self.name}: {s.groups} sequences per video at layer {step.layer} "
                             f"cannot be cut into segments={step.segments}")
        return s.groups // step.segments

    def extra_repr(self) -> str:
        k = "" if self.k is None else f", k={self.k!r}"
        return f"layer={self.layer!r}, segments={self.segments!r}{k}"


@register_reducer("pooling")
class SegmentPooling(SegmentReducer):
    """Average the ``fd`` frames of each segment token-wise (CLS included).

    At the input of block ``layer`` the frames of a segment collapse into one frame-shaped
    sequence: token ``i`` of the segment is the mean of token ``i`` of its ``fd`` frames. B/32,
    12 frames, ``segments=4``: 600 -> 4 x 50 = 200 tokens per video.

    Args:
        layer: block (0-based) or list of blocks at whose input pooling happens.
        segments: segments per video, one value or one per layer.

    Modifications (vs. the official ``pooling`` baseline): sizes are tracked (a pooled token
    stands for ``fd`` patches), although no proportional attention is used.
    """

    name = "pooling"
    presets = {"B6-4": {"layer": 6, "segments": 4}, "B6-3": {"layer": 6, "segments": 3}}
    paper = {"ViT-B-32": ("B6-4",), "ViT-B-16": ("B6-4",)}

    def __init__(self, layer: IntOrList = 6, segments: IntOrList = 4) -> None:
        super().__init__(layer, segments, None)

    def pre_block(self, s: TokenState, layer: int) -> TokenState:
        step = self.steps.get(layer)
        if step is None:
            return s
        join = self._join(s, step)
        rows, n, c = s.x.shape
        x = s.x.reshape(rows // join, join, n, c).mean(dim=1)  # [B*S, N, C]
        size = s.size.reshape(rows // join, join, n, 1).sum(dim=1)
        return s.replace(x=x, size=size, groups=step.segments)


@register_reducer("sparse")
class SparseSampling(SegmentReducer):
    """Keep ``k`` evenly spaced patch tokens of each segment; segment CLS = mean of frame CLS.

    A segment's points are its ``fd * patches`` patch tokens (frame-major, raster order); token
    ``int(tick / 2 + tick * i)`` with ``tick = points / k`` is kept for ``i = 0..k-1`` (the
    centre of each of ``k`` equal strides: deterministic, the same for every video).

    Args:
        layer: block (0-based) or list of blocks at whose input sampling happens.
        segments: segments per video, one value or one per layer.
        k: tokens kept per segment, one value or one per layer.

    Modifications (vs. the official ``sparse_sampling`` baseline): the uniform, non-random
    offsets are used in training too (the official code jitters them during training), so
    training and evaluation see the same tokens; kept tokens get size 1.
    """

    name = "sparse"
    presets = {"B6-4-49": {"layer": 6, "segments": 4, "k": 49},
               "B6-4-160": {"layer": 6, "segments": 4, "k": 160}}
    paper = {"ViT-B-32": ("B6-4-49",), "ViT-B-16": ("B6-4-160",)}

    def __init__(self, layer: IntOrList = 6, segments: IntOrList = 4, k: IntOrList = 49) -> None:
        super().__init__(layer, segments, k)

    def pre_block(self, s: TokenState, layer: int) -> TokenState:
        step = self.steps.get(layer)
        if step is None:
            return s
        cls, points = split_segments(s.x, s.prefix, self._join(s, step))  # [B*S, p|n, C]
        idx = uniform_offsets(points.shape[1], step.k, device=points.device)
        x = torch.cat([cls, keep_tokens(points, idx.expand(points.shape[0], -1))], dim=1)
        return s.replace(x=x, size=x.new_ones(x.shape[0], x.shape[1], 1), groups=step.segments)


def uniform_offsets(total: int, k: int, device: torch.device | str | None = None) -> torch.Tensor:
    """``k`` evenly spaced indices in ``[0, total)``: the centre of each of ``k`` equal strides."""
    if not 1 <= k <= total:
        raise ValueError(f"sparse: need 1 <= k <= {total} tokens, got k={k}")
    tick = total / k
    return torch.tensor([int(tick / 2 + tick * i) for i in range(k)], device=device)[None]


