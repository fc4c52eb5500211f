"""The training dataset and its in-memory cache of decoded clips (float16, bounded)."""

from __future__ import annotations

import logging
import os
import time

import torch

from tokred.training.config import TrainConfig

log = logging.getLogger(__name__)


def train_split(cfg: TrainConfig):
    from tokred.data import load_split

    return load_split(cfg.data, cfg.root, cfg.split, cfg.video_root)


class ClipCache(torch.utils.data.Dataset):
    """Training items over the usable videos, clips kept as float16 (the whole frame pool).

    A clip not given up front is decoded at its first fetch and kept. The caption (and, with a
    frame pool, the frames) are drawn per epoch. Every fetch, first or not, returns float16-
    rounded frames (exact resumes). ``index``: the videos to train on (default: all).
    """

    def __init__(self, base, clips=None, index: list[int] | None = None) -> None:
        self.base = base
        if clips is None:
            clips = {}
        self.frames = dict(clips) if isinstance(clips, dict) else dict(enumerate(clips))
        self.index = index if index is not None else list(range(len(base)))

    def __len__(self) -> int:
        return len(self.index)

    def set_epoch(self, epoch: int) -> None:
        self.base.set_epoch(epoch)

    def preload(self) -> None:
        """Decode every clip not held yet (batched); drop the videos the source skips."""
        t0, split = time.perf_counter(), self.base.split
        todo = [v for v in self.index if v not in self.frames]
        if not todo:
            return
        self.frames.update(self.base.source.clips(videos=todo))
        bad = [split.videos[v].id for v in self.index if v not in self.frames]
        if bad:
            log.warning("skip_errors: leaving out %d undecodable training videos: %s", len(bad),
                        ", ".join(bad[:20]) + (" ..." if len(bad) > 20 else ""))
        self.index = [v for v in self.index if v in self.frames]
        log.info("decoded %d training clips in %.0fs", len(todo), time.perf_counter() - t0)

    def __getitem__(self, i: int) -> dict:
        v = self.index[i]
        if v not in self.frames:
            self.frames[v] = self.base.source.frames(v).to(torch.float16)
        c = self.base.caption_for(v)
        return {
            "frames": self.base.pick(v, self.frames[v]).float(),
            "caption": self.base.split.captions[c],
            "video_index": v,
            "caption_index": c,
        }


def make_dataset(
    cfg: TrainConfig, image_size: int, split=None, clips: torch.Tensor | None = None
) -> torch.utils.data.Dataset:
    """The training dataset: one caption drawn per video per epoch.

    ``clips``: pre-decoded float16 ``[V, T, 3, S, S]`` frames of ``split`` (see
    :func:`tokred.retrieval.evaluate.load_videos`), used instead of decoding. Without them and with
    ``cfg.cache`` (and no DataLoader workers) clips are kept in memory as float16 once decoded
    (:func:`train` decodes them all before the first step when the run covers the data or
    ``cfg.skip_errors`` is set), unless they would exceed :func:`cache_limit`; then they are
    decoded every epoch. ``cfg.skip_errors`` needs the cached path: undecodable videos are
    found in that first pass, named in a warning and left out (the same on every rank).
    """
    from tokred.data import TrainDataset, check_files

    split = split if split is not None else train_split(cfg)
    check_files(split)  # every missing video named before any step runs
    pool = cfg.frame_pool or cfg.train_frames or cfg.frames
    ds = TrainDataset(
        split,
        seed=cfg.seed,
        num_frames=pool,
        image_size=image_size,
        sampling=cfg.sampling,
        take=(cfg.train_frames or cfg.frames) if cfg.frame_pool else None,
        skip_errors=cfg.skip_errors,
    )
    if clips is not None:
        want = (len(split.videos), pool)
        if tuple(clips.shape[:2]) != want:
            raise ValueError(f"clips {tuple(clips.shape)} do not match (videos, frames) = {want}")
        return ClipCache(ds, clips)
    why = no_cache_reason(cfg, len(split.videos) * pool * 3 * image_size**2 * 2)
    if why and cfg.skip_errors:
        raise ValueError(f"skip_errors needs the cached first pass over the videos ({why}); "
                         "fix or remove the bad videos instead (their ids are in the error)")
    if why:
        log.info("training clips not cached (%s): decoded every epoch", why)
        return ds
    return ClipCache(ds)


def no_cache_reason(cfg: TrainConfig, need: int) -> str | None:
    """Why the training clips (``need`` bytes as float16) are not kept in memory, or None."""
    if not cfg.cache:
        return "cache=False"
    if cfg.num_workers:
        return f"num_workers={cfg.num_workers}"
    if need > cache_limit():
        return f"{need / 2**30:.1f} GiB of clips > the {cache_limit() / 2**30:.1f} GiB limit"
    return None


def cache_limit() -> int:
    """Bytes of decoded training clips kept in memory: a quarter of RAM, at most 8 GiB."""
    try:
        ram = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (ValueError, OSError, AttributeError):
        ram = 8 * 2**30
    return min(8 * 2**30, ram // 4)
