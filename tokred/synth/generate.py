"""Synthetic text-video benchmark sized for training a tiny CLIP from scratch on a CPU.

Each video shows a static textured background, a large *mover* that slides across one lane, a
large *event* object that appears or disappears, and sometimes a small object in a corner.
The clip has two phases: ``move_first`` (the mover moves, then the event happens) or
``event_first`` (the event, then the motion), so captions can depend on:

- ``static``:    "a blue square at the top left and a red circle"       (frame content only)
- ``direction``: "a red circle moves left at the top"                   (motion direction)
- ``order``:     "a red circle moves left, then a blue square appears"  (order of events)
- ``small``:     "a small green triangle in the top left corner"        (a ~5 px object)

The vocabulary is closed (8 colours, 4 shapes, 4 directions, lanes, corners). Training videos get
one caption of every type that applies. Test videos get one caption each (MSR-VTT 1k-A style);
no test caption is true of any other test video. Some direction/order test videos come as
*time-reversed twins*: the same frames played backwards, captioned with the opposite direction /
event order. Forward scenes are generated time-symmetrically, so a reversed twin is an ordinary
scene, and an order-blind model (mean pooling of per-frame features) cannot tell twins apart.

Videos are written as real lossless H.264 mp4 files (yuv420p, ``qp=0``) so the decoder path is
exercised and decoded twins are exact frame reversals of each other; annotations follow the
MSR-VTT CLIP4Clip layout, plus ``synth_meta.json`` (caption types, twin pairs).
"""

from __future__ import annotations

import csv
import json
import logging
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import Any, Union

import numpy as np

from tokred.synth.scenes import (
    TYPES,
    Scene,
    _random_scene,
    caption,
    caption_keys,
    render,
)

logger = logging.getLogger(__name__)


GENERATOR_VERSION = 4  # bump whenever the same config would render different videos


@dataclass(frozen=True)
class SynthConfig:
    """Benchmark size and content (defaults: ~10 s to generate on 2 idle cores, ~40 MB).

    Attributes:
        seed: Everything (scenes, textures, caption wording) derives from it.
        train_videos: Training videos (3-4 captions each).
        test_videos: Test videos (one caption each); twins count as two.
        frames: Frames per video (even numbers keep uniform sampling reversal-symmetric).
        size: Frame side in pixels (square).
        fps: Frame rate written to the mp4.
        test_mix: Fractions of static / direction / order / small test captions.
        twin_frac: Fraction of direction/order test videos that belong to a twin pair.
        small_prob: Probability that a scene has a small corner object.
        extra_test_captions: Also caption each test video with every other type whose caption
            is true of that video alone (one more query per video and type, no more videos to
            encode: tighter intervals at the same evaluation cost). The first ``test_videos``
            captions stay the one-per-video set, so caption ``i`` is video ``i`` for them.
        workers: Encoding processes (does not change the output).
        version: Generator version, recorded in ``synth_meta.json`` so data cached by an older
            generator (different pixels for the same config) is noticed; only the current one
            can be generated.
    """

    seed: int = 0
    train_videos: int = 4000
    test_videos: int = 500
    frames: int = 16
    size: int = 64
    fps: int = 4
    test_mix: tuple[float, float, float, float] = (0.3, 0.3, 0.25, 0.15)
    twin_frac: float = 0.5
    small_prob: float = 0.5
    extra_test_captions: bool = False
    workers: int = 2
    version: int = GENERATOR_VERSION


