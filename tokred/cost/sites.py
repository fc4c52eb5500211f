"""Time spent inside a reducer's own hooks: the share of a forward that is matching, merging or
clustering rather than the backbone's blocks.

:class:`SiteTimer` wraps any reducer and delegates both sites to it, adding up the wall time of
each call (synchronising CUDA around it, so queued kernels count where they were issued). The
hooks therefore run on their real inputs inside a real forward, and the share is the hooks' time
over the time of the same forwards.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Callable

import torch
from torch import Tensor

from tokred.cost.timing import Timing, fixed_video, time_calls
from tokred.encoder import VideoEncoder
from tokred.reducer import TokenReducer
from tokred.spec import BackboneSpec
from tokred.state import TokenState
from tokred.training.precision import autocast


class SiteTimer(TokenReducer):
    """A timing proxy: ``inner``'s sites, with the wall time of every call added up.

    Attributes:
        seconds: total seconds per site, keyed ``"pre_block@6"`` / ``"post_attn@3"``.
        inputs: ``(videos, groups, tokens)`` of the first input at each site where ``inner``
            returned a new state (the sites that did work).
    """

    def __init__(self, inner: TokenReducer, device: torch.device | str | None = None,
                 clock: Callable[[], float] = time.perf_counter) -> None:
        super().__init__()
        self.inner = inner
        self.cuda = device is not None and torch.device(device).type == "cuda"
        self.clock = clock
        self.seconds: dict[str, float] = {}
        self.inputs: dict[str, tuple[int, int, int]] = {}

    @property
    def prop_attn(self) -> bool:  # type: ignore[override]
        return self.inner.prop_attn

    def setup(self, spec: BackboneSpec) -> None:
        super().setup(spec)
        self.inner.setup(spec)

    def reset(self) -> None:
        """Forget the times and inputs recorded so far (e.g. those of warm-up calls)."""
        self.seconds.clear()
        self.inputs.clear()

    def pre_block(self, s: TokenState, layer: int) -> TokenState:
        return self._timed(f"pre_block@{layer}", s, lambda: self.inner.pre_block(s, layer))

    def post_attn(self, s: TokenState, layer: int, keys: Tensor) -> TokenState:
        return self._timed(f"post_attn@{layer}", s, lambda: self.inner.post_attn(s, layer, keys))

    def _timed(self, site: str, s: TokenState, call: Callable[[], TokenState]) -> TokenState:
        if self.cuda:
            torch.cuda.synchronize()
        t0 = self.clock()
        out = call()
        if self.cuda:
            torch.cuda.synchronize()
        self.seconds[site] = self.seconds.get(site, 0.0) + self.clock() - t0
        if out is not s:
            self.inputs.setdefault(site, (s.batch, s.groups, s.tokens))
        return out

    def work_macs(self, trace) -> float:
        return self.inner.work_macs(trace)

    def diagnostics(self) -> dict[str, Any]:
        return self.inner.diagnostics()


@dataclass(frozen=True)
class SiteTiming:
    """The forwards timed with a :class:`SiteTimer` and the time spent in the hooks."""

    forward: Timing
    seconds: dict[str, float]  # per site, summed over the timed forwards
    inputs: dict[str, tuple[int, int, int]]

    @property
    def share(self) -> float:
        """Hook time over forward time, both summed over the same timed forwards."""
        return sum(self.seconds.values()) / sum(self.forward.times)

    def per_video(self) -> dict[str, float]:
        """Seconds per video at each site that did work."""
        videos = self.forward.items * len(self.forward.times)
        return {k: v / videos for k, v in self.seconds.items() if k in self.inputs}


def site_timing(
    encoder: VideoEncoder,
    frames: int,
    batch: int = 1,
    warmup: int = 1,
    repeats: int = 3,
    device: torch.device | str = "cpu",
    precision: str = "fp32",
    clock: Callable[[], float] = time.perf_counter,
) -> SiteTiming:
    """Time ``repeats`` inference forwards of ``encoder`` with its reducer behind a SiteTimer.

    The timer wraps the encoder's reducer in a second encoder over the same backbone (nothing
    of ``encoder`` changes; the reducer's setup runs again, which reducers keep idempotent).
    """
    timer = SiteTimer(encoder.reducer, device, clock)
    timed = VideoEncoder(encoder.backbone, timer, frames).eval()
    video = fixed_video(batch, frames, encoder.backbone.spec.image_size, device)

    def forward() -> None:
        with torch.inference_mode(), autocast(device, precision):
            timed(video)

    for _ in range(warmup):
        forward()
    timer.reset()
    t = time_calls(forward, items=batch, warmup=0, repeats=repeats, device=device, clock=clock)
    return SiteTiming(t, dict(timer.seconds), dict(timer.inputs))
