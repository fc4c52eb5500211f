"""The factory: CLIP models (open_clip architectures with random weights, a pretrained tag or a
local file, and the embedded scale models), backbones (a CLIP's visual tower or a ``timm:NAME``
ViT, each behind its adapter) and video encoders over them.

Which MLP activation a model needs (QuickGELU or GELU) is decided by
:func:`tokred.backbones.weights.activation_for`; weight files are read there too.
"""

from __future__ import annotations

import copy
import logging
import os
from typing import NamedTuple

from torch import nn

from tokred.backbones import OpenCLIPVisual, ViTAdapter
from tokred.backbones.embedded import EMBEDDED_MODELS
from tokred.backbones.weights import activation_for
from tokred.encoder import VideoEncoder
from tokred.reducer import TokenReducer

log = logging.getLogger(__name__)
TIMM_PREFIX = "timm:"  # a backbone name "timm:NAME" is timm.create_model(NAME)


class Backbone(NamedTuple):
    """A visual adapter and the model it wraps (the CLIP with both towers, or the timm model)."""

    adapter: ViTAdapter
    host: nn.Module


def create_clip(
    name: str,
    pretrained: str | None = None,
    *,
    precision: str = "fp32",
    device: str = "cpu",
    quick_gelu: bool | None = None,
) -> nn.Module:
    """An open_clip ``CLIP`` model.

    Args:
        name: an open_clip model name (``ViT-B-32``, ``ViT-B-16``, ``ViT-L-14``, ...) or an
            embedded scale model (``scale-B32``).
        pretrained: None for random initialisation, an open_clip pretrained tag (``openai``,
            ``laion2b_s34b_b79k``, ...) or a local checkpoint path.
        precision: open_clip precision string (``fp32``, ``fp16``, ``bf16``, ``amp``).
        device: torch device string.
        quick_gelu: force QuickGELU (True) or GELU (False); None decides with
            :func:`activation_for` (QuickGELU for OpenAI-family weights and architectures).

    Raises:
        ValueError: unknown model name.
        RuntimeError: a pretrained tag that cannot be downloaded, with how to pass a local file.
    """
    import open_clip

    if name in EMBEDDED_MODELS:
        if pretrained is not None and not os.path.isfile(pretrained):
            raise FileNotFoundError(f"{name} is an embedded scale model: pretrained must be a "
                                    f"local checkpoint file, got {pretrained!r}")
        act = activation_for(name, pretrained, quick_gelu=quick_gelu)
        cfg = copy.deepcopy(EMBEDDED_MODELS[name])
        model = open_clip.model.CLIP(**cfg, quick_gelu=act == "quick_gelu").to(device)
        if pretrained:
            from tokred.backbones.weights import load_clip_weights

            load_clip_weights(model, pretrained)
        return model
    if name not in open_clip.list_models():
        import difflib

        close = difflib.get_close_matches(name, open_clip.list_models() + list(EMBEDDED_MODELS))
        raise ValueError(f"unknown CLIP model {name!r}; close matches: {close or 'none'}. "
                         f"See open_clip.list_models() or tokred.models.EMBEDDED_MODELS")
    local = pretrained is not None and os.path.isfile(pretrained)
    if pretrained is not None and not local and pretrained.endswith(
        (".pt", ".pth", ".bin", ".safetensors", ".ckpt")
    ):
        raise FileNotFoundError(f"pretrained checkpoint {pretrained!r} does not exist")
    quick = activation_for(name, pretrained, quick_gelu=quick_gelu) == "quick_gelu"
    if pretrained is None or local:
        model = open_clip.create_model(name, pretrained=None, precision=precision, device=device,
                                       force_quick_gelu=quick)
        if local:
            from tokred.backbones.weights import load_clip_weights

            load_clip_weights(model, pretrained)
        return model
    try:
        return open_clip.create_model(name, pretrained=pretrained, precision=precision,
                                      device=device, force_quick_gelu=quick)
    except Exception as err:  # download failures surface as many exception types
        raise RuntimeError(
            f"could not load open_clip weights {name!r} / pretrained={pretrained!r}: {err}. "
            f"If this machine has no network, download the checkpoint elsewhere (for example "
            f"open_clip.download_pretrained) and pass its local path as pretrained=/path/to/file"
        ) from err


def create_video_encoder(
    name: str,
    reducer: TokenReducer | None = None,
    frames: int = 12,
    pretrained: str | None = None,
    **kwargs,
) -> VideoEncoder:
    """A :class:`VideoEncoder` over the adapter of :func:`create_backbone` ``(name, pretrained)``."""
    return VideoEncoder(create_backbone(name, pretrained, **kwargs).adapter, reducer, frames)


def create_backbone(
    name: str,
    pretrained: str | None = None,
    *,
    precision: str = "fp32",
    device: str = "cpu",
    quick_gelu: bool | None = None,
) -> Backbone:
    """The visual adapter of ``name`` and its host model.

    Args:
        name: an open_clip model name or embedded scale model (see :func:`create_clip`), or
            ``timm:NAME`` for a timm ``VisionTransformer`` (random weights, image mode with
            ``T = 1``).
        pretrained, precision, device, quick_gelu: as in :func:`create_clip` (CLIPs only).

    Raises:
        ValueError: ``pretrained`` or ``quick_gelu=True`` for a timm model.
    """
    if not name.startswith(TIMM_PREFIX):
        host = create_clip(name, pretrained, precision=precision, device=device,
                           quick_gelu=quick_gelu)
        return Backbone(OpenCLIPVisual(host.visual, name=name), host)
    if pretrained is not None:
        raise ValueError(f"{name}: timm models are built with random weights here; load a state "
                         f"dict into create_backbone({name!r}).host yourself")
    if quick_gelu:
        raise ValueError(f"quick_gelu=True is for open_clip CLIPs, not {name} (timm ViTs are GELU)")
    import timm

    from tokred.backbones.timmvit import TimmViT

    host = timm.create_model(name[len(TIMM_PREFIX):], pretrained=False).to(device)
    return Backbone(TimmViT(host, name), host)