def _test_scenes(cfg: SynthConfig, rng: np.random.Generator) -> list[tuple[Scene, str, int]]:
    """Test ``(scene, caption type, twin partner offset)``; no caption is true of another video.

    Types with few possible captions (small: 96, direction: 288) are placed first, then the
    groups are shuffled. Twins stay adjacent: partner offset +1 for the first of a pair, -1 for
    the second, 0 without a twin.
    """
    counts = np.floor(np.asarray(cfg.test_mix) / sum(cfg.test_mix) * cfg.test_videos).astype(int)
    counts[0] += cfg.test_videos - counts.sum()
    plan: list[tuple[str, bool]] = []
    for kind in ("small", "direction", "static", "order"):
        c = int(counts[TYPES.index(kind)])
        pairs = int(c * cfg.twin_frac) // 2 if kind in ("direction", "order") else 0
        plan += [(kind, True)] * pairs + [(kind, False)] * (c - 2 * pairs)
    claimed: set[tuple] = set()  # keys of chosen test captions
    satisfied: set[tuple] = set()  # keys true of some accepted test video
    groups: list[list[tuple[Scene, str, int]]] = []
    for kind, twin in plan:
        for _ in range(10_000):
            s = _random_scene(rng, 1.0 if kind == "small" else cfg.small_prob)
            group = [s, s.reversed()] if twin else [s]
            keys = {(kind, caption_keys(g)[kind]) for g in group}
            true_of = {(k, v) for g in group for k, v in caption_keys(g).items()}
            if len(keys) == len(group) and not keys & satisfied and not true_of & claimed:
                break
        else:
            raise RuntimeError(
                f"cannot fit {counts[TYPES.index(kind)]} unique {kind!r} test "
                "captions; lower test_videos or change test_mix"
            )
        claimed |= keys
        satisfied |= true_of
        groups.append([(g, kind, (1 - 2 * j) if twin else 0) for j, g in enumerate(group)])
    return [item for k in rng.permutation(len(groups)) for item in groups[k]]


def _extra_captions(test: list[tuple[Scene, str, int]]) -> list[tuple[int, str]]:
    """``(test video index, caption type)`` of every further caption true of that video alone.

    A video's primary type is skipped; so is any key true of another test video (twins share
    their static key, so they never get a static caption).
    """
    count: dict[tuple, int] = {}
    for s, _, _ in test:
        for kv in caption_keys(s).items():
            count[kv] = count.get(kv, 0) + 1
    return [(j, kind) for j, (s, primary, _) in enumerate(test)
            for kind, key in caption_keys(s).items()
            if kind != primary and count[(kind, key)] == 1]


def _encode(path: Path, frames: np.ndarray, fps: int) -> None:
    """Writes uint8 frames ``[F, H, W, 3]`` as lossless H.264 (yuv420p, qp=0) mp4."""
    import av

    with av.open(str(path), "w") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = frames.shape[2], frames.shape[1], "yuv420p"
        stream.options = {"qp": "0", "preset": "veryfast"}
        stream.thread_count = 1  # deterministic bitstream
        for f in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)


def _write_videos(job: tuple[list[tuple[str, Scene]], int, int, int]) -> None:
    items, F, n, fps = job
    for path, scene in items:
        _encode(Path(path), render(scene, F, n), fps)


