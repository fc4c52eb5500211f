"""What trains and how: trainable parameters per recipe, AdamW groups, warm-up + cosine schedule."""

from __future__ import annotations

import logging
import math
from typing import TYPE_CHECKING

import torch
from torch import nn

# CLIP4Clip / CenterCLIP keep the input embeddings frozen during full fine-tuning.
FROZEN_EMBEDDINGS = (
    "visual.conv1.",
    "visual.class_embedding",
    "visual.positional_embedding",
    "visual.ln_pre.",
    "token_embedding.",
    "positional_embedding",
)

if TYPE_CHECKING:
    from tokred.retrieval.model import RetrievalModel

log = logging.getLogger(__name__)


def configure_trainable(
    model: RetrievalModel, mode: str, lora_rank: int = 8, freeze_logit_scale: bool = False
) -> int:
    """Set ``requires_grad`` per training recipe; returns the number of trainable parameters.

    Args:
        model: the retrieval model (LoRA, if any, is added to ``model.clip`` in place).
        mode: ``full`` (all but :data:`FROZEN_EMBEDDINGS`), ``lora`` (LoRA on qkv of both
            towers + the reducer's parameters), ``scratch`` (everything).
        lora_rank: LoRA rank for ``mode="lora"``.
        freeze_logit_scale: keep the temperature fixed (TempMe's recipe).
    """
    if mode == "lora":
        from tokred.training.lora import apply_lora, mark_only_trainable

        apply_lora(model.clip, rank=lora_rank)
        mark_only_trainable(model.clip, extra=model.reducer.parameters())
    else:
        for name, p in model.clip.named_parameters():
            p.requires_grad_(mode == "scratch" or not name.startswith(FROZEN_EMBEDDINGS))
        for p in model.reducer.parameters():
            p.requires_grad_(True)
    model.clip.logit_scale.requires_grad_(not freeze_logit_scale and mode != "lora")
    n = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("%s: %d trainable parameters", mode, n)
    return n


def make_optimizer(
    model: nn.Module, lr: float, betas: tuple[float, float], weight_decay: float
) -> torch.optim.AdamW:
    """AdamW over trainable parameters; no decay on gains, biases, embeddings of rank < 2 and
    the logit scale (open_clip's grouping)."""
    decay, no_decay = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        plain = p.ndim < 2 or "ln" in name or "bias" in name or "logit_scale" in name
        (no_decay if plain else decay).append(p)
    if not decay and not no_decay:
        raise ValueError("no trainable parameters: check the training mode / LoRA set-up")
    groups = [
        {"params": no_decay, "weight_decay": 0.0},
        {"params": decay, "weight_decay": weight_decay},
    ]
    return torch.optim.AdamW(groups, lr=lr, betas=betas, eps=1e-6)


class WarmupCosine:
    """LR factor per optimizer step: linear warm-up, then cosine to zero at ``total_steps``.

    A function of the step alone, so the same recipe gives the same schedule on every machine
    (a wall-clock limit, :attr:`TrainConfig.time_limit`, may stop training early but never
    bends the schedule).
    """

    def __init__(self, total_steps: int, warmup: float) -> None:
        self.total = total_steps
        self.warm = max(1, int(round(warmup * total_steps))) if warmup > 0 else 0

    def __call__(self, step: int) -> float:
        ramp = (step + 1) / self.warm if step < self.warm else 1.0
        w = self.warm / self.total
        progress = step / self.total
        return min(ramp, _cosine((progress - w) / (1 - w)) if progress > w else 1.0)


def _cosine(progress: float) -> float:
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def make_scheduler(
    optimizer, total_steps: int, warmup: float
) -> torch.optim.lr_scheduler.LambdaLR:
    """Per-step LR schedule :class:`WarmupCosine` (``warmup`` is a fraction of the steps)."""
    return torch.optim.lr_scheduler.LambdaLR(optimizer, WarmupCosine(total_steps, warmup))
