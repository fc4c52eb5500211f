"""Throughput protocol: fixed input, warm-up discarded, median and spread over repeats.

A speed-up is measured, never divided out of two separate timings: :func:`paired_timing` runs
the baseline and the candidate in interleaved rounds in one process on the same input and
reports the median of the per-round ratios with their spread (:class:`PairedTiming`).
"""

from __future__ import annotations

import contextlib
import statistics
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Callable, TypeVar

import torch

from tokred.training.precision import autocast

K = TypeVar("K")  # what a caller names its timed callables by


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
    """What a timing depends on, recorded next to it (:func:`tokred.env.machine` and the
    torch / Python versions)."""
    from tokred.env import machine, software

    soft = software()
    return {**machine(device), "precision": precision, "torch": soft["torch"],
            "python": soft["python"]}


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
    backbone expects; its train/eval mode is restored afterwards. A speed-up is never the ratio
    of two of these: use :func:`paired_throughput`.
    """
    size = encoder.backbone.spec.image_size
    out = {}
    with _evaluating(encoder):
        for b in batch_sizes:
            video = fixed_video(b, frames, size, device)
            with torch.inference_mode(), autocast(device, precision):
                out[b] = time_calls(lambda v=video: encoder(v), items=b, warmup=warmup,
                                    repeats=repeats, device=device, clock=clock)
    return out


@contextlib.contextmanager
def _evaluating(*modules: torch.nn.Module) -> Iterator[None]:
    """Eval mode inside the block, each module's own train/eval mode restored afterwards."""
    modes = [m.training for m in modules]
    try:
        for m in modules:
            m.eval()
        yield
    finally:
        for m, mode in zip(modules, modes):
            m.train(mode)


# From this many rounds on, a speed-up's low/high are the quartiles of its per-round ratios; with
# fewer, quartiles are mostly interpolation, so low/high are the smallest and largest ratio.
IQR_ROUNDS = 5


@dataclass(frozen=True)
class PairedTiming:
    """A candidate and the baseline timed in the same interleaved rounds.

    ``base.times[i]`` and ``timing.times[i]`` are the seconds per call of each in round ``i``,
    taken back to back. The speed-up is the median of the per-round ratios ``base / candidate``:
    a change in the machine's speed between rounds scales both sides of a round alike and
    cancels in its ratio, where a ratio of two separate timings would carry it whole.
    """

    base: Timing
    timing: Timing

    def __post_init__(self) -> None:
        if len(self.base.times) != len(self.timing.times) or self.base.items != self.timing.items:
            raise ValueError(
                f"a paired timing needs the same rounds and batch on both sides, got "
                f"{len(self.base.times)} vs {len(self.timing.times)} rounds of {self.base.items} "
                f"vs {self.timing.items} items; time both with paired_timing")

    @property
    def ratios(self) -> list[float]:
        """Baseline time / candidate time, one per round (above 1: the candidate is faster)."""
        return [b / t for b, t in zip(self.base.times, self.timing.times)]

    @property
    def speedup(self) -> float:
        return statistics.median(self.ratios)

    @property
    def spread(self) -> str:
        """What :attr:`bounds` are: ``"IQR"`` (quartiles) or ``"min-max"`` (few rounds)."""
        return "IQR" if len(self.ratios) >= IQR_ROUNDS else "min-max"

    @property
    def bounds(self) -> tuple[float, float]:
        """(low, high) of the per-round ratios, as :attr:`spread` says."""
        r = self.ratios
        if len(r) < IQR_ROUNDS:
            return min(r), max(r)
        q = statistics.quantiles(r, n=4, method="inclusive")
        return q[0], q[2]

    def to_dict(self) -> dict:
        low, high = self.bounds
        return {"speedup": self.speedup, "low": low, "high": high, "spread": self.spread,
                "rounds": len(self.ratios), "ratios": self.ratios, "items": self.timing.items,
                "base_s": self.base.times, "times_s": self.timing.times}

    @classmethod
    def itself(cls, timing: Timing) -> PairedTiming:
        """The baseline against itself: every ratio exactly 1 (its row in a paired table)."""
        return cls(timing, timing)


