"""CLIP weights from local files in the layouts researchers have on disk, and the activation
(QuickGELU or GELU) a model built for given weights must use: :func:`activation_for` is the one
place that decides it."""

from __future__ import annotations

import logging
import os
import pickle
import pickletools
import re
import zipfile

import torch
from torch import nn

from tokred.backbones.embedded import EMBEDDED_MODELS

log = logging.getLogger(__name__)

_PREFIXES = ("module.", "clip.", "model.")


def extract_clip_state_dict(obj, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """CLIP parameters from a loaded checkpoint object (``source``: its file, for messages).

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
        raise ValueError(
            f"{source}: holds a {type(obj).__name__}, not CLIP weights; expected a state dict "
            f"(plain, or under 'state_dict' / 'model' / 'module'), an OpenAI TorchScript "
            f"archive or a CLIP4Clip checkpoint; save the model's state_dict() instead")
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


class UnsafeCheckpointError(ValueError):
    """A pickle that holds more than tensors and plain containers; loading it could run code."""


def read_checkpoint(path: str | os.PathLike, mmap: bool = False, *, trust_pickle: bool = False):
    """The object in a checkpoint file, loaded without running code from it.

    Plain state dicts and tokred checkpoints load with ``weights_only=True``; TorchScript
    archives (OpenAI's ``ViT-B-32.pt``) with ``torch.jit.load``. A pickle holding other Python
    objects is refused: unpickling it could run any code its author put in (``__reduce__``).
    ``trust_pickle=True`` loads such a file unrestricted (``--trust-pickle`` on the command
    line): only for a file from a trusted source. ``mmap``: map tensors instead of reading them
    (zip-format files; for peeking).

    Raises:
        FileNotFoundError: the file does not exist.
        UnsafeCheckpointError: the file holds other objects and ``trust_pickle`` is False.
        ValueError: the file is empty, truncated or not a checkpoint at all.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint {path!r} does not exist; pass the path of a .pt/.pth file")
    if os.path.getsize(path) == 0:
        raise ValueError(f"checkpoint {path} is empty (0 bytes); copy or download it again")
    try:
        if is_torchscript(path):
            return torch.jit.load(path, map_location="cpu")
        return _torch_load(path, mmap, trust_pickle)
    except pickle.UnpicklingError as err:
        if not _is_pickle(path, err):
            raise ValueError(f"{path} is not a readable checkpoint (truncated, or not a torch "
                             f"file): {_first_line(err)}; copy or download it again") from None
        raise UnsafeCheckpointError(
            f"{path} holds Python objects beyond tensors and plain containers, and unpickling "
            f"them could run code hidden in the file ({_unsafe_part(err)}). If you trust where "
            f"it comes from, pass --trust-pickle (trust_pickle=True) to load it unrestricted; "
            f"better, re-save its state dict: torch.save(obj.state_dict(), 'clean.pt')"
        ) from None
    except Exception as err:  # torch.load reports a damaged file with many exception types
        raise ValueError(f"{path} is not a readable checkpoint (truncated, or not a torch "
                         f"file): {_first_line(err)}; copy or download it again") from None


def _torch_load(path: str, mmap: bool, trust_pickle: bool):
    if trust_pickle:
        log.warning("%s: loading unrestricted (trust_pickle): code in the file can run", path)
        return torch.load(path, map_location="cpu", weights_only=False)
    try:
        return torch.load(path, map_location="cpu", weights_only=True, mmap=mmap)
    except RuntimeError as err:
        if not mmap or "mmap" not in str(err):
            raise
        return torch.load(path, map_location="cpu", weights_only=True)  # legacy format


def _is_pickle(path: str, err: pickle.UnpicklingError) -> bool:
    """Whether a file torch's restricted unpickler refused is a well-formed pickle (then it
    holds objects it does not allow) rather than damaged or not a pickle at all."""
    if "GLOBAL" in str(err):
        return True
    try:
        with open(path, "rb") as f:
            for _ in pickletools.genops(f):  # parses opcodes, runs nothing
                pass
    except Exception:  # any parse failure: not a pickle
        return False
    return True


def _unsafe_part(err: pickle.UnpicklingError) -> str:
    """What torch's restricted unpickler refused, e.g. ``GLOBAL os.makedirs``."""
    found = re.search(r"GLOBAL [\w.]+|Unsupported operand \d+", str(err))
    return found.group(0) if found else _first_line(err)


def _first_line(err: BaseException) -> str:
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0] if lines else ''}"


