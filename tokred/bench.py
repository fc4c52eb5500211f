"""``tokred bench``: quick speed check of reducers against no reduction on random weights."""

from __future__ import annotations

import argparse
import json

import torch

from tokred.cost.analytic import gmacs
from tokred.cost.timing import environment, time_calls
from tokred.models import create_video_encoder
from tokred.registry import create_reducer


def parse_reducer(text: str) -> tuple[str, dict]:
    """``"tome:r=2,prop_attn=false"`` -> ``("tome", {"r": 2, "prop_attn": False})`` (YAML values)."""
    import yaml

    name, _, rest = text.partition(":")
    opts = {}
    for item in filter(None, rest.split(",")):
        key, eq, value = item.partition("=")
        if not eq:
            raise ValueError(f"reducer option {item!r} in {text!r} must be key=value")
        opts[key.strip()] = yaml.safe_load(value)
    return name.strip(), opts


def bench_one(model: str, spec: str, frames: int, batch: int, repeats: int, warmup: int) -> dict:
    name, opts = parse_reducer(spec)
    torch.manual_seed(0)
    enc = create_video_encoder(model, create_reducer(name, **opts), frames).eval()
    video = torch.randn(batch, frames, 3, enc.spec.image_size, enc.spec.image_size)
    trace = enc.trace(frames)
    with torch.inference_mode():
        t = time_calls(lambda: enc(video), items=batch, warmup=warmup, repeats=repeats)
    return {"model": model, "reducer": spec, "frames": frames, "batch": batch,
            "gmacs": gmacs(trace), "tokens_out": trace.tokens_out,
            "videos_per_s": t.per_second, "timing": t.to_dict()}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tokred bench", description=__doc__)
    p.add_argument("--model", default="ViT-B-32")
    p.add_argument("--reducers", nargs="+", default=["none", "tome:r=2"],
                   help="reducer specs name:key=value,...; the first is the baseline")
    p.add_argument("--frames", type=int, default=12)
    p.add_argument("--batch", type=int, default=4)
    p.add_argument("--repeats", type=int, default=7)
    p.add_argument("--warmup", type=int, default=2)
    p.add_argument("--json", help="also write the records to this JSON file")
    a = p.parse_args(argv)
    rows = [bench_one(a.model, r, a.frames, a.batch, a.repeats, a.warmup) for r in a.reducers]
    base = rows[0]
    print(f"{a.model}, {a.frames} frames, batch {a.batch}, random weights; {environment()}")
    print(f"{'reducer':<28}{'GMACs':>8}{'tok out':>9}{'videos/s':>10}{'spread':>8}"
          f"{'speed-up':>10}{'ideal':>8}{'ratio':>7}")
    for r in rows:
        r["speedup"] = r["videos_per_s"] / base["videos_per_s"]
        r["ideal_speedup"] = base["gmacs"] / r["gmacs"]
        r["ratio"] = r["speedup"] / r["ideal_speedup"]
        print(f"{r['reducer']:<28}{r['gmacs']:>8.2f}{r['tokens_out']:>9}{r['videos_per_s']:>10.2f}"
              f"{r['timing']['spread']:>8.1%}{r['speedup']:>9.2f}x{r['ideal_speedup']:>7.2f}x"
              f"{r['ratio']:>7.2f}")
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"env": environment(), "rows": rows}, f, indent=1)
    return 0
