"""``tokred synth``: write the synthetic video-text benchmark (MSR-VTT layout) to a directory."""

from __future__ import annotations

import argparse
import time
from dataclasses import replace
from typing import Optional

from tokred.cli.args import (
    NONNEG,
    NONNEG_INT,
    POSITIVE_INT,
    PROBABILITY,
    HelpFormatter,
    output_dir,
)
from tokred.synth.generate import SynthConfig, generate


def parser() -> argparse.ArgumentParser:
    d = SynthConfig()
    ap = argparse.ArgumentParser(prog="tokred synth", description=__doc__.splitlines()[0],
                                 formatter_class=HelpFormatter)
    ap.add_argument("--out", required=True, type=output_dir, help="output directory")
    ap.add_argument("--seed", type=NONNEG_INT, default=d.seed,
                    help="scenes, textures and caption wording all derive from it")
    ap.add_argument("--train-videos", type=POSITIVE_INT, default=d.train_videos,
                    help="training videos (3-4 captions each)")
    ap.add_argument("--test-videos", type=POSITIVE_INT, default=d.test_videos,
                    help="test videos (one caption each)")
    ap.add_argument("--frames", type=POSITIVE_INT, default=d.frames,
                    help="frames per video (at least 4)")
    ap.add_argument("--size", type=POSITIVE_INT, default=d.size,
                    help="frame side in pixels (even, at least 32)")
    ap.add_argument("--fps", type=POSITIVE_INT, default=d.fps, help="frame rate of the mp4s")
    ap.add_argument("--twin-frac", type=PROBABILITY, default=d.twin_frac,
                    help="fraction of direction/order test videos in a time-reversed twin pair")
    ap.add_argument("--small-prob", type=PROBABILITY, default=d.small_prob,
                    help="probability that a scene has a small corner object")
    ap.add_argument("--test-mix", type=NONNEG, nargs=4, default=list(d.test_mix),
                    metavar=("STATIC", "DIRECTION", "ORDER", "SMALL"),
                    help="fractions of the test caption types")
    ap.add_argument("--workers", type=POSITIVE_INT, default=d.workers,
                    help="encoding processes (the output does not depend on them)")
    ap.add_argument("--small", action="store_true", help="16 + 16 videos of 8 frames, for tests")
    return ap


def main(argv: Optional[list[str]] = None) -> int:
    """``tokred synth``: generate the synthetic benchmark."""
    ap = parser()
    a = ap.parse_args(argv)
    if not sum(a.test_mix):
        ap.error("--test-mix: the four fractions are all 0; give at least one a weight")
    cfg = SynthConfig(
        seed=a.seed,
        train_videos=a.train_videos,
        test_videos=a.test_videos,
        frames=a.frames,
        size=a.size,
        fps=a.fps,
        twin_frac=a.twin_frac,
        small_prob=a.small_prob,
        test_mix=tuple(a.test_mix),
        workers=a.workers,
    )
    if a.small:
        cfg = replace(cfg, train_videos=16, test_videos=16, frames=8, workers=1)
    t0 = time.perf_counter()
    generate(a.out, cfg)
    print(
        f"synthetic benchmark in {a.out} ({cfg.train_videos} train, {cfg.test_videos} test "
        f"videos) in {time.perf_counter() - t0:.1f}s"
    )
    return 0
