"""Similarity and the symmetric InfoNCE loss over the global batch (docs/algorithms.md §0)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from tokred.training.distributed import gather_features, share_grad


def similarity(text: Tensor, video: Tensor, logit_scale: Tensor | float = 1.0) -> Tensor:
    """``logit_scale * cos``: ``[n, D] x [m, D]`` normalised features -> ``[n, m]``."""
    return logit_scale * text @ video.t()


def contrastive_loss(text: Tensor, video: Tensor, logit_scale: Tensor) -> Tensor:
    """Symmetric InfoNCE over the global batch: mean of t2v and v2t cross-entropy.

    Features are gathered from every rank (:func:`gather_features`); the logit scale's gradient
    is shared (:func:`share_grad`). The returned value is the global-batch loss, identical on
    every rank; multiply it by the world size before ``backward`` under DDP (see
    :mod:`tokred.training.distributed`). ``text[i]`` matches ``video[i]``.
    """
    if text.shape[0] != video.shape[0]:
        raise ValueError(f"need one caption per video, got {text.shape[0]} and {video.shape[0]}")
    t, v = gather_features(text), gather_features(video)  # [world*b, D]
    logits = similarity(t.float(), v.float(), share_grad(logit_scale).float())  # [N, N]
    target = torch.arange(logits.shape[0], device=logits.device)
    return 0.5 * (F.cross_entropy(logits, target) + F.cross_entropy(logits.t(), target))
