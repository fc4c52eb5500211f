"""The keys a sweep config may use, each with a one-line meaning (shown in error messages)."""

from __future__ import annotations

import difflib
from dataclasses import fields
from typing import Any

from tokred.synth.generate import SynthConfig
from tokred.training.config import TrainConfig

TOP_KEYS = {
    "name": "short name of the sweep (used in report titles)",
    "description": "free text shown at the top of the report",
    "label": "label printed on every quality number (e.g. SYNTHETIC)",
    "seed": "random seed for data, training and timing inputs",
    "cost": "cost section: GMACs, tokens, memory, throughput per reducer",
    "quality": "quality section: retrieval metrics training-free and after fine-tuning",
    "provenance": "token-provenance pictures: {model, frames, weights, reducers}",
    "defaults": "free-form anchors (&name) reused elsewhere in the file; not read directly",
    "plugins": "list of local .py files of reducers to load for this run (paths relative to "
               "this file; tokred.plugins.load_plugin_file)",
}
RUN_KEYS = {
    "backbone": "open_clip model name or scale model (ViT-B-32, ViT-B-16, scale-B32)",
    "weights": "'random' (cost does not depend on weights) or a checkpoint path",
    "frames": "frames per video T",
    "batch_sizes": "list of batch sizes (videos) to time",
    "repeats": "timed repeats per batch size (median reported)",
    "warmup": "discarded warm-up calls per batch size",
    "memory": "also measure activation memory of one training step (true/false)",
    "clock": "timer for throughput: wall (default) or cpu (process CPU time, for 1-thread runs "
             "on a shared machine; tokred.cost.measure)",
    "fvcore": "cross-check the analytic GMACs with fvcore (true/false; a few seconds each)",
    "reducers": "list of reducers: name or {name, options, sweep}",
}
COST_KEYS = {**{k: v for k, v in RUN_KEYS.items() if k != "backbone"},
             "runs": "list of {backbone, ...overrides, reducers}"}
QUALITY_KEYS = {
    "model": "CLIP model (scale-B32 for the synthetic benchmark, ViT-B-32 for MSR-VTT)",
    "weights": "pretrained checkpoint path (None: train the base model on the data)",
    "frames": "frames per video T",
    "data": "dataset: {kind: synth|msrvtt, ...}",
    "base": "recipe to train the base model (reducer none) when weights is None",
    "finetune": "recipe to fine-tune the base model with each reducer",
    "modes": "training_free and/or finetuned",
    "split": "evaluation split",
    "reducers": "list of reducers: name or {name, options, sweep}",
    "keep_checkpoints": "keep each fine-tune's last.pt / model.pt (true/false; default false: "
                        "deleted after evaluation; the base model's cache is always kept)",
}
PROVENANCE_KEYS = {
    "model": "model run on one synthetic video (scale-B32)",
    "frames": "frames per video T",
    "weights": "'random' or 'base' (the quality section's trained base model)",
    "reducers": "list of reducers: name or {name, options, sweep}",
}
DATA_KEYS = {
    "kind": "synth (generated and cached in the output dir) or msrvtt",
    "root": "dataset directory (msrvtt: videos/ and annotation files)",
    "synth": "options of tokred.synth.SynthConfig (sizes, seed)",
    "max_words": "caption length in tokens",
    "workers": "data-loading worker processes",
}
# TrainConfig fields the sweep sets itself; a ``base:`` / ``finetune:`` recipe may set the rest.
MANAGED = {"data", "root", "split", "video_root", "out", "model", "pretrained", "init",
           "reducer", "reducer_options", "frames", "seed"}
# Managed fields a recipe writer may reach for, and where they are set instead.
ELSEWHERE = {
    "seed": "set seed once at the top level (seed: N): it reaches the base model, every "
            "fine-tune and the synthetic data",
    "frames": "set quality.frames (frames per video for every model of the section)",
    "model": "set quality.model",
}
RECIPE_KEYS = {**{f.name: f"tokred.training.TrainConfig.{f.name}" for f in fields(TrainConfig)
                  if f.name not in MANAGED},
               "eval_batch_size": "videos per evaluation batch",
               "keep_checkpoints": "fine-tune only: keep this fine-tune's last.pt / model.pt "
                                   "(true/false; default: quality.keep_checkpoints)"}
# Recipe keys the sweep reads itself (not TrainConfig fields).
SWEEP_RECIPE_KEYS = ("eval_batch_size", "keep_checkpoints")
SYNTH_KEYS = {f.name: f"tokred.synth.SynthConfig.{f.name}" for f in fields(SynthConfig)
              if f.name != "version"}
REDUCER_KEYS = {
    "name": "registered reducer name, or name.PRESET (tokred list shows both)",
    "preset": "a preset of the reducer (a paper setting, e.g. B6-4-49); options/sweep override it",
    "options": "fixed keyword options of the reducer (over the preset's)",
    "sweep": "option -> list of values; every combination becomes a trial",
    "modes": "quality only: this entry's modes (default: the section's modes)",
    "finetune": "quality only: recipe keys overriding quality.finetune for this entry",
}


def check_keys(loc: Any, where: tuple, mapping: Any, allowed: dict[str, str], what: str,
               error: type[Exception]) -> None:
    """Raise ``error`` for a key of ``mapping`` not in ``allowed``, with a did-you-mean (or,
    for a recipe key the sweep sets itself, where to set it: :data:`ELSEWHERE`)."""
    if not isinstance(mapping, dict):
        raise error(f"{loc.where(*where)}: {what} must be a mapping, got {mapping!r}")
    for key in mapping:
        if key in allowed:
            continue
        if allowed is RECIPE_KEYS and key in ELSEWHERE:
            raise error(f"{loc.where(*where, key)}: {key!r} cannot be set in {what}; "
                        f"{ELSEWHERE[key]}")
        close = difflib.get_close_matches(str(key), list(allowed), n=1)
        fix = f"did you mean {close[0]!r} ({allowed[close[0]]})?" if close else \
            f"valid keys: {', '.join(allowed)}"
        raise error(f"{loc.where(*where, key)}: unknown key {key!r} in {what}; {fix}")
