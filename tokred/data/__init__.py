"""Video data: decoding and sampling, CLIP preprocessing, dataset readers, torch datasets, and
the synthetic benchmark."""

from __future__ import annotations

from tokred.data.dataset import CaptionDataset, FrameSource, TrainDataset, VideoDataset, collate
from tokred.data.readers import READERS, Split, VideoItem, check_files, load_split
from tokred.data.synth import SynthConfig, SynthMeta, generate, load_meta, twin_accuracy
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
    "SynthConfig",
    "SynthMeta",
    "TrainDataset",
    "VideoDataset",
    "VideoDecodeError",
    "VideoItem",
    "check_files",
    "clip_preprocess",
    "collate",
    "generate",
    "load_meta",
    "load_split",
    "probe_video",
    "read_video",
    "sample_indices",
    "twin_accuracy",
    "uniform_indices",
]
