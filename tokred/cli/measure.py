"""tokred measure: the cost of reducer settings against none on the same model, as one table.

Per model, every reducer setting is measured by tokred.cost.measure.measure (GMACs analytic and
by fvcore, tokens, activation memory; on request peak RSS, the share of the forward inside the
reducer's hooks and one training step); inference is then timed for all of them in interleaved
rounds in this process over the same weights and input. A speed-up is the median over rounds of
none's time / the reducer's time in the same round, shown as median [low, high] (the
inter-quartile range of the per-round ratios with 5 or more rounds, else min-max); none is
added when the list does not name it. Records are appended to --out (JSON lines) as soon as a
model is done.
"""

from __future__ import annotations

import argparse
import logging
import textwrap
from typing import Callable

from tokred.cli.args import (
    NONNEG_INT,
    POSITIVE_INT,
    HelpFormatter,
    add_compute_flags,
    output_file,
    resolve_device,
    using_threads,
)
from tokred.cost.build import build_many
from tokred.cost.measure import CLOCKS, TRAIN_MODES, clock_fn, measure
from tokred.cost.record import SUSPECT_FACTOR, CostRecord, append_jsonl, compare, speed_fields
from tokred.cost.specs import BASELINE, ReducerSpec, reducer_specs
from tokred.cost.timing import PairedTiming, interleaved_throughput
from tokred.models import TIMM_PREFIX
from tokred.plugins import load_plugin_files
from tokred.registry import create_reducer
from tokred.training.precision import PRECISIONS

Row = tuple[str, CostRecord]  # (the label the setting was asked by, its record)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="tokred measure", description=__doc__,
                                formatter_class=HelpFormatter)
    p.add_argument("--model", nargs="+", default=["ViT-B-32"], metavar="M",
                   help="open_clip names, scale-B32, or timm:NAME (timm runs in image mode)")
    p.add_argument("--reducer", nargs="+", default=["tome.r2"], metavar="SPEC",
                   help="name, name:key=value,... (YAML values), name.tag (a preset), "
                   "name.tag:key=value, name.paper (its papers' settings for the model), or "
                   "'paper' (every registered reducer's papers' settings)")
    p.add_argument("--frames", type=POSITIVE_INT, default=12, help="frames per video")
    p.add_argument("--timm-frames", type=POSITIVE_INT, default=1, help="frames for timm: models")
    p.add_argument("--batch-size", type=POSITIVE_INT, nargs="+", default=[1, 4], metavar="N",
                   help="videos per timed call; speed-ups at the largest")
    p.add_argument("--repeats", type=POSITIVE_INT, default=5,
                   help="timed calls per setting per round (their median is its round time)")
    p.add_argument("--warmup", type=NONNEG_INT, default=2,
                   help="discarded calls per setting and batch size before the rounds")
    p.add_argument("--rounds", type=POSITIVE_INT, default=3,
                   help="interleaved timing rounds (alternating order; one speed-up ratio "
                   "against none per round)")
    p.add_argument("--precision", choices=PRECISIONS, default="fp32",
                   help="autocast precision")
    add_compute_flags(p)
    p.add_argument("--clock", choices=sorted(CLOCKS), default="wall",
                   help="wall time, or process CPU time (with --threads 1 on a shared CPU)")
    p.add_argument("--skip-fvcore", action="store_true", help="no fvcore cross-check")
    p.add_argument("--skip-memory", action="store_true", help="no activation memory")
    p.add_argument("--skip-speed", action="store_true", help="no inference throughput")
    p.add_argument("--rss", action="store_true",
                   help="peak RSS in fresh subprocesses (slow); on CUDA, peak allocated memory")
    p.add_argument("--train-step", choices=TRAIN_MODES,
                   help="time one training step: full fine-tuning, or TempMe's recipe (LoRA "
                   "rank 8 on every qkv of both towers + the reducer's parameters); default: "
                   "no training step")
    p.add_argument("--train-batch-size", type=POSITIVE_INT, default=2,
                   help="videos per training step")
    p.add_argument("--train-batch", dest="train_batch_size", type=POSITIVE_INT,
                   help=argparse.SUPPRESS)  # the spelling before --train-batch-size; one release
    p.add_argument("--site-timing", action="store_true",
                   help="share of the forward time inside the reducer's own hooks")
    p.add_argument("--quick-gelu", action=argparse.BooleanOptionalAction, default=None,
                   help="force the CLIP activation (default: QuickGELU for OpenAI "
                   "architectures such as ViT-B-32/B-16, GELU for the scale models)")
    p.add_argument("--out", type=output_file, metavar="FILE.jsonl",
                   help="append one JSON line per record (default: print the table only)")
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    a = p.parse_args(argv)
    logging.getLogger().addFilter(_random_weights_are_meant)  # added once
    a.device = resolve_device(a.device)
    load_plugin_files(a.plugin)
    try:  # every spec checked before minutes of measuring
        clock_fn(a.clock, a.device)
        plans = {model: reducer_specs(a.reducer, model) for model in a.model}
        for spec in {s.label: s for specs in plans.values() for s in specs}.values():
            create_reducer(spec.name, **spec.options)
    except (KeyError, ValueError, TypeError) as err:  # KeyError's str() adds quotes
        p.error(err.args[0] if err.args else str(err))
    a.skipped = []
    with using_threads(a.threads):
        rows = [row for model, specs in plans.items() for row in measure_model(model, specs, a)]
    if not rows:
        return 1
    print(f"\n{environment_line(rows[0][1])}\n")
    print(table(rows, a.batch_size))
    if a.skipped:
        print(f"\nnot measured ({len(a.skipped)}; reasons above): {', '.join(a.skipped)}")
    return 0