def peek_checkpoint(path: str | os.PathLike, *, trust_pickle: bool = False):
    """:func:`read_checkpoint` with tensors memory-mapped where possible (to read ``meta``)."""
    return read_checkpoint(path, mmap=True, trust_pickle=trust_pickle)


def load_clip_weights(model: nn.Module, path: str | os.PathLike, strict_visual: bool = True,
                      *, trust_pickle: bool = False) -> None:
    """Load a local checkpoint into an open_clip ``CLIP`` model in place.

    Raises:
        FileNotFoundError: the file does not exist.
        ValueError: the file cannot be read safely (see :func:`read_checkpoint`), or the visual
            tower's keys are missing or have the wrong shapes.
    """
    path = os.fspath(path)
    obj = read_checkpoint(path, trust_pickle=trust_pickle)
    load_clip_state_dict(model, extract_clip_state_dict(obj, path), path, strict_visual)


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


ACTIVATIONS = ("quick_gelu", "gelu")


def activation_for(
    name: str,
    pretrained: str | None = None,
    init: str | None = None,
    *,
    quick_gelu: bool | None = None,
    trust_pickle: bool = False,
) -> str:
    """The MLP activation a CLIP built for these weights must use: ``quick_gelu`` or ``gelu``.

    The one place this is decided (every model built or rebuilt by tokred asks here). OpenAI
    CLIP and every CLIP4Clip / CenterCLIP / TempMe checkpoint use QuickGELU
    (``x * sigmoid(1.702 x)``); with plain GELU their outputs drift by ~2e-2. Rules, first match:

    1. ``quick_gelu`` given: that (the explicit override).
    2. ``name`` ends in ``-quickgelu``: QuickGELU (open_clip's name for the OpenAI network).
    3. ``init`` given (its weights replace ``pretrained``'s): a tokred checkpoint's recorded
       activation, any other CLIP file (OpenAI state dict or TorchScript archive, CLIP4Clip
       ``pytorch_model.bin.N``) QuickGELU.
    4. ``pretrained``: the tag ``openai`` QuickGELU, another open_clip tag GELU, a local file as
       for ``init``.
    5. Random weights: QuickGELU for the open_clip architectures whose published weights are
       OpenAI's (``ViT-B-32``, ``ViT-B-16``, ``ViT-L-14``, ...): they are the papers' networks,
       and cost measurements must see their activation (QuickGELU keeps an extra tensor for
       backward). GELU otherwise, e.g. the embedded scale models trained from scratch.

    Args:
        name: open_clip model name or embedded scale model.
        pretrained: open_clip tag, local checkpoint path or None.
        init: checkpoint the weights are then initialised from (``TrainConfig.init``) or None.
        quick_gelu: explicit override.
        trust_pickle: passed to :func:`read_checkpoint` for the local files read.

    Raises:
        ValueError: ``quick_gelu=False`` for a ``-quickgelu`` model name.
    """
    if name.endswith("-quickgelu"):
        if quick_gelu is False:
            raise ValueError(f"{name} is QuickGELU by name; drop quick_gelu=False or use "
                             f"{name.removesuffix('-quickgelu')!r}")
        return "quick_gelu"
    if quick_gelu is not None:
        return "quick_gelu" if quick_gelu else "gelu"
    for source in (init, pretrained):
        if source is None:
            continue
        if os.path.isfile(source):
            return weights_activation(peek_checkpoint(source, trust_pickle=trust_pickle), source)
        if source is init:
            raise FileNotFoundError(f"init checkpoint {init!r} does not exist")
        return "quick_gelu" if source == "openai" else "gelu"
    return "quick_gelu" if name in openai_architectures() else "gelu"


def weights_activation(obj, source: str = "checkpoint") -> str:
    """Activation of a loaded checkpoint object: a tokred checkpoint's ``meta`` says (see
    :func:`meta_activation`); anything else is an OpenAI-family CLIP file, i.e. QuickGELU."""
    meta = obj.get("meta") if isinstance(obj, dict) else None
    if isinstance(meta, dict) and "model" in meta:
        return meta_activation(meta, source)
    return "quick_gelu"


