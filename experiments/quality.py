"""Quality trials: retrieval metrics of a reducer, training-free and after fine-tuning.

Shared steps are cached in the sweep's output dir (``cache/data-*``, ``cache/base-*``): the
synthetic benchmark is generated once and the base model (reducer ``none``) trained once; each
trial then evaluates the base model with its reducer inserted (training-free) or fine-tunes it
with the reducer first (``finetuned``). A fine-tune's ``last.pt`` / ``model.pt`` (2.1 GB each
for ViT-B/32) are deleted once it is evaluated unless its config keeps them
(``keep_checkpoints``); the base model's cache stays. All library calls go through this file.
"""

from __future__ import annotations

import logging
from dataclasses import asdict
from pathlib import Path
from typing import Any

import torch

from .cache import cached_step, step_result
from .schema import SWEEP_RECIPE_KEYS

log = logging.getLogger(__name__)


def data_dir(data: dict, ctx) -> Path:
    """The dataset directory: MSR-VTT root as given, or the synthetic benchmark (cached)."""
    if data.get("kind", "synth") == "msrvtt":
        return Path(data["root"])
    from tokred.synth import SynthConfig, generate

    opts = dict(data.get("synth") or {})
    if "test_mix" in opts:
        opts["test_mix"] = tuple(opts["test_mix"])
    cfg = SynthConfig(**opts)
    key = {k: v for k, v in asdict(cfg).items() if k != "workers"}  # defaults included
    return cached_step(ctx.cache, "data", {"synth": key}, lambda d: str(generate(d, cfg)))


def _train_config(settings: dict, recipe: dict, root: Path, out: Path, **kw):
    from tokred.training import TrainConfig

    recipe = {k: v for k, v in recipe.items() if k not in SWEEP_RECIPE_KEYS}
    return TrainConfig(data="msrvtt", root=str(root), split="train", out=str(out),
                       model=settings["model"], frames=settings["frames"],
                       seed=settings.get("seed", 0), **{**recipe, **kw})


def base_key(s: dict) -> dict:
    """What the base model of quality settings ``s`` depends on: its cache key (for
    :func:`base_checkpoint`), also the ``base_of`` of provenance trials run on it. Seed 0 is not
    written, so the keys cached before the seed was part of them stay valid."""
    return {"model": s["model"], "weights": s.get("weights"), "frames": s["frames"],
            "data": s["data"], "base": s.get("base") or {},
            **({"seed": s["seed"]} if s.get("seed") else {})}


def base_checkpoint(key: dict, ctx) -> Path:
    """The base model: pretrained weights as given, or trained once on the data (cached).

    A QuickGELU base (the OpenAI architectures) is cached under a key naming its activation,
    apart from GELU bases trained before the activation was decided per architecture.
    """
    from tokred.backbones.weights import activation_for

    if key.get("weights"):
        return Path(key["weights"])
    root = data_dir(key["data"], ctx)
    act = activation_for(key["model"], quick_gelu=(key.get("base") or {}).get("quick_gelu"))
    cache_key = key if act == "gelu" else {**key, "activation": act}

    def build(tmp: Path) -> dict:
        from tokred.training import train

        stats = train(_train_config(key, key.get("base") or {}, root, tmp, reducer="none"))
        return {k: v for k, v in stats.items() if k not in ("checkpoint", "last")}

    return cached_step(ctx.cache, "base", cache_key, build) / "model.pt"


def base_stats(step_dir: Path) -> dict:
    """Steps, wall time and final loss of the cached base training (from its step.json)."""
    result = step_result(step_dir) or {}
    return {k: result.get(k) for k in ("steps", "total_steps", "wall_s", "loss", "stopped")}


def _split(settings: dict, root: Path, ctx, image_size: int):
    """Test split, synthetic meta and decoded videos (decoded once per sweep process)."""
    from tokred.data import load_split
    from tokred.retrieval.evaluate import load_videos
    from tokred.synth import load_meta

    key = (str(root), settings["split"], settings["frames"], image_size)
    if key not in ctx.videos:
        split = load_split("msrvtt", root, settings["split"])
        meta = load_meta(root) if settings["data"].get("kind", "synth") == "synth" else None
        ctx.videos[key] = (split, meta, load_videos(split, settings["frames"], image_size))
    return ctx.videos[key]