def environment_line(rec: CostRecord) -> str:
    """One line of what the timings ran on: device, CPU or GPU, threads, versions, commit."""
    env, prov = rec["env"], rec.get("provenance") or {}
    code, sw = prov.get("code") or {}, prov.get("software") or {}
    commit = (code.get("commit") or "?")[:12] + (" (dirty)" if code.get("dirty") else "")
    chip = env.get("gpu") or env.get("cpu")
    return (f"{env['device']} ({chip}), {env['threads']} threads, {env['precision']}, clock "
            f"{env['clock']}; tokred {sw.get('tokred')} at {commit}, torch {sw.get('torch')}, "
            f"open_clip {sw.get('open_clip_torch')}")


def _random_weights_are_meant(record: logging.LogRecord) -> bool:
    """open_clip warns about random weights on the root logger: cost is measured on them."""
    return not record.getMessage().startswith("No pretrained weights")


def measure_model(model: str, specs: list[ReducerSpec], a: argparse.Namespace) -> list[Row]:
    """The records of one model: each reducer measured, then all timed in interleaved rounds."""
    frames = a.timm_frames if model.startswith(TIMM_PREFIX) else a.frames
    rows: list[Row] = []
    for spec in specs:
        try:
            rec = measure(model, spec.name, spec.options, frames, batch_sizes=a.batch_size,
                          repeats=a.repeats, warmup=a.warmup, precision=a.precision,
                          device=a.device, fvcore=not a.skip_fvcore, activation=not a.skip_memory,
                          rss=a.rss, train_step=a.train_step, train_batch=a.train_batch_size,
                          speed=False, site_share=a.site_timing, clock=a.clock,
                          quick_gelu=a.quick_gelu)
        except (ImportError, ValueError, RuntimeError) as err:  # a setting this model refuses
            print(f"skipped {model} {spec.label}: {err}", flush=True)
            a.skipped.append(f"{model} {spec.label}")
            continue
        rows.append((spec.label, rec))
        print(f"measured {model} {spec.label}: {rec['gmacs']:.2f} GMACs", flush=True)
    base = next((i for i, (_, r) in enumerate(rows)
                 if r["reducer"] == BASELINE and not r["options"]), None)
    if base is None:
        print(f"no speed-ups on {model}: {BASELINE} could not be measured", flush=True)
    else:
        if not a.skip_speed:
            paired_speeds(model, rows, base, frames, a)
        for _, rec in rows:
            rec.update(compare(rec, rows[base][1]))
    append_jsonl(a.out, [rec for _, rec in rows])
    return rows


def paired_speeds(model: str, rows: list[Row], base: int, frames: int,
                  a: argparse.Namespace) -> None:
    """Time every row's setting in the same interleaved rounds over one copy of the weights and
    store each one's per-round ratios against the baseline row ``rows[base]`` (none)."""
    encoders = build_many(model, [(r["reducer"], r["options"]) for _, r in rows], frames,
                          device=a.device, quick_gelu=a.quick_gelu)
    timings = interleaved_throughput(dict(enumerate(encoders)), frames, a.batch_size, a.rounds,
                                     a.warmup, a.repeats, a.device, a.precision,
                                     clock_fn(a.clock, a.device))
    for i, (_, rec) in enumerate(rows):
        rec.update(speed_fields({b: PairedTiming(timings[base][b], t)
                                 for b, t in timings[i].items()}))


