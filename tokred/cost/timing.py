"""Throughput protocol: fixed input, warm-up discarded, median and spread over repeats."""

from __future__ import annotations

import os
import platform
import statistics
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Callable

import torch
import torch.nn.functional as F

from tokred.training.precision import autocast


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
        "interop_threads": torch.get_num_interop_threads(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
    }
    if dev.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(dev)
    return env


def fixed_video(batch: int, frames: int, size: int, device: torch.device | str = "cpu",
                seed: int = 0) -> torch.Tensor:
    """The same random ``[B, T, 3, H, W]`` input for every run (content does not change cost)."""
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, frames, 3, size, size, generator=g).to(device)


def inference_throughput(
    encoder: torch.nn.Module,
    frames: int,
    batch_sizes: Sequence[int] = (1, 4),
    warmup: int = 2,
    repeats: int = 5,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    clock: Callable[[], float] = time.perf_counter,
) -> dict[int, Timing]:
    """Videos per second of ``encoder`` in eval mode under ``inference_mode``, per batch size.

    ``encoder`` is called as ``encoder(video)`` on a fixed random video batch of the size its
    backbone expects; its train/eval mode is restored afterwards.
    """
    size = encoder.backbone.spec.image_size
    was_training = encoder.training
    encoder.eval()
    out = {}
    try:
        for b in batch_sizes:
            video = fixed_video(b, frames, size, device)
            with torch.inference_mode(), autocast(device, precision):
                out[b] = time_calls(lambda v=video: encoder(v), items=b, warmup=warmup,
                                    repeats=repeats, device=device, clock=clock)
    finally:
        encoder.train(was_training)
    return out


def make_train_step(
    encoder: torch.nn.Module,
    video: torch.Tensor,
    precision: str = "fp32",
    lr: float = 1e-6,
) -> Callable[[], float]:
    """One training step on a fixed batch: forward (autocast), loss, backward, AdamW step.

    The loss pulls each video embedding towards a fixed random unit target (its cost is
    negligible next to the encoder's). Only parameters with ``requires_grad`` are optimised,
    so a LoRA-marked model trains its adapters only.
    """
    params = [p for p in encoder.parameters() if p.requires_grad]
    if not params:
        raise ValueError("make_train_step: the encoder has no trainable parameter")
    opt = torch.optim.AdamW(params, lr=lr)
    device = video.device
    target: torch.Tensor | None = None

    def step() -> float:
        nonlocal target
        with autocast(device, precision):
            emb = encoder(video)  # [B, D]
        if target is None:
            g = torch.Generator().manual_seed(1)
            target = F.normalize(torch.randn(emb.shape, generator=g), dim=-1).to(device)
        loss = -(emb.float() * target).sum()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return float(loss.detach())

    return step


def train_step_time(
    encoder: torch.nn.Module,
    frames: int,
    batch: int = 4,
    warmup: int = 1,
    repeats: int = 3,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    clock: Callable[[], float] = time.perf_counter,
) -> Timing:
    """Seconds per training step (forward, backward, optimiser) in train mode on a fixed batch.

    The encoder's parameters are updated by the timed steps: time a model built for measuring.
    """
    size = encoder.backbone.spec.image_size
    was_training = encoder.training
    encoder.train()
    try:
        step = make_train_step(encoder, fixed_video(batch, frames, size, device), precision)
        return time_calls(step, items=batch, warmup=warmup, repeats=repeats, device=device,
                          clock=clock)
    finally:
        encoder.train(was_training)


def interleaved_throughput(
    encoders: dict[str, torch.nn.Module],
    frames: dict[str, int] | int,
    batch_sizes: Sequence[int] = (1, 4),
    rounds: int = 3,
    warmup: int = 1,
    repeats: int = 3,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    clock: Callable[[], float] = time.perf_counter,
) -> dict[str, dict[int, Timing]]:
    """Throughput of several encoders measured in interleaved rounds (for a shared machine).

    Each round times every encoder in turn (``warmup`` discarded calls, then ``repeats``), so a
    burst of load from other processes hits all of them alike instead of one; every other round
    runs in reverse order, so no encoder always follows the same one. The timed samples of all
    rounds are pooled into one :class:`Timing` per encoder and batch size.
    """
    pooled: dict[str, dict[int, list[float]]] = {k: {b: [] for b in batch_sizes} for k in encoders}
    order = list(encoders.items())
    for rnd in range(rounds):
        for key, enc in order if rnd % 2 == 0 else order[::-1]:
            t = frames[key] if isinstance(frames, dict) else frames
            out = inference_throughput(enc, t, batch_sizes, warmup, repeats, device, precision,
                                       clock)
            for b, timing in out.items():
                pooled[key][b] += timing.times
    return {k: {b: Timing(times=v, warmup=warmup * rounds, items=b) for b, v in per.items()}
            for k, per in pooled.items()}
