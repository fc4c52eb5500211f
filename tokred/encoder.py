"""VideoEncoder: drives a ViT's blocks frame-batch by frame-batch with the reducer sites."""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from tokred.backbones.base import ViTAdapter
from tokred.reducer import TokenReducer
from tokred.spec import BackboneSpec
from tokred.state import TokenState


@dataclass(frozen=True)
class LayerRecord:
    """Tokens of one block, per video: ``seqs`` sequences of ``tokens`` tokens at each site."""

    layer: int
    attn_seqs: int
    attn_tokens: int
    mlp_seqs: int
    mlp_tokens: int

    @property
    def attn_per_video(self) -> int:
        return self.attn_seqs * self.attn_tokens

    @property
    def mlp_per_video(self) -> int:
        return self.mlp_seqs * self.mlp_tokens


@dataclass
class Trace:
    """Per-layer token counts of one forward (identical for every video of the batch)."""

    spec: BackboneSpec
    layers: list[LayerRecord] = field(default_factory=list)
    out_seqs: int = 0
    out_tokens: int = 0

    @property
    def tokens_out(self) -> int:
        """Tokens per video leaving the last block."""
        return self.out_seqs * self.out_tokens

    def attn_tokens(self) -> list[int]:
        """Tokens per video entering attention, per layer."""
        return [r.attn_per_video for r in self.layers]

    def mlp_tokens(self) -> list[int]:
        """Tokens per video entering the MLP, per layer."""
        return [r.mlp_per_video for r in self.layers]

    def to_dict(self) -> dict:
        return {
            "attn_seqs": [r.attn_seqs for r in self.layers],
            "attn_tokens": [r.attn_tokens for r in self.layers],
            "mlp_seqs": [r.mlp_seqs for r in self.layers],
            "mlp_tokens": [r.mlp_tokens for r in self.layers],
            "out_seqs": self.out_seqs,
            "out_tokens": self.out_tokens,
        }


