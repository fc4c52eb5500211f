"""TempMe against no reduction: inference speed vs GMACs, and one LoRA training step.

``python -m tokred.bench_tempme`` (random weights; token counts and costs do not depend on them):

1. Inference, per backbone: GMACs (analytic, from the token trace), videos/s (median over
   repeats after warm-up, the two reducers timed in alternating rounds so that load drift on a
   shared machine hits both), measured and ideal (GMACs ratio) speed-up.
2. One training step with TempMe's recipe (frozen CLIP, LoRA rank 8 on every qkv of both
   towers, temporal embeddings trainable; loss = InfoNCE of the video embeddings against fixed
   random text features): time, and bytes of tensors saved for backward per video
   (``torch.autograd.graph.saved_tensors_hooks``, deduplicated by storage, parameters
   excluded; :mod:`tokred.cost.memory`); on CUDA also the peak allocated memory of a step.
"""

from __future__ import annotations

import argparse
import json

import torch
import torch.nn.functional as F

from tokred.backbones import OpenCLIPVisual
from tokred.cost.analytic import gmacs
from tokred.cost.memory import MB, activation_per_video, cuda_peak_mb, module_tensors
from tokred.cost.timing import Timing, environment, time_calls
from tokred.encoder import VideoEncoder
from tokred.models import create_clip
from tokred.registry import create_reducer
from tokred.training.lora import apply_lora, mark_only_trainable

REDUCERS = ("none", "tempme")


def _encoders(clip, name: str, frames: int, device: str) -> dict[str, VideoEncoder]:
    visual = OpenCLIPVisual(clip.visual, name)
    return {r: VideoEncoder(visual, create_reducer(r), frames).to(device) for r in REDUCERS}


def _interleaved(fns: dict, items: int, warmup: int, repeats: int, device: str) -> dict[str, Timing]:
    """Time every fn ``repeats`` times, one call each per round, after ``warmup`` calls each."""
    times: dict[str, list[float]] = {k: [] for k in fns}
    for i in range(repeats):
        for k, fn in fns.items():
            t = time_calls(fn, items=items, warmup=warmup if i == 0 else 0, repeats=1, device=device)
            times[k] += t.times
    return {k: Timing(times=v, warmup=warmup, items=items) for k, v in times.items()}


def bench_inference(name: str, frames: int, batch: int, warmup: int, repeats: int,
                    device: str = "cpu") -> list[dict]:
    """none vs tempme on one backbone: GMACs, videos/s, measured and ideal speed-up."""
    torch.manual_seed(0)
    clip = create_clip(name, device=device).eval()
    encs = _encoders(clip, name, frames, device)
    size = clip.visual.image_size
    size = size[0] if isinstance(size, (tuple, list)) else size
    video = torch.randn(batch, frames, 3, size, size, device=device)
    traces = {k: e.trace(frames) for k, e in encs.items()}

    def call(enc):
        def run():
            with torch.inference_mode():
                enc(video)
        return run

    timings = _interleaved({k: call(e) for k, e in encs.items()}, batch, warmup, repeats, device)
    base_g, base_v = gmacs(traces["none"]), timings["none"].per_second
    rows = []
    for k in REDUCERS:
        g, v = gmacs(traces[k]), timings[k].per_second
        rows.append({"model": name, "reducer": k, "frames": frames, "batch": batch, "gmacs": g,
                     "tokens_out": traces[k].tokens_out, "videos_per_s": v,
                     "speedup": v / base_v, "ideal_speedup": base_g / g,
                     "ratio": (v / base_v) / (base_g / g), "timing": timings[k].to_dict()})
    return rows


def _info_nce(video: torch.Tensor, text: torch.Tensor, scale: float = 100.0) -> torch.Tensor:
    logits = scale * video @ F.normalize(text, dim=-1).T  # [B, B]
    labels = torch.arange(len(video), device=video.device)
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


