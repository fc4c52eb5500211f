"""DropHalf: a deliberately simple reducer showing the whole plugin path.

At the input of block ``layer`` it keeps every ``stride``-th patch token of every frame (raster
order, starting with the first patch) and drops the rest; the CLS token is always kept. It is
deterministic, has no parameters, and changes nothing else, so its token schedule is exact:
``1 + ceil(P / stride)`` tokens per frame from ``layer`` on (B/32, stride 2: 50 -> 26).
"""

from __future__ import annotations

import torch

from tokred import BackboneSpec, TokenReducer, TokenState, register_reducer
from tokred.toolkits.merge import keep_tokens


@register_reducer("drop_half")
class DropHalf(TokenReducer):
    """Keep every ``stride``-th patch token per frame at the input of block ``layer``.

    Args:
        layer: 0-based block at whose input tokens are dropped.
        stride: keep one patch in ``stride`` (2 = half).
    """

    def __init__(self, layer: int = 6, stride: int = 2) -> None:
        super().__init__()
        self.layer = layer
        self.stride = stride

    def setup(self, spec: BackboneSpec) -> None:
        super().setup(spec)
        if not 0 <= self.layer < spec.layers:
            raise ValueError(f"drop_half layer={self.layer} is outside the {spec.layers} blocks "
                             f"of {spec.name}; use 0..{spec.layers - 1}")
        if not 1 <= self.stride <= spec.patches:
            raise ValueError(f"drop_half stride={self.stride} must be in 1..{spec.patches}")

    def pre_block(self, s: TokenState, layer: int) -> TokenState:
        if layer != self.layer:
            return s
        patches = torch.arange(s.prefix, s.tokens, self.stride, device=s.x.device)
        idx = torch.cat([torch.arange(s.prefix, device=s.x.device), patches])  # [K]
        idx = idx.expand(s.x.shape[0], -1)  # [R, K]
        return s.replace(x=keep_tokens(s.x, idx), size=keep_tokens(s.size, idx))

    def extra_repr(self) -> str:
        return f"layer={self.layer}, stride={self.stride}"
