"""Torch datasets over a :class:`~tokred.data.readers.Split`, and their collate function.

- :class:`TrainDataset`: one item per video, one of its captions drawn at random per epoch
  (deterministic in ``(seed, epoch, video)``, so DataLoader workers agree without shared state).
- :class:`VideoDataset` / :class:`CaptionDataset`: evaluation enumerates videos and captions
  separately, so every caption is scored against every video (``Split.caption_video`` maps them).

Captions are returned as strings; the model tokenises them.

Bad videos: with ``skip_errors=True`` an undecodable video yields a ``{"skipped": index}``
marker instead of raising; :func:`collate` drops it and lists it in ``batch["skipped"]``, so a
loop can count skips across DataLoader workers and report them at the end (the source also
records them in ``bad_videos`` when loading in the main process). Training keeps its batches
full instead: :class:`tokred.training.cache.ClipCache` replaces a bad video by the next good one.
"""

from __future__ import annotations

import logging
from typing import Any, Callable, Optional

import numpy as np
import torch
from torch.utils.data import Dataset

from tokred.data.readers import Split
from tokred.data.transforms import ClipTransform
from tokred.data.video import VideoDecodeError, jitter_indices, read_video

logger = logging.getLogger(__name__)

__all__ = ["FrameSource", "TrainDataset", "VideoDataset", "CaptionDataset", "collate"]


class FrameSource:
    """Decodes, samples and preprocesses a split's videos, with an optional in-memory cache.

    The cache holds the decoded uint8 frames ``[T, H, W, 3]`` (exact, ``T*H*W*3`` bytes per
    video; 2,000 synthetic videos of 12 frames at 64x64 take ~300 MB) and preprocessing
    (a batched bicubic resize, ~1 ms) runs on every fetch. Call :meth:`preload` before starting
    DataLoader workers so forked workers share the filled cache.

    Args:
        split: The videos to read.
        num_frames: ``T``, frames per video.
        image_size: Model input size ``S``.
        sampling: ``"uniform"`` or ``"tempme"`` (see ``tokred.data.video``).
        decoder: ``"auto"``, ``"decord"`` or ``"pyav"``.
        cache: Keep decoded frames in memory.
        skip_errors: Return ``None`` for undecodable videos instead of raising (each is decoded
            once: ``bad_videos`` maps it to the reason).
        transform: Overrides the CLIP preprocessing (uint8 ``[T,H,W,3]`` -> float ``[T,3,S,S]``).
    """

    def __init__(
        self,
        split: Split,
        num_frames: int = 12,
        image_size: int = 224,
        sampling: str = "uniform",
        decoder: str = "auto",
        cache: bool = False,
        skip_errors: bool = False,
        transform: Optional[Callable[[np.ndarray], torch.Tensor]] = None,
    ) -> None:
        self.split, self.num_frames, self.sampling, self.decoder = (
            split,
            num_frames,
            sampling,
            decoder,
        )
        self.transform = transform or ClipTransform(image_size)
        self.skip_errors = skip_errors
        self.cache: Optional[dict[int, tuple[np.ndarray, np.ndarray]]] = {} if cache else None
        self.bad_videos: dict[int, str] = {}  # video index -> why it cannot be decoded

    def raw(self, v: int) -> Optional[tuple[np.ndarray, np.ndarray]]:
        """Decoded ``(frames uint8 [T,H,W,3], indices [T])`` of video ``v``, or None if skipped."""
        if self.cache is not None and v in self.cache:
            return self.cache[v]
        if self.skip_errors and v in self.bad_videos:
            return None
        try:
            out = read_video(
                self.split.videos[v].path, self.num_frames, self.sampling, self.decoder
            )
        except VideoDecodeError as e:
            if not self.skip_errors:
                raise
            logger.warning("skipping video %s: %s", self.split.videos[v].id, e)
            self.bad_videos[v] = str(e)
            return None
        if self.cache is not None:
            self.cache[v] = out
        return out

    def frames(self, v: int) -> Optional[torch.Tensor]:
        """Preprocessed float ``[T, 3, S, S]`` frames of video ``v``, or None if skipped."""
        raw = self.raw(v)
        return None if raw is None else self.transform(raw[0])

    def clips(
        self, videos: Optional[list[int]] = None, chunk: int = 128, keep_going: bool = False
    ) -> dict[int, torch.Tensor]:
        """Videos (default: all) decoded and preprocessed: ``{index: float16 [T, 3, S, S]}``.

        Skipped videos (``skip_errors``) are left out; so are undecodable ones with
        ``keep_going`` (recorded in ``bad_videos``, not logged), so that a caller can name every
        bad video at once. With the default transform, frames of ``chunk`` videos that share a
        size are preprocessed in one call (several times faster than clip by clip, same values).
        """
        out: dict[int, torch.Tensor] = {}
        batched = type(self.transform) is ClipTransform
        videos = list(range(len(self.split.videos))) if videos is None else videos
        for start in range(0, len(videos), chunk):
            groups: dict[tuple, list[tuple[int, np.ndarray]]] = {}
            for v in videos[start : start + chunk]:
                try:
                    raw = self.raw(v)
                except VideoDecodeError as e:
                    if not keep_going:
                        raise
                    self.bad_videos[v], raw = str(e), None
                if raw is not None:
                    groups.setdefault(raw[0].shape if batched else (v,), []).append((v, raw[0]))
            for items in groups.values():
                frames = np.concatenate([f for _, f in items])  # [n*T, H, W, 3]
                x = self.transform(frames).to(torch.float16)
                for (v, _), clip in zip(items, x.split([len(f) for _, f in items])):
                    out[v] = clip
        return out

    def preload(self) -> None:
        """Decodes every video into the cache (no-op without ``cache=True``)."""
        if self.cache is None:
            return
        for v in range(len(self.split.videos)):
            self.raw(v)
        logger.info("cached %d videos (%d skipped)", len(self.cache), len(self.bad_videos))

    def report(self) -> int:
        """Logs and returns the number of videos skipped so far in this process."""
        if self.bad_videos:
            ids = [self.split.videos[v].id for v in sorted(self.bad_videos)]
            logger.warning("%s: skipped %d bad videos: %s", self.split.name, len(ids), ids[:10])
        return len(self.bad_videos)


