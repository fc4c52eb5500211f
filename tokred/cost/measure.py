"""``tokred measure``: one trustworthy cost record per (backbone, reducer config).

Each record has the analytic MACs of the recorded token trace (visual tower per video, text tower
per caption, the reducer's own work apart; FLOPs = 2 x MACs), fvcore's count of the actual
forward with every multiply-add op handled, training activation memory (full fine-tuning and
LoRA), peak resident memory of inference and of a training step (fresh subprocesses), inference
videos/s per batch size with spread, training step time, and the environment. Records go to a
JSON-lines file; a table is printed. :func:`measure` is the library entry point (sweeps call it
per trial, with the slow parts optional).
"""

from __future__ import annotations

import argparse
import json
import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Callable

import torch
from torch import nn

from tokred.cost.analytic import text_macs, visual_macs
from tokred.cost.memory import MB, activation_per_video, cuda_peak_mb, module_tensors, peak_rss_mb
from tokred.cost.timing import (
    environment,
    fixed_video,
    inference_throughput,
    interleaved_throughput,
    make_train_step,
    train_step_time,
)
from tokred.encoder import Trace, VideoEncoder
from tokred.registry import create_reducer
from tokred.training.precision import autocast

log = logging.getLogger(__name__)
TIMM_PREFIX = "timm:"


# Paper settings per backbone (ALGORITHMS.md); a registered reducer not listed runs its defaults.
PAPER_CONFIGS: dict[str, dict[str, list[dict]]] = {
    "ViT-B-32": {"tome": [{"r": 2}], "centerclip": [{}, {"segments": 3}], "tempme": [{}]},
    "ViT-B-16": {"tome": [{"r": 10}], "centerclip": [{"k": 160}],
                 "tempme": [{"r": 2}, {"r": 10}]},
    "timm:vit_base_patch16_224": {"tome": [{"r": 16}]},
}


def paper_reducers(model: str) -> list[tuple[str, dict]]:
    """``none`` first, then every registered reducer at the paper settings for ``model``.

    timm models run in image mode, where only ``none`` and ``tome`` apply.
    """
    from tokred.registry import list_reducers

    table = PAPER_CONFIGS.get(model, {})
    names = ["tome"] if model.startswith(TIMM_PREFIX) else list_reducers()
    out = [("none", {})]
    for name in names:
        if name != "none":
            out += [(name, dict(o)) for o in table.get(name, [{}])]
    return out


# "cpu": process CPU time. On a machine shared with other jobs, time-slicing inflates wall time
# by whatever else runs; CPU time of a one-thread run counts only this process's own compute
# (cache and memory-bandwidth contention still show). Use it with --threads 1, on CPU only.
CLOCKS: dict[str, Callable[[], float]] = {"wall": time.perf_counter, "cpu": time.process_time}


def clock_fn(name: str, device: str = "cpu") -> Callable[[], float]:
    """The timer for ``name``; CPU time is refused on CUDA (kernels run off the CPU clock)."""
    if name not in CLOCKS:
        raise ValueError(f"clock must be one of {sorted(CLOCKS)}, got {name!r}")
    if name == "cpu" and torch.device(device).type != "cpu":
        raise ValueError("clock='cpu' measures host CPU time; on a GPU use clock='wall'")
    return CLOCKS[name]


class LoRAUnavailable(RuntimeError):
    """LoRA cannot be applied to this model (no tokred.training.lora, or not an open_clip tower)."""


@dataclass
class Built:
    """An encoder ready to measure and what it was built from."""

    encoder: VideoEncoder
    host: nn.Module  # the open_clip CLIP or the timm model
    trainable_params: int


