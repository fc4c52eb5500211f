"""Scale-model quality benchmark on the SYNTHETIC video-text set (CPU, ~15 minutes).

``python -m tokred.scale_bench --out runs/scale``:

1. ``tokred synth`` with its defaults (4,000 train / 500 test videos);
2. the embedded ``scale-B32`` trained from scratch with no reduction (meanP, few frames per
   training clip: meanP is frame-count invariant), within a time budget;
3. every registered reducer evaluated training-free on that checkpoint (paper defaults, 12
   frames), then after a short fine-tune each (12 frames; reducer parameters such as TempMe's
   temporal embeddings train too).

Every record carries ``"dataset": "synthetic"``; printed tables are labelled SYNTHETIC. The
pieces (:func:`prepare_synth`, :func:`load_data`, :func:`train_base`, :func:`finetune`,
:func:`evaluate_reducer`) return plain dicts so a sweep runner can call them as trials.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

import torch

from tokred.retrieval.evaluate import evaluate, load_model, load_videos
from tokred.synth import TYPES, SynthConfig
from tokred.training import TrainConfig, train

log = logging.getLogger(__name__)

PAPER_DEFAULTS: dict[str, dict] = {  # registered name -> options (empty: the reducer's defaults)
    "tome": {"r": 2},
    "centerclip": {"layer": 6, "segments": 4, "k": 49},
    "tempme": {"r": 2, "merge_layers": [8, 9, 10], "merge_frames": [2, 2, 3]},
}


@dataclass
class BenchConfig:
    """Benchmark settings (defaults fit ``make sweep``'s budget on 2 CPU cores).

    Attributes:
        out: output directory (synth data, checkpoints, results.jsonl, summary.md).
        train_videos: synthetic training videos (the test set is drawn after them, so it
            changes with this number too).
        train_frames / eval_frames: frames per clip in base training / in evaluation.
        frame_pool: frames decoded per training video; base training draws ``train_frames``
            of them per epoch, one per segment (temporal jitter; 0: fixed uniform frames).
        batch_size / steps / lr / warmup: base training (scratch, AdamW (0.9, 0.98), wd 0.2).
        patch_dropout: FLIP patch dropout in base training (about twice the steps per minute;
            evaluation keeps every patch).
        time_budget: minutes for base training (the LR schedule anneals by then; see TrainConfig).
        ft_mode / ft_steps / ft_batch / ft_lr: the short per-reducer fine-tune.
        reducers: registered names to evaluate (default: all).
    """

    out: str = "runs/scale"
    model: str = "scale-B32"
    seed: int = 0
    train_videos: int = 4000
    train_frames: int = 2
    frame_pool: int | None = 16
    eval_frames: int = 12
    batch_size: int = 128
    steps: int = 1200
    lr: float = 1e-3
    warmup: float = 0.05
    weight_decay: float = 0.2
    patch_dropout: float = 0.5
    time_budget: float = 7.75
    precision: str = "fp32"
    ft_mode: str = "full"
    ft_steps: int = 8
    ft_batch: int = 32
    ft_lr: float = 5e-5
    reducers: list[str] = field(default_factory=list)
    threads: int | None = None


@dataclass
class BenchData:
    """Both splits decoded once (float16 clips) plus the synthetic test metadata."""

    train: object
    test: object
    meta: object
    train_clips: torch.Tensor
    test_clips: torch.Tensor
    train_clips_eval: torch.Tensor | None = None  # eval_frames clips for fine-tunes
    load_s: float = 0.0


def prepare_synth(out_dir: str | Path, cfg=None) -> dict:
    """Generate the synthetic benchmark into ``out_dir`` unless it is already there."""
    from tokred.synth import SynthConfig, generate

    cfg = cfg or SynthConfig()
    out = Path(out_dir)
    meta = out / "synth_meta.json"
    t0 = time.perf_counter()
    want = {k: v for k, v in asdict(cfg).items() if k != "workers"}
    if meta.is_file():
        have = json.loads(meta.read_text())["config"]
        if {k: have.get(k) for k in want} == json.loads(json.dumps(want)):
            return {"path": str(out), "synth_s": 0.0, "reused": True, "dataset": "synthetic"}
    generate(out, cfg)
    return {
        "path": str(out),
        "synth_s": time.perf_counter() - t0,
        "reused": False,
        "dataset": "synthetic",
        "train_videos": cfg.train_videos,
        "test_videos": cfg.test_videos,
    }


def load_data(
    root: str | Path,
    train_frames: int = 4,
    eval_frames: int = 12,
    image_size: int = 56,
    finetune: bool = True,
) -> BenchData:
    """Decode and preprocess both splits once (batched); ``finetune`` adds 12-frame train clips."""
    from tokred.data import load_split
    from tokred.synth import load_meta

    t0 = time.perf_counter()
    train_split, test_split = (
        load_split("msrvtt", root, "train"),
        load_split("msrvtt", root, "test"),
    )
    data = BenchData(
        train_split,
        test_split,
        load_meta(root),
        load_videos(train_split, train_frames, image_size),
        load_videos(test_split, eval_frames, image_size),
    )
    if finetune:
        data.train_clips_eval = (
            data.train_clips
            if eval_frames == train_frames
            else load_videos(train_split, eval_frames, image_size)
        )
    data.load_s = time.perf_counter() - t0
    return data


def base_config(cfg: BenchConfig, root: str | Path) -> TrainConfig:
    return TrainConfig(
        data="msrvtt",
        root=str(root),
        out=str(Path(cfg.out) / "base"),
        model=cfg.model,
        reducer="none",
        mode="scratch",
        frames=cfg.eval_frames,
        train_frames=cfg.train_frames,
        frame_pool=cfg.frame_pool or None,
        batch_size=cfg.batch_size,
        max_steps=cfg.steps,
        lr=cfg.lr,
        warmup=cfg.warmup,
        weight_decay=cfg.weight_decay,
        patch_dropout=cfg.patch_dropout,
        precision=cfg.precision,
        seed=cfg.seed,
        time_budget=cfg.time_budget,
        threads=cfg.threads,
        save_every=100,
    )


def train_base(cfg: BenchConfig, data: BenchData, root: str | Path) -> dict:
    """Train the scale model from scratch with no reduction; returns the train stats."""
    stats = train(base_config(cfg, root), split=data.train, clips=data.train_clips)
    return _strip(stats, trial="train", reducer="none", finetuned=False)


def finetune(
    base_ckpt: str, reducer: str, options: dict, cfg: BenchConfig, data: BenchData, root: str | Path
) -> dict:
    """Short fine-tune of ``base_ckpt`` with ``reducer`` at ``eval_frames`` frames."""
    tc = replace(
        base_config(cfg, root),
        out=str(Path(cfg.out) / "ft" / reducer),
        init=base_ckpt,
        reducer=reducer,
        reducer_options=options,
        mode=cfg.ft_mode,
        train_frames=cfg.eval_frames,
        frame_pool=None,
        batch_size=cfg.ft_batch,
        max_steps=cfg.ft_steps,
        lr=cfg.ft_lr,
        warmup=0.25,
        time_budget=None,
        patch_dropout=0.0,
        save_every=0,
        betas=None,
    )
    stats = train(tc, split=data.train, clips=data.train_clips_eval)
    return _strip(stats, trial="finetune", reducer=reducer, finetuned=True)


def evaluate_reducer(
    ckpt: str,
    reducer: str,
    options: dict,
    data: BenchData,
    out: str | Path | None = None,
    finetuned: bool = False,
) -> dict:
    """Evaluate ``ckpt`` with ``reducer`` on the synthetic test split (+ visual GMACs)."""
    from tokred.cost.analytic import gmacs

    model = load_model(ckpt, reducer, options, frames=data.test_clips.shape[1])
    res = evaluate(model, data.test, videos=data.test_clips, synth_meta=data.meta, out=out)
    res.update(
        trial="eval",
        reducer=reducer,
        options=options,
        finetuned=finetuned,
        visual_gmacs=gmacs(model.video.trace()),
    )
    return res


def pick_threads() -> int:
    """All cores, or 1 on an oversubscribed machine (load above the core count), where
    OpenMP threads of one process wait on each other and a step gets 10-30x slower."""
    cores, load = os.cpu_count() or 1, os.getloadavg()[0]
    if load > cores:
        log.warning(
            "machine busy (load %.1f on %d cores): training with 1 thread; timings and "
            "the time-budgeted base training will suffer",
            load,
            cores,
        )
        return 1
    return cores


def _strip(stats: dict, **kw) -> dict:
    keep = {k: v for k, v in stats.items() if k not in ("losses", "config")}
    return {**keep, **kw, "dataset": "synthetic", "first_loss": (stats["losses"] or [None])[0]}


def run(cfg: BenchConfig) -> list[dict]:
    """The whole benchmark; appends every record to ``out/results.jsonl``."""
    from tokred.registry import list_reducers

    cfg = replace(cfg, threads=cfg.threads or pick_threads())
    torch.set_num_threads(cfg.threads)
    out = Path(cfg.out)
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    synth = SynthConfig(seed=cfg.seed, train_videos=cfg.train_videos)
    records = [prepare_synth(out / "synth", synth)]
    data = load_data(out / "synth", cfg.frame_pool or cfg.train_frames, cfg.eval_frames)
    records[0]["load_s"] = data.load_s
    base = train_base(cfg, data, out / "synth")
    records.append(base)
    for ft in (False, True):
        for name in cfg.reducers or list_reducers():
            opts = PAPER_DEFAULTS.get(name, {})
            ckpt, t1 = base["checkpoint"], time.perf_counter()
            if ft:
                stats = finetune(base["checkpoint"], name, opts, cfg, data, out / "synth")
                ckpt = stats["checkpoint"]
            rec = evaluate_reducer(
                ckpt, name, opts, data, out / "eval" / f"{name}{'_ft' if ft else ''}", ft
            )
            rec["trial_s"] = time.perf_counter() - t1
            records.append(rec)
            log.info("%s%s: t2v R@1 %.1f", name, " (fine-tuned)" if ft else "", rec["t2v_R@1"])
    records.append({"trial": "total", "dataset": "synthetic", "wall_s": time.perf_counter() - t0})
    with (out / "results.jsonl").open("a") as f:
        for r in records:
            f.write(json.dumps({**r, "bench_config": asdict(cfg)}, default=str) + "\n")
    (out / "summary.md").write_text(format_table(records) + "\n")
    return records


def format_table(records: list[dict]) -> str:
    """Markdown table of the eval records, labelled SYNTHETIC, with chance and wall times."""
    evals = [r for r in records if r.get("trial") == "eval"]
    if not evals:
        return "SYNTHETIC: no evaluation records"
    e0 = evals[0]
    types = [t for t in TYPES if t in e0.get("per_type", {})]
    lines = [
        f"SYNTHETIC benchmark (scale model, {e0['num_captions']} test captions / "
        f"{e0['num_videos']} videos; chance t2v R@1 {e0['chance_R@1']:.2f}%, "
        f"R@5 {e0['chance_R@5']:.2f}%, R@10 {e0['chance_R@10']:.2f}%)",
        "",
        "| reducer | fine-tuned | GMACs | t2v R@1 | x chance | R@5 | R@10 | v2t R@1 | R-Sum | "
        + " | ".join(f"{t} R@1/R@5" for t in types)
        + " | twin acc | s |",
        "|" + "---|" * (11 + len(types)),
    ]
    for r in evals:
        per = " | ".join(
            f"{r['per_type'][t]['t2v_R@1']:.1f}/{r['per_type'][t]['t2v_R@5']:.1f}" for t in types
        )
        lines.append(
            f"| {r['reducer']} | {'yes' if r['finetuned'] else 'no'} | {r['visual_gmacs']:.3f} | "
            f"{r['t2v_R@1']:.1f} | {r['t2v_R@1'] / r['chance_R@1']:.0f}x | {r['t2v_R@5']:.1f} | "
            f"{r['t2v_R@10']:.1f} | {r['v2t_R@1']:.1f} | {r['rsum']:.1f} | {per} | "
            f"{100 * r['twin_accuracy']:.1f} | {r.get('trial_s', r['eval_s']):.0f} |"
        )
    for r in records:
        if r.get("trial") == "train":
            lines.append(
                f"\nbase training: {r['steps']}/{r['total_steps']} steps in "
                f"{r['wall_s']:.0f}s (loss {r['first_loss']:.3f} -> {r['loss']:.3f})"
                + (f", stopped early: {r['stopped']}" if r.get("stopped") else "")
            )
        elif "synth_s" in r:
            lines.append(
                f"synth: {r['synth_s']:.0f}s{' (reused)' if r['reused'] else ''}; "
                f"decode+preprocess {r.get('load_s', 0):.0f}s"
            )
        elif r.get("trial") == "total":
            lines.append(f"total wall time {r['wall_s']:.0f}s")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """``python -m tokred.scale_bench --out runs/scale``."""
    d = BenchConfig()
    ap = argparse.ArgumentParser(prog="tokred.scale_bench", description=__doc__.splitlines()[0])
    for name, value in asdict(d).items():
        flag = "--" + name.replace("_", "-")
        if isinstance(value, list):
            ap.add_argument(flag, nargs="*", default=value)
        else:
            ap.add_argument(flag, type=type(value) if value is not None else int, default=value)
    cfg = BenchConfig(**vars(ap.parse_args(argv)))
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("tokred").setLevel(logging.INFO)
    print(format_table(run(cfg)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