def bench_train_step(name: str, frames: int, batch: int, warmup: int, repeats: int,
                     rank: int = 8, device: str = "cpu") -> list[dict]:
    """Forward + backward with the LoRA recipe, none vs tempme: time and saved-tensor bytes.

    Activation memory comes from :func:`tokred.cost.memory.activation_per_video` (bytes saved
    for backward at 1 and 2 videos, parameters excluded): ``act_per_video`` is the slope,
    ``act_fixed`` the batch-independent rest (mostly the ``W + B @ A`` weights that the LoRA
    parametrisation materialises per forward).
    """
    torch.manual_seed(0)
    clip = create_clip(name, device=device).train()
    apply_lora(clip, rank=rank)
    encs = _encoders(clip, name, frames, device)
    size = encs["none"].spec.image_size
    gen = torch.Generator(device=device).manual_seed(0)
    videos = torch.randn(max(batch, 2), frames, 3, size, size, device=device, generator=gen)
    text = torch.randn(max(batch, 2), clip.visual.output_dim, device=device, generator=gen)
    rows, steps = {}, {}
    for k, enc in encs.items():
        trainable = mark_only_trainable(clip, extra=enc.reducer.parameters())
        per_video, fixed = activation_per_video(
            lambda b, enc=enc: _info_nce(enc(videos[:b]), text[:b]), module_tensors(enc))
        rows[k] = {"model": name, "reducer": k, "frames": frames, "batch": batch,
                   "trainable": trainable, "act_per_video": per_video, "act_fixed": fixed}

        def step(enc=enc):
            _info_nce(enc(videos[:batch]), text[:batch]).backward()
            enc.zero_grad(set_to_none=True)

        steps[k] = step
    # both steps are timed with the temporal embeddings trainable (only tempme uses them)
    mark_only_trainable(clip, extra=[p for e in encs.values() for p in e.reducer.parameters()])
    timings = _interleaved(steps, batch, warmup, repeats, device)
    if torch.device(device).type == "cuda":
        for k, peak in cuda_peak_mb(steps, device).items():
            rows[k]["cuda_peak_mb"] = peak["peak_mb"]
    for k in REDUCERS:
        rows[k].update(step_s=timings[k].median, timing=timings[k].to_dict(),
                       time_ratio=timings[k].median / timings["none"].median,
                       memory_ratio=rows[k]["act_per_video"] / rows["none"]["act_per_video"])
    return [rows[k] for k in REDUCERS]


def _print_inference(rows: list[dict]) -> None:
    print(f"{'model':<10}{'reducer':<9}{'GMACs':>8}{'tok out':>9}{'videos/s':>10}{'spread':>8}"
          f"{'speed-up':>10}{'ideal':>8}{'ratio':>7}")
    for r in rows:
        print(f"{r['model']:<10}{r['reducer']:<9}{r['gmacs']:>8.2f}{r['tokens_out']:>9}"
              f"{r['videos_per_s']:>10.3f}{r['timing']['spread']:>8.1%}{r['speedup']:>9.2f}x"
              f"{r['ideal_speedup']:>7.2f}x{r['ratio']:>7.2f}")


def _print_train(rows: list[dict]) -> None:
    print(f"{'model':<10}{'reducer':<9}{'trainable':>10}{'step s':>9}{'spread':>8}{'time':>7}"
          f"{'MB/video':>10}{'memory':>8}{'fixed MB':>10}")
    for r in rows:
        print(f"{r['model']:<10}{r['reducer']:<9}{r['trainable']:>10,}{r['step_s']:>9.3f}"
              f"{r['timing']['spread']:>8.1%}{r['time_ratio']:>7.2f}"
              f"{r['act_per_video'] / MB:>10.1f}{r['memory_ratio']:>8.2f}{r['act_fixed'] / MB:>10.1f}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tokred.bench_tempme", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["ViT-B-32", "ViT-B-16"])
    p.add_argument("--frames", type=int, default=12)
    p.add_argument("--batch", type=int, default=2, help="videos per inference call")
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--train-model", default="ViT-B-32", help="'' to skip the training step")
    p.add_argument("--train-batch", type=int, default=2)
    p.add_argument("--train-repeats", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0,
                   help="torch CPU threads (0 = torch's default); 1 is steadier on a shared machine")
    p.add_argument("--json", help="also write all records to this JSON file")
    a = p.parse_args(argv)
    threads = torch.get_num_threads()
    if a.threads:
        torch.set_num_threads(a.threads)
    try:
        _run(a)
    finally:
        torch.set_num_threads(threads)
    return 0


def _run(a: argparse.Namespace) -> None:
    print(f"TempMe vs none, {a.frames} frames, random weights; {environment(a.device)}")
    infer = [r for m in a.models
             for r in bench_inference(m, a.frames, a.batch, a.warmup, a.repeats, a.device)]
    print(f"\ninference (batch {a.batch}, {a.repeats} alternating repeats, median):")
    _print_inference(infer)
    train = []
    if a.train_model:
        train = bench_train_step(a.train_model, a.frames, a.train_batch, 1, a.train_repeats,
                                 device=a.device)
        print(f"\ntraining step (forward+backward, frozen CLIP + LoRA r=8 both towers + temporal "
              f"embeddings; batch {a.train_batch}; MB/video = bytes saved for backward per extra "
              f"video, params excluded; fixed = batch-independent saved bytes; time and memory "
              f"relative to none):")
        _print_train(train)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"env": environment(a.device), "inference": infer, "train": train}, f,
                      indent=1)


if __name__ == "__main__":
    raise SystemExit(main())