Column = tuple[str, int, Callable[[CostRecord], str]]


def table(rows: list[Row], batch_sizes: list[int]) -> str:
    """One line per record; columns of measurements no record has are left out."""
    big = str(max(batch_sizes))
    cols: list[Column] = [
        ("GMACs", 7, _num("gmacs", ".2f")), ("work", 7, _num("reducer_work_gmacs", ".3f")),
        ("fvcore", 8, _num("fvcore_gmacs", ".2f")), ("tok out", 8, _num("tokens_out", "d")),
        *[(f"v/s@{b}", 9, _per_batch("videos_per_s", str(b), ".2f")) for b in batch_sizes],
        ("speedup [low, high]", 30, _speedup), ("rounds", 7, _num("speedup_rounds", "d")),
        ("ideal", 7, _num("ideal_speedup", ".2f", "x")), ("ratio", 6, _num("ratio", ".2f")),
        ("site %", 7, _num("site_share", ".1%")),
        ("train s", 8, _num("train_step_s", ".3f")), ("train x", 8, _num("train_step_ratio", ".2f")),
        ("act MiB", 8, _num("activation_mb_per_video_full", ".1f")),
        ("LoRA MiB", 9, _num("activation_mb_per_video_lora", ".1f")),
        ("mem x", 6, _num("memory_ratio", ".2f")),
        *[(f"RSS {k}", 9, _num(f"peak_rss_mb_{k}", ".0f")) for k in ("infer_full", "train_full",
                                                                     "train_lora")],
    ]
    cols = [c for c in cols if any(c[2](rec) != "-" for _, rec in rows)]
    name_w = max(len(label) for label, _ in rows) + 2
    model_w = max(len(rec["model"]) for _, rec in rows) + 2
    lines = [f"{'model':<{model_w}}{'reducer':<{name_w}}"
             + "".join(f"{head:>{w}}" for head, w, _ in cols)]
    lines.append("-" * len(lines[0]))
    for label, rec in rows:
        lines.append(f"{rec['model']:<{model_w}}{label:<{name_w}}"
                     + "".join(f"{cell(rec):>{w}}" for _, w, cell in cols))
    return "\n".join(lines) + "\n\n" + textwrap.fill(_legend(rows, big, cols), 100)


def _legend(rows: list[Row], big: str, cols: list[Column]) -> str:
    shown = {head for head, _, _ in cols}
    mode = next((r["train_step_mode"] for _, r in rows if r.get("train_step_mode")), "full")
    spread = next((r["speedup_spread"] for _, r in rows if r.get("speedup_spread")), "")
    parts = [("GMACs", "GMACs per video (analytic; work = the reducer's own)"),
             ("speedup [low, high]", f"speedup at batch {big} = median over the rounds of none's "
              f"time / the setting's time in the same round (same process, weights and input); "
              f"[low, high] = {spread} of the per-round ratios; SUSPECT = more than "
              f"{SUSPECT_FACTOR:g} x ideal (the machine's speed changed under the measurement, "
              f"or the measurement is broken)"),
             ("ideal", "ideal = GMACs ratio to none"), ("ratio", "ratio = speedup / ideal"),
             ("site %", "site % = share of the forward inside the reducer's hooks"),
             ("train x", f"train x = {mode} training step time vs none"),
             ("mem x", f"mem x = {mode} activation MiB per video vs none")]
    return "; ".join(text for head, text in parts if head in shown) + "."


def _speedup(rec: CostRecord) -> str:
    """``1.31x [1.28, 1.35]``; a suspect one (:func:`tokred.cost.record.is_suspect`) says so."""
    if rec.get("speedup") is None:
        return "-"
    text = f"{rec['speedup']:.2f}x [{rec['speedup_low']:.2f}, {rec['speedup_high']:.2f}]"
    return text + " SUSPECT" if rec["speedup_suspect"] else text


def _num(key: str, fmt: str, suffix: str = "") -> Callable[[CostRecord], str]:
    def cell(rec: CostRecord) -> str:
        v = rec.get(key)
        return "-" if v is None else format(v, fmt) + suffix

    return cell


def _per_batch(key: str, batch: str, fmt: str) -> Callable[[CostRecord], str]:
    def cell(rec: CostRecord) -> str:
        v = (rec.get(key) or {}).get(batch)
        return "-" if v is None else format(v, fmt)

    return cell
