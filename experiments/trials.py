"""What one trial does: a thin layer over the library's cost and retrieval functions.

``run_trial(trial, ctx)`` returns the metrics dict of one trial; the runner adds settings,
provenance and status around it. A cost trial's metrics are the library's cost record
(``tokred.cost.measure.measure``) unchanged, plus the reducer's diagnostics.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path

import torch

from .trial import Trial

log = logging.getLogger(__name__)


@dataclass
class Context:
    """What trials of one sweep share: the output dir (cache), the in-process caches of
    backbones (one at a time) and of decoded test videos, and the ids of the fine-tunes whose
    checkpoints are kept (``keep_checkpoints``)."""

    out: Path
    device: str = "cpu"
    models: dict = field(default_factory=dict)
    videos: dict = field(default_factory=dict)
    keep: frozenset[str] = frozenset()

    @property
    def cache(self) -> Path:
        return self.out / "cache"


def run_trial(trial: Trial, ctx: Context) -> dict:
    """Run ``trial`` and return its metrics (raises on failure)."""
    if trial.kind == "cost":
        return cost_trial(trial.settings, ctx)
    if trial.kind == "provenance":
        return provenance_trial(trial.settings, ctx)
    from .quality import quality_trial

    return quality_trial(trial.settings, ctx)


def _backbone(name: str, ctx: Context):
    """The visual adapter of ``name`` with random weights (seed 0), built once per sweep
    process; one backbone is kept at a time.

    Its activation is the architecture's (:func:`tokred.models.activation_for`): the papers'
    OpenAI architectures are QuickGELU even with random weights.
    """
    from tokred.backbones import OpenCLIPVisual
    from tokred.models import create_clip

    if name not in ctx.models:
        torch.manual_seed(0)
        clip = create_clip(name, None, device=ctx.device).eval()
        ctx.models.clear()  # keep one backbone in memory at a time (not the decoded videos)
        ctx.models[name] = OpenCLIPVisual(clip.visual, name=name)
    return ctx.models[name]


def cost_trial(s: dict, ctx: Context) -> dict:
    """The cost record of one reducer setting (``tokred.cost.record.CostRecord``, as a dict).

    Its speed-up is paired: ``measure`` times the reducer and ``none`` over the same weights in
    this trial's process, ``repeats`` interleaved rounds per batch size (one call of each per
    round), so it never divides by a ``none`` timed in another trial; the ``none`` trial is its
    own baseline (speed-up 1 exactly).
    """
    from tokred.cost.measure import measure

    from .facts import cost_diagnostics  # reducer counters (CenterCLIP's empty spectral graphs)

    rec = measure(s["backbone"], s["reducer"], s["options"], s["frames"],
                  batch_sizes=s["batch_sizes"], repeats=s["repeats"], warmup=s["warmup"],
                  device=ctx.device, fvcore=s.get("fvcore", True), activation=s["memory"],
                  quick_gelu=cost_activation(s) == "quick_gelu",
                  **({"clock": s["clock"]} if "clock" in s else {}))
    return {**rec, **cost_diagnostics(s, ctx.device)}


def cost_activation(s: dict) -> str:
    """The MLP activation of a cost trial's network: the one its ``weights`` need (random:
    the architecture's published one, QuickGELU for OpenAI's ViT-B-32 / ViT-B-16)."""
    from tokred.backbones.weights import activation_for

    weights = s.get("weights", "random")
    return activation_for(s["backbone"], None if weights in (None, "random") else weights)


def provenance_trial(s: dict, ctx: Context) -> dict:
    """Which input patches each output token stands for, on one synthetic video."""
    from tokred import create_reducer
    from tokred.encoder import VideoEncoder

    from .provenance import provenance

    if s["weights"] == "base":
        from tokred.retrieval.evaluate import load_model

        from .quality import base_checkpoint

        backbone = load_model(base_checkpoint(s["base_of"], ctx)).video.backbone
    else:
        backbone = _backbone(s["model"], ctx)
    reducer = create_reducer(s["reducer"], **s["options"])
    return provenance(lambda r: VideoEncoder(backbone, r, s["frames"]), reducer, s["frames"])
