"""Video decoding (decord, PyAV fallback) and frame sampling.

Sampling modes:

- ``uniform``: ``T`` frames at evenly spaced indices over the whole video, CLIP4Clip style
  (``np.linspace(0, n - 1, T)`` rounded). Rounding is mirror-symmetric (the second half of the
  indices mirrors the first), so a time-reversed video samples exactly the reversed frames
  (the synthetic benchmark's twins rely on this). The only exception is odd ``T`` with even
  ``n``, where the middle index cannot be symmetric; it rounds half up.
- ``tempme``: TempMe / CLIP4Clip ``framerate=1``: one frame per second, then spread evenly to
  ``T`` with the same rounding. A video shorter than ``T`` seconds falls back to all its frames
  (TempMe pads with zeros and a mask instead; here every slot holds a real frame).

Videos with fewer than ``T`` candidate frames repeat frames in order (e.g. ``n=3, T=6`` gives
``[0, 0, 1, 1, 2, 2]``), so the output always has exactly ``T`` frames and no mask is needed.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Callable

import numpy as np

logger = logging.getLogger(__name__)

DECODERS = ("auto", "decord", "pyav")
SAMPLINGS = ("uniform", "tempme")

__all__ = [
    "DECODERS",
    "SAMPLINGS",
    "VideoDecodeError",
    "uniform_indices",
    "jitter_indices",
    "sample_indices",
    "read_video",
    "probe_video",
]


Picker = Callable[[int, float], np.ndarray]  # (num_frames, fps) -> frame indices


class VideoDecodeError(RuntimeError):
    """A video file is missing, corrupt or truncated; the message names the file and the fix."""


def uniform_indices(n: int, T: int) -> np.ndarray:
    """``T`` evenly spaced indices in ``[0, n)``: ``linspace(0, n-1, T)`` rounded, mirror-symmetric.

    Args:
        n: Number of candidate frames (>= 1).
        T: Number of indices wanted (>= 1).

    Returns:
        ``int64 [T]`` non-decreasing indices; frames repeat when ``n < T``.
    """
    if n < 1 or T < 1:
        raise ValueError(f"uniform_indices needs n >= 1 and T >= 1, got n={n}, T={T}")
    if T == 1:
        return np.zeros(1, dtype=np.int64)
    k = np.arange(T, dtype=np.int64)
    # exact integer round-half-up of k * (n - 1) / (T - 1)
    idx = (2 * k * (n - 1) + (T - 1)) // (2 * (T - 1))
    half = T // 2
    idx[T - half :] = (n - 1) - idx[:half][::-1]  # mirror: reversal-symmetric sampling
    return idx


def jitter_indices(n: int, T: int, rng: np.random.Generator) -> np.ndarray:
    """``T`` increasing indices in ``[0, n)``, one drawn uniformly from each of ``T`` equal
    segments (TSN's training sampling); :func:`uniform_indices` when ``n < T``."""
    if n < T:
        return uniform_indices(n, T)
    edges = (np.arange(T + 1, dtype=np.int64) * n) // T
    return edges[:-1] + rng.integers(0, edges[1:] - edges[:-1])


def sample_indices(
    n: int, T: int, sampling: str = "uniform", fps: float | None = None
) -> np.ndarray:
    """Frame indices to decode for a video of ``n`` frames.

    Args:
        n: Number of frames in the video.
        T: Number of frames to return.
        sampling: ``"uniform"`` or ``"tempme"`` (1 fps first, then uniform; see module doc).
        fps: Video frame rate, required by ``"tempme"``.

    Returns:
        ``int64 [T]`` frame indices.
    """
    if sampling == "uniform":
        return uniform_indices(n, T)
    if sampling == "tempme":
        if not fps or fps <= 0:
            raise ValueError("sampling='tempme' needs the video fps; probe it with probe_video()")
        per_second = np.unique(np.round(np.arange(0, n, fps)).astype(np.int64).clip(0, n - 1))
        if len(per_second) < T:  # short video: use all frames
            return uniform_indices(n, T)
        return per_second[uniform_indices(len(per_second), T)]
    raise ValueError(f"unknown sampling {sampling!r}; choose one of {SAMPLINGS}")


def _have_decord() -> bool:
    try:
        import decord  # noqa: F401
    except ImportError:
        return False
    return True


def _decord_open(path: Path):
    import decord

    return decord.VideoReader(str(path), ctx=decord.cpu(0), num_threads=1)


def _probe_decord(path: Path) -> tuple[int, float]:
    vr = _decord_open(path)
    return len(vr), float(vr.get_avg_fps())


def _read_decord(path: Path, pick: Picker) -> tuple[np.ndarray, np.ndarray]:
    vr = _decord_open(path)  # opened once for both the frame count and the frames
    idx = pick(len(vr), float(vr.get_avg_fps()))
    uniq, inverse = np.unique(idx, return_inverse=True)
    frames = vr.get_batch(uniq.tolist()).asnumpy()  # [U, H, W, 3] uint8
    return frames[inverse], idx


def _probe_pyav(path: Path) -> tuple[int, float]:
    import av

    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.guessed_rate or 0
        n = stream.frames or sum(1 for p in container.demux(stream) if p.size)
    return int(n), float(rate)


def _read_pyav(path: Path, pick: Picker) -> tuple[np.ndarray, np.ndarray]:
    import av

    idx = pick(*_probe_pyav(path))
    wanted = set(idx.tolist())
    got: dict[int, np.ndarray] = {}
    with av.open(str(path)) as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        for i, frame in enumerate(container.decode(stream)):
            if i in wanted:
                got[i] = frame.to_ndarray(format="rgb24")  # [H, W, 3] uint8
            if i >= idx.max():
                break
    missing = wanted - got.keys()
    if missing:
        raise ValueError(f"stream ended early: frames {sorted(missing)[:5]} not decodable")
    return np.stack([got[i] for i in idx.tolist()]), idx


_BACKENDS = {"decord": (_probe_decord, _read_decord), "pyav": (_probe_pyav, _read_pyav)}


def _order(decoder: str) -> list[str]:
    if decoder not in DECODERS:
        raise ValueError(f"unknown decoder {decoder!r}; choose one of {DECODERS}")
    if decoder == "auto":
        return ["decord", "pyav"] if _have_decord() else ["pyav"]
    return [decoder]


def _fail(path: Path, errors: list[str]) -> VideoDecodeError:
    detail = "; ".join(errors)
    return VideoDecodeError(
        f"cannot decode video {path} ({detail}). The file is corrupt or truncated: re-download or "
        "re-encode it (e.g. ffmpeg -i in.mp4 -c:v libx264 out.mp4), or pass skip_errors=True to "
        "the dataset to skip and count bad videos."
    )


def probe_video(path: str | Path, decoder: str = "auto") -> tuple[int, float]:
    """Returns ``(num_frames, fps)`` of a video, trying decoders in order (see ``read_video``)."""
    path, order = Path(path), _order(decoder)
    if not path.is_file():
        raise VideoDecodeError(f"video file {path} does not exist; check the dataset's video root")
    errors = []
    for name in order:
        try:
            return _BACKENDS[name][0](path)
        except Exception as e:  # decoders raise many types on bad input
            errors.append(f"{name}: {type(e).__name__}: {e}")
    raise _fail(path, errors)


def read_video(
    path: str | Path,
    num_frames: int,
    sampling: str = "uniform",
    decoder: str = "auto",
) -> tuple[np.ndarray, np.ndarray]:
    """Decodes ``num_frames`` sampled frames of a video.

    Args:
        path: Video file.
        num_frames: ``T``, frames to return.
        sampling: ``"uniform"`` or ``"tempme"`` (see module docstring).
        decoder: ``"decord"``, ``"pyav"`` or ``"auto"`` (decord, falling back to PyAV when decord
            is not installed or fails on this file).

    Returns:
        ``(frames, indices)``: uint8 ``[T, H, W, 3]`` RGB frames and the int64 ``[T]`` indices used.

    Raises:
        VideoDecodeError: The file is missing, corrupt or truncated (every decoder failed).
    """
    path, order = Path(path), _order(decoder)
    if sampling not in SAMPLINGS or num_frames < 1:
        raise ValueError(
            f"need sampling in {SAMPLINGS} and num_frames >= 1, got {sampling!r}, {num_frames}"
        )
    if not path.is_file():
        raise VideoDecodeError(f"video file {path} does not exist; check the dataset's video root")
    errors = []

    def pick(n: int, fps: float) -> np.ndarray:
        if n < 1:
            raise ValueError("no video frames")
        return sample_indices(n, num_frames, sampling, fps)

    for name in order:
        try:
            frames, idx = _BACKENDS[name][1](path, pick)  # [T, H, W, 3] uint8, [T]
        except Exception as e:
            errors.append(f"{name}: {type(e).__name__}: {e}")
            logger.debug("decoder %s failed on %s: %s", name, path, e)
            continue
        return frames, idx
    raise _fail(path, errors)
