"""Adapter over timm ``VisionTransformer`` models, beside :class:`tokred.backbones.OpenCLIPVisual`.

It exposes the same seams (embed, per-block attention with head-mean keys and a log-size bias,
MLP, readout) by calling the timm model's own submodules, so every reducer runs unchanged on
timm ViTs; with ``T = 1`` (``video = images[:, None]``) this is ToMe's image protocol. Nothing in
the timm model is modified. Models whose forward the encoder would not reproduce exactly are
refused with :class:`~tokred.backbones.UnsupportedBackbone` naming the feature.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor, nn

from tokred.backbones.base import UnsupportedBackbone, ViTAdapter
from tokred.spec import BackboneSpec


class TimmViT(ViTAdapter):
    """Adapter over a timm ``VisionTransformer`` with class-token pooling.

    Args:
        model: a timm ``VisionTransformer`` (kept by reference, never modified).
        name: backbone name for records (e.g. ``"timm:vit_base_patch16_224"``).
        pre_logits: readout stops before the classifier (``forward_head(pre_logits=True)``);
            otherwise the head is applied (identity when the model has ``num_classes=0``).

    Raises:
        UnsupportedBackbone: register tokens, no class token, ``global_pool != 'token'``,
            patch dropout, non-standard blocks, qk-norm, scaled or gated attention, gated MLPs,
            non-square grids.
    """

    def __init__(self, model: nn.Module, name: str = "timm", pre_logits: bool = False) -> None:
        super().__init__()
        _check_timm_vit(model)
        self.model = model
        self.pre_logits = pre_logits
        first = model.blocks[0]
        pe = model.patch_embed
        self.spec = BackboneSpec(
            name=name,
            width=model.embed_dim,
            layers=len(model.blocks),
            heads=first.attn.num_heads,
            mlp_hidden=first.mlp.fc1.out_features,
            patch_size=pe.patch_size[0],
            image_size=pe.img_size[0],
            grid=pe.grid_size[0],
        )

    def embed(self, images: Tensor) -> Tensor:
        m = self.model
        x = m.patch_embed(images)  # [BT, g*g, C]
        x = m._pos_embed(x)  # [BT, 1+g*g, C]: CLS prepended, positions added, pos_drop
        return m.norm_pre(m.patch_drop(x))

    def attention(self, layer: int, x: Tensor, bias: Tensor | None) -> tuple[Tensor, Tensor]:
        blk = self.model.blocks[layer]
        attn = blk.attn
        rows, n, c = x.shape
        qkv = attn.qkv(blk.norm1(x))  # [R, N, 3*H*d]
        q, k, v = qkv.view(rows, n, 3, attn.num_heads, attn.head_dim).permute(2, 0, 3, 1, 4)
        if bias is not None:
            bias = bias.to(q.dtype)  # [R, 1, 1, N] log-size bias on every key
        p = attn.attn_drop.p if self.training else 0.0
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=bias, dropout_p=p)  # [R, H, N, d]
        out = out.transpose(1, 2).reshape(rows, n, c)  # [R, N, H*d]
        out = attn.proj_drop(attn.proj(out))
        return blk.drop_path1(blk.ls1(out)), k.mean(dim=1)

    def mlp(self, layer: int, x: Tensor) -> Tensor:
        blk = self.model.blocks[layer]
        return blk.drop_path2(blk.ls2(blk.mlp(blk.norm2(x))))

    def readout(self, cls: Tensor) -> Tensor:
        lead = cls.shape[:-1]
        x = self.model.norm(cls.reshape(-1, 1, cls.shape[-1]))  # [M, 1, C]: one-token sequences
        x = self.model.forward_head(x, pre_logits=self.pre_logits)  # [M, D]
        return x.reshape(*lead, x.shape[-1])


def _check_timm_vit(model: nn.Module) -> None:
    """Refuse timm models whose forward the encoder would not reproduce exactly."""
    from timm.layers import Mlp
    from timm.models.vision_transformer import Attention, Block, VisionTransformer

    name = type(model).__name__
    if not isinstance(model, VisionTransformer):
        raise UnsupportedBackbone(f"{name} is not a timm VisionTransformer; TimmViT needs one")
    if model.cls_token is None:
        raise UnsupportedBackbone(f"{name} has no class token (class_token=False); need one")
    if getattr(model, "num_reg_tokens", 0) or model.num_prefix_tokens != 1:
        raise UnsupportedBackbone(
            f"{name} has {model.num_prefix_tokens} prefix tokens (register tokens: "
            f"{getattr(model, 'num_reg_tokens', 0)}); the encoder protects exactly one CLS token"
        )
    if model.global_pool != "token" or getattr(model, "attn_pool", None) is not None:
        raise UnsupportedBackbone(
            f"{name} pools with global_pool={model.global_pool!r}; need class-token pooling "
            f"('token'): build it with global_pool='token'"
        )
    if not isinstance(model.patch_drop, nn.Identity):
        raise UnsupportedBackbone(f"{name} uses patch dropout; build it with patch_drop_rate=0")
    gh, gw = model.patch_embed.grid_size
    if gh != gw or getattr(model, "dynamic_img_size", False):
        raise UnsupportedBackbone(f"{name} has a non-square or dynamic patch grid ({gh}x{gw})")
    for i, blk in enumerate(model.blocks):
        _check_block(name, i, blk, Block, Attention, Mlp)


def _check_block(name: str, i: int, blk: nn.Module, block_cls, attn_cls, mlp_cls) -> None:
    where = f"{name} block {i}"
    if type(blk) is not block_cls:
        raise UnsupportedBackbone(f"{where} is a {type(blk).__name__} (parallel or post-norm "
                                  f"blocks are not reproduced); need timm's pre-norm Block")
    attn = blk.attn
    if type(attn) is not attn_cls:
        raise UnsupportedBackbone(f"{where} uses {type(attn).__name__} (e.g. RoPE attention); "
                                  f"need timm's plain Attention")
    if not (isinstance(attn.q_norm, nn.Identity) and isinstance(attn.k_norm, nn.Identity)):
        raise UnsupportedBackbone(f"{where} uses qk-norm, which the encoder does not reproduce")
    if attn.num_heads * attn.head_dim != blk.norm1.normalized_shape[0]:
        raise UnsupportedBackbone(f"{where} has attention width {attn.num_heads}x{attn.head_dim} "
                                  f"!= residual width {blk.norm1.normalized_shape[0]}")
    if not isinstance(getattr(attn, "norm", nn.Identity()), nn.Identity):
        raise UnsupportedBackbone(f"{where} uses scale_attn_norm (a norm before the projection)")
    if getattr(attn, "gate", None) is not None:
        raise UnsupportedBackbone(f"{where} uses gated attention")
    if abs(attn.scale - attn.head_dim**-0.5) > 1e-12:
        raise UnsupportedBackbone(f"{where} scales logits by {attn.scale}, not head_dim**-0.5")
    if type(blk.mlp) is not mlp_cls or not isinstance(getattr(blk.mlp, "norm", nn.Identity()), nn.Identity):
        raise UnsupportedBackbone(f"{where} uses {type(blk.mlp).__name__} with a norm or gate "
                                  f"(SwiGLU, scale_mlp_norm); need timm's plain Mlp")
