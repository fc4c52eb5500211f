"""Loading CLIP weights from local files in the layouts researchers have on disk."""

from __future__ import annotations

import logging
import os
import pickle
import zipfile

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


def is_torchscript(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a TorchScript archive (OpenAI's released CLIP files): a zip with a
    ``constants.pkl`` record, which a plain ``torch.save`` file never has."""
    try:
        with zipfile.ZipFile(path) as z:
            return any(n.endswith("/constants.pkl") or n == "constants.pkl" for n in z.namelist())
    except (zipfile.BadZipFile, OSError):
        return False


def read_checkpoint(path: str | os.PathLike, mmap: bool = False):
    """The object in a checkpoint file, loaded as safely as the file allows.

    Plain state dicts and tokred checkpoints load with ``weights_only=True``; TorchScript
    archives (OpenAI's ``ViT-B-32.pt``) with ``torch.jit.load``. Other pickles (objects beyond
    tensors and containers) still load as before this function existed, unrestricted: that
    fallback is the one remaining unsafe load of this module, kept until loading is made safe
    everywhere. ``mmap``: map tensors instead of reading them (zip-format files; for peeking).

    Raises:
        FileNotFoundError: the file does not exist.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist; pass the path of a .pt/.pth file")
    if is_torchscript(path):
        return torch.jit.load(path, map_location="cpu")
    try:
        try:
            return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
        except RuntimeError as err:
            if not mmap or "mmap" not in str(err):
                raise
            return torch.load(path, map_location="cpu", weights_only=True)  # legacy format
    except pickle.UnpicklingError:
        log.warning("%s: not loadable with weights_only=True; loading it unrestricted", path)
        return torch.load(path, map_location="cpu", weights_only=False)


def peek_checkpoint(path: str | os.PathLike):
    """:func:`read_checkpoint` with tensors memory-mapped where possible (to read ``meta``)."""
    return read_checkpoint(path, mmap=True)


def load_clip_weights(model: nn.Module, path: str | os.PathLike, strict_visual: bool = True) -> None:
    """Load a local checkpoint into an open_clip ``CLIP`` model in place.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the visual tower's keys are missing or have the wrong shapes.
    """
    path = os.fspath(path)
    load_clip_state_dict(model, extract_clip_state_dict(read_checkpoint(path)), path, strict_visual)


def load_clip_state_dict(
    model: nn.Module, sd: dict[str, torch.Tensor], source: str = "checkpoint",
    strict_visual: bool = True,
) -> None:
    """Load CLIP weights (OpenAI key names, see :func:`extract_clip_state_dict`) in place.

    Keys the model does not have are dropped (CLIP4Clip heads, TorchScript attributes).

    Raises:
        ValueError: the visual tower's keys are missing or have the wrong shapes.
    """
    own = model.state_dict()
    sd = {k: v for k, v in sd.items() if k in own}
    bad = [k for k, v in sd.items() if v.shape != own[k].shape]
    if bad:
        raise ValueError(f"{source}: shape mismatch for {bad[:5]} (checkpoint of another architecture?)")
    missing = [k for k in own if k not in sd]
    if strict_visual and any(k.startswith("visual.") for k in missing):
        raise ValueError(f"{source}: visual weights missing, e.g. {missing[:5]}; is this a CLIP checkpoint?")
    if missing:
        log.warning("%s: %d CLIP keys not in the checkpoint (kept at init): %s", source, len(missing), missing[:5])
    model.load_state_dict(sd, strict=False)
