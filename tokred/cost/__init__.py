"""Cost of a forward: analytic MACs from the token trace, the fvcore cross-check, memory and
throughput. ``tokred measure`` (:mod:`tokred.cost.measure`) puts them in one record."""

from .analytic import block_macs, gmacs, text_macs, visual_macs
from .flops import FvcoreCount, count_macs, fvcore_video_macs
from .memory import activation_bytes, activation_per_video, cuda_peak_mb, peak_rss_mb
from .throughput import (
    Timing,
    autocast,
    environment,
    inference_throughput,
    interleaved_throughput,
    make_train_step,
    time_calls,
    train_step_time,
)

__all__ = [
    "FvcoreCount",
    "Timing",
    "activation_bytes",
    "activation_per_video",
    "autocast",
    "block_macs",
    "count_macs",
    "cuda_peak_mb",
    "environment",
    "fvcore_video_macs",
    "gmacs",
    "inference_throughput",
    "interleaved_throughput",
    "make_train_step",
    "peak_rss_mb",
    "text_macs",
    "time_calls",
    "train_step_time",
    "visual_macs",
]