def meta_activation(meta: dict, source: str = "checkpoint") -> str:
    """The activation recorded in a tokred checkpoint's ``meta``.

    Checkpoints written before ``meta`` recorded it get what the code of their time built: it
    made QuickGELU only for ``pretrained="openai"`` or a local file and GELU otherwise (a run
    from ``init`` included), so a meta without ``pretrained`` means GELU. Logged as a warning.
    """
    act = meta.get("activation")
    if act is not None:
        if act not in ACTIVATIONS:
            raise ValueError(f"{source}: unknown activation {act!r} in meta; expected {ACTIVATIONS}")
        return act
    name, pretrained = meta.get("model", ""), meta.get("pretrained")
    if name.endswith("-quickgelu"):
        act = "quick_gelu"
    elif name not in EMBEDDED_MODELS and (pretrained == "openai" or _looks_like_file(pretrained)):
        act = "quick_gelu"
    else:
        act = "gelu"
    log.warning("%s: meta records no activation (written by an older tokred); assuming %s, what "
                "that version built for model=%r pretrained=%r. Override with quick_gelu= "
                "(--quick-gelu / --no-quick-gelu) if it was trained otherwise",
                source, act, name, pretrained)
    return act


def _looks_like_file(pretrained: str | None) -> bool:
    return bool(pretrained) and (os.path.isfile(pretrained) or os.sep in pretrained
                                 or pretrained.endswith((".pt", ".pth", ".bin", ".ckpt")))


def openai_architectures() -> set[str]:
    """open_clip model names that OpenAI published weights for (the papers' backbones)."""
    import open_clip

    return {n for n in open_clip.list_models()
            if "openai" in open_clip.list_pretrained_tags_by_model(n)}


def activation_of(model: nn.Module) -> str | None:
    """The MLP activation a built model actually uses: ``quick_gelu``, ``gelu`` (``nn.GELU``,
    also timm's), ``mixed``, or None when it has neither."""
    from open_clip.transformer import QuickGELU

    kinds = {"quick_gelu" if isinstance(m, QuickGELU) else "gelu"
             for m in model.modules() if isinstance(m, (QuickGELU, nn.GELU))}
    return kinds.pop() if len(kinds) == 1 else ("mixed" if kinds else None)


def infer_clip_name(state_dict: dict) -> str | None:
    """The CLIP architecture a state dict (OpenAI key names) fits, or None.

    Compares patch size, width, depth and input size of the visual tower, the text tower's
    width and depth and the embedding size with the embedded scale models and the open_clip
    architectures OpenAI published weights for (ViT-B-32 vs ViT-B-16 differ in the patch conv).
    """
    import open_clip

    conv, pos = state_dict.get("visual.conv1.weight"), state_dict.get("visual.positional_embedding")
    proj, ln = state_dict.get("visual.proj"), state_dict.get("ln_final.weight")
    if conv is None or pos is None or proj is None or ln is None:
        return None
    grid = round((pos.shape[0] - 1) ** 0.5)

    def depth(prefix: str) -> int:
        return len({k[len(prefix):].split(".")[0] for k in state_dict if k.startswith(prefix)})

    found = (int(conv.shape[-1]), int(conv.shape[0]), depth("visual.transformer.resblocks."),
             grid * int(conv.shape[-1]), int(ln.shape[0]), depth("transformer.resblocks."),
             int(proj.shape[1]))
    names = list(EMBEDDED_MODELS) + sorted(n for n in openai_architectures()
                                           if n.startswith("ViT") and not n.endswith("-quickgelu"))
    for name in names:
        cfg = EMBEDDED_MODELS.get(name) or open_clip.get_model_config(name)
        v, t = cfg["vision_cfg"], cfg["text_cfg"]
        size = v["image_size"] if isinstance(v["image_size"], int) else v["image_size"][0]
        if found == (v["patch_size"], v["width"], v["layers"], size, t["width"], t["layers"],
                     cfg["embed_dim"]):
            return name
    return None
