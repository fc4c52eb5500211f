"""The backbone interface the encoder drives, and attention computed from a block's weights.

An adapter exposes the seams the encoder drives (embed, per-block attention and MLP, readout)
by calling the host model's own public submodules; nothing in the host model is modified.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from tokred.spec import BackboneSpec


class UnsupportedBackbone(ValueError):
    """The tower uses a feature the token-reduction encoder cannot drive."""


class ViTAdapter(nn.Module):
    """Interface of a backbone adapter (see :class:`~tokred.backbones.openclip.OpenCLIPVisual`)."""

    spec: BackboneSpec

    def embed(self, images: Tensor) -> Tensor:
        """``[BT, 3, H, W]`` -> ``[BT, 1 + patches, C]`` (CLS first, positions added, pre-norm)."""
        raise NotImplementedError

    def attention(self, layer: int, x: Tensor, bias: Tensor | None) -> tuple[Tensor, Tensor]:
        """Residual branch of block ``layer``'s attention and the head-mean keys ``[R, N, d]``."""
        raise NotImplementedError

    def mlp(self, layer: int, x: Tensor) -> Tensor:
        """Residual branch of block ``layer``'s MLP."""
        raise NotImplementedError

    def readout(self, cls: Tensor) -> Tensor:
        """CLS tokens ``[..., C]`` -> embeddings ``[..., D]``."""
        raise NotImplementedError


def mha_attention(
    attn: nn.MultiheadAttention, x: Tensor, bias: Tensor | None
) -> tuple[Tensor, Tensor]:
    """Self-attention with ``attn``'s weights; returns (output ``[R,N,C]``, mean keys ``[R,N,d]``).

    Args:
        attn: a batch-agnostic ``nn.MultiheadAttention`` with a fused in-projection.
        x: ``[R, N, C]`` normalised input.
        bias: optional additive logit bias broadcastable to ``[R, H, N, N]``.
    """
    rows, n, c = x.shape
    h = attn.num_heads
    qkv = F.linear(x, attn.in_proj_weight, attn.in_proj_bias)  # [R, N, 3C]
    q, k, v = qkv.view(rows, n, 3, h, c // h).permute(2, 0, 3, 1, 4)  # 3 x [R, H, N, d]
    if bias is not None:
        bias = bias.to(q.dtype)
    out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias)  # [R, H, N, d]
    out = out.transpose(1, 2).reshape(rows, n, c)
    return attn.out_proj(out), k.mean(dim=1)
