"""What a reducer may know about the backbone it runs in."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass


@dataclass(frozen=True)
class BackboneSpec:
    """Static facts about a ViT backbone and the clip length it is run on.

    Attributes:
        name: human-readable backbone name (e.g. ``"ViT-B-32"``).
        width: residual width ``C``.
        layers: number of transformer blocks.
        heads: attention heads.
        mlp_hidden: hidden width of the MLP.
        patch_size: patch side in pixels.
        image_size: input side in pixels.
        grid: patches per side, so a frame has ``grid**2`` patches plus one CLS token.
        frames: frames per video ``T`` the encoder is set up for (1 in image mode).
    """

    name: str
    width: int
    layers: int
    heads: int
    mlp_hidden: int
    patch_size: int
    image_size: int
    grid: int
    frames: int = 1

    @property
    def patches(self) -> int:
        """Patch tokens per frame."""
        return self.grid * self.grid

    @property
    def tokens_per_frame(self) -> int:
        """Tokens per frame including the CLS token."""
        return self.patches + 1

    def with_frames(self, frames: int) -> BackboneSpec:
        """The same backbone run on clips of ``frames`` frames."""
        return dataclasses.replace(self, frames=frames)