class VideoEncoder(nn.Module):
    """CLIP4Clip-style meanP video encoder with a token reducer inside the ViT.

    Args:
        backbone: a :class:`~tokred.backbones.ViTAdapter` (e.g. ``OpenCLIPVisual(model.visual)``).
        reducer: the token reducer (identity when None).
        frames: clip length ``T`` the reducer is set up for; another ``T`` at forward time
            re-runs the reducer's setup (which raises if its schedule cannot apply).
    """

    def __init__(
        self, backbone: ViTAdapter, reducer: TokenReducer | None = None, frames: int = 12
    ) -> None:
        super().__init__()
        self.backbone = backbone
        self.reducer = reducer if reducer is not None else TokenReducer()
        self.reducer.setup(backbone.spec.with_frames(frames))

    @property
    def spec(self) -> BackboneSpec:
        return self.reducer.spec

    def forward(self, video: Tensor, trace: Trace | None = None) -> Tensor:
        """``[B, T, 3, H, W]`` -> L2-normalised video embeddings ``[B, D]``."""
        return mean_pool(self.encode_frames(video, trace))

    def encode_frames(self, video: Tensor, trace: Trace | None = None) -> Tensor:
        """``[B, T, 3, H, W]`` -> readout embeddings ``[B, K, D]`` (K = frames or segments)."""
        s = self.embed(video)
        for layer in range(self.backbone.spec.layers):
            s = self.block(s, layer, trace)
        if trace is not None:
            trace.out_seqs, trace.out_tokens = s.groups, s.tokens
        cls = s.x[:, : s.prefix]  # [B*G, P, C]
        cls = cls.reshape(s.batch, s.groups * s.prefix, cls.shape[-1])  # [B, G*P, C]
        return self.backbone.readout(cls)

    def embed(self, video: Tensor) -> TokenState:
        """Check the input, set up the reducer for its T, and embed every frame."""
        frames = self._check_video(video)
        if frames != self.reducer.spec.frames:
            self.reducer.setup(self.backbone.spec.with_frames(frames))
        x = self.backbone.embed(video.flatten(0, 1))  # [B*T, 1+P, C]
        if x.shape[1] != self.backbone.spec.tokens_per_frame and not _is_identity(self.reducer):
            raise ValueError(
                f"the backbone returned {x.shape[1]} tokens per frame instead of "
                f"{self.backbone.spec.tokens_per_frame} (patch dropout in training mode?); "
                f"reducer {type(self.reducer).__name__} needs every patch: train it with "
                "patch_dropout=0, or use patch dropout with reducer 'none' only"
            )
        return TokenState.start(x, frames)

    def block(self, s: TokenState, layer: int, trace: Trace | None = None) -> TokenState:
        """One transformer block with both reducer sites."""
        s = self.reducer.pre_block(s, layer)
        attn_seqs, attn_tokens = s.groups, s.tokens
        bias = s.size.log().transpose(1, 2)[:, None] if self.reducer.prop_attn else None
        out, keys = self.backbone.attention(layer, s.x, bias)  # bias [R, 1, 1, N]
        s = self.reducer.post_attn(s.replace(x=s.x + out), layer, keys)
        if trace is not None:
            trace.layers.append(LayerRecord(layer, attn_seqs, attn_tokens, s.groups, s.tokens))
        return s.replace(x=s.x + self.backbone.mlp(layer, s.x))

    def trace(self, frames: int | None = None, batch: int = 1) -> Trace:
        """Token trace of a forward on random input (token counts do not depend on content)."""
        spec = self.backbone.spec
        t = frames or self.reducer.spec.frames
        p = next(self.parameters())
        video = torch.randn(batch, t, 3, spec.image_size, spec.image_size, dtype=p.dtype, device=p.device)
        tr = Trace(spec.with_frames(t))
        with torch.no_grad():
            self.encode_frames(video, tr)
        return tr

    def _check_video(self, video: Tensor) -> int:
        spec = self.backbone.spec
        if not isinstance(video, Tensor):
            raise TypeError(f"VideoEncoder expects a torch.Tensor [B, T, 3, H, W], got "
                            f"{type(video).__name__}; convert with torch.from_numpy(x) and "
                            f"preprocess with tokred.data.clip_preprocess")
        self._check_dtype(video)
        if video.dim() != 5 or video.shape[2] != 3:
            raise ValueError(
                f"VideoEncoder expects video [B, T, 3, H, W], got shape {tuple(video.shape)}; "
                f"for one video use video[None], for images use images[:, None] (T=1)"
            )
        if video.shape[-1] != spec.image_size or video.shape[-2] != spec.image_size:
            raise ValueError(
                f"{spec.name} takes {spec.image_size}x{spec.image_size} frames, got "
                f"{video.shape[-2]}x{video.shape[-1]}; preprocess with tokred.data.transforms"
            )
        return video.shape[1]

    def _check_dtype(self, video: Tensor) -> None:
        """Float frames in the weights' dtype (any float under autocast, which casts them)."""
        if not video.is_floating_point():
            raise ValueError(f"VideoEncoder expects float frames normalised as CLIP expects, got "
                             f"{video.dtype}; preprocess uint8 frames with "
                             f"tokred.data.clip_preprocess (it returns float32 [T, 3, S, S])")
        weights = next(self.backbone.parameters(), None)
        if weights is None or video.dtype == weights.dtype:
            return
        if not torch.is_autocast_enabled(video.device.type):
            raise ValueError(f"video is {video.dtype} but the model's weights are "
                             f"{weights.dtype}; pass video.to({weights.dtype}) or run under "
                             f"torch.autocast")


def _is_identity(reducer: TokenReducer) -> bool:
    """True when ``reducer`` overrides neither site (it keeps any number of tokens)."""
    cls = type(reducer)
    return cls.pre_block is TokenReducer.pre_block and cls.post_attn is TokenReducer.post_attn


def mean_pool(emb: Tensor) -> Tensor:
    """Normalise each frame embedding, mean over frames, normalise: ``[B, K, D]`` -> ``[B, D]``."""
    return F.normalize(F.normalize(emb, dim=-1).mean(dim=1), dim=-1)
