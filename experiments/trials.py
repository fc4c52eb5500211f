"""What one trial does: a thin layer over the library's cost and retrieval functions.

``run_trial(trial, ctx)`` returns the metrics dict of one trial; the runner adds settings,
versions and status around it. Cost trials use ``tokred.cost.measure.measure`` when it is
available and otherwise compute the same quantities from the encoder's token trace.
"""

from __future__ import annotations

import logging
import platform
import resource
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .tables import normalise_measure
from .trial import Trial

log = logging.getLogger(__name__)


@dataclass
class Context:
    """What trials of one sweep share: the output dir (cache) and in-process model cache."""

    out: Path
    device: str = "cpu"
    models: dict = field(default_factory=dict)

    @property
    def cache(self) -> Path:
        return self.out / "cache"


def versions() -> dict[str, Any]:
    """Software and machine facts recorded with every trial."""
    import open_clip

    import tokred

    try:
        commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True, timeout=5, cwd=Path(__file__).parent).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        commit = ""
    return {"tokred": tokred.__version__, "torch": torch.__version__,
            "open_clip": open_clip.__version__, "python": platform.python_version(),
            "git": commit, "host": platform.node(), "cpu": platform.processor() or
            platform.machine(), "threads": torch.get_num_threads()}


def run_trial(trial: Trial, ctx: Context) -> dict:
    """Run ``trial`` and return its metrics (raises on failure)."""
    if trial.kind == "cost":
        return cost_trial(trial.settings, ctx)
    if trial.kind == "provenance":
        return provenance_trial(trial.settings, ctx)
    from .quality import quality_trial

    return quality_trial(trial.settings, ctx)


def _backbone(name: str, weights: str, ctx: Context):
    """The visual adapter of ``name`` (built once per sweep process; random init, seed 0).

    Its activation is the one ``weights`` need (:func:`tokred.models.activation_for`): the
    papers' OpenAI architectures are QuickGELU even with random weights.
    """
    from tokred.backbones import OpenCLIPVisual
    from tokred.models import create_clip

    key = (name, weights)
    if key not in ctx.models:
        torch.manual_seed(0)
        pretrained = None if weights in (None, "random") else weights
        clip = create_clip(name, pretrained, device=ctx.device).eval()
        ctx.models.clear()  # keep one backbone in memory at a time
        ctx.models[key] = OpenCLIPVisual(clip.visual, name=name)
    return ctx.models[key]


def cost_trial(s: dict, ctx: Context) -> dict:
    """GMACs, tokens, throughput and activation memory of one reducer setting."""
    from .facts import cost_diagnostics  # reducer counters (CenterCLIP's empty spectral graphs)

    try:
        from tokred.cost.measure import measure
    except ImportError:  # older library: compute the same quantities here
        return {**_cost_direct(s, ctx), **cost_diagnostics(s, ctx.device)}
    rec = measure(s["backbone"], s["reducer"], s["options"], s["frames"],
                  batch_sizes=s["batch_sizes"], repeats=s["repeats"], warmup=s["warmup"],
                  device=ctx.device, fvcore=s.get("fvcore", True), activation=s["memory"],
                  quick_gelu=cost_activation(s) == "quick_gelu",
                  **({"clock": s["clock"]} if "clock" in s else {}))
    return {**normalise_measure(rec), **cost_diagnostics(s, ctx.device)}


def cost_activation(s: dict) -> str:
    """The MLP activation of a cost trial's network: the one its ``weights`` need (random:
    the architecture's published one, QuickGELU for OpenAI's ViT-B-32 / ViT-B-16)."""
    from tokred.backbones.weights import activation_for

    weights = s.get("weights", "random")
    return activation_for(s["backbone"], None if weights in (None, "random") else weights)


def _cost_direct(s: dict, ctx: Context) -> dict:
    from tokred import create_reducer
    from tokred.backbones.weights import activation_of
    from tokred.cost.analytic import gmacs
    from tokred.cost.timing import time_calls
    from tokred.encoder import VideoEncoder

    backbone = _backbone(s["backbone"], s["weights"], ctx)
    reducer = create_reducer(s["reducer"], **s["options"])
    enc = VideoEncoder(backbone, reducer, s["frames"]).eval()
    trace = enc.trace(s["frames"])
    g = gmacs(trace)
    work = reducer.work_macs(trace) / 1e9
    out: dict[str, Any] = {
        "gmacs": g, "gflops": 2 * g, "reducer_gmacs": work,
        "tokens_out": trace.tokens_out, "attn_tokens": trace.attn_tokens(),
        "mlp_tokens": trace.mlp_tokens(), "trace": trace.to_dict(),
        "trainable_params": sum(p.numel() for p in reducer.parameters() if p.requires_grad),
        "activation": activation_of(backbone.visual), "throughput": {},
    }
    size = enc.spec.image_size
    gen = torch.Generator().manual_seed(0)
    for b in s["batch_sizes"]:
        video = torch.randn(b, s["frames"], 3, size, size, generator=gen)
        with torch.inference_mode():
            t = time_calls(lambda v=video: enc(v), items=b, warmup=s["warmup"],
                           repeats=s["repeats"], device=ctx.device)
        out["throughput"][str(b)] = {"videos_per_s": t.per_second,
                                     "ms_per_video": 1000 * t.median / b, "spread": t.spread,
                                     "times_s": t.times}
    best = max(out["throughput"].values(), key=lambda r: r["videos_per_s"])
    out["videos_per_s"] = best["videos_per_s"]
    out["ms_per_video"] = best["ms_per_video"]
    if s["memory"]:
        out["activation_mib"] = activation_mib(enc, s["frames"], size)
    out["peak_rss_mib"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    out["cost_backend"] = "trial-direct"
    return out


def activation_mib(enc, frames: int, size: int) -> float:
    """MiB of activations one video keeps for backward (training memory, device-independent).

    Counts the bytes of every tensor autograd saves during a forward in training mode with all
    parameters trainable (full fine-tuning), via ``saved_tensors_hooks``; tensors saved twice
    (same storage) are counted once and parameters are excluded.
    """
    params = {p.data_ptr() for p in enc.parameters()}
    seen: set[tuple[int, int]] = set()
    total = 0

    def pack(t: torch.Tensor):
        nonlocal total
        key = (t.untyped_storage().data_ptr(), t.untyped_storage().nbytes())
        if key[0] not in params and key not in seen:
            seen.add(key)
            total += key[1]
        return t

    video = torch.randn(1, frames, 3, size, size)
    flags = [(p, p.requires_grad) for p in enc.parameters()]
    with torch.enable_grad(), torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        enc.train()
        try:
            for p, _ in flags:
                p.requires_grad_(True)
            enc(video).sum()
        finally:
            enc.eval()
            for p, flag in flags:
                p.requires_grad_(flag)
    return total / 2**20


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
        backbone = _backbone(s["model"], "random", ctx)
    reducer = create_reducer(s["reducer"], **s["options"])
    return provenance(lambda r: VideoEncoder(backbone, r, s["frames"]), reducer, s["frames"])