def _encode_all(items: list[tuple[str, Scene]], cfg: SynthConfig) -> None:
    step = max(1, min(64, -(-len(items) // (8 * max(cfg.workers, 1)))))  # ~8 chunks/worker
    chunks = [items[i : i + step] for i in range(0, len(items), step)]
    jobs = [(c, cfg.frames, cfg.size, cfg.fps) for c in chunks]
    if cfg.workers <= 1 or len(chunks) <= 1:
        for job in jobs:
            _write_videos(job)
        return
    # fork on Linux: workers only run numpy and PyAV, and skip re-importing torch (seconds each)
    ctx = get_context("fork" if sys.platform == "linux" else "spawn")
    with ProcessPoolExecutor(cfg.workers, mp_context=ctx) as pool:
        list(pool.map(_write_videos, jobs))


def _write_annotations(
    out: Path,
    train: list[Scene],
    test: list[tuple[Scene, str, int]],
    rng: np.random.Generator,
    cfg: SynthConfig,
) -> None:
    sentences, videos, meta_test = [], [], []
    for v, s in enumerate(train):
        videos.append({"video_id": f"video{v}", "id": v, "split": "train"})
        for kind in caption_keys(s):
            text = caption(s, kind, int(rng.integers(2)))
            sentences.append({"caption": text, "video_id": f"video{v}", "sen_id": len(sentences)})
    rows = []
    extra = _extra_captions(test) if cfg.extra_test_captions else []
    for v in range(len(train), len(train) + len(test)):
        videos.append({"video_id": f"video{v}", "id": v, "split": "test"})
    for j, kind in [(j, kind) for j, (_, kind, _) in enumerate(test)] + extra:
        s, primary, twin = test[j]
        v, text = len(train) + j, caption(s, kind)
        sentences.append({"caption": text, "video_id": f"video{v}", "sen_id": len(sentences)})
        rows.append({"key": f"ret{len(rows)}", "vid_key": f"msr{v}", "video_id": f"video{v}",
                     "sentence": text})
        meta_test.append({"video_id": f"video{v}", "caption": text, "type": kind,
                          "twin": f"video{v + twin}" if twin and kind == primary else None})
    (out / "MSRVTT_data.json").write_text(json.dumps({"videos": videos, "sentences": sentences}))
    with (out / "MSRVTT_train.9k.csv").open("w", newline="") as f:
        f.write("video_id\n" + "".join(f"video{v}\n" for v in range(len(train))))
    with (out / "MSRVTT_JSFUSION_test.csv").open("w", newline="") as f:
        w = csv.DictWriter(f, ["key", "vid_key", "video_id", "sentence"], lineterminator="\n")
        w.writeheader()
        w.writerows(rows)
    pairs = [[j, j + 1] for j, (_, _, twin) in enumerate(test) if twin == 1]
    meta = {
        "config": {k: v for k, v in asdict(cfg).items() if k != "workers"},
        "test": meta_test,
        "twin_pairs": pairs,
        "scenes": {"train": [asdict(s) for s in train], "test": [asdict(s) for s, _, _ in test]},
    }
    (out / "synth_meta.json").write_text(json.dumps(meta, indent=1))


def generate(out_dir: Union[str, Path], cfg: SynthConfig = SynthConfig()) -> Path:
    """Generates the benchmark into ``out_dir`` (videos in ``out_dir/videos``).

    Read it with ``load_split("msrvtt", out_dir, "train" | "test")`` and ``load_meta(out_dir)``.
    Deterministic: the same config gives byte-identical annotations and decoded pixels.

    Returns:
        ``out_dir``.
    """
    if cfg.version != GENERATOR_VERSION:
        raise ValueError(
            f"this generator writes version {GENERATOR_VERSION}, not {cfg.version}; "
            "drop the version argument"
        )
    if cfg.frames < 4 or cfg.size < 32 or cfg.size % 2:
        raise ValueError(f"need frames >= 4 and an even size >= 32, got {cfg.frames}, {cfg.size}")
    out = Path(out_dir)
    (out / "videos").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(cfg.seed)
    train = [_random_scene(rng, cfg.small_prob) for _ in range(cfg.train_videos)]
    test = _test_scenes(cfg, rng)
    scenes = train + [s for s, _, _ in test]
    t0 = time.perf_counter()
    _encode_all([(str(out / "videos" / f"video{v}.mp4"), s) for v, s in enumerate(scenes)], cfg)
    _write_annotations(out, train, test, rng, cfg)
    logger.info("wrote %d videos to %s in %.1fs", len(scenes), out, time.perf_counter() - t0)
    return out


@dataclass(frozen=True)
class SynthMeta:
    """Test-set annotations for evaluation, aligned with the test split's caption order.

    Attributes:
        types: Caption type of each test caption (static / direction / order / small).
        twin_pairs: ``(i, j)`` caption indices of time-reversed twins (caption i is video i).
        config: The generation config as a dict.
    """

    types: list[str]
    twin_pairs: list[tuple[int, int]]
    config: dict[str, Any]


def load_meta(out_dir: Union[str, Path]) -> SynthMeta:
    """Reads ``synth_meta.json`` written by :func:`generate`."""
    path = Path(out_dir) / "synth_meta.json"
    if not path.is_file():
        raise FileNotFoundError(
            f"{path} not found; generate the data with `tokred synth --out DIR`"
        )
    meta = json.loads(path.read_text())
    return SynthMeta(
        [t["type"] for t in meta["test"]], [tuple(p) for p in meta["twin_pairs"]], meta["config"]
    )


