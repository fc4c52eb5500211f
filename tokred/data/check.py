"""Finding bad videos before training: decode every video once, list the ones that fail.

At MSR-VTT scale the clips do not fit the in-memory cache, so training cannot find corrupt
files in a first pass over the data. ``tokred data check`` runs that pass on its own
(in parallel) and writes the bad ids; ``TrainConfig.bad_videos`` then leaves them out.

The list format: one video id per line; anything after a tab (the reason) and lines starting
with ``#`` are ignored, so the file can be written by hand too.
"""

from __future__ import annotations

import logging
import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Callable, Optional

from tokred.data.readers import Split
from tokred.data.video import VideoDecodeError, read_video

log = logging.getLogger(__name__)

__all__ = ["check_videos", "drop_videos", "empty_files", "read_bad_ids", "write_bad_ids"]


def check_videos(
    split: Split,
    num_frames: int = 12,
    sampling: str = "uniform",
    workers: Optional[int] = None,
    decoder: str = "auto",
    on_done: Optional[Callable[[str, Optional[str]], None]] = None,
) -> dict[str, str]:
    """Decode the sampled frames of every video of ``split``; returns ``{id: reason}`` of the
    ones that fail (missing, empty, corrupt or truncated), in split order.

    Args:
        split: the videos to check.
        num_frames / sampling / decoder: as training decodes them (a truncated file can
            decode at 4 frames and fail at 12: check with the frames you train with).
        workers: decoding threads (default: the CPU count; the decoders release the GIL).
        on_done: called with ``(video id, reason or None)`` as each video finishes (progress).
    """

    def one(item) -> Optional[str]:
        try:
            read_video(item.path, num_frames, sampling, decoder)
        except VideoDecodeError as err:
            return str(err)
        return None

    bad: dict[str, str] = {}
    with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
        for item, reason in zip(split.videos, pool.map(one, split.videos)):
            if reason is not None:
                bad[item.id] = reason
            if on_done is not None:
                on_done(item.id, reason)
    return bad


def empty_files(split: Split) -> list[str]:
    """Ids of the videos whose file exists but is empty (0 bytes): certainly undecodable, and
    found with one ``stat`` per video, so every run can afford to look."""
    return [v.id for v in split.videos if v.path.is_file() and v.path.stat().st_size == 0]


def write_bad_ids(path: str | Path, bad: dict[str, str]) -> Path:
    """Write ``{id: reason}`` as a bad-video list (atomically: temporary file, then rename)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{vid}\t{' '.join(reason.split())}" for vid, reason in bad.items()]
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}")
    tmp.write_text("".join(line + "\n" for line in lines))
    os.replace(tmp, path)
    return path


def read_bad_ids(path: str | Path) -> set[str]:
    """The video ids of a bad-video list (see the module doc for the format).

    Raises:
        FileNotFoundError: no such file.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"bad-video list {path} does not exist; write it with "
                                f"`tokred data check ROOT --out {path}`")
    ids = (line.split("\t", 1)[0].strip() for line in path.read_text().splitlines())
    return {i for i in ids if i and not i.startswith("#")}


def drop_videos(split: Split, ids: set[str]) -> Split:
    """``split`` without the videos ``ids`` (and their captions); unknown ids are ignored."""
    keep = [v for v, item in enumerate(split.videos) if item.id not in ids]
    if len(keep) == len(split.videos):
        return split
    new = {old: i for i, old in enumerate(keep)}
    pairs = [(c, new[v]) for c, v in zip(split.captions, split.caption_video) if v in new]
    log.info("%s: leaving out %d listed bad videos", split.name, len(split.videos) - len(keep))
    return Split(split.name, [split.videos[v] for v in keep], [c for c, _ in pairs],
                 [v for _, v in pairs], split.video_root, dict(split.meta))
