"""Checks run on a config before any trial: reducers, options, schedules, data and weights."""

from __future__ import annotations

import os
from functools import cache
from typing import Any

from tokred import BackboneSpec, create_reducer


@cache
def spec_for(model: str) -> BackboneSpec:
    """The :class:`BackboneSpec` of a model name without building the model.

    Raises:
        ValueError: unknown model name.
    """
    import open_clip

    from tokred.models import EMBEDDED_MODELS

    if model in EMBEDDED_MODELS:
        cfg = EMBEDDED_MODELS[model]["vision_cfg"]
    else:
        cfg = open_clip.get_model_config(model)
        if cfg is None:
            raise ValueError(f"unknown model {model!r}; use an open_clip name such as ViT-B-32 or "
                             f"ViT-B-16, or an embedded one: {', '.join(EMBEDDED_MODELS)}")
        cfg = cfg["vision_cfg"]
    width, patch, size = cfg["width"], cfg["patch_size"], cfg["image_size"]
    return BackboneSpec(
        name=model, width=width, layers=cfg["layers"], heads=width // cfg.get("head_width", 64),
        mlp_hidden=int(width * cfg.get("mlp_ratio", 4.0)), patch_size=patch, image_size=size,
        grid=size // patch,
    )


def check_reducer(name: str, options: dict, model: str, frames: int, where: str,
                  error: type[Exception]) -> None:
    """Build reducer ``name(**options)`` and run its ``setup`` for ``model`` at ``frames``.

    Raises ``error`` naming ``where`` (file:line) for an unknown reducer, an unknown option or a
    schedule that cannot apply (e.g. CenterCLIP segments that do not divide the frames).
    """
    try:
        spec = spec_for(model).with_frames(frames)
    except ValueError as err:
        raise error(f"{where}: {err}") from None
    try:
        reducer = create_reducer(name, **options)
    except KeyError as err:
        raise error(f"{where}: {err.args[0]}; fix the reducer name") from None
    except TypeError as err:
        raise error(f"{where}: {err}; fix the option name in 'options' or 'sweep'") from None
    except ImportError as err:
        raise error(f"{where}: reducer {name!r} is declared but its module cannot be imported "
                    f"({err}); install it or remove it from the config") from None
    except ValueError as err:
        raise error(f"{where}: reducer {name!r} rejects options {options}: {err}") from None
    try:
        reducer.setup(spec)
    except ValueError as err:
        raise error(f"{where}: {name} with {options} cannot run on {model} with {frames} frames: "
                    f"{err}; change the option value or 'frames'") from None


def check_data_paths(loc: Any, sec: dict, error: type[Exception]) -> None:
    """Stop at once when the quality section needs files that are not there."""
    data = sec.get("data") or {}
    kind = data.get("kind", "synth")
    if kind not in ("synth", "msrvtt"):
        raise error(f"{loc.where('quality', 'data', 'kind')}: unknown data kind {kind!r}; "
                    f"use synth or msrvtt")
    hint = "; or run only the cost part with --cost-only"
    if kind == "msrvtt":
        root = data.get("root")
        if not root or not os.path.isdir(root):
            raise error(f"{loc.where('quality', 'data', 'root')}: MSR-VTT directory {root!r} "
                        f"does not exist; download MSR-VTT (videos + CLIP4Clip annotation files) "
                        f"and set MSRVTT_ROOT=/path or edit quality.data.root{hint}")
    weights = sec.get("weights")
    if weights is not None and not os.path.isfile(weights) and not _known_tag(sec, weights):
        raise error(f"{loc.where('quality', 'weights')}: pretrained weights {weights!r} not "
                    f"found; put the CLIP checkpoint there (e.g. OpenAI ViT-B-32.pt) or set "
                    f"CLIP_WEIGHTS=/path/to/file{hint}")


def _known_tag(sec: dict, weights: str) -> bool:
    """An open_clip pretrained tag (downloaded at run time), not a path."""
    if os.sep in weights or weights.endswith((".pt", ".pth", ".bin", ".safetensors")):
        return False
    import open_clip

    return weights in open_clip.list_pretrained_tags_by_model(sec.get("model", ""))


def check_recipe(recipe: dict, reducer: str, options: dict, model: str, frames: int,
                 where: str, error: type[Exception]) -> None:
    """Build the training config of a ``base:`` / ``finetune:`` recipe for ``reducer``.

    Raises ``error`` naming ``where`` for a value TrainConfig rejects (an unknown mode, a
    frame pool smaller than train_frames, patch dropout with a reducer other than none, ...),
    before any trial runs instead of after the base model has trained.
    """
    try:
        from tokred.train import TrainConfig
    except ImportError:  # the library is not importable: key checks only
        return
    kw = {k: v for k, v in recipe.items() if k != "eval_batch_size"}
    try:
        TrainConfig(model=model, frames=frames, reducer=reducer, reducer_options=options, **kw)
    except (TypeError, ValueError) as err:
        raise error(f"{where}: recipe {kw} cannot train {reducer}: {err}") from None
