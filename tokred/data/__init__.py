"""Video data: decoding and sampling, CLIP preprocessing, dataset readers, torch datasets
(the synthetic benchmark is :mod:`tokred.synth`)."""

from __future__ import annotations

from tokred.data.dataset import CaptionDataset, FrameSource, TrainDataset, VideoDataset, collate
from tokred.data.readers import READERS, Split, VideoItem, check_files, load_split
from tokred.data.transforms import CLIP_MEAN, CLIP_STD, ClipTransform, clip_preprocess
from tokred.data.video import (
    DECODERS,
    SAMPLINGS,
    VideoDecodeError,
    probe_video,
    read_video,
    sample_indices,
    uniform_indices,
)

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "DECODERS",
    "READERS",
    "SAMPLINGS",
    "CaptionDataset",
    "ClipTransform",
    "FrameSource",
    "Split",
    "TrainDataset",
    "VideoDataset",
    "VideoDecodeError",
    "VideoItem",
    "check_files",
    "clip_preprocess",
    "collate",
    "load_split",
    "probe_video",
    "read_video",
    "sample_indices",
    "uniform_indices",
]
