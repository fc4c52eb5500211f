"""The per-forward token state that flows through the encoder and the reducers."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass(frozen=True)
class TokenState:
    """Tokens of a batch of videos between two encoder sites.

    Attributes:
        x: ``[R, N, C]`` token features; ``R = B * groups``, rows video-major
            (row ``b * groups + g`` is sequence ``g`` of video ``b``).
        size: ``[R, N, 1]`` how many input patches each token stands for (ones at the start).
        groups: sequences per video (``T`` at the start; fewer after segment/clip joins).
        prefix: leading CLS tokens per row; they are never merged or dropped.
        frames: frames per video in the input (constant over the forward).
    """

    x: Tensor
    size: Tensor
    groups: int
    prefix: int
    frames: int

    def __post_init__(self) -> None:
        if self.x.dim() != 3:
            raise ValueError(f"TokenState.x must be [R, N, C], got shape {tuple(self.x.shape)}")
        if self.x.shape[0] % self.groups:
            raise ValueError(f"{self.x.shape[0]} rows do not split into groups of {self.groups}")

    @property
    def batch(self) -> int:
        """Number of videos ``B``."""
        return self.x.shape[0] // self.groups

    @property
    def tokens(self) -> int:
        """Tokens per row ``N``."""
        return self.x.shape[1]

    def replace(self, **changes) -> TokenState:
        """A copy with some fields changed (the state itself is immutable)."""
        return dataclasses.replace(self, **changes)

    @classmethod
    def start(cls, x: Tensor, frames: int) -> TokenState:
        """Initial state: one row per frame, one CLS token, unit sizes."""
        size = torch.ones(x.shape[0], x.shape[1], 1, dtype=x.dtype, device=x.device)
        return cls(x=x, size=size, groups=frames, prefix=1, frames=frames)
