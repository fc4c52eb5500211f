"""CLIP preprocessing for decoded frames, batched over frames in torch.

Matches OpenAI CLIP's ``_transform``: bicubic resize of the shortest side to the model's image
size, centre crop, scale to ``[0, 1]``, normalise with the OpenAI CLIP mean/std.

Modifications: all frames of a clip are resized in one call on a uint8 ``[T, 3, H, W]`` tensor
(torchvision's antialiased bicubic, within 1 grey level of PIL) instead of one PIL image at a
time; the float conversion happens after the crop, on ``S x S`` pixels only.
"""

from __future__ import annotations

from typing import Union

import numpy as np
import torch
import torchvision.transforms.v2.functional as TF
from torchvision.transforms import InterpolationMode

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
    x = x.permute(0, 3, 1, 2)  # [T, H, W, 3] -> [T, 3, H, W]
    if min(x.shape[-2:]) != image_size:
        x = TF.resize(x, image_size, interpolation=InterpolationMode.BICUBIC, antialias=True)
    x = TF.center_crop(x, [image_size, image_size]).contiguous()  # [T, 3, S, S] uint8
    m = torch.tensor(mean).view(1, 3, 1, 1) * 255.0
    s = torch.tensor(std).view(1, 3, 1, 1) * 255.0
    return x.float().sub_(m).div_(s)


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
