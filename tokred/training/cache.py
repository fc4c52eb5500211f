"""The training dataset and its in-memory cache of decoded clips (float16, bounded), and what
happens to videos that cannot be decoded."""

from __future__ import annotations

import logging
import os
import time

import torch

from tokred.training.config import TrainConfig

log = logging.getLogger(__name__)

FIX = ("fix or re-encode them, leave them out with --bad-videos FILE (`tokred data check ROOT "
       "--out FILE` lists every bad video of a split), or pass --skip-errors")


def train_split(cfg: TrainConfig):
    """The training split of ``cfg``, without the videos listed in ``cfg.bad_videos``."""
    from tokred.data import load_split
    from tokred.data.check import drop_videos, read_bad_ids

    split = load_split(cfg.data, cfg.root, cfg.split, cfg.video_root,
                       trust_pickle=cfg.trust_pickle)
    return drop_videos(split, read_bad_ids(cfg.bad_videos)) if cfg.bad_videos else split


class ClipCache(torch.utils.data.Dataset):
    """Training items over the usable videos; with ``store``, clips kept as float16.

    A clip not given up front is decoded at its first fetch (and kept when storing). The
    caption (and, with a frame pool, the frames) are drawn per epoch. Stored clips are
    float16-rounded at every fetch, first or not (exact resumes). ``index``: the videos to
    train on (default: all).

    A video that cannot be decoded at fetch time (only with ``skip_errors``; otherwise the
    source raises) is replaced by the next good one in ``index`` order, so batches stay full;
    the item's ``replaced`` lists the bad video indices (collated per batch, counted by the
    training loop across DataLoader workers). ``skipped`` holds the ids :meth:`preload` left out.
    """

    def __init__(self, base, clips=None, index: list[int] | None = None,
                 store: bool = True) -> None:
        self.base, self.store = base, store
        if clips is None:
            clips = {}
        self.frames = dict(clips) if isinstance(clips, dict) else dict(enumerate(clips))
        self.index = index if index is not None else list(range(len(base)))
        self.skipped: list[str] = []

    def __len__(self) -> int:
        return len(self.index)

    def set_epoch(self, epoch: int) -> None:
        self.base.set_epoch(epoch)

    def preload(self, positions: set[int] | None = None) -> None:
        """Decode the clips at ``positions`` of ``index`` (default: all) not held yet, batched.

        Without storing, nothing is decoded ahead (batches decode before their step). With
        ``skip_errors`` undecodable videos are named and left out of ``index``.

        Raises:
            VideoDecodeError: undecodable videos without ``skip_errors``, every one named.
        """
        from tokred.data import VideoDecodeError

        if not self.store:
            return
        t0, split, source = time.perf_counter(), self.base.split, self.base.source
        chosen = self.index if positions is None else [self.index[i] for i in sorted(positions)]
        todo = [v for v in chosen if v not in self.frames]
        if not todo:
            return
        self.frames.update(source.clips(videos=todo, keep_going=True))
        bad = [v for v in todo if v not in self.frames]
        log.info("decoded %d training clips in %.0fs", len(todo), time.perf_counter() - t0)
        if bad and not source.skip_errors:
            shown = "\n".join(f"  {split.videos[v].id}: {source.bad_videos[v]}" for v in bad[:10])
            more = f"\n  ... and {len(bad) - 10} more" if len(bad) > 10 else ""
            raise VideoDecodeError(f"{len(bad)} of the {len(todo)} training videos this run "
                                   f"uses cannot be decoded (nothing trained yet):\n{shown}"
                                   f"{more}\nTo train: {FIX}")
        if bad:
            ids = [split.videos[v].id for v in bad]
            log.warning("skip_errors: leaving out %d undecodable training videos: %s", len(bad),
                        ", ".join(ids[:20]) + (" ..." if len(bad) > 20 else ""))
            self.skipped += ids
            left_out = set(bad)
            self.index = [v for v in self.index if v not in left_out]

    def __getitem__(self, i: int) -> dict:
        replaced = []
        v, frames = self.index[i], self._clip(self.index[i])
        while frames is None:  # only with skip_errors: the source raises otherwise
            replaced.append(v)
            if len(replaced) == len(self.index):
                raise self._none_decodable()
            v = self.index[(i + len(replaced)) % len(self.index)]
            frames = self._clip(v)
        c = self.base.caption_for(v)
        return {
            "frames": self.base.pick(v, frames).float(),
            "caption": self.base.split.captions[c],
            "video_index": v,
            "caption_index": c,
            "replaced": replaced,
        }

    def _clip(self, v: int) -> torch.Tensor | None:
        """Frames ``[T, 3, S, S]`` of video ``v`` (stored as float16), None if undecodable."""
        if v in self.frames:
            return self.frames[v]
        frames = self.base.source.frames(v)
        if frames is not None and self.store:
            frames = self.frames[v] = frames.to(torch.float16)
        return frames

    def _none_decodable(self) -> Exception:
        from tokred.data import VideoDecodeError

        return VideoDecodeError(f"{self.base.split.name}: none of the {len(self.index)} training "
                                f"videos can be decoded; check the video root and the files")


def make_dataset(
    cfg: TrainConfig, image_size: int, split=None, clips: torch.Tensor | None = None
) -> ClipCache:
    """The training dataset: one caption drawn per video per epoch.

    ``clips``: pre-decoded float16 ``[V, T, 3, S, S]`` frames of ``split`` (see
    :func:`tokred.retrieval.evaluate.load_videos`), used instead of decoding. Without them and with
    ``cfg.cache`` (and no DataLoader workers) clips are kept in memory as float16 once decoded
    (:func:`train` decodes those the run uses before the first step), unless they would exceed
    :func:`cache_limit`; then every batch is decoded before its step. Videos listed in
    ``cfg.bad_videos`` are left out; empty files are refused at once (left out with
    ``cfg.skip_errors``).
    """
    from tokred.data import TrainDataset, check_files

    if clips is not None and cfg.bad_videos:
        raise ValueError("bad_videos cannot apply to pre-decoded clips; drop the videos from "
                         "the split and its clips instead")
    split = split if split is not None else train_split(cfg)
    check_files(split)  # every missing video named before any step runs
    split, skipped = _without_empty_files(split, cfg.skip_errors)
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
    if why:
        log.info("training clips not cached (%s): each batch is decoded before its step", why)
    out = ClipCache(ds, store=why is None)
    out.skipped += skipped
    return out


def _without_empty_files(split, skip_errors: bool):
    """``(split, left-out ids)``: 0-byte video files refused, or left out with ``skip_errors``."""
    from tokred.data import VideoDecodeError
    from tokred.data.check import drop_videos, empty_files

    empty = empty_files(split)
    if empty and not skip_errors:
        raise VideoDecodeError(f"{split.name}: {len(empty)} video files are empty (0 bytes): "
                               f"{', '.join(empty[:10])}{' ...' if len(empty) > 10 else ''}. "
                               f"To train: {FIX}")
    if empty:
        log.warning("skip_errors: leaving out %d empty video files: %s", len(empty),
                    ", ".join(empty[:20]))
    return (drop_videos(split, set(empty)) if empty else split), empty


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
