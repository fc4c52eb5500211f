"""The time of one training step (forward, loss, backward, optimiser) on a fixed batch."""

from __future__ import annotations

import time
from typing import Callable

import torch
import torch.nn.functional as F

from tokred.cost.timing import Timing, fixed_video, time_calls
from tokred.training.precision import autocast


def make_train_step(
    encoder: torch.nn.Module,
    video: torch.Tensor,
    precision: str = "fp32",
    lr: float = 1e-6,
) -> Callable[[], float]:
    """One training step on a fixed batch: forward (autocast), loss, backward, AdamW step.

    The loss pulls each video embedding towards a fixed random unit target (its cost is
    negligible next to the encoder's). Only parameters with ``requires_grad`` are optimised,
    so a LoRA-marked model trains its adapters only.
    """
    params = [p for p in encoder.parameters() if p.requires_grad]
    if not params:
        raise ValueError("make_train_step: the encoder has no trainable parameter")
    opt = torch.optim.AdamW(params, lr=lr)
    device = video.device
    target: torch.Tensor | None = None

    def step() -> float:
        nonlocal target
        with autocast(device, precision):
            emb = encoder(video)  # [B, D]
        if target is None:
            g = torch.Generator().manual_seed(1)
            target = F.normalize(torch.randn(emb.shape, generator=g), dim=-1).to(device)
        loss = -(emb.float() * target).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step


def train_step_time(
    encoder: torch.nn.Module,
    frames: int,
    batch: int = 4,
    warmup: int = 1,
    repeats: int = 3,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    clock: Callable[[], float] = time.perf_counter,
) -> Timing:
    """Seconds per training step (forward, backward, optimiser) in train mode on a fixed batch.

    The encoder's parameters are updated by the timed steps: time a model built for measuring.
    """
    size = encoder.backbone.spec.image_size
    was_training = encoder.training
    encoder.train()
    try:
        step = make_train_step(encoder, fixed_video(batch, frames, size, device), precision)
        return time_calls(step, items=batch, warmup=warmup, repeats=repeats, device=device,
                          clock=clock)
    finally:
        encoder.train(was_training)