def build(
    model: str,
    reducer: str,
    options: dict | None = None,
    frames: int = 12,
    *,
    lora: bool = False,
    device: str = "cpu",
    seed: int = 0,
    quick_gelu: bool | None = None,
) -> Built:
    """A random-weight encoder: ``model`` is an open_clip name, ``scale-B32`` or ``timm:NAME``.

    With ``lora=True`` rank-8 adapters go on the qkv of both CLIP towers (TempMe's recipe) and
    only they and the reducer's parameters are trainable. ``quick_gelu``: the CLIP's MLP
    activation; None: :func:`tokred.models.activation_for` decides (QuickGELU for the papers'
    OpenAI architectures even with random weights: it keeps one more tensor for backward).

    Raises:
        LoRAUnavailable: ``lora=True`` on a timm model or without :mod:`tokred.training.lora`.
        ValueError: ``quick_gelu=True`` for a timm model (timm's ViTs are GELU).
    """
    torch.manual_seed(seed)
    red = create_reducer(reducer, **(options or {}))
    if model.startswith(TIMM_PREFIX):
        if lora:
            raise LoRAUnavailable("LoRA is implemented for open_clip towers only, not timm")
        if quick_gelu:
            raise ValueError(f"quick_gelu=True is for open_clip CLIPs, not {model}")
        import timm

        from tokred.backbones.timmvit import TimmViT

        host = timm.create_model(model[len(TIMM_PREFIX) :], pretrained=False).to(device)
        backbone = TimmViT(host, model)
    else:
        from tokred.backbones import OpenCLIPVisual
        from tokred.models import create_clip

        host = create_clip(model, device=device, quick_gelu=quick_gelu)
        backbone = OpenCLIPVisual(host.visual, model)
    enc = VideoEncoder(backbone, red, frames).to(device)
    trainable = sum(p.numel() for p in host.parameters()) + sum(p.numel() for p in red.parameters())
    if lora:
        try:
            from tokred.training import lora as lora_mod
        except ImportError as err:
            raise LoRAUnavailable(f"tokred.training.lora cannot be imported: {err}") from err
        lora_mod.apply_lora(host, rank=8)
        trainable = lora_mod.mark_only_trainable(host, extra=red.parameters())
    return Built(enc.eval(), host.eval(), trainable)


def readout_macs(enc: VideoEncoder, cls_tokens: int) -> int:
    """MACs per video of the readout projection (CLIP ``proj`` or a timm linear head)."""
    b = enc.backbone
    visual = getattr(b, "visual", None)
    if visual is not None and getattr(visual, "proj", None) is not None:
        return cls_tokens * visual.proj.numel()
    head = getattr(getattr(b, "model", None), "head", None)
    if isinstance(head, nn.Linear) and not getattr(b, "pre_logits", False):
        return cls_tokens * head.weight.numel()
    return 0


def text_gmacs(host: nn.Module, tokens: int) -> float | None:
    """Analytic GMACs per caption of an open_clip text tower on ``tokens`` positions."""
    tr = getattr(host, "transformer", None)
    if tr is None or not hasattr(tr, "resblocks"):
        return None
    blk = tr.resblocks[0]
    macs = text_macs(tokens, tr.width, len(tr.resblocks), blk.mlp.c_fc.out_features)
    proj = getattr(host, "text_projection", None)
    if isinstance(proj, nn.Linear):
        macs += proj.weight.numel()
    elif proj is not None:
        macs += proj.numel()  # one EOT token projected
    return macs / 1e9


def traced(enc: VideoEncoder, frames: int) -> tuple[Trace, int]:
    """The token trace of one video and the number of CLS tokens read out."""
    spec = enc.backbone.spec
    tr = Trace(spec.with_frames(frames))
    p = next(enc.parameters())
    with torch.inference_mode():
        out = enc.encode_frames(fixed_video(1, frames, spec.image_size, p.device), tr)
    return tr, out.shape[1]


def analytic_record(built: Built, frames: int, text_tokens: int) -> dict:
    enc = built.encoder
    trace, cls_tokens = traced(enc, frames)
    macs = visual_macs(trace)
    return {
        "gmacs": macs / 1e9,
        "gflops": 2 * macs / 1e9,
        "readout_gmacs": readout_macs(enc, cls_tokens) / 1e9,
        "reducer_work_gmacs": enc.reducer.work_macs(trace) / 1e9,
        "text_gmacs_per_caption": text_gmacs(built.host, text_tokens),
        "text_tokens": text_tokens,
        "tokens_out": trace.tokens_out,
        "readout_tokens": cls_tokens,
        "attn_tokens": trace.attn_tokens(),
        "mlp_tokens": trace.mlp_tokens(),
        "trace": trace.to_dict(),
    }


def fvcore_record(built: Built, frames: int, rec: dict) -> dict:
    from tokred.cost.flops import fvcore_video_macs

    c = fvcore_video_macs(built.encoder, frames)
    expected = rec["gmacs"] + rec["readout_gmacs"] + rec["reducer_work_gmacs"]
    return {
        "fvcore_gmacs": c.macs / 1e9,
        "fvcore_layer_gmacs": c.layer_macs / 1e9,
        "fvcore_rest_gmacs": c.rest_macs / 1e9,
        "fvcore_other_gops": c.other / 1e9,
        "fvcore_by_op": {k: v / 1e9 for k, v in c.by_op.items()},
        "fvcore_unaccounted_ops": c.unaccounted,
        "fvcore_rel_diff": c.macs / 1e9 / expected - 1.0,
    }


