"""One trustworthy cost record per (backbone, reducer setting): :func:`measure`.

Each record (:class:`tokred.cost.record.CostRecord`) has the analytic MACs of the recorded token
trace (visual tower per video, text tower per caption, the reducer's own work apart; FLOPs = 2 x
MACs), fvcore's count of the actual forward with every multiply-add op handled, training
activation memory (full fine-tuning and LoRA), peak resident memory of inference and of a
training step (fresh subprocesses), the speed-up against ``none`` per batch size (timed in
interleaved rounds in this process over the same weights and input, see :func:`paired_speed`)
with videos/s, the share of the forward spent in the reducer's hooks, one training step's time,
what the timings ran on (``env``) and the full provenance (``provenance``: commit and dirty
flag, every dependency's version, CPU model, command line, plugin files). The slow parts are
optional; ``tokred measure`` (:mod:`tokred.cli.measure`) and the sweep call it.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from typing import Callable

import torch
from torch import nn

from tokred.cost.analytic import text_macs, visual_macs
from tokred.cost.build import Built, LoRAUnavailable, build
from tokred.cost.memory import MB, activation_per_video, cuda_peak_mb, module_tensors, peak_rss_mb
from tokred.cost.record import CostRecord, compare, speed_fields
from tokred.cost.sites import site_timing
from tokred.cost.specs import BASELINE
from tokred.cost.timing import (
    PairedTiming,
    environment,
    fixed_video,
    inference_throughput,
    paired_throughput,
)
from tokred.cost.trainstep import make_train_step, train_step_time
from tokred.encoder import Trace, VideoEncoder
from tokred.models import TIMM_PREFIX
from tokred.plugins import run_provenance
from tokred.registry import create_reducer, preset_of
from tokred.training.precision import autocast

log = logging.getLogger(__name__)
TRAIN_MODES = ("full", "lora")  # full fine-tuning; TempMe's recipe (LoRA rank 8 + reducer)

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


def analytic_record(built: Built, frames: int, text_tokens: int) -> CostRecord:
    """MACs from the token trace of one video (visual, readout, reducer work, text), tokens."""
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


def paired_speed(built: Built, reducer: str, frames: int, batch_sizes: Sequence[int],
                 rounds: int, warmup: int, device: str, precision: str,
                 clock: Callable[[], float]) -> tuple[CostRecord, float | None]:
    """Speed fields of ``built`` against ``none`` and none's GMACs per video (None for none).

    ``none``'s encoder wraps the same backbone (the same weights) and both run on the same
    fixed batch in ``rounds`` interleaved rounds of one call each, after ``warmup`` discarded
    calls each; ``none`` itself is its own baseline, every per-round ratio exactly 1.
    """
    enc = built.encoder
    if reducer == BASELINE:
        alone = inference_throughput(enc, frames, batch_sizes, warmup, rounds, device, precision,
                                     clock)
        return speed_fields({b: PairedTiming.itself(t) for b, t in alone.items()}), None
    base = VideoEncoder(enc.backbone, create_reducer(BASELINE), frames).eval()
    paired = paired_throughput(base, enc, frames, batch_sizes, rounds, warmup, 1, device,
                               precision, clock)
    return speed_fields(paired), visual_macs(traced(base, frames)[0]) / 1e9


def fvcore_record(built: Built, frames: int, rec: CostRecord) -> CostRecord:
    """fvcore's count of the actual forward, against ``rec``'s analytic total."""
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
        "fvcore_uncounted_ops": c.uncounted,
        "fvcore_rel_diff": c.macs / 1e9 / expected - 1.0,
    }


def activation_record(built: Built, lora: Built | LoRAUnavailable, frames: int, precision: str,
                      device: str) -> CostRecord:
    """Bytes saved for backward per video (and the batch-independent rest), per training mode."""
    out = CostRecord()
    for mode, b in zip(TRAIN_MODES, (built, lora)):
        if isinstance(b, LoRAUnavailable):
            out.update({f"activation_mb_per_video_{mode}": None, f"trainable_params_{mode}": None,
                        f"{mode}_unavailable": str(b)})
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


def rss_record(
    model: str, reducer: str, options: dict | None, frames: int, batch: int, precision: str,
    quick_gelu: bool | None = None,
) -> CostRecord:
    """Peak resident memory growth of inference and training steps, each in a fresh process."""
    out = CostRecord(rss_batch=batch)
    for mode in TRAIN_MODES:
        for phase in ("infer", "train"):
            # LoRA inference runs on folded weights, i.e. exactly the full model's inference
            if mode == "lora" and (phase == "infer" or model.startswith(TIMM_PREFIX)):
                continue
            job = dict(model=model, reducer=reducer, options=options, frames=frames,
                       batch=batch, phase=phase, mode=mode, precision=precision,
                       quick_gelu=quick_gelu, threads=torch.get_num_threads())
            res = peak_rss_mb(job)
            out[f"peak_rss_mb_{phase}_{mode}"] = res["peak_rss_mb"]
            out["rss_method"] = res["method"]
    return out


def cuda_record(built: Built, frames: int, batch: int, precision: str, device: str) -> CostRecord:
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
    return CostRecord(cuda_batch=batch,
                      **{f"cuda_peak_mb_{k}": v["peak_mb"] for k, v in peaks.items()},
                      **{f"cuda_base_mb_{k}": v["base_mb"] for k, v in peaks.items()})


def train_step_record(b: Built, mode: str, frames: int, batch: int, repeats: int, device: str,
                      precision: str, clock: Callable[[], float]) -> CostRecord:
    """Seconds of one training step (forward, backward, AdamW) of ``b`` in training ``mode``.

    The step updates ``b``'s weights: call it last on a model built for measuring.
    """
    t = train_step_time(b.encoder, frames, batch, device=device, precision=precision,
                        repeats=max(1, repeats // 2), clock=clock)
    return CostRecord(train_step_mode=mode, train_step_s=t.median, train_step_spread=t.spread,
                      train_batch=batch, **{f"trainable_params_{mode}": b.trainable_params})


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
    train_step: str | None = None,
    train_batch: int = 2,
    text_tokens: int = 32,
    speed: bool = True,
    site_share: bool = False,
    clock: str = "wall",
    quick_gelu: bool | None = None,
) -> CostRecord:
    """One cost record for ``model_name`` with reducer ``reducer_name(**options)``.

    Analytic MACs are always computed (milliseconds); fvcore (a few seconds), activation memory
    (two training forwards per mode), peak RSS (three subprocesses), the speed-up against
    ``none`` (``repeats`` paired rounds per batch size, :func:`paired_speed`), the share of the
    forward in the reducer's hooks (at the largest batch size) and the time of one training
    step (``train_step``: ``"full"`` or ``"lora"``) are each optional. ``clock="cpu"`` times
    with the process CPU time (see :data:`CLOCKS`). ``quick_gelu``: see
    :func:`tokred.cost.build.build`; the record's ``activation`` says which one the measured
    network used.

    Raises:
        ValueError: unknown ``train_step`` or ``clock``, or a setting the backbone refuses.
    """
    from tokred.backbones.weights import activation_of

    if train_step not in (None, *TRAIN_MODES):
        raise ValueError(f"train_step must be one of {TRAIN_MODES} or None, got {train_step!r}")
    tick = clock_fn(clock, device)
    built = build(model_name, reducer_name, options, frames, device=device, quick_gelu=quick_gelu)
    options = {k: list(v) if isinstance(v, tuple) else v for k, v in (options or {}).items()}
    rec = CostRecord(model=model_name, reducer=reducer_name, options=options,
                     preset=preset_of(reducer_name, options), frames=frames, precision=precision,
                     activation=activation_of(built.host),
                     spec=dict(vars(built.encoder.backbone.spec)))
    rec.update(analytic_record(built, frames, text_tokens))
    rec["trainable_params"] = built.trainable_params
    if fvcore:
        rec.update(fvcore_record(built, frames, rec))
    if speed:
        fields, base_gmacs = paired_speed(built, reducer_name, frames, batch_sizes, repeats,
                                          warmup, device, precision, tick)
        rec.update(fields)
        base = CostRecord(gmacs=rec["gmacs"] if base_gmacs is None else base_gmacs)
        rec.update(compare(rec, base))
    if site_share:
        t = site_timing(built.encoder, frames, max(batch_sizes), warmup, repeats, device,
                        precision, tick)
        rec.update(site_share=t.share, site_seconds=t.per_video(), site_batch=max(batch_sizes))
    lora = None
    if activation or train_step == "lora":
        lora = _lora_build(model_name, reducer_name, options, frames, device, quick_gelu)
    if activation:
        rec.update(activation_record(built, lora, frames, precision, device))
    if rss and torch.device(device).type == "cuda":
        rec.update(cuda_record(built, frames, train_batch, precision, device))
    elif rss:
        rec.update(rss_record(model_name, reducer_name, options, frames, train_batch, precision,
                              quick_gelu))
    trained = {"full": built, "lora": lora}.get(train_step)
    if isinstance(trained, LoRAUnavailable):
        rec["lora_unavailable"] = str(trained)
    elif trained is not None:
        rec.update(train_step_record(trained, train_step, frames, train_batch, repeats, device,
                                     precision, tick))
    rec["env"] = {**environment(device, precision), "clock": clock}
    rec["provenance"] = run_provenance(device)
    return rec


def _lora_build(model: str, reducer: str, options: dict, frames: int, device: str,
                quick_gelu: bool | None) -> Built | LoRAUnavailable:
    """The model with TempMe's LoRA recipe, or why there is none (returned, not raised)."""
    try:
        return build(model, reducer, options, frames, lora=True, device=device,
                     quick_gelu=quick_gelu)
    except LoRAUnavailable as err:
        return err