def quality_trial(s: dict, ctx) -> dict:
    """Evaluate reducer ``s['reducer']`` on the base model, training-free or fine-tuned."""
    from tokred.retrieval import build_model
    from tokred.retrieval.evaluate import evaluate, load_model

    base = base_checkpoint(base_key(s), ctx)
    root = data_dir(s["data"], ctx)
    extra: dict[str, Any] = {}
    if s["mode"] == "finetuned":
        from tokred.training import train

        run = ctx.out / "trials" / _trial_dir(s)
        cfg = _train_config(s, s["finetune"], root, run, init=str(base), reducer=s["reducer"],
                            reducer_options=s["options"])
        stats = train(cfg)
        extra = {"train_s": stats.get("wall_s"), "train_steps": stats.get("steps"),
                 "train_loss": stats.get("loss"),
                 "trainable_params": stats["trainable_params"]}
        model = load_model(stats["checkpoint"])
    elif s.get("weights"):
        model = build_model(s["model"], s["reducer"], s["options"], s["frames"], s["weights"]).eval()
    else:
        model = load_model(base, s["reducer"], s["options"], s["frames"])
    split, meta, videos = _split(s, root, ctx, model.video.backbone.spec.image_size)
    res = evaluate(model, split, videos=videos, synth_meta=meta, frames=s["frames"],
                   batch_size=int((s.get("finetune") or s["base"]).get("eval_batch_size", 64)))
    if s["mode"] == "finetuned":  # `run` is the fine-tune's directory, named by the trial id
        res["checkpoint"] = _kept_or_deleted(run, run.name in ctx.keep)
    from .facts import reducer_diagnostics, training_facts, weights_facts

    res.update(reducer_diagnostics(model.reducer))  # before encoder_cost's extra forwards
    res.update(extra)
    if not s.get("weights"):
        res["base_train"] = base_stats(base.parent)
    res.update(weights_facts(s.get("weights")))
    res.update(training_facts(s, res, root))
    res.update(encoder_cost(model.video, videos))
    res.setdefault("trainable_params", 0)
    return res


def _kept_or_deleted(run: Path, keep: bool) -> str | None:
    """``model.pt`` of a fine-tune when ``keep``, else None after deleting it and ``last.pt``
    (``train_log.jsonl`` stays: the loss curve is small)."""
    if keep:
        return str(run / "model.pt")
    for name in ("last.pt", "model.pt"):
        (run / name).unlink(missing_ok=True)
    log.info("deleted the checkpoints of %s (keep_checkpoints: true keeps them)", run)
    return None


def _trial_dir(s: dict) -> str:
    from .records import trial_id

    return trial_id(s)


def encoder_cost(enc, videos: torch.Tensor, batch: int = 4, rounds: int = 5) -> dict:
    """GMACs, tokens out, activation memory and inference speed of the evaluated encoder.

    Speed is paired: ``enc`` and reducer ``none`` over the same weights run on the same
    ``batch`` test clips in ``rounds`` interleaved rounds (``tokred.cost.timing``; an encoder
    with reducer ``none`` is its own baseline, speed-up 1 exactly); the speed-up keys are
    ``tokred.cost.record.compare``'s (median per-round ratio, its spread and rounds, GMACs
    ideal, suspect flag), ``videos_per_s`` is the evaluated encoder's own absolute speed.
    ``activation_mib``: what one video keeps for backward in full fine-tuning (training mode,
    every parameter trainable; storages counted once, parameters excluded).
    """
    from tokred.cost.analytic import gmacs
    from tokred.cost.memory import MB, finetune_activation_bytes
    from tokred.cost.record import compare, speed_fields
    from tokred.cost.timing import PairedTiming, fixed_video, paired_inference, time_calls
    from tokred.encoder import VideoEncoder
    from tokred.registry import get_reducer_class

    frames = videos.shape[1]
    trace = enc.trace(frames)
    clip = videos[:batch].float()
    baseline = get_reducer_class("none")
    if isinstance(enc.reducer, baseline):  # its own baseline: every ratio exactly 1
        none = enc
        with torch.inference_mode():
            paired = PairedTiming.itself(time_calls(lambda: enc(clip), clip.shape[0], 1, rounds))
    else:
        none = VideoEncoder(enc.backbone, baseline(), frames)
        paired = paired_inference(none, enc, clip, rounds=rounds)
    rec = {"gmacs": gmacs(trace), **speed_fields({clip.shape[0]: paired})}
    speed = compare(rec, {"gmacs": gmacs(none.trace(frames))})
    one = fixed_video(1, frames, enc.spec.image_size, clip.device)  # not an inference tensor
    return {"gmacs": rec["gmacs"], "tokens_out": trace.tokens_out,
            "attn_tokens": trace.attn_tokens(), "videos_per_s": paired.timing.per_second,
            "ms_per_video": 1000 * paired.timing.median / clip.shape[0], **speed,
            "paired_timing": paired.to_dict(),
            "activation_mib": finetune_activation_bytes(enc, lambda: enc(one)) / MB}
