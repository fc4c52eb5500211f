"""Torch datasets over a Split: caption sampling, evaluation enumeration, cache, skipped videos."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch
from torch.utils.data import DataLoader

from tokred.data import (
    CaptionDataset,
    Split,
    TrainDataset,
    VideoDataset,
    VideoDecodeError,
    collate,
    load_split,
)
from tokred.data import dataset as dataset_mod
from tokred.synth import SynthConfig, generate


@pytest.fixture(scope="module")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cfg = SynthConfig(train_videos=6, test_videos=6, frames=8, workers=1)
    return generate(tmp_path_factory.mktemp("synth"), cfg)


def test_train_items_and_caption_draw(synth_dir: Path) -> None:
    split = load_split("msrvtt", synth_dir, "train")
    ds = TrainDataset(split, seed=3, num_frames=4, image_size=56)
    item = ds[0]
    assert item["frames"].shape == (4, 3, 56, 56) and item["frames"].dtype == torch.float32
    assert split.caption_video[item["caption_index"]] == 0
    assert item["caption"] == split.captions[item["caption_index"]]
    draws = []
    for epoch in range(6):
        ds.set_epoch(epoch)
        draws.append([ds.caption_for(v) for v in range(len(ds))])
    assert len({tuple(d) for d in draws}) > 1  # changes across epochs
    again = TrainDataset(split, seed=3, num_frames=4, image_size=56)
    again.set_epoch(5)
    assert [again.caption_for(v) for v in range(len(ds))] == draws[5]  # deterministic


def test_jitter_indices_draw_one_frame_per_segment() -> None:
    import numpy as np

    from tokred.data.video import jitter_indices, uniform_indices

    rng = np.random.default_rng(0)
    seen = [set() for _ in range(3)]
    for _ in range(300):
        idx = jitter_indices(16, 3, rng)  # segments [0, 5), [5, 10), [10, 16)
        assert idx.tolist() == sorted(idx.tolist())
        for k, (lo, hi) in enumerate([(0, 5), (5, 10), (10, 16)]):
            assert lo <= idx[k] < hi
            seen[k].add(int(idx[k]))
    assert seen == [set(range(0, 5)), set(range(5, 10)), set(range(10, 16))]
    assert jitter_indices(2, 4, rng).tolist() == uniform_indices(2, 4).tolist()  # short video


def test_take_redraws_frames_from_the_pool_every_epoch(synth_dir: Path) -> None:
    split = load_split("msrvtt", synth_dir, "train")
    ds = TrainDataset(split, seed=1, take=2, num_frames=8, image_size=56)
    assert ds.source.frames(0).shape == (8, 3, 56, 56)
    ds.source.frames = lambda v: torch.arange(8.0).view(8, 1, 1, 1).expand(8, 3, 56, 56)
    picks = []
    for epoch in range(8):
        ds.set_epoch(epoch)
        frames = ds[0]["frames"]
        assert frames.shape == (2, 3, 56, 56)
        idx = frames[:, 0, 0, 0].long().tolist()  # each frame is filled with its index
        assert 0 <= idx[0] < 4 <= idx[1] < 8
        picks.append(tuple(idx))
    assert len(set(picks)) > 1
    again = TrainDataset(split, seed=1, take=2, num_frames=8, image_size=56)
    again.source.frames = ds.source.frames
    again.set_epoch(7)
    assert torch.equal(again[0]["frames"], ds[0]["frames"])  # deterministic in (seed, epoch, v)
    with pytest.raises(ValueError, match="take=9"):
        TrainDataset(split, take=9, num_frames=8)


def test_eval_enumerates_videos_and_all_captions(synth_dir: Path) -> None:
    split = load_split("msrvtt", synth_dir, "train")
    videos = DataLoader(
        VideoDataset(split, num_frames=4, image_size=32), batch_size=4, collate_fn=collate
    )
    batches = list(videos)
    assert batches[0]["frames"].shape == (4, 4, 3, 32, 32)  # [B, T, 3, S, S]
    assert torch.cat([b["video_index"] for b in batches]).tolist() == list(range(6))
    caps = list(DataLoader(CaptionDataset(split), batch_size=100, collate_fn=collate))[0]
    assert caps["caption"] == split.captions and caps["video_index"].tolist() == split.caption_video


def test_cache_avoids_second_decode(synth_dir: Path, monkeypatch) -> None:
    split = load_split("msrvtt", synth_dir, "test")
    ds = VideoDataset(split, num_frames=4, image_size=32, cache=True)
    ds.source.preload()
    first = ds[2]["frames"]

    def fail(*_a, **_k):
        raise AssertionError("decoded again despite the cache")

    monkeypatch.setattr(dataset_mod, "read_video", fail)
    torch.testing.assert_close(ds[2]["frames"], first, rtol=0, atol=0)


def test_skip_errors_counts_bad_videos(synth_dir: Path, tmp_path: Path) -> None:
    split = load_split("msrvtt", synth_dir, "test")
    videos = list(split.videos)
    bad = tmp_path / "bad.mp4"
    bad.write_bytes(b"corrupt")
    half = tmp_path / "half.mp4"
    data = split.videos[1].path.read_bytes()
    half.write_bytes(data[: len(data) // 2])
    videos[0] = type(videos[0])(videos[0].id, bad)
    videos[1] = type(videos[1])(videos[1].id, half)
    broken = Split("broken", videos, split.captions, split.caption_video, tmp_path)

    with pytest.raises(VideoDecodeError, match="bad.mp4"):
        VideoDataset(broken, num_frames=4, image_size=32)[0]
    ds = TrainDataset(broken, num_frames=4, image_size=32, skip_errors=True)
    batches = list(DataLoader(ds, batch_size=4, collate_fn=collate))
    assert sum(len(b["skipped"]) for b in batches) == 2
    assert sum(len(b["caption"]) for b in batches) == len(videos) - 2
    assert ds.source.report() == 2


def test_missing_video_raises_before_decoding(synth_dir: Path, tmp_path: Path) -> None:
    shutil.copytree(synth_dir, tmp_path / "s")
    (tmp_path / "s" / "videos" / "video3.mp4").unlink()
    from tokred.data import check_files

    with pytest.raises(FileNotFoundError, match="video3"):
        check_files(load_split("msrvtt", tmp_path / "s", "train"))


def test_clips_batch_same_sized_videos_and_match_per_clip_preprocessing(synth_dir: Path) -> None:
    import numpy as np

    split = load_split("msrvtt", synth_dir, "train")
    src = dataset_mod.FrameSource(split, num_frames=3, image_size=32)
    rng = np.random.default_rng(0)
    sizes = [(48, 64), (40, 40), (48, 64), (40, 40), (36, 50), (48, 64)]  # real sets mix sizes
    raws = [rng.integers(0, 256, (3, h, w, 3), dtype=np.uint8) for h, w in sizes]
    src.raw = lambda v: (raws[v], np.arange(3))
    clips = src.clips(chunk=4)
    assert sorted(clips) == list(range(6))
    for v, raw in enumerate(raws):
        want = src.transform(raw).to(torch.float16)
        assert clips[v].shape == (3, 3, 32, 32) and torch.equal(clips[v], want)
    assert sorted(src.clips(videos=[4, 1])) == [1, 4]
