"""Video decoding (decord vs PyAV), frame sampling, bad files, and CLIP preprocessing."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
import torch

from tokred.data import video as video_mod
from tokred.data.transforms import CLIP_MEAN, CLIP_STD, clip_preprocess
from tokred.data.video import VideoDecodeError, read_video, sample_indices, uniform_indices

N_FRAMES, FPS, H, W = 30, 10, 48, 64


def _write_mp4(path: Path, faststart: bool = False) -> np.ndarray:
    """A lossy H.264 clip of a moving gradient and square; returns the source frames."""
    y, x = np.mgrid[0:H, 0:W]
    frames = np.empty((N_FRAMES, H, W, 3), np.uint8)
    for t in range(N_FRAMES):
        frames[t, ..., 0] = (x * 4 + t * 3) % 256
        frames[t, ..., 1] = (y * 5) % 256
        frames[t, ..., 2] = 128
        frames[t, 10:26, 2 * t % 48 : 2 * t % 48 + 16] = (250, 250, 30)
    opts = {"movflags": "+faststart"} if faststart else {}
    with av.open(str(path), "w", options=opts) as c:
        s = c.add_stream("libx264", rate=FPS)
        s.width, s.height, s.pix_fmt, s.options = W, H, "yuv420p", {"crf": "18"}
        for f in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(f, format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)
    return frames


@pytest.fixture(scope="module")
def clip(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, np.ndarray]:
    path = tmp_path_factory.mktemp("video") / "clip.mp4"
    return path, _write_mp4(path)


def test_uniform_indices_examples() -> None:
    np.testing.assert_array_equal(uniform_indices(10, 4), [0, 3, 6, 9])
    np.testing.assert_array_equal(uniform_indices(3, 6), [0, 0, 1, 1, 2, 2])  # repeats
    np.testing.assert_array_equal(uniform_indices(7, 1), [0])
    np.testing.assert_array_equal(uniform_indices(1, 3), [0, 0, 0])


@pytest.mark.parametrize("n", [1, 2, 5, 16, 17, 100, 301])
@pytest.mark.parametrize("T", [2, 4, 8, 12, 16])
def test_uniform_indices_reversal_symmetric(n: int, T: int) -> None:
    idx = uniform_indices(n, T)
    assert len(idx) == T and idx.min() >= 0 and idx.max() <= n - 1
    assert (np.diff(idx) >= 0).all()
    np.testing.assert_array_equal(n - 1 - idx[::-1], idx)  # reversed video, reversed frames
    np.testing.assert_allclose(idx, np.linspace(0, n - 1, T), atol=0.5)


def test_tempme_sampling() -> None:
    # 100 frames at 10 fps: one frame per second = 0, 10, ..., 90; spread to 4
    np.testing.assert_array_equal(sample_indices(100, 4, "tempme", fps=10), [0, 30, 60, 90])
    # 3 seconds < 8 frames: fall back to all frames
    np.testing.assert_array_equal(sample_indices(30, 8, "tempme", 10), uniform_indices(30, 8))
    with pytest.raises(ValueError, match="fps"):
        sample_indices(30, 8, "tempme")
    with pytest.raises(ValueError, match="uniform"):
        sample_indices(30, 8, "random")


@pytest.mark.parametrize("sampling", ["uniform", "tempme"])
def test_decord_and_pyav_agree(clip: tuple[Path, np.ndarray], sampling: str) -> None:
    path, src = clip
    a, ia = read_video(path, 8, sampling, decoder="decord")
    b, ib = read_video(path, 8, sampling, decoder="pyav")
    np.testing.assert_array_equal(ia, ib)
    assert a.shape == b.shape == (8, H, W, 3) and a.dtype == b.dtype == np.uint8
    assert np.abs(a.astype(float) - b).mean() < 2.0  # < 2/255 on [0, 1] pixels
    assert np.abs(a.astype(float) - src[ia]).mean() < 8.0  # lossy codec, still the same video


def test_short_video_repeats_frames(clip: tuple[Path, np.ndarray]) -> None:
    frames, idx = read_video(clip[0], 40, decoder="pyav")
    assert frames.shape[0] == 40 and len(np.unique(idx)) == N_FRAMES
    k = int(np.flatnonzero(np.diff(idx) == 0)[0])  # a repeated index repeats the frame
    np.testing.assert_array_equal(frames[k], frames[k + 1])


def test_auto_falls_back_to_pyav(clip: tuple[Path, np.ndarray], monkeypatch) -> None:
    def broken(*_):
        raise RuntimeError("decord cannot read this")

    monkeypatch.setitem(video_mod._BACKENDS, "decord", (broken, broken))
    frames, _ = read_video(clip[0], 4, decoder="auto")
    assert frames.shape == (4, H, W, 3)
    monkeypatch.setattr(video_mod, "_have_decord", lambda: False)
    assert video_mod._order("auto") == ["pyav"]


def test_unknown_decoder() -> None:
    with pytest.raises(ValueError, match="pyav"):
        read_video("x.mp4", 4, decoder="opencv")


def _truncate(path: Path, out: Path) -> Path:
    data = path.read_bytes()
    out.write_bytes(data[: len(data) // 2])
    return out


@pytest.mark.parametrize("kind", ["garbage", "truncated", "truncated_faststart", "empty"])
def test_bad_file_names_the_file(tmp_path: Path, clip: tuple[Path, np.ndarray], kind: str) -> None:
    bad = tmp_path / f"{kind}.mp4"
    if kind == "garbage":
        bad.write_bytes(b"not a video at all" * 100)
    elif kind == "truncated":
        _truncate(clip[0], bad)
    elif kind == "truncated_faststart":
        full = tmp_path / "fs.mp4"
        _write_mp4(full, faststart=True)
        _truncate(full, bad)
    else:
        bad.write_bytes(b"")
    for decoder in ("auto", "pyav"):
        with pytest.raises(VideoDecodeError, match=f"{kind}.mp4.*skip_errors"):
            read_video(bad, 8, decoder=decoder)


def test_missing_file(tmp_path: Path) -> None:
    with pytest.raises(VideoDecodeError, match="nothere.mp4 does not exist"):
        read_video(tmp_path / "nothere.mp4", 8)


def test_clip_preprocess_shapes_and_values() -> None:
    frames = np.full((5, 48, 64, 3), 128, np.uint8)
    out = clip_preprocess(frames, image_size=32)
    assert out.shape == (5, 3, 32, 32) and out.dtype == torch.float32
    expect = (128 / 255 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    torch.testing.assert_close(out[:, :, 5, 7], expect.expand(5, 3), atol=1e-5, rtol=0)


def test_clip_preprocess_centre_crop() -> None:
    frames = np.zeros((1, 32, 64, 3), np.uint8)
    frames[:, :, 16:48] = 255  # white centre half of a wide frame
    out = clip_preprocess(frames, image_size=32)  # shortest side 32: crop = columns 16..48
    white = (1 - torch.tensor(CLIP_MEAN)) / torch.tensor(CLIP_STD)
    torch.testing.assert_close(out[0, :, 16, 16], white, atol=1e-5, rtol=0)
    assert out.shape == (1, 3, 32, 32)


def test_clip_preprocess_rejects_float() -> None:
    with pytest.raises(ValueError, match="uint8 frames"):
        clip_preprocess(np.zeros((2, 8, 8, 3), np.float32), 8)


def test_clip_preprocess_matches_pil_pipeline() -> None:
    from PIL import Image

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, size=(3, 48, 80, 3), dtype=np.uint8)
    out = clip_preprocess(frames, image_size=32)
    ref = []
    for f in frames:  # OpenAI CLIP: Resize(32, BICUBIC) -> CenterCrop(32) -> ToTensor -> Normalize
        img = Image.fromarray(f).resize((53, 32), Image.BICUBIC)  # int(32 * 80 / 48) = 53
        left = int(round((53 - 32) / 2.0))
        ref.append(np.asarray(img)[:, left : left + 32])
    ref = (
        torch.tensor(np.stack(ref)).permute(0, 3, 1, 2) / 255.0
        - torch.tensor(CLIP_MEAN)[:, None, None]
    ) / torch.tensor(CLIP_STD)[:, None, None]
    assert (out - ref).abs().max() <= 1.01 / 255 / min(CLIP_STD)  # within one grey level


def test_bad_sampling_is_not_a_decode_error(clip: tuple[Path, np.ndarray]) -> None:
    with pytest.raises(ValueError, match="sampling"):
        read_video(clip[0], 4, sampling="random")


def test_probe_video_agrees(clip: tuple[Path, np.ndarray]) -> None:
    from tokred.data.video import probe_video

    assert probe_video(clip[0], "decord") == probe_video(clip[0], "pyav") == (N_FRAMES, FPS)
