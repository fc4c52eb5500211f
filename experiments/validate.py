"""Checks run on a config before any trial: reducers, options, schedules, data and weights."""

from __future__ import annotations

import os
from functools import cache
from typing import Any

from tokred import BackboneSpec, create_reducer, list_reducers, resolve_options
from tokred.cli.args import POSITIVE_INT
from tokred.registry import split_spec
from tokred.training.config import TrainConfig

from .schema import SWEEP_RECIPE_KEYS


@cache
def spec_for(model: str) -> BackboneSpec:
    """The :class:`BackboneSpec` of a model name without building the model.

    Raises:
        ValueError: unknown model name.
    """
    import open_clip

    from tokred.backbones.embedded import EMBEDDED_MODELS

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


def resolve_preset(spec: Any, preset: Any, where: str,
                   error: type[Exception]) -> tuple[str, dict]:
    """``(reducer name, preset options)`` of a ``name`` / ``name.PRESET`` spec and a ``preset``.

    The options are the preset's as the reducer class declares them (``{}`` without a preset),
    so an entry written with a preset makes the same trials, and trial ids, as one with those
    options written out. Raises ``error`` naming ``where`` for an unknown preset (with the
    reducer's presets and close matches) or a spec and a preset that disagree.
    """
    if not isinstance(spec, str):
        raise error(f"{where}: a reducer name must be a string such as tome or "
                    f"centerclip.B6-4-49, got {spec!r}")
    name, tag = split_spec(spec)
    if (tag is None and preset is None) or name not in list_reducers():
        return name, {}  # an unknown name is reported by check_reducer, with close matches
    try:
        return resolve_options(spec, None if preset is None else str(preset))
    except KeyError as err:
        raise error(f"{where}: {err.args[0]}; fix the preset (tokred list shows every "
                    f"reducer's presets) or write the options out") from None
    except (ImportError, ValueError) as err:
        raise error(f"{where}: reducer {name!r} cannot be loaded ({err}); install it or remove "
                    f"it from the config") from None


def check_data_paths(loc: Any, sec: dict, error: type[Exception], files: bool = True) -> None:
    """Stop at once when the quality section needs files that are not there (``files=False``:
    check the data kind only)."""
    data = sec.get("data") or {}
    kind = data.get("kind", "synth")
    if kind not in ("synth", "msrvtt"):
        raise error(f"{loc.where('quality', 'data', 'kind')}: unknown data kind {kind!r}; "
                    f"use synth or msrvtt")
    hint = "; or run only the cost part with --cost-only"
    if not files:
        return
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
    kw = {k: v for k, v in recipe.items() if k not in SWEEP_RECIPE_KEYS}
    try:
        POSITIVE_INT.check(recipe.get("eval_batch_size", 64), "eval_batch_size")
        TrainConfig(model=model, frames=frames, reducer=reducer, reducer_options=options, **kw)
    except (TypeError, ValueError) as err:
        raise error(f"{where}: this recipe cannot train {reducer}: {err}") from None


def recipe_device(recipe: dict) -> tuple[str, str]:
    """The device a ``base:`` / ``finetune:`` recipe trains on here, and why.

    ``device: auto`` (TrainConfig's default) resolves like :func:`tokred.training.distributed.
    init_distributed`: CUDA when ``torch.cuda.is_available()``, else the CPU.
    """
    import torch

    device = str(recipe.get("device", "auto"))
    if device != "auto":
        return device, f"device: {device}"
    if torch.cuda.is_available():
        return "cuda", "device: auto, and CUDA is available"
    return "cpu", "device: auto, and torch.cuda.is_available() is False here"


def check_precision(recipe: dict, where: str, error: type[Exception]) -> None:
    """Stop when the recipe's ``precision`` (or ``device``) cannot run on this machine.

    ``fp16`` trains with a GradScaler, which needs CUDA; the check depends on the machine the
    config is loaded on, so a GPU config stays valid on a GPU machine.
    """
    import torch

    device, why = recipe_device(recipe)
    on_cuda = device.startswith("cuda")
    if on_cuda and not torch.cuda.is_available():
        raise error(f"{where}: {why} but CUDA is not available on this machine; use device: "
                    f"auto or cpu (with precision: bf16 or fp32), or run on a CUDA machine")
    precision = recipe.get("precision", "fp32")
    if precision == "fp16" and not on_cuda:
        raise error(f"{where}: precision: fp16 needs CUDA (autocast + GradScaler), but this "
                    f"recipe trains on {device} ({why}); use precision: bf16 or fp32 on CPU, "
                    f"or run on a CUDA machine")


def check_data_files(loc: Any, sec: dict, splits: list[str], error: type[Exception]) -> None:
    """Open every quality dataset before any trial: read its split files, list its videos.

    ``splits``: the splits the trials use (the evaluation split; ``train`` when a base model
    is trained or a reducer fine-tuned). Synthetic data is generated by the sweep itself, so
    there is nothing to check before the run.
    """
    data = sec.get("data") or {}
    if data.get("kind", "synth") != "msrvtt":
        return
    from tokred.data import load_split
    from tokred.data.readers import missing_files

    root = data["root"]
    where = loc.where("quality", "data", "root")
    hint = "; or run only the cost part with --cost-only"
    for split in dict.fromkeys(splits):
        try:
            loaded = load_split("msrvtt", root, split)
        except (FileNotFoundError, ValueError, KeyError, OSError) as err:
            raise error(f"{where}: the MSR-VTT {split} split under {root!r} cannot be read: "
                        f"{err}; MSR-VTT needs the CLIP4Clip annotation files "
                        f"(MSRVTT_data.json, MSRVTT_train.9k.csv, MSRVTT_JSFUSION_test.csv) and "
                        f"videos/; fix MSRVTT_ROOT or quality.data.root{hint}") from None
        if not loaded.videos:
            raise error(f"{where}: the MSR-VTT {split} split under {root!r} lists no videos; "
                        f"check its annotation file{hint}")
        missing = missing_files(loaded)
        if missing:
            shown = ", ".join(str(v.path) for v in missing[:10])
            more = f" and {len(missing) - 10} more" if len(missing) > 10 else ""
            raise error(f"{where}: {len(missing)} of the {len(loaded.videos)} videos of the "
                        f"MSR-VTT {split} split are missing: {shown}{more}; put every listed "
                        f"video in {loaded.video_root or missing[0].path.parent} as "
                        f"<video_id>.mp4 or fix MSRVTT_ROOT / quality.data.root{hint}")
