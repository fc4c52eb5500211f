"""Cost of a forward: analytic MACs from the token trace, the fvcore cross-check, memory and
throughput. ``tokred measure`` (:mod:`tokred.cost.measure`) puts them in one record."""

from tokred.cost.analytic import block_macs, gmacs, text_macs, visual_macs
from tokred.cost.flops import FvcoreCount, count_macs, fvcore_video_macs
from tokred.cost.memory import activation_bytes, activation_per_video, cuda_peak_mb, peak_rss_mb
from tokred.cost.timing import (
    Timing,
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
