"""What the cost functions measure: a random-weight encoder, optionally with TempMe's LoRA recipe.

:func:`build` is shared by :func:`tokred.cost.measure.measure` and the memory subprocesses
(:func:`rss_job` is their default job builder, see :func:`tokred.cost.memory.peak_rss_mb`); it
imports nothing of :mod:`tokred.cost.memory`, so neither module imports the other's user.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from tokred.cost.timing import fixed_video
from tokred.cost.trainstep import make_train_step
from tokred.encoder import VideoEncoder
from tokred.models import TIMM_PREFIX, create_backbone
from tokred.registry import create_reducer
from tokred.training.precision import autocast

LORA_RANK = 8  # TempMe's recipe: rank 8 on every qkv of both CLIP towers


class LoRAUnavailable(RuntimeError):
    """LoRA cannot be applied to this model (no tokred.training.lora, or not an open_clip tower)."""


@dataclass
class Built:
    """An encoder ready to measure and what it was built from."""

    encoder: VideoEncoder
    host: nn.Module  # the open_clip CLIP or the timm model
    trainable_params: int


def build(
    model: str,
    reducer: str,
    options: dict | None = None,
    frames: int = 12,
    *,
    lora: bool = False,
    device: str = "cpu",
    seed: int = 0,
    quick_gelu: bool | None = None,
) -> Built:
    """A random-weight encoder: ``model`` is an open_clip name, ``scale-B32`` or ``timm:NAME``.

    With ``lora=True`` rank-8 adapters go on the qkv of both CLIP towers (TempMe's recipe) and
    only they and the reducer's parameters are trainable. ``quick_gelu``: the CLIP's MLP
    activation; None: :func:`tokred.models.activation_for` decides (QuickGELU for the papers'
    OpenAI architectures even with random weights: it keeps one more tensor for backward).

    Raises:
        LoRAUnavailable: ``lora=True`` on a timm model or without :mod:`tokred.training.lora`.
        ValueError: ``quick_gelu=True`` for a timm model (timm's ViTs are GELU).
    """
    torch.manual_seed(seed)
    red = create_reducer(reducer, **(options or {}))
    if lora and model.startswith(TIMM_PREFIX):
        raise LoRAUnavailable("LoRA is implemented for open_clip towers only, not timm")
    backbone = create_backbone(model, device=device, quick_gelu=quick_gelu)
    host = backbone.host
    enc = VideoEncoder(backbone.adapter, red, frames).to(device)
    trainable = sum(p.numel() for p in host.parameters()) + sum(p.numel() for p in red.parameters())
    if lora:
        try:
            from tokred.training import lora as lora_mod
        except ImportError as err:
            raise LoRAUnavailable(f"tokred.training.lora cannot be imported: {err}") from err
        lora_mod.apply_lora(host, rank=LORA_RANK)
        trainable = lora_mod.mark_only_trainable(host, extra=red.parameters())
    return Built(enc.eval(), host.eval(), trainable)


def rss_job(
    model: str,
    reducer: str,
    options: dict | None,
    frames: int,
    batch: int,
    phase: str,
    mode: str,
    precision: str,
    quick_gelu: bool | None = None,
) -> Callable[[], object]:
    """Build what a memory subprocess measures; returns the phase to run (see memory.py)."""
    b = build(model, reducer, options, frames, lora=mode == "lora", quick_gelu=quick_gelu)
    enc = b.encoder
    video = fixed_video(batch, frames, enc.backbone.spec.image_size)
    if phase == "infer":

        def run() -> None:
            with torch.inference_mode(), autocast("cpu", precision):
                enc(video)

        return run
    if phase == "train":
        return make_train_step(enc.train(), video, precision)
    raise ValueError(f"phase must be 'infer' or 'train', got {phase!r}")


def build_many(
    model: str,
    settings: list[tuple[str, dict]],
    frames: int,
    *,
    device: str = "cpu",
    seed: int = 0,
    quick_gelu: bool | None = None,
) -> list[VideoEncoder]:
    """Encoders for several ``(reducer, options)`` settings over one random-weight backbone.

    Reducers wrap the backbone without changing it, so one copy of the weights serves all (the
    interleaved timing of a whole table holds one model in memory, not one per reducer).
    """
    torch.manual_seed(seed)
    adapter = create_backbone(model, device=device, quick_gelu=quick_gelu).adapter
    return [VideoEncoder(adapter, create_reducer(name, **opts), frames).to(device).eval()
            for name, opts in settings]