class TrainDataset(Dataset):
    """One item per video with one caption sampled per epoch.

    Items: ``{"frames": float [T,3,S,S], "caption": str, "video_index": int,
    "caption_index": int}`` (or ``{"skipped": video_index}``; see module doc).

    Args:
        split: Training split.
        seed: Seed of the caption draw (and of the frame draw with ``take``).
        take: Frames per item drawn from the ``num_frames`` decoded ones, one at random from
            each of ``take`` equal segments, redrawn every epoch (TSN-style temporal jitter,
            deterministic in ``(seed, epoch, video)``). None: every decoded frame.
        **source_kw: Passed to :class:`FrameSource` (num_frames, image_size, cache, ...).
    """

    def __init__(
        self, split: Split, seed: int = 0, take: Optional[int] = None, **source_kw: Any
    ) -> None:
        self.source = FrameSource(split, **source_kw)
        if take is not None and not 1 <= take <= self.source.num_frames:
            raise ValueError(
                f"take={take} frames per item needs 1 <= take <= num_frames "
                f"({self.source.num_frames} decoded per video)"
            )
        self.split, self.seed, self.epoch, self.take = split, seed, 0, take
        self.video_captions = split.video_captions()
        empty = [split.videos[v].id for v, c in enumerate(self.video_captions) if not c]
        if empty:
            raise ValueError(f"{split.name}: videos without captions cannot train: {empty[:5]}")

    def set_epoch(self, epoch: int) -> None:
        """Selects the caption draw of ``epoch`` (call before each epoch, as with samplers)."""
        self.epoch = epoch

    def caption_for(self, v: int) -> int:
        """Caption index drawn for video ``v`` this epoch (deterministic in seed, epoch, v)."""
        caps = self.video_captions[v]
        rng = np.random.default_rng([self.seed, self.epoch, v])
        return caps[int(rng.integers(len(caps)))]

    def pick(self, v: int, frames: torch.Tensor) -> torch.Tensor:
        """This epoch's ``take`` frames of video ``v`` out of its decoded ``frames``."""
        if self.take is None or self.take == frames.shape[0]:
            return frames
        rng = np.random.default_rng([self.seed, self.epoch, v, 1])
        return frames[torch.from_numpy(jitter_indices(frames.shape[0], self.take, rng))]

    def __len__(self) -> int:
        return len(self.split.videos)

    def __getitem__(self, v: int) -> dict[str, Any]:
        frames = self.source.frames(v)
        if frames is None:
            return {"skipped": v}
        c = self.caption_for(v)
        return {
            "frames": self.pick(v, frames),
            "caption": self.split.captions[c],
            "video_index": v,
            "caption_index": c,
        }


class VideoDataset(Dataset):
    """Evaluation videos: ``{"frames": float [T,3,S,S], "video_index": int}`` per video.

    Args:
        split: Evaluation split.
        **source_kw: Passed to :class:`FrameSource`.
    """

    def __init__(self, split: Split, **source_kw: Any) -> None:
        self.source = FrameSource(split, **source_kw)
        self.split = split

    def __len__(self) -> int:
        return len(self.split.videos)

    def __getitem__(self, v: int) -> dict[str, Any]:
        frames = self.source.frames(v)
        return {"skipped": v} if frames is None else {"frames": frames, "video_index": v}


class CaptionDataset(Dataset):
    """Evaluation captions: ``{"caption": str, "caption_index": int, "video_index": int}``."""

    def __init__(self, split: Split) -> None:
        self.split = split

    def __len__(self) -> int:
        return len(self.split.captions)

    def __getitem__(self, c: int) -> dict[str, Any]:
        return {
            "caption": self.split.captions[c],
            "caption_index": c,
            "video_index": self.split.caption_video[c],
        }


def collate(items: list[dict[str, Any]]) -> dict[str, Any]:
    """Batches dataset items: frames ``[B,T,3,S,S]``, captions as a list, indices as tensors.

    Skipped-video markers are dropped and their indices listed in ``batch["skipped"]``.
    """
    skipped = [it["skipped"] for it in items if "skipped" in it]
    items = [it for it in items if "skipped" not in it]
    batch: dict[str, Any] = {"skipped": skipped}
    if not items:
        return batch
    for key in items[0]:
        vals = [it[key] for it in items]
        if isinstance(vals[0], torch.Tensor):
            batch[key] = torch.stack(vals)  # [B, T, 3, S, S]
        elif isinstance(vals[0], int):
            batch[key] = torch.tensor(vals, dtype=torch.long)
        else:
            batch[key] = vals
    return batch
