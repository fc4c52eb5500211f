"""Building CLIP models: open_clip architectures (random, pretrained tag, local file) and the
embedded scale models that let the whole pipeline run on a laptop CPU; which MLP activation
(QuickGELU or GELU) a model needs is decided here, in :func:`activation_for`."""

from __future__ import annotations

import copy
import logging
import os

from torch import nn

from .backbone import OpenCLIPVisual
from .encoder import VideoEncoder
from .reducer import TokenReducer

log = logging.getLogger(__name__)

# Small CLIPs with the depth (12 blocks) and 7x7 patch grid of ViT-B/32, so every paper schedule
# (ToMe r=2, CenterCLIP B6-4,49, TempMe 8-9-10 / 2-2-3) applies unchanged; narrow enough to train
# from scratch on a CPU. Not OpenAI weights: results on them are labelled "scale model".
EMBEDDED_MODELS: dict[str, dict] = {
    "scale-B32": {
        "embed_dim": 128,
        "vision_cfg": {"image_size": 56, "patch_size": 8, "width": 128, "layers": 12, "head_width": 32},
        "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 128, "heads": 4, "layers": 4},
    },
}


ACTIVATIONS = ("quick_gelu", "gelu")


def activation_for(
    name: str,
    pretrained: str | None = None,
    init: str | None = None,
    *,
    quick_gelu: bool | None = None,
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
            from .checkpoint import peek_checkpoint

            return weights_activation(peek_checkpoint(source), source)
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
            from .checkpoint import load_clip_weights

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
            from .checkpoint import load_clip_weights

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
    """A :class:`VideoEncoder` over the visual tower of :func:`create_clip` ``(name, pretrained)``."""
    model = create_clip(name, pretrained, **kwargs)
    return VideoEncoder(OpenCLIPVisual(model.visual, name=name), reducer, frames)