def activation_record(
    model: str,
    reducer: str,
    options: dict | None,
    frames: int,
    precision: str,
    device: str,
    built: Built,
    quick_gelu: bool | None = None,
) -> dict:
    out = {}
    for mode in ("full", "lora"):
        try:
            b = (
                built
                if mode == "full"
                else build(model, reducer, options, frames, lora=True, device=device,
                           quick_gelu=quick_gelu)
            )
        except LoRAUnavailable as err:
            out[f"activation_mb_per_video_{mode}"] = None
            out[f"trainable_params_{mode}"] = None
            out[f"{mode}_unavailable"] = str(err)
            continue
        enc = b.encoder.train()
        size = enc.backbone.spec.image_size

        def forward(n: int, enc=enc, size=size) -> torch.Tensor:
            with autocast(device, precision):
                return enc(fixed_video(n, frames, size, device))

        per_video, fixed = activation_per_video(
            forward, module_tensors(b.host) + module_tensors(enc)
        )
        enc.eval()
        out[f"activation_mb_per_video_{mode}"] = per_video / MB
        out[f"activation_fixed_mb_{mode}"] = fixed / MB
        out[f"trainable_params_{mode}"] = b.trainable_params
    return out


def rss_job(
    model: str,
    reducer: str,
    options: dict | None,
    frames: int,
    batch: int,
    phase: str,
    mode: str,
    precision: str,
    quick_gelu: bool | None = None,
) -> Callable[[], object]:
    """Build what a memory subprocess measures; returns the phase to run (see memory.py)."""
    b = build(model, reducer, options, frames, lora=mode == "lora", quick_gelu=quick_gelu)
    enc = b.encoder
    video = fixed_video(batch, frames, enc.backbone.spec.image_size)
    if phase == "infer":

        def run() -> None:
            with torch.inference_mode(), autocast("cpu", precision):
                enc(video)

        return run
    if phase == "train":
        return make_train_step(enc.train(), video, precision)
    raise ValueError(f"phase must be 'infer' or 'train', got {phase!r}")


def rss_record(
    model: str, reducer: str, options: dict | None, frames: int, batch: int, precision: str,
    quick_gelu: bool | None = None,
) -> dict:
    out = {"rss_batch": batch}
    for mode in ("full", "lora"):
        for phase in ("infer", "train"):
            # LoRA inference runs on folded weights, i.e. exactly the full model's inference
            if mode == "lora" and (phase == "infer" or model.startswith(TIMM_PREFIX)):
                continue
            job = dict(
                model=model,
                reducer=reducer,
                options=options,
                frames=frames,
                batch=batch,
                phase=phase,
                mode=mode,
                precision=precision,
                quick_gelu=quick_gelu,
                threads=torch.get_num_threads(),
            )
            res = peak_rss_mb(job)
            out[f"peak_rss_mb_{phase}_{mode}"] = res["peak_rss_mb"]
            out["rss_method"] = res["method"]
    return out


def cuda_record(built: Built, frames: int, batch: int, precision: str, device: str) -> dict:
    """Peak allocated CUDA memory of inference and of a training step (full fine-tuning)."""
    enc = built.encoder
    video = fixed_video(batch, frames, enc.backbone.spec.image_size, device)

    def infer() -> None:
        with torch.inference_mode(), autocast(device, precision):
            enc.eval()(video)

    step = make_train_step(enc, video, precision)

    def train() -> None:
        enc.train()
        step()
        enc.eval()

    peaks = cuda_peak_mb({"infer": infer, "train": train}, device)
    return {"cuda_batch": batch, **{f"cuda_peak_mb_{k}": v["peak_mb"] for k, v in peaks.items()},
            **{f"cuda_base_mb_{k}": v["base_mb"] for k, v in peaks.items()}}


