"""Loading CLIP weights from local files in the layouts researchers have on disk."""

from __future__ import annotations

import logging
import os

import torch
from torch import nn

log = logging.getLogger(__name__)

_PREFIXES = ("module.", "clip.", "model.")


def extract_clip_state_dict(obj) -> dict[str, torch.Tensor]:
    """CLIP parameters from a loaded checkpoint object.

    Accepts a plain state dict, ``{"state_dict": ...}`` / ``{"model": ...}`` wrappers, a
    TorchScript OpenAI archive, and CLIP4Clip-family checkpoints (OpenAI key names under a
    ``clip.`` prefix, possibly behind DDP's ``module.``). Keys outside the CLIP model
    (CLIP4Clip's extra heads) are dropped.
    """
    if isinstance(obj, torch.jit.ScriptModule):
        obj = obj.state_dict()
    for key in ("state_dict", "model", "module"):
        if isinstance(obj, dict) and key in obj and isinstance(obj[key], dict):
            obj = obj[key]
    if not isinstance(obj, dict):
        raise ValueError(f"expected a state dict, got {type(obj).__name__}")
    out = {}
    for k, v in obj.items():
        for p in _PREFIXES:
            if k.startswith(p):
                k = k[len(p):]
        out[k] = v
    return out


def load_clip_weights(model: nn.Module, path: str | os.PathLike, strict_visual: bool = True) -> None:
    """Load a local checkpoint into an open_clip ``CLIP`` model in place.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the visual tower's keys are missing or have the wrong shapes.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist; pass the path of a .pt/.pth file")
    try:
        obj = torch.jit.load(path, map_location="cpu")
    except (RuntimeError, ValueError):
        obj = torch.load(path, map_location="cpu", weights_only=False)
    sd = extract_clip_state_dict(obj)
    own = model.state_dict()
    sd = {k: v for k, v in sd.items() if k in own}
    bad = [k for k, v in sd.items() if v.shape != own[k].shape]
    if bad:
        raise ValueError(f"{path}: shape mismatch for {bad[:5]} (checkpoint of another architecture?)")
    missing = [k for k in own if k not in sd]
    if strict_visual and any(k.startswith("visual.") for k in missing):
        raise ValueError(f"{path}: visual weights missing, e.g. {missing[:5]}; is this a CLIP checkpoint?")
    if missing:
        log.warning("%s: %d CLIP keys not in the checkpoint (kept at init): %s", path, len(missing), missing[:5])
    model.load_state_dict(sd, strict=False)
