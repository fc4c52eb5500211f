"""Synthetic benchmark: determinism, unique test captions, exact time-reversed twins."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from tokred.cli.synth import main
from tokred.data import VideoDataset, check_files, load_split, read_video
from tokred.retrieval.metrics import twin_accuracy
from tokred.synth import SynthConfig, generate, load_meta
from tokred.synth.scenes import Scene, caption_keys, render

CFG = SynthConfig(seed=7, train_videos=8, test_videos=16, frames=8)
FILES = ("MSRVTT_data.json", "MSRVTT_train.9k.csv", "MSRVTT_JSFUSION_test.csv", "synth_meta.json")


@pytest.fixture(scope="module")
def pair(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same config generated twice: in-process, and with 2 spawned workers."""
    a = generate(tmp_path_factory.mktemp("a"), SynthConfig(**{**CFG.__dict__, "workers": 1}))
    b = generate(tmp_path_factory.mktemp("b"), SynthConfig(**{**CFG.__dict__, "workers": 2}))
    return a, b


def test_same_seed_same_files_and_pixels(pair: tuple[Path, Path]) -> None:
    a, b = pair
    for name in FILES:
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    for v in sorted((a / "videos").iterdir()):
        fa, _ = read_video(v, CFG.frames)
        fb, _ = read_video(b / "videos" / v.name, CFG.frames)
        np.testing.assert_array_equal(fa, fb)


def test_other_seed_differs(tmp_path: Path, pair: tuple[Path, Path]) -> None:
    c = generate(tmp_path, SynthConfig(**{**CFG.__dict__, "seed": 8, "workers": 1}))
    assert (c / "synth_meta.json").read_text() != (pair[0] / "synth_meta.json").read_text()


def test_msrvtt_layout_and_counts(pair: tuple[Path, Path]) -> None:
    root = pair[0]
    train, test = load_split("msrvtt", root, "train"), load_split("msrvtt", root, "test")
    check_files(train)
    check_files(test)
    assert len(train.videos) == 8 and len(train.captions) >= 3 * 8  # several captions per video
    assert len(test.videos) == len(test.captions) == 16
    meta = load_meta(root)
    assert len(meta.types) == 16 and set(meta.types) <= {"static", "direction", "order", "small"}
    assert len(meta.twin_pairs) >= 2


def test_test_captions_unique_and_only_true_of_their_video(pair: tuple[Path, Path]) -> None:
    root = pair[0]
    test = load_split("msrvtt", root, "test")
    assert len(set(test.captions)) == len(test.captions)
    meta = json.loads((root / "synth_meta.json").read_text())
    scenes = [
        Scene(**{k: tuple(v) if isinstance(v, list) else v for k, v in s.items()})
        for s in meta["scenes"]["test"]
    ]
    for i, t in enumerate(meta["test"]):
        key = caption_keys(scenes[i])[t["type"]]
        holders = [j for j, s in enumerate(scenes) if caption_keys(s).get(t["type"]) == key]
        assert holders == [i], t["caption"]


def test_twins_are_exact_reversals(pair: tuple[Path, Path]) -> None:
    root = pair[0]
    test = load_split("msrvtt", root, "test")
    meta = load_meta(root)
    for i, j in meta.twin_pairs:
        fi, _ = read_video(test.videos[i].path, CFG.frames)
        fj, _ = read_video(test.videos[j].path, CFG.frames)
        np.testing.assert_array_equal(fi[::-1], fj)  # lossless codec: exact
        assert test.captions[i] != test.captions[j]


def test_scene_reversal_renders_reversed_frames() -> None:
    rng = np.random.default_rng(0)
    from tokred.synth.scenes import _random_scene

    for _ in range(20):
        s = _random_scene(rng, 0.5)
        np.testing.assert_array_equal(render(s.reversed(), 12, 64)[::-1], render(s, 12, 64))


def test_order_blind_model_scores_exactly_half(pair: tuple[Path, Path]) -> None:
    root = pair[0]
    test = load_split("msrvtt", root, "test")
    frames = torch.stack(
        [
            VideoDataset(test, num_frames=6, image_size=32)[v]["frames"]
            for v in range(len(test.videos))
        ]
    )  # [V, T, 3, S, S]
    proj = torch.randn(3 * 32 * 32, 16, generator=torch.Generator().manual_seed(0))
    video = (frames.flatten(2) @ proj).mean(1)  # per-frame features, mean pooled: [V, 16]
    text = torch.randn(len(test.captions), 16, generator=torch.Generator().manual_seed(1))
    sim = torch.nn.functional.normalize(text, dim=1) @ torch.nn.functional.normalize(video, dim=1).T
    pairs = load_meta(root).twin_pairs
    assert twin_accuracy(sim, pairs) == 0.5
    order_aware = sim.clone()
    order_aware.fill_diagonal_(2.0)  # every caption prefers its own video
    assert twin_accuracy(order_aware, pairs) == 1.0


def test_twin_accuracy_rule() -> None:
    sim = np.array(
        [[1.0, 0.0, 0.0, 0.0], [0.5, 0.2, 0.0, 0.0], [0.0, 0.0, 0.3, 0.3], [0.0, 0.0, 0.9, 0.3]]
    )
    # pair (0,1): caption 0 right, caption 1 wrong; pair (2,3): tie (0.5), wrong
    assert twin_accuracy(sim, [(0, 1), (2, 3)]) == pytest.approx((1 + 0 + 0.5 + 0) / 4)
    assert np.isnan(twin_accuracy(sim, []))


def test_cli_small(tmp_path: Path) -> None:
    assert main(["--out", str(tmp_path), "--small", "--seed", "3"]) == 0
    assert len(load_split("msrvtt", tmp_path, "test").captions) == 16
    assert len(list((tmp_path / "videos").glob("*.mp4"))) == 32


def test_bad_config_is_explained(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="frames >= 4"):
        generate(tmp_path, SynthConfig(frames=2))


def test_extra_test_captions_are_true_of_their_video_alone(tmp_path: Path) -> None:
    cfg = SynthConfig(**{**CFG.__dict__, "test_videos": 60, "workers": 1,
                         "extra_test_captions": True})
    root = generate(tmp_path, cfg)
    test = load_split("msrvtt", root, "test")
    meta = json.loads((root / "synth_meta.json").read_text())
    n = len(test.videos)
    assert n == 60 and len(test.captions) > 1.5 * n  # most videos get more captions
    assert test.caption_video[:n] == list(range(n))  # the one-per-video captions come first
    assert len(set(test.captions)) == len(test.captions)
    scenes = [Scene(**{k: tuple(v) if isinstance(v, list) else v for k, v in s.items()})
              for s in meta["scenes"]["test"]]
    for c, (v, t) in enumerate(zip(test.caption_video, meta["test"])):
        assert t["caption"] == test.captions[c] and t["video_id"] == test.videos[v].id
        key = caption_keys(scenes[v])[t["type"]]
        assert [j for j, s in enumerate(scenes) if caption_keys(s).get(t["type"]) == key] == [v]
        assert t["twin"] is None or c < n  # twins are the one-per-video captions
    pairs = load_meta(root).twin_pairs
    assert pairs and all(i < n and j < n for i, j in pairs)
