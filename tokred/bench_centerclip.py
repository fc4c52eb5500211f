"""CenterCLIP speed check: none vs k-medoids clustering on ViT-B/32 and ViT-B/16 (random weights).

Run ``python -m tokred.bench_centerclip``. For every configuration it reports analytic visual
GMACs per video, the clustering's own work estimate, videos/s (median over all timed calls;
configurations are timed in interleaved rounds so that load from other processes hits all of them
alike), the measured speed-up over no reduction, the ideal speed-up (GMACs ratio) and their
ratio, and the share of the forward time spent in the clustering step (the reducer's
``pre_block`` at each clustering layer, timed on its own on the real block input).

On a shared CPU, ``--threads 1`` avoids OpenMP threads waiting for each other under load (with 2
threads and a busy machine every parallel op can stall for a scheduler slice, which inflates the
many small ops of the clustering far more than the large GEMMs of the blocks).
"""

from __future__ import annotations

import argparse
import json
import logging

import torch

from tokred.cost.analytic import gmacs
from tokred.cost.timing import Timing, environment, time_calls
from tokred.models import create_video_encoder
from tokred.registry import create_reducer
from tokred.state import TokenState

log = logging.getLogger(__name__)

# (label, model, reducer name, options, batch key)
CONFIGS = [
    ("none", "ViT-B-32", "none", {}, "b32"),
    ("centerclip B6-4,49", "ViT-B-32", "centerclip", {"segments": 4, "k": 49}, "b32"),
    ("centerclip B6-3,49", "ViT-B-32", "centerclip", {"segments": 3, "k": 49}, "b32"),
    ("none", "ViT-B-16", "none", {}, "b16"),
    ("centerclip B6-4,160", "ViT-B-16", "centerclip", {"segments": 4, "k": 160}, "b16"),
]
SPECTRAL = [("spectral B6-4,49", "ViT-B-32", "centerclip",
             {"segments": 4, "k": 49, "algorithm": "spectral"}, "b32")]


class Case:
    """One configuration: encoder, fixed input, trace, and its timing closures."""

    def __init__(self, label: str, model: str, name: str, opts: dict, batch: int, frames: int,
                 seed: int = 0) -> None:
        torch.manual_seed(seed)
        self.label, self.model, self.batch = label, model, batch
        self.reducer = create_reducer(name, **opts)
        self.enc = create_video_encoder(model, self.reducer, frames).eval()
        size = self.enc.spec.image_size
        self.video = torch.randn(batch, frames, 3, size, size)
        self.trace = self.enc.trace(frames)
        self.forward_times: list[float] = []
        self.cluster_times: list[float] = []
        self._inputs = self._cluster_inputs()

    def _cluster_inputs(self) -> list[tuple[int, TokenState]]:
        """The real block input at every clustering layer (computed once)."""
        layers = sorted(getattr(self.reducer, "steps", {}))
        out = []
        with torch.inference_mode():
            s = self.enc.embed(self.video)
            for layer in range(self.enc.spec.layers):
                if layer in layers:
                    out.append((layer, s))
                if len(out) == len(layers):
                    break
                s = self.enc.block(s, layer)
        return out

    def forward(self) -> None:
        with torch.inference_mode():
            self.enc(self.video)

    def cluster(self) -> None:
        with torch.inference_mode():
            for layer, s in self._inputs:
                self.reducer.pre_block(s, layer)

    def time(self, warmup: int, repeats: int) -> None:
        self.forward_times += time_calls(self.forward, self.batch, warmup, repeats).times
        if self._inputs:
            self.cluster_times += time_calls(self.cluster, self.batch, warmup, repeats).times

    def row(self, base: Case) -> dict:
        fwd = Timing(self.forward_times, 0, self.batch)
        work = self.reducer.work_macs(self.trace) / 1e9
        ideal = gmacs(base.trace) / gmacs(self.trace)
        speedup = fwd.per_second / Timing(base.forward_times, 0, base.batch).per_second
        share = Timing(self.cluster_times, 0, 1).median / fwd.median if self.cluster_times else 0.0
        return {"model": self.model, "config": self.label, "batch": self.batch,
                "gmacs": gmacs(self.trace), "cluster_gmacs": work,
                "tokens": self.trace.attn_tokens(), "videos_per_s": fwd.per_second,
                "spread": fwd.spread, "speedup": speedup, "ideal_speedup": ideal,
                "ratio": speedup / ideal, "cluster_share": share, "timing": fwd.to_dict()}


def run(args: argparse.Namespace) -> list[dict]:
    batches = {"b32": args.b32_batch, "b16": args.b16_batch}
    configs = CONFIGS + (SPECTRAL if args.spectral else [])
    configs = [c for c in configs if c[1] in args.models]
    cases = [Case(lab, m, n, o, batches[b], args.frames) for lab, m, n, o, b in configs]
    for rnd in range(args.rounds):
        for case in cases:
            case.time(args.warmup if rnd == 0 else 0, args.repeats)
        log.info("round %d/%d done", rnd + 1, args.rounds)
    rows = []
    for case in cases:
        base = next(c for c in cases if c.model == case.model and c.label == "none")
        rows.append(case.row(base))
    return rows


def print_table(rows: list[dict]) -> None:
    print(f"{'model':<10}{'config':<22}{'batch':>6}{'GMACs':>8}{'clust':>7}{'videos/s':>10}"
          f"{'spread':>8}{'speed-up':>10}{'ideal':>8}{'ratio':>7}{'clust %':>9}")
    for r in rows:
        print(f"{r['model']:<10}{r['config']:<22}{r['batch']:>6}{r['gmacs']:>8.2f}"
              f"{r['cluster_gmacs']:>7.2f}{r['videos_per_s']:>10.3f}{r['spread']:>8.1%}"
              f"{r['speedup']:>9.2f}x{r['ideal_speedup']:>7.2f}x{r['ratio']:>7.2f}"
              f"{r['cluster_share']:>9.1%}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m tokred.bench_centerclip", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--models", nargs="+", default=["ViT-B-32", "ViT-B-16"])
    p.add_argument("--frames", type=int, default=12)
    p.add_argument("--b32-batch", type=int, default=4)
    p.add_argument("--b16-batch", type=int, default=1)
    p.add_argument("--rounds", type=int, default=3, help="interleaved timing rounds")
    p.add_argument("--repeats", type=int, default=3, help="timed calls per round and config")
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--threads", type=int, default=None, help="torch intra-op threads")
    p.add_argument("--spectral", action="store_true", help="also time spectral B6-4,49")
    p.add_argument("--json", help="also write the rows to this JSON file")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    log.setLevel(logging.INFO)
    if a.threads:
        torch.set_num_threads(a.threads)
    rows = run(a)
    env = environment()
    print(f"{a.frames} frames, random weights, fp32; {env}")
    print_table(rows)
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"env": env, "args": vars(a), "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
