"""Cost of a forward: analytic MACs from the token trace, the fvcore cross-check, memory,
throughput and the time inside the reducer's hooks. :func:`tokred.cost.measure.measure` puts them
in one record (:class:`~tokred.cost.record.CostRecord`); ``tokred measure`` prints a table of them.
"""

from tokred.cost.analytic import block_macs, gmacs, text_macs, visual_macs
from tokred.cost.flops import FvcoreCount, count_macs, fvcore_video_macs
from tokred.cost.memory import (
    activation_bytes,
    activation_per_video,
    cuda_peak_mb,
    finetune_activation_bytes,
    peak_rss_mb,
)
from tokred.cost.record import CostRecord, compare
from tokred.cost.sites import SiteTimer, SiteTiming, site_timing
from tokred.cost.specs import ReducerSpec, parse_reducer, reducer_specs
from tokred.cost.timing import (
    PairedTiming,
    Timing,
    environment,
    inference_throughput,
    interleaved_throughput,
    paired_timing,
    time_calls,
)
from tokred.cost.trainstep import make_train_step, train_step_time

__all__ = [
    "CostRecord",
    "PairedTiming",
    "FvcoreCount",
    "ReducerSpec",
    "SiteTimer",
    "SiteTiming",
    "Timing",
    "activation_bytes",
    "activation_per_video",
    "block_macs",
    "compare",
    "count_macs",
    "cuda_peak_mb",
    "environment",
    "finetune_activation_bytes",
    "fvcore_video_macs",
    "gmacs",
    "inference_throughput",
    "interleaved_throughput",
    "make_train_step",
    "paired_timing",
    "parse_reducer",
    "peak_rss_mb",
    "reducer_specs",
    "site_timing",
    "text_macs",
    "time_calls",
    "train_step_time",
    "visual_macs",
]
