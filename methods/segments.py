"""Segment-level baselines from the CenterCLIP paper: token-wise pooling and sparse sampling.

Both cut the clip into consecutive segments at the input of a block, as CenterCLIP does
(Zhao et al., "CenterCLIP: Token Clustering for Efficient Text-Video Retrieval", SIGIR 2022),
but choose the kept tokens without looking at them.
"""

from __future__ import annotations

from typing import Union

import torch

from tokred import BackboneSpec, TokenReducer, TokenState, register_reducer
from tokred.cluster import SegmentStep, plan_segments, rows_gather, split_segments

IntOrList = Union[int, list]


class _SegmentReducer(TokenReducer):
    """Shared schedule handling: ``layer`` / ``segments`` (/ ``k``) resolved by plan_segments."""

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
        if s.groups % step.segments:
            raise ValueError(f"{self.name}: {s.groups} sequences per video at layer {step.layer} "
                             f"cannot be cut into segments={step.segments}")
        return s.groups // step.segments

    def extra_repr(self) -> str:
        k = "" if self.k is None else f", k={self.k!r}"
        return f"layer={self.layer!r}, segments={self.segments!r}{k}"


@register_reducer("pooling")
class SegmentPooling(_SegmentReducer):
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
class SparseSampling(_SegmentReducer):
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

    def __init__(self, layer: IntOrList = 6, segments: IntOrList = 4, k: IntOrList = 49) -> None:
        super().__init__(layer, segments, k)

    def pre_block(self, s: TokenState, layer: int) -> TokenState:
        step = self.steps.get(layer)
        if step is None:
            return s
        cls, points = split_segments(s.x, s.prefix, self._join(s, step))  # [B*S, p|n, C]
        idx = uniform_offsets(points.shape[1], step.k, device=points.device)
        x = torch.cat([cls, rows_gather(points, idx.expand(points.shape[0], -1))], dim=1)
        return s.replace(x=x, size=x.new_ones(x.shape[0], x.shape[1], 1), groups=step.segments)


def uniform_offsets(total: int, k: int, device: torch.device | str | None = None) -> torch.Tensor:
    """``k`` evenly spaced indices in ``[0, total)``: the centre of each of ``k`` equal strides."""
    if not 1 <= k <= total:
        raise ValueError(f"sparse: need 1 <= k <= {total} tokens, got k={k}")
    tick = total / k
    return torch.tensor([int(tick / 2 + tick * i) for i in range(k)], device=device)[None]
