"""ToMe: Token Merging (Bolya et al., "Token Merging: Your ViT But Faster", ICLR 2023)."""

from __future__ import annotations

from typing import Union

from torch import Tensor

from tokred import BackboneSpec, TokenReducer, TokenState, register_reducer
from tokred.toolkits.merge import bipartite_match, merge_wavg

RSpec = Union[int, list, tuple]


def parse_r(r: RSpec, layers: int, inflection: float = 0.0) -> list[int]:
    """Per-layer merge counts from ToMe's three forms.

    Args:
        r: an int (the same in every layer, or the mean of a linear schedule when
            ``inflection`` != 0), a per-layer list (zero-padded to ``layers``), or a tuple
            ``(r, inflection)``.
        layers: number of blocks.
        inflection: slope of the linear schedule: it runs from ``int(r * (1 - inflection))``
            to ``2r - int(r * (1 - inflection))``.

    Raises:
        ValueError: negative counts, a list longer than the model, or non-integers.
    """
    if isinstance(r, tuple):
        if len(r) != 2:
            raise ValueError(f"ToMe r as a tuple must be (r, inflection), got {r!r}")
        r, inflection = r
    if isinstance(r, list):
        if len(r) > layers:
            raise ValueError(f"ToMe r lists {len(r)} layers but the backbone has {layers}; "
                             f"give at most {layers} values")
        bad = [v for v in r if not isinstance(v, int) or v < 0]
        if bad:
            raise ValueError(f"ToMe r values must be non-negative ints, got {bad}")
        return list(r) + [0] * (layers - len(r))
    if not isinstance(r, int) or isinstance(r, bool) or r < 0:
        raise ValueError(f"ToMe r must be a non-negative int, a list or (r, inflection); got {r!r}")
    lo = int(r * (1.0 - inflection))
    hi = 2 * r - lo
    step = (hi - lo) / (layers - 1) if layers > 1 else 0.0
    return [int(lo + step * i) for i in range(layers)]


@register_reducer("tome")
class ToMe(TokenReducer):
    """Bipartite soft matching inside every frame, after attention, in every block.

    Args:
        r: tokens removed per frame and block: int, per-layer list, or ``(r, inflection)``.
        inflection: see :func:`parse_r` (0 = constant schedule).
        prop_attn: add ``log(size)`` to the attention logits (on by default, as in ToMe).

    Modifications (vs. facebookresearch/ToMe):
        - State (sizes, schedule) flows through :class:`TokenState` arguments; no per-model dict,
          no ``.pop(0)`` schedule, no class swapping of the host blocks.
        - Matching scores are computed in fp32 and sorted stably, so CPU runs are deterministic
          and AMP runs match fp32 matching.
        - Source-token tracing (``trace_source``) and distillation tokens are not implemented.
    """

    presets = {  # docs/algorithms.md §2
        "r2": {"r": 2},  # TempMe's ImgMe merge count on ViT-B/32 video frames
        "r3": {"r": 3},
        "r4": {"r": 4},
        "r10": {"r": 10},  # ViT-B/16 video (TempMe's B/16 setting)
        "r13": {"r": 13},  # ToMe Table (ViT-B/16 AugReg images)
        "r16": {"r": 16},  # ToMe benchmark notebook, ViT-B/16 images: 2.05x on a V100
    }
    paper = {"ViT-B-32": ("r2",), "ViT-B-16": ("r10",), "timm:vit_base_patch16_224": ("r16",)}

    def __init__(self, r: RSpec = 2, inflection: float = 0.0, prop_attn: bool = True) -> None:
        super().__init__()
        self.r = r
        self.inflection = inflection
        self.prop_attn = prop_attn
        self.schedule: list[int] = []

    def setup(self, spec: BackboneSpec) -> None:
        super().setup(spec)
        self.schedule = parse_r(self.r, spec.layers, self.inflection)

    def post_attn(self, s: TokenState, layer: int, keys: Tensor) -> TokenState:
        match = bipartite_match(keys, self.schedule[layer], prefix=s.prefix)
        x, size = merge_wavg(match, s.x, s.size)
        return s.replace(x=x, size=size)

    def work_macs(self, trace) -> float:
        d = trace.spec.width // trace.spec.heads
        return float(sum(rec.attn_seqs * (rec.attn_tokens // 2) ** 2 * d
                         for rec, r in zip(trace.layers, self.schedule) if r > 0))

    def extra_repr(self) -> str:
        return f"r={self.r!r}, inflection={self.inflection}, prop_attn={self.prop_attn}"
