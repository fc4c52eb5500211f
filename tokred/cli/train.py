"""``tokred train``: fine-tune (or train from scratch) a retrieval model; one flag per
:class:`~tokred.training.config.TrainConfig` field."""

from __future__ import annotations

import argparse
from dataclasses import MISSING, fields
from typing import Any

from tokred.cli.args import (
    DEVICE_HELP,
    FRACTION,
    THREADS_HELP,
    HelpFormatter,
    add_plugin_flag,
    device,
    existing_file,
    existing_path,
    json_numbers,
    json_object,
    output_dir,
)
from tokred.training import distributed as D
from tokred.training.config import RECIPES, RULES, TrainConfig
from tokred.training.loop import train
from tokred.training.precision import PRECISIONS

PATHS = {"out": output_dir, "init": existing_file, "bad_videos": existing_file,
         "root": existing_path, "video_root": existing_path}
SPECIAL = {"reducer_options": json_object, "betas": json_numbers(2, FRACTION, "[0.9, 0.98]"),
           "device": device}
_PER_MODE = ", ".join(f"{m} {lr:g}" for m, (lr, _) in RECIPES.items())
HELP = {  # one line per field; TrainConfig's docstring has the details
    "data": "dataset kind", "root": "annotation directory (csv/jsonl: the file)",
    "split": "training split", "video_root": "video directory (default: ROOT/videos)",
    "out": "run directory: last.pt, model.pt, train_log.jsonl",
    "model": "CLIP architecture (open_clip name or scale model)",
    "pretrained": "open_clip pretrained tag or weights file (default: random init)",
    "init": "checkpoint to start from: CLIP4Clip layouts or a tokred model.pt (default: none)",
    "quick_gelu": "QuickGELU (on) or GELU (off) (default: decided by the model and weights)",
    "reducer": "registered reducer name, see tokred list (default: none, no reduction)",
    "reducer_options": "JSON options of --reducer, e.g. '{\"r\": 2}' (default: {})",
    "mode": "full fine-tuning, LoRA, or training from scratch",
    "lora_rank": "LoRA rank (--mode lora)", "frames": "frames the reducer is set up for",
    "train_frames": "frames sampled per training video (default: --frames)",
    "sampling": "which frames are sampled", "max_words": "caption length in tokens",
    "frame_pool": "decode this many frames per video and draw --train-frames of them each "
                  "epoch (default: exactly --train-frames, the same every epoch)",
    "batch_size": "global batch (over ranks and accumulation steps)",
    "grad_accum": "gradient accumulation steps",
    "epochs": "passes over the data (--max-steps wins when set)",
    "max_steps": "optimizer steps (default: from --epochs)",
    "lr": f"peak learning rate (default: per --mode: {_PER_MODE})",
    "betas": "AdamW betas as a JSON list, e.g. '[0.9, 0.98]' (default: per --mode: full and "
             "scratch [0.9, 0.98], lora [0.9, 0.999])",
    "weight_decay": "AdamW weight decay", "warmup": "warm-up fraction of the steps",
    "grad_clip": "gradient norm clip (0: off)",
    "patch_dropout": "fraction of patches dropped in training (FLIP; reducer none only)",
    "precision": "fp32, bf16 autocast, or fp16 autocast + GradScaler (CUDA only)",
    "freeze_logit_scale": "keep the logit scale fixed (default: on for --mode lora)",
    "seed": "random seed", "device": DEVICE_HELP,
    "num_workers": "data-loading worker processes",
    "cache": "decode the training clips once, before training, and keep them in memory",
    "skip_errors": "leave undecodable videos out (with a warning) instead of stopping",
    "bad_videos": "file of video ids to leave out, as written by tokred data check "
                  "(default: none)",
    "trust_pickle": "load checkpoints / caption pickles holding arbitrary Python objects "
                    "(they can run code: trusted files only)",
    "save_every": "also save last.pt every N steps (0: at the end and when stopped)",
    "resume": "continue from OUT/last.pt (written with the same settings)",
    "stop_at_step": "stop (after saving) at this step, as if interrupted (default: never)",
    "time_limit": "minutes; a safety stop that saves and is recorded (default: none)",
    "threads": THREADS_HELP,
}
CHOICES = {"mode": list(RECIPES), "precision": list(PRECISIONS)}


def parser() -> argparse.ArgumentParser:
    """The ``tokred train`` parser: one flag per :class:`TrainConfig` field, plus ``--plugin``.

    Every flag's default is None (unset: TrainConfig's own default applies, shown in the help),
    so only the flags given reach the config.
    """
    from tokred.data.readers import READERS
    from tokred.data.video import SAMPLINGS

    choices = {**CHOICES, "data": sorted(READERS), "sampling": list(SAMPLINGS)}
    ap = argparse.ArgumentParser(prog="tokred train", formatter_class=HelpFormatter,
                                 description="fine-tune (or train from scratch) a retrieval "
                                 "model; one flag per\ntokred.training.TrainConfig field; "
                                 "writes OUT/model.pt (meta with the run's provenance)")
    for f in fields(TrainConfig):
        flag = "--" + f.name.replace("_", "-")
        text = HELP.get(f.name, f"TrainConfig.{f.name}") + _default_text(f)
        if f.type in ("bool", "bool | None"):
            ap.add_argument(flag, action=argparse.BooleanOptionalAction, default=None, help=text)
            continue
        typ = RULES.get(f.name) or PATHS.get(f.name) or SPECIAL.get(f.name) or str
        ap.add_argument(flag, type=typ, default=None, choices=choices.get(f.name), help=text)
    add_plugin_flag(ap)
    return ap


def _default_text(f: Any) -> str:
    """`` (default: X)`` from TrainConfig, unless the help says what the default is."""
    if "default" in HELP.get(f.name, "") or f.default is MISSING or f.default is None:
        return ""
    value = f.default
    return f" (default: {str(value).lower() if isinstance(value, bool) else value})"


def parse(argv: list[str] | None) -> tuple[TrainConfig, list]:
    """``tokred train`` flags -> (:class:`TrainConfig`, plugin files).

    Numbers are checked by the field's rule (:data:`~tokred.training.config.RULES`) and paths
    by :data:`PATHS` as they are parsed, so a bad value stops before anything is built.
    """
    ns = {k: v for k, v in vars(parser().parse_args(argv)).items() if v is not None}
    plugins = ns.pop("plugin", [])
    ns.update({k: str(ns[k]) for k in PATHS if k in ns})
    return TrainConfig(**ns), plugins


def config_from_args(argv: list[str] | None) -> TrainConfig:
    """The :class:`TrainConfig` of ``tokred train`` flags (see :func:`parse`)."""
    return parse(argv)[0]


def main(argv: list[str] | None = None) -> int:
    """``tokred train``: fine-tune (or train from scratch) and write ``OUT/model.pt``."""
    from tokred.plugins import load_plugin_files

    cfg, plugins = parse(argv)
    load_plugin_files(plugins)
    try:
        stats = train(cfg)
    finally:
        D.cleanup()
    if stats.get("checkpoint"):  # only rank 0 writes (and returns) a checkpoint
        skipped = stats.get("skipped_videos")
        print(
            f"trained {stats['steps']} steps in {stats['wall_s']:.0f}s, loss {stats['loss']:.4f}"
            f"; checkpoint {stats['checkpoint']}"
            + (f"; {skipped} bad videos skipped" if skipped else "")
        )
    return 0
