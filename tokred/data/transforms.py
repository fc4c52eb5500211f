"""CLIP preprocessing for decoded frames, batched over frames in torch.

Matches OpenAI CLIP's ``_transform``: bicubic resize of the shortest side to the model's image
size, centre crop, scale to ``[0, 1]``, normalise with the OpenAI CLIP mean/std.

Modifications: all frames of a clip are resized in one ``F.interpolate`` call on a
``[T, 3, H, W]`` tensor instead of one PIL image at a time, with antialiasing, and the result is
clamped to ``[0, 1]`` (bicubic overshoots); pixel values differ from PIL by a few levels.
"""

from __future__ import annotations

from typing import Union

import numpy as np
import torch
import torch.nn.functional as F

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)

__all__ = ["CLIP_MEAN", "CLIP_STD", "ClipTransform", "clip_preprocess"]


def clip_preprocess(
    frames: Union[np.ndarray, torch.Tensor],
    image_size: int = 224,
    mean: tuple[float, float, float] = CLIP_MEAN,
    std: tuple[float, float, float] = CLIP_STD,
) -> torch.Tensor:
    """Preprocesses uint8 RGB frames for a CLIP image tower.

    Args:
        frames: uint8 ``[T, H, W, 3]`` (numpy or torch).
        image_size: Model input size ``S`` (224 for ViT-B, 56 for the scale model).
        mean: Per-channel normalisation mean.
        std: Per-channel normalisation std.

    Returns:
        float32 ``[T, 3, S, S]``.
    """
    x = torch.as_tensor(frames)
    if x.ndim != 4 or x.shape[-1] != 3 or x.dtype != torch.uint8:
        raise ValueError(
            f"clip_preprocess expects uint8 frames [T, H, W, 3], got {x.dtype} {tuple(x.shape)}; "
            "pass the frames returned by read_video"
        )
    x = x.permute(0, 3, 1, 2).float().div_(255.0)  # [T, H, W, 3] -> [T, 3, H, W] in [0, 1]
    h, w = x.shape[-2:]
    scale = image_size / min(h, w)
    new_h, new_w = max(image_size, round(h * scale)), max(image_size, round(w * scale))
    if (new_h, new_w) != (h, w):
        x = F.interpolate(
            x, size=(new_h, new_w), mode="bicubic", align_corners=False, antialias=True
        )
    top, left = (new_h - image_size) // 2, (new_w - image_size) // 2
    x = x[:, :, top : top + image_size, left : left + image_size].clamp_(0.0, 1.0)  # [T, 3, S, S]
    m = torch.tensor(mean, dtype=x.dtype).view(1, 3, 1, 1)
    s = torch.tensor(std, dtype=x.dtype).view(1, 3, 1, 1)
    return (x - m) / s


class ClipTransform:
    """Callable wrapper around :func:`clip_preprocess` with a fixed image size (picklable).

    Args:
        image_size: Model input size ``S``.
        mean: Per-channel normalisation mean.
        std: Per-channel normalisation std.
    """

    def __init__(
        self,
        image_size: int = 224,
        mean: tuple[float, float, float] = CLIP_MEAN,
        std: tuple[float, float, float] = CLIP_STD,
    ) -> None:
        self.image_size, self.mean, self.std = image_size, tuple(mean), tuple(std)

    def __call__(self, frames: Union[np.ndarray, torch.Tensor]) -> torch.Tensor:
        """uint8 ``[T, H, W, 3]`` -> float32 ``[T, 3, S, S]``."""
        return clip_preprocess(frames, self.image_size, self.mean, self.std)

    def __repr__(self) -> str:
        return f"ClipTransform(image_size={self.image_size})"
