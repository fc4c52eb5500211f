"""Throughput protocol: fixed input, warm-up discarded, median and spread over repeats."""

from __future__ import annotations

import platform
import statistics
import time
from dataclasses import asdict, dataclass
from typing import Callable

import torch


@dataclass(frozen=True)
class Timing:
    """Wall times of repeated calls (seconds), warm-up excluded."""

    times: list[float]
    warmup: int
    items: int  # videos (or images) processed per call

    @property
    def median(self) -> float:
        return statistics.median(self.times)

    @property
    def spread(self) -> float:
        """Half the inter-quartile range relative to the median (0 with < 2 repeats)."""
        if len(self.times) < 2:
            return 0.0
        q = statistics.quantiles(self.times, n=4, method="inclusive")
        return (q[2] - q[0]) / 2 / self.median

    @property
    def per_second(self) -> float:
        """Items per second at the median time."""
        return self.items / self.median

    def to_dict(self) -> dict:
        d = asdict(self)
        d.update(median_s=self.median, spread=self.spread, per_second=self.per_second)
        return d


def _sync(device: torch.device | str | None) -> None:
    if device is not None and torch.device(device).type == "cuda":
        torch.cuda.synchronize(device)


def time_calls(
    fn: Callable[[], object],
    items: int,
    warmup: int = 2,
    repeats: int = 5,
    device: torch.device | str | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> Timing:
    """Time ``fn()`` ``repeats`` times after ``warmup`` discarded calls.

    On CUDA the device is synchronised before and after every timed call so that queued kernels
    are counted. ``clock`` is injectable for tests.
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    for _ in range(warmup):
        fn()
    _sync(device)
    times = []
    for _ in range(repeats):
        _sync(device)
        t0 = clock()
        fn()
        _sync(device)
        times.append(clock() - t0)
    return Timing(times=times, warmup=warmup, items=items)


def environment(device: torch.device | str = "cpu", precision: str = "fp32") -> dict:
    """What a timing depends on, recorded next to it."""
    dev = torch.device(device)
    env = {
        "device": str(dev),
        "precision": precision,
        "threads": torch.get_num_threads(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
    }
    if dev.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(dev)
    return env
