"""Uncertainty of retrieval metrics: bootstrap intervals and paired comparisons over queries.

Every recall is a mean over queries of a hit indicator (``rank <= k``), so its uncertainty comes
from which queries happened to be in the test set. The bootstrap resamples the queries with
replacement (text queries for t2v, video queries for v2t, independently) and reads the 2.5 and
97.5 percentiles of each metric (percentile intervals). Two models scored on the *same* queries
are compared with the paired bootstrap: the same resampled queries for both, so the interval of
the difference reflects only how differently the two models rank those queries. A difference
is significant at 95 % when its interval excludes zero.

Inputs are 1-based ranks (``tokred.retrieval.metrics.t2v_ranks`` / ``v2t_ranks``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from tokred.retrieval.metrics import RECALL_KS as KS

METRICS = tuple(f"{d}_R@{k}" for d in ("t2v", "v2t") for k in KS) + ("R-Sum",)


def _hits(ranks: np.ndarray) -> np.ndarray:
    """``[n]`` ranks -> ``[3, n]`` boolean hits for R@1, R@5, R@10."""
    r = np.asarray(ranks)
    if r.ndim != 1 or r.size == 0:
        raise ValueError(f"ranks must be a non-empty 1-D array, got shape {r.shape}")
    if (r < 1).any():
        raise ValueError("ranks are 1-based; got a rank below 1")
    return np.stack([r <= k for k in KS])


def _draws(n: int, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    return rng.integers(0, n, size=(n_boot, n))


def _samples(t2v: np.ndarray, v2t: np.ndarray, it: np.ndarray, iv: np.ndarray) -> np.ndarray:
    """``[7, n_boot]`` resampled metrics (METRICS order) for query draws ``it``, ``iv``."""
    ht, hv = _hits(t2v), _hits(v2t)
    t = ht[:, it].mean(axis=2) * 100.0  # [3, n_boot] (bool gather: 1 byte per draw)
    v = hv[:, iv].mean(axis=2) * 100.0
    return np.concatenate([t, v, (t.sum(0) + v.sum(0))[None]])


@dataclass(frozen=True)
class Interval:
    """A point estimate with its 95 % bootstrap interval."""

    value: float
    low: float
    high: float

    @property
    def half_width(self) -> float:
        return (self.high - self.low) / 2

    def to_dict(self) -> dict[str, float]:
        return {"value": self.value, "low": self.low, "high": self.high}


def point(t2v: np.ndarray, v2t: np.ndarray) -> dict[str, float]:
    """R@1/5/10 in both directions and R-Sum, in %."""
    t, v = _hits(t2v).mean(axis=1) * 100.0, _hits(v2t).mean(axis=1) * 100.0
    vals = list(t) + list(v) + [float(t.sum() + v.sum())]
    return {m: float(x) for m, x in zip(METRICS, vals)}


def bootstrap(
    t2v: np.ndarray, v2t: np.ndarray, n_boot: int = 2000, seed: int = 0, level: float = 0.95
) -> dict[str, Interval]:
    """Percentile bootstrap intervals of every metric in :data:`METRICS`.

    Args:
        t2v: ``[captions]`` 1-based ranks of each caption's video.
        v2t: ``[videos]`` 1-based ranks of each video's best caption.
        n_boot: bootstrap resamples.
        seed: resampling seed (the intervals are reproducible).
        level: coverage of the interval.
    """
    rng = np.random.default_rng(seed)
    s = _samples(t2v, v2t, _draws(len(t2v), n_boot, rng), _draws(len(v2t), n_boot, rng))
    lo, hi = np.percentile(s, [50 * (1 - level), 50 * (1 + level)], axis=1)
    est = point(t2v, v2t)
    return {m: Interval(est[m], float(a), float(b)) for m, a, b in zip(METRICS, lo, hi)}


@dataclass(frozen=True)
class Comparison:
    """Model A minus model B on the same queries: the difference, its interval and a p-value.

    ``p`` is the two-sided bootstrap p-value: twice the share of resamples whose difference
    falls on the other side of zero from the observed one (capped at 1).
    """

    metric: str
    diff: Interval
    p: float

    @property
    def significant(self) -> bool:
        """The 95 % interval of the difference excludes zero."""
        return self.diff.low > 0 or self.diff.high < 0


def paired(
    a: tuple[np.ndarray, np.ndarray],
    b: tuple[np.ndarray, np.ndarray],
    metric: str = "R-Sum",
    n_boot: int = 2000,
    seed: int = 0,
    level: float = 0.95,
) -> Comparison:
    """Paired bootstrap of ``metric(a) - metric(b)``; ``a``, ``b`` = (t2v ranks, v2t ranks).

    Both models must have been scored on the same queries in the same order.

    Raises:
        ValueError: the rank arrays differ in length (not the same queries), unknown metric.
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if len(a[0]) != len(b[0]) or len(a[1]) != len(b[1]):
        raise ValueError(f"paired comparison needs the same queries: {len(a[0])}/{len(a[1])} vs "
                         f"{len(b[0])}/{len(b[1])} (t2v/v2t) queries")
    rng = np.random.default_rng(seed)
    it, iv = _draws(len(a[0]), n_boot, rng), _draws(len(a[1]), n_boot, rng)
    row = METRICS.index(metric)
    d = _samples(*a, it, iv)[row] - _samples(*b, it, iv)[row]
    obs = point(*a)[metric] - point(*b)[metric]
    lo, hi = np.percentile(d, [50 * (1 - level), 50 * (1 + level)])
    if obs == 0 and not d.any():
        p = 1.0
    else:
        p = min(1.0, 2 * float(np.mean(d <= 0) if obs > 0 else np.mean(d >= 0)))
    return Comparison(metric, Interval(obs, float(lo), float(hi)), p)
