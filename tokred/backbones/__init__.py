"""Backbone adapters over ViT towers (open_clip, timm), and loading CLIP weights from files.

Only this package imports ``open_clip`` and ``timm`` model internals.
"""

from tokred.backbones.base import UnsupportedBackbone, ViTAdapter, mha_attention
from tokred.backbones.openclip import OpenCLIPVisual

__all__ = ["OpenCLIPVisual", "UnsupportedBackbone", "ViTAdapter", "mha_attention"]
