"""TempMe: temporal token merging (Shen et al., "TempMe: Video Temporal Token Merging for
Efficient Text-Video Retrieval", ICLR 2025)."""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from tokred import BackboneSpec, TokenReducer, TokenState, register_reducer
from tokred.toolkits.merge import bipartite_match, join_groups, merge_wavg

log = logging.getLogger(__name__)


@register_reducer("tempme")
class TempMe(TokenReducer):
    """ImgMe (ToMe inside each frame) early, then ClipMe: join neighbouring clips and merge.

    Per block: before the first ClipMe layer, ``r`` tokens per frame are merged after attention
    with the keys (ToMe). At a ClipMe layer, ``f`` consecutive clips of a video are joined into
    one sequence (all CLS tokens first) before attention, ``int(t * f * cross)`` tokens are merged
    with the detached input hidden states as metric, and the per-clip temporal embedding is added
    after the matching; from the first ClipMe layer on, ``int(n * intra)`` tokens are merged after
    attention with the keys. The CLS tokens of all frames are never merged; after the last join
    every video is one sequence whose first ``T`` tokens are the frame CLS tokens (the readout).

    Args:
        r: ImgMe merges per frame and block before the first ClipMe layer.
        merge_layers: 0-based ClipMe layers, strictly increasing (a sequence, or the official
            dash form ``"8-9-10"``, which also passes through ``tokred measure`` specs).
        merge_frames: clips joined at each ClipMe layer; their product must equal ``T``
            (sequence or ``"2-2-3"``).
        cross: proportion of the joined tokens merged before attention (ClipMe cross-clip).
        intra: proportion of the tokens merged after attention from the first ClipMe layer on.
        frame_pos: learn a temporal embedding per incoming clip at every ClipMe layer.
        prop_attn: proportional attention (``log(size)`` logit bias).

    Modifications (vs. LunarShen/TempMe):
        - A reducer over the shared encoder: no ``__class__`` swap of CLIP blocks, no per-model
          dict or ``.pop(0)`` schedules; state (sizes, CLS count, clips) flows in TokenState.
        - Merge counts follow from the state (``min(int(n * p), (n - cls) // 2)``), which equals
          the official integer arithmetic for the paper's schedule and stays valid when chained.
        - Matching scores in fp32 with a stable sort (deterministic on CPU and under AMP).
        - Temporal embeddings are created by :meth:`setup` (they depend on width and ``T``).
    """

    presets = {  # docs/algorithms.md §4
        "r2": {"r": 2, "merge_layers": [8, 9, 10], "merge_frames": [2, 2, 3], "cross": 0.3,
               "intra": 0.1},  # the paper's (and the default) setting
        "r10": {"r": 10, "merge_layers": [8, 9, 10], "merge_frames": [2, 2, 3], "cross": 0.3,
                "intra": 0.1},  # ViT-B/16 with ImgMe r=10
    }
    paper = {"ViT-B-32": ("r2",), "ViT-B-16": ("r2", "r10")}

    def __init__(
        self,
        r: int = 2,
        merge_layers: Sequence[int] | str = (8, 9, 10),
        merge_frames: Sequence[int] | str = (2, 2, 3),
        cross: float = 0.3,
        intra: float = 0.1,
        frame_pos: bool = True,
        prop_attn: bool = True,
    ) -> None:
        super().__init__()
        self.r = r
        self.merge_layers = _ints(merge_layers, "merge_layers")
        self.merge_frames = _ints(merge_frames, "merge_frames")
        self.cross = cross
        self.intra = intra
        self.frame_pos = frame_pos
        self.prop_attn = prop_attn
        self.temporal = nn.ParameterList()
        self.clips_in: tuple[int, ...] = ()
        self._stage: dict[int, int] = {}

    # ------------------------------------------------------------------ setup
    def setup(self, spec: BackboneSpec) -> None:
        super().setup(spec)
        self._check_options(spec)
        self.clips_in = _clips_in(self.merge_frames, spec.frames)
        self._stage = {layer: i for i, layer in enumerate(self.merge_layers)}
        self._make_temporal(spec.width)

    def _check_options(self, spec: BackboneSpec) -> None:
        if not isinstance(self.r, int) or isinstance(self.r, bool) or self.r < 0:
            raise ValueError(f"TempMe r (ImgMe merges per frame) must be a non-negative int, got {self.r!r}")
        for name in ("cross", "intra"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ValueError(f"TempMe {name}={value} must be a proportion in [0, 1]")
        if len(self.merge_layers) != len(self.merge_frames):
            raise ValueError(
                f"TempMe merge_layers {list(self.merge_layers)} ({len(self.merge_layers)} layers) "
                f"and merge_frames {list(self.merge_frames)} ({len(self.merge_frames)} factors) "
                f"must have the same length: one join factor per ClipMe layer"
            )
        bad = [v for v in self.merge_layers if not isinstance(v, int) or not 0 <= v < spec.layers]
        if bad:
            raise ValueError(f"TempMe merge_layers {bad} out of range: {spec.name} has layers "
                             f"0..{spec.layers - 1}")
        if list(self.merge_layers) != sorted(set(self.merge_layers)):
            raise ValueError(f"TempMe merge_layers {list(self.merge_layers)} must be strictly increasing")

    def _make_temporal(self, width: int) -> None:
        """One zero-initialised ``[1, clips_in, 1, width]`` parameter per ClipMe layer.

        Existing parameters of the right shape are kept (setup is idempotent); others are
        replaced, on the device and dtype of the old ones.
        """
        if not self.frame_pos:
            self.temporal = nn.ParameterList()
            return
        old = list(self.temporal)
        ref = old[0] if old else torch.empty(0)
        params = []
        for i, clips in enumerate(self.clips_in):
            shape = (1, clips, 1, width)
            if i < len(old) and tuple(old[i].shape) == shape:
                params.append(old[i])
                continue
            if i < len(old) and old[i].detach().abs().sum() > 0:
                log.warning("TempMe: temporal embedding %d changes shape %s -> %s; its trained "
                            "values are discarded", i, tuple(old[i].shape), shape)
            params.append(nn.Parameter(torch.zeros(shape, device=ref.device, dtype=ref.dtype)))
        if len(params) != len(old) or any(p is not q for p, q in zip(params, old)):
            self.temporal = nn.ParameterList(params)

    # ------------------------------------------------------------------ sites
    def pre_block(self, s: TokenState, layer: int) -> TokenState:
        stage = self._stage.get(layer)
        if stage is None:
            return s
        f = self.merge_frames[stage]
        if s.groups % f:
            raise ValueError(f"TempMe layer {layer}: cannot join {s.groups} clips per video in "
                             f"groups of {f}")
        r0 = min(int(s.tokens * f * self.cross), (s.tokens - s.prefix) * f // 2)
        prefix = s.prefix * f
        x = join_groups(s.x, s.prefix, f)  # [B*G, N, C] -> [B*G/f, f*N, C]
        size = join_groups(s.size, s.prefix, f)
        # metric: the block's input hidden states (bipartite_match detaches them)
        match = bipartite_match(x, r0, prefix) if r0 > 0 else None
        if match is not None and self.frame_pos:
            emb = self._temporal_joined(s, stage, f).to(x.dtype)  # [G/f, f*N, C]
            x = (x.view(s.batch, -1, *x.shape[1:]) + emb).flatten(0, 1)  # broadcast over B
        x, size = merge_wavg(match, x, size)
        return s.replace(x=x, size=size, groups=s.groups // f, prefix=prefix)

    def _temporal_joined(self, s: TokenState, stage: int, f: int) -> Tensor:
        """The stage's per-clip embedding laid out like one video's joined rows ``[G/f, f*N, C]``."""
        emb = self.temporal[stage]  # [1, G, 1, C]
        if emb.shape[1] != s.groups:
            raise RuntimeError(f"TempMe temporal embedding {stage} is set up for {emb.shape[1]} "
                               f"clips but the state has {s.groups}; call setup() for this T")
        clip = torch.arange(s.groups, device=emb.device)[:, None, None]  # [G, 1, 1]
        clip = join_groups(clip.expand(-1, s.tokens, 1), s.prefix, f)[..., 0]  # [G/f, f*N]
        return emb[0, clip, 0]  # [G/f, f*N, C]

    def post_attn(self, s: TokenState, layer: int, keys: Tensor) -> TokenState:
        r = self.r if layer < self._first_clipme else self.after_attn(s.tokens, s.prefix)
        match = bipartite_match(keys, r, prefix=s.prefix)
        x, size = merge_wavg(match, s.x, s.size)
        return s.replace(x=x, size=size)

    def after_attn(self, n: int, cls: int) -> int:
        """Merges after attention from the first ClipMe layer on (n tokens, cls protected)."""
        return min(int(n * self.intra), (n - cls) // 2)

    @property
    def _first_clipme(self) -> float:
        return self.merge_layers[0] if self.merge_layers else math.inf

    # ------------------------------------------------------------------ cost
    def work_macs(self, trace) -> float:
        """Matching cost per video: A x B similarities of the metric (keys or hidden states)."""
        spec = trace.spec
        head_dim = spec.width // spec.heads
        before = spec.frames * spec.tokens_per_frame  # tokens per video entering the layer
        total = 0.0
        for rec in trace.layers:
            if rec.layer in self._stage and before > rec.attn_per_video:
                n = before // rec.attn_seqs  # joined tokens per sequence, before the r0 merge
                total += rec.attn_seqs * (n // 2) ** 2 * spec.width
            if rec.mlp_tokens < rec.attn_tokens:
                total += rec.attn_seqs * (rec.attn_tokens // 2) ** 2 * head_dim
            before = rec.mlp_per_video
        return total

    def extra_repr(self) -> str:
        return (f"r={self.r}, merge_layers={list(self.merge_layers)}, "
                f"merge_frames={list(self.merge_frames)}, cross={self.cross}, intra={self.intra}, "
                f"frame_pos={self.frame_pos}, prop_attn={self.prop_attn}")


def _ints(value: Sequence[int] | str, name: str) -> tuple[int, ...]:
    """A tuple from a sequence or the official dash form (``"8-9-10"``)."""
    if isinstance(value, str):
        try:
            return tuple(int(v) for v in value.split("-"))
        except ValueError:
            raise ValueError(f"TempMe {name}={value!r}: use ints joined by '-' (e.g. '8-9-10') "
                             f"or a list") from None
    return tuple(value)


def _clips_in(merge_frames: Sequence[int], frames: int) -> tuple[int, ...]:
    """Clips per video entering each ClipMe layer; raises if the joins do not tile ``frames``."""
    bad = [f for f in merge_frames if not isinstance(f, int) or isinstance(f, bool) or f < 1]
    if bad:
        raise ValueError(f"TempMe merge_frames {list(merge_frames)}: every factor must be a "
                         f"positive int, got {bad}")
    clips, out, why = frames, [], ""
    for f in merge_frames:
        if clips % f and not why:
            why = f" (factor {f} does not divide the {clips} clips present at its layer)"
        out.append(clips)
        clips //= f
    product = math.prod(merge_frames)
    if product != frames:
        raise ValueError(f"TempMe merge_frames {list(merge_frames)} multiply to {product} but the "
                         f"video has {frames} frames{why}; their product must equal T={frames} "
                         f"so that each video ends as one sequence")
    return tuple(out)
