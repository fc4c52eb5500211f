"""Adapter over open_clip's ViT image tower: the only place that knows its module layout.

Attention is computed from each block's ``nn.MultiheadAttention`` weights (see
:func:`tokred.backbones.base.mha_attention`) so that it can return the head-averaged keys and
add a ``log(size)`` bias; nothing in the host model is modified.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from tokred.backbones.base import UnsupportedBackbone, ViTAdapter, mha_attention
from tokred.spec import BackboneSpec

# open_clip releases whose ViT blocks this adapter drives (nn.MultiheadAttention with a fused
# in-projection); pyproject bounds open_clip_torch to the same range.
SUPPORTED_OPEN_CLIP = "open_clip_torch >= 2.20, < 4 (tested with 3.3.0)"


class OpenCLIPVisual(ViTAdapter):
    """Adapter over an open_clip ``VisionTransformer`` with class-token pooling.

    Args:
        visual: ``model.visual`` of an open_clip CLIP (kept by reference, never modified).
        name: backbone name for records.

    Raises:
        UnsupportedBackbone: naming the feature (attentional pooling, average pooling,
            custom attention blocks, non-square grids, ...).
    """

    def __init__(self, visual: nn.Module, name: str = "open_clip") -> None:
        super().__init__()
        _check_open_clip_visual(visual)
        self.visual = visual
        blocks = visual.transformer.resblocks
        first = blocks[0]
        gh, gw = visual.grid_size
        ph, _ = _pair(visual.patch_size)
        ih, _ = _pair(visual.image_size)
        self.spec = BackboneSpec(
            name=name,
            width=first.ln_1.normalized_shape[0],
            layers=len(blocks),
            heads=first.attn.num_heads,
            mlp_hidden=first.mlp.c_fc.out_features,
            patch_size=ph,
            image_size=ih,
            grid=gh,
        )

    @property
    def blocks(self) -> nn.ModuleList:
        return self.visual.transformer.resblocks

    def embed(self, images: Tensor) -> Tensor:
        v = self.visual
        x = v.conv1(images)  # [BT, C, g, g]
        x = x.flatten(2).transpose(1, 2)  # [BT, g*g, C]
        cls = v.class_embedding.to(x.dtype).expand(x.shape[0], 1, -1)
        x = torch.cat([cls, x], dim=1) + v.positional_embedding.to(x.dtype)
        drop = getattr(v, "patch_dropout", None)  # open_clip's FLIP patch dropout (train only)
        return v.ln_pre(drop(x) if drop is not None else x)

    def attention(self, layer: int, x: Tensor, bias: Tensor | None) -> tuple[Tensor, Tensor]:
        blk = self.blocks[layer]
        out, keys = mha_attention(blk.attn, blk.ln_1(x), bias)
        return blk.ls_1(out), keys

    def mlp(self, layer: int, x: Tensor) -> Tensor:
        blk = self.blocks[layer]
        return blk.ls_2(blk.mlp(blk.ln_2(x)))

    def readout(self, cls: Tensor) -> Tensor:
        x = self.visual.ln_post(cls)
        return x @ self.visual.proj if self.visual.proj is not None else x


def _pair(v) -> tuple[int, int]:
    return tuple(v) if isinstance(v, (tuple, list)) else (v, v)


def _check_open_clip_visual(visual: nn.Module) -> None:
    """Refuse towers whose forward the encoder would not reproduce exactly."""
    name = type(visual).__name__
    if not hasattr(visual, "transformer") or not hasattr(visual, "conv1"):
        raise UnsupportedBackbone(
            f"{name} is not an open_clip VisionTransformer (ViT); token reduction needs a ViT "
            f"image tower (ModifiedResNet, timm and HF towers are not supported here)"
        )
    if getattr(visual, "attn_pool", None) is not None:
        raise UnsupportedBackbone(f"{name} uses attentional pooling (CoCa); need class-token pooling")
    if getattr(visual, "pool_type", "tok") != "tok":
        raise UnsupportedBackbone(
            f"{name} pools with pool_type={visual.pool_type!r}; need class-token pooling ('tok')"
        )
    gh, gw = visual.grid_size
    if gh != gw:
        raise UnsupportedBackbone(f"{name} has a non-square patch grid {gh}x{gw}")
    if not isinstance(visual.patch_dropout, nn.Identity):
        raise UnsupportedBackbone(f"{name} uses patch dropout; build the model with patch_dropout=0")
    for i, blk in enumerate(visual.transformer.resblocks):
        if not isinstance(getattr(blk, "attn", None), nn.MultiheadAttention):
            raise UnsupportedBackbone(
                f"{name} block {i} uses a custom attention ({type(blk).__name__}: qk-norm, "
                f"scaled cosine or head scaling, or an open_clip release that replaced "
                f"nn.MultiheadAttention); need nn.MultiheadAttention blocks, as in "
                f"{SUPPORTED_OPEN_CLIP}"
            )
        if blk.attn.in_proj_weight is None:
            raise UnsupportedBackbone(f"{name} block {i} has separate q/k/v projections")
        if hasattr(blk, "ln_1_kv") or not isinstance(getattr(blk, "ln_attn", nn.Identity()), nn.Identity):
            raise UnsupportedBackbone(f"{name} block {i} uses cross-attention or an attention norm")