def measure(
    model_name: str,
    reducer_name: str,
    options: dict | None = None,
    frames: int = 12,
    *,
    batch_sizes: Sequence[int] = (1,),
    repeats: int = 5,
    warmup: int = 2,
    precision: str = "fp32",
    device: str = "cpu",
    fvcore: bool = True,
    activation: bool = True,
    rss: bool = False,
    train_step: bool = False,
    train_batch: int = 2,
    text_tokens: int = 32,
    speed: bool = True,
    clock: str = "wall",
    quick_gelu: bool | None = None,
) -> dict:
    """One cost record for ``model_name`` with reducer ``reducer_name(**options)``.

    Analytic MACs are always computed (milliseconds); fvcore (a few seconds), activation memory
    (two training forwards per mode), peak RSS (four subprocesses), throughput and training step
    time are each optional. Every GMACs value is per video (per caption for text); FLOPs = 2 x.
    ``clock="cpu"`` times with the process CPU time (see :data:`CLOCKS`). ``quick_gelu``: see
    :func:`build`; the record's ``activation`` says which one the measured network used.
    """
    from tokred.backbones.weights import activation_of

    tick = clock_fn(clock, device)
    built = build(model_name, reducer_name, options, frames, device=device, quick_gelu=quick_gelu)
    rec = {
        "model": model_name,
        "reducer": reducer_name,
        "options": options or {},
        "frames": frames,
        "precision": precision,
        "activation": activation_of(built.host),
        "spec": {k: v for k, v in vars(built.encoder.backbone.spec).items()},
    }
    rec.update(analytic_record(built, frames, text_tokens))
    rec["trainable_params"] = built.trainable_params
    if fvcore:
        rec.update(fvcore_record(built, frames, rec))
    if speed:
        t = inference_throughput(
            built.encoder, frames, batch_sizes, warmup, repeats, device, precision, tick
        )
        _put_speed(rec, t)
    if activation:
        rec.update(
            activation_record(model_name, reducer_name, options, frames, precision, device, built,
                              quick_gelu)
        )
    if rss and torch.device(device).type == "cuda":
        rec.update(cuda_record(built, frames, train_batch, precision, device))
    elif rss:
        rec.update(rss_record(model_name, reducer_name, options, frames, train_batch, precision,
                              quick_gelu))
    if train_step:
        t = train_step_time(
            built.encoder,
            frames,
            train_batch,
            device=device,
            precision=precision,
            repeats=max(1, repeats // 2),
            clock=tick,
        )
        rec["train_step_s"], rec["train_step_spread"] = t.median, t.spread
        rec["train_batch"] = train_batch
    rec["env"] = {**environment(device, precision), "clock": clock}
    return rec


def _table(records: list[dict], batch_sizes: Sequence[int]) -> str:
    """A readable table; speed-up and its GMACs ideal are relative to ``none`` on that model.

    Speed-up is measured at the largest batch size; ``ratio`` = speed-up / ideal. ``act MB`` is
    the training activation memory per video (full fine-tuning, LoRA), ``RSS`` the peak
    resident growth in MB of inference, a full and a LoRA training step (with ``--rss``).
    """
    base = {r["model"]: r for r in records if r["reducer"] == "none" and not r["options"]}
    big = str(max(batch_sizes))
    head = (
        f"{'model':<26}{'reducer':<30}{'GMACs':>7}{'GFLOPs':>8}{'work':>7}{'fvcore':>8}"
        f"{'tok out':>8}"
        + "".join(f"{'v/s@' + str(b):>9}" for b in batch_sizes)
        + f"{'spread':>7}{'speedup':>8}{'ideal':>7}{'ratio':>6}{'train s':>8}"
        f"{'act MB':>8}{'LoRA MB':>8}{'RSS inf':>8}{'RSS tr':>8}{'RSS trL':>8}"
    )
    lines = [head, "-" * len(head)]
    for r in records:
        vps = r.get("videos_per_s", {})
        b0 = base.get(r["model"])
        speed = ideal = ratio = None
        if b0 is not None and vps and b0.get("videos_per_s"):
            speed = vps[big] / b0["videos_per_s"][big]
            ideal = b0["gmacs"] / r["gmacs"]
            ratio = speed / ideal
        name = r["reducer"] + (
            ":" + ",".join(f"{k}={v}" for k, v in r["options"].items()) if r["options"] else ""
        )
        lines.append(
            f"{r['model']:<26}{name:<30}{r['gmacs']:>7.2f}{r['gflops']:>8.2f}"
            f"{r['reducer_work_gmacs']:>7.3f}{_f(r.get('fvcore_gmacs'), 8, 2)}{r['tokens_out']:>8}"
            + "".join(_f(vps.get(str(b)), 9, 2) for b in batch_sizes)
            + _f(r.get("videos_per_s_spread", {}).get(big), 7, 3)
            + _f(speed, 8, 2)
            + _f(ideal, 7, 2)
            + _f(ratio, 6, 2)
            + _f(r.get("train_step_s"), 8, 2)
            + _f(r.get("activation_mb_per_video_full"), 8, 1)
            + _f(r.get("activation_mb_per_video_lora"), 8, 1)
            + "".join(_f(r.get(f"peak_rss_mb_{k}"), 8, 0)
                      for k in ("infer_full", "train_full", "train_lora"))
        )
    return "\n".join(lines)


def _f(v: float | None, width: int, digits: int) -> str:
    return f"{'-':>{width}}" if v is None else f"{v:>{width}.{digits}f}"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tokred measure", description=__doc__.splitlines()[0])
    p.add_argument(
        "--models",
        nargs="+",
        default=["ViT-B-32"],
        help="open_clip names, scale-B32, or timm:NAME (timm runs in image mode)",
    )
    p.add_argument(
        "--reducers",
        nargs="+",
        default=["none", "tome:r=2"],
        help="reducer specs name:key=value,... (YAML values), or 'paper': every registered "
        "reducer at its paper settings for each model",
    )
    p.add_argument("--frames", type=int, default=12)
    p.add_argument("--timm-frames", type=int, default=1, help="frames for timm: models")
    p.add_argument("--batch-sizes", type=int, nargs="+", default=[1, 4])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, help="torch.set_num_threads (recorded in env)")
    p.add_argument("--skip-fvcore", action="store_true")
    p.add_argument("--skip-memory", action="store_true", help="no activation memory")
    p.add_argument("--rss", action="store_true",
                   help="peak RSS in fresh subprocesses (slow); on CUDA, peak allocated memory")
    p.add_argument("--skip-speed", action="store_true", help="no inference throughput")
    p.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                   help="wall time, or process CPU time (with --threads 1 on a shared CPU)")
    p.add_argument("--train-step", action="store_true", help="also time a training step")
    p.add_argument("--train-batch", type=int, default=2)
    p.add_argument("--quick-gelu", action=argparse.BooleanOptionalAction, default=None,
                   help="force the CLIP activation (default: QuickGELU for OpenAI architectures "
                   "such as ViT-B-32/B-16, GELU for the scale models)")
    p.add_argument("--out", help="append one JSON line per record to this file")
    p.add_argument("--rounds", type=int, default=1,
                   help="> 1: time all reducers of a model in interleaved rounds (shared CPU)")
    a = p.parse_args(argv)
    if a.threads:
        torch.set_num_threads(a.threads)
    records = []
    for model in a.models:
        records += _measure_model(model, a)
    if records:
        print(f"\n{records[0]['env']}\n")
        print(_table(records, a.batch_sizes))
    return 0 if records else 1