def interleaved_rounds(
    fns: Mapping[K, Callable[[], object]],
    rounds: int,
    warmup: int = 1,
    repeats: int = 1,
    device: torch.device | str | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> dict[K, list[float]]:
    """Seconds per call of every callable in each of ``rounds`` interleaved rounds.

    Each callable first gets ``warmup`` discarded calls. A round then runs the callables in
    turn, ``repeats`` timed calls each in a row, and keeps each one's median; every other round
    runs in reverse order (a, b | b, a | a, b ...), so no callable always follows the same one
    and what the machine's load does between rounds hits all sides of a round alike.
    """
    if rounds < 1:
        raise ValueError(f"rounds must be >= 1, got {rounds}")
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    order = list(fns.items())
    out: dict[K, list[float]] = {key: [] for key in fns}
    for rnd in range(rounds):
        for key, fn in order if rnd % 2 == 0 else order[::-1]:
            t = time_calls(fn, items=1, warmup=0, repeats=repeats, device=device, clock=clock)
            out[key].append(t.median)
    return out


def paired_timing(
    base: Callable[[], object],
    fn: Callable[[], object],
    items: int,
    rounds: int = 5,
    warmup: int = 1,
    repeats: int = 1,
    device: torch.device | str | None = None,
    clock: Callable[[], float] = time.perf_counter,
) -> PairedTiming:
    """``fn`` against the baseline ``base`` in interleaved rounds (:func:`interleaved_rounds`):
    ``items`` processed per call by both; ``clock`` is injectable for tests."""
    t = interleaved_rounds({"base": base, "fn": fn}, rounds, warmup, repeats, device, clock)
    return PairedTiming(Timing(t["base"], warmup, items), Timing(t["fn"], warmup, items))


def paired_inference(
    base: torch.nn.Module,
    encoder: torch.nn.Module,
    video: torch.Tensor,
    rounds: int = 5,
    warmup: int = 1,
    repeats: int = 1,
    precision: str = "fp32",
    clock: Callable[[], float] = time.perf_counter,
) -> PairedTiming:
    """``encoder(video)`` against ``base(video)``: the same input, eval mode, inference mode."""
    with _evaluating(base, encoder), torch.inference_mode(), \
            autocast(video.device, precision):
        return paired_timing(lambda: base(video), lambda: encoder(video), video.shape[0],
                             rounds, warmup, repeats, video.device, clock)


def paired_throughput(
    base: torch.nn.Module,
    encoder: torch.nn.Module,
    frames: int,
    batch_sizes: Sequence[int] = (1,),
    rounds: int = 5,
    warmup: int = 1,
    repeats: int = 1,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    clock: Callable[[], float] = time.perf_counter,
) -> dict[int, PairedTiming]:
    """Speed-up of ``encoder`` over ``base`` per batch size, on one fixed video batch each."""
    t = interleaved_throughput({"base": base, "fn": encoder}, frames, batch_sizes, rounds,
                               warmup, repeats, device, precision, clock)
    return {b: PairedTiming(t["base"][b], t["fn"][b]) for b in batch_sizes}


def interleaved_throughput(
    encoders: Mapping[K, torch.nn.Module],
    frames: int,
    batch_sizes: Sequence[int] = (1, 4),
    rounds: int = 3,
    warmup: int = 1,
    repeats: int = 3,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    clock: Callable[[], float] = time.perf_counter,
) -> dict[K, dict[int, Timing]]:
    """Several encoders timed in the same interleaved rounds, per batch size (one fixed batch).

    ``Timing.times`` are per-round seconds per call (each the median of ``repeats`` calls), the
    same rounds for every encoder: pair any two with :class:`PairedTiming` for their speed-up.
    """
    size = next(iter(encoders.values())).backbone.spec.image_size
    out: dict[K, dict[int, Timing]] = {key: {} for key in encoders}
    with _evaluating(*encoders.values()):
        for b in batch_sizes:
            video = fixed_video(b, frames, size, device)
            fns = {key: (lambda e=enc, v=video: e(v)) for key, enc in encoders.items()}
            with torch.inference_mode(), autocast(device, precision):
                times = interleaved_rounds(fns, rounds, warmup, repeats, device, clock)
            for key, t in times.items():
                out[key][b] = Timing(t, warmup, b)
    return out