def _measure_model(model: str, a: argparse.Namespace) -> list[dict]:
    """All reducer records of one model; speed interleaved over rounds when asked."""
    from tokred.bench import parse_reducer

    frames = a.timm_frames if model.startswith(TIMM_PREFIX) else a.frames
    specs = (paper_reducers(model) if a.reducers == ["paper"]
             else [parse_reducer(s) for s in a.reducers])
    interleave = a.rounds > 1 and not a.skip_speed
    records = []
    for name, opts in specs:
        try:
            rec = measure(model, name, opts, frames, batch_sizes=a.batch_sizes,
                          repeats=a.repeats, warmup=a.warmup, precision=a.precision,
                          device=a.device, fvcore=not a.skip_fvcore,
                          activation=not a.skip_memory, rss=a.rss, train_step=a.train_step,
                          train_batch=a.train_batch,
                          speed=not interleave and not a.skip_speed, clock=a.clock,
                          quick_gelu=a.quick_gelu)
        except (ImportError, ValueError, TypeError, KeyError) as err:
            print(f"skipped {model} {name} {opts}: {err}")
            continue
        records.append(rec)
        print(f"measured {model} {name} {opts}: {rec['gmacs']:.2f} GMACs", flush=True)
        if not interleave:
            _append(a.out, [rec])  # written at once: a killed run keeps what it measured
    if interleave and records:
        encoders = {i: build(model, r["reducer"], r["options"], frames, device=a.device,
                             quick_gelu=a.quick_gelu).encoder
                    for i, r in enumerate(records)}
        timings = interleaved_throughput(encoders, frames, a.batch_sizes, a.rounds, a.warmup,
                                         a.repeats, a.device, a.precision,
                                         clock_fn(a.clock, a.device))
        for i, rec in enumerate(records):
            _put_speed(rec, timings[i])
            rec["speed_rounds"] = a.rounds
        _append(a.out, records)
    return records


def _append(path: str | None, records: list[dict]) -> None:
    if path:
        with open(path, "a") as f:
            f.writelines(json.dumps(rec) + "\n" for rec in records)


def _put_speed(rec: dict, timings: dict) -> None:
    rec["videos_per_s"] = {str(b): v.per_second for b, v in timings.items()}
    rec["videos_per_s_spread"] = {str(b): v.spread for b, v in timings.items()}
    rec["timings"] = {str(b): v.to_dict() for b, v in timings.items()}
