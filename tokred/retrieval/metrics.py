"""Retrieval metrics for text-video retrieval: R@K, MdR, MnR, R-Sum, plus offline post-processing.

All functions take a similarity matrix ``sim [num_captions, num_videos]`` (torch or numpy) and
``caption_video [num_captions]``, the index of each caption's video, so multi-caption videos
(MSR-VTT train-style, MSVD) are explicit.

Ties are ranked pessimistically: a candidate scoring exactly as high as the true match ranks ahead
of it, i.e. ``rank = 1 + #{other candidates with score >= true score}``. Two identical videos can
therefore never both count as hits, and an all-equal matrix gives every query the worst rank.

Ranks are computed by counting, one chunk of rows at a time, so a 20,000 x 1,000 matrix never
needs a full argsort (memory is ``chunk x num_videos``).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Union

import numpy as np
import torch

logger = logging.getLogger(__name__)

ArrayLike = Union[np.ndarray, torch.Tensor]
RECALL_KS = (1, 5, 10)

__all__ = [
    "retrieval_metrics",
    "t2v_ranks",
    "v2t_ranks",
    "rank_summary",
    "metrics_of_ranks",
    "twin_accuracy",
    "dual_softmax",
    "save_similarity",
    "load_similarity",
]


def _as_tensor(x: ArrayLike) -> torch.Tensor:
    """CPU float32/float64 tensor of ``x`` (numpy or torch); half precision is widened."""
    t = torch.as_tensor(x).detach().to("cpu")
    return t if t.dtype in (torch.float32, torch.float64) else t.to(torch.float64)


def _check(sim: torch.Tensor, caption_video: torch.Tensor) -> None:
    if sim.ndim != 2:
        raise ValueError(
            f"sim must be 2-D [num_captions, num_videos], got shape {tuple(sim.shape)}"
        )
    if caption_video.shape != (sim.shape[0],):
        raise ValueError(
            f"caption_video must have one entry per caption row ({sim.shape[0]}), "
            f"got shape {tuple(caption_video.shape)}; pass Split.caption_video"
        )
    if len(caption_video) and (caption_video.min() < 0 or caption_video.max() >= sim.shape[1]):
        raise ValueError(f"caption_video indexes outside [0, {sim.shape[1]}) video columns")


def t2v_ranks(sim: ArrayLike, caption_video: ArrayLike, chunk: int = 1024) -> np.ndarray:
    """Rank (1-based, pessimistic ties) of each caption's true video among all videos.

    Args:
        sim: Similarities ``[num_captions, num_videos]``.
        caption_video: Index of each caption's video ``[num_captions]``.
        chunk: Rows processed at once (bounds memory to ``chunk x num_videos``).

    Returns:
        ``int64 [num_captions]`` ranks.
    """
    s, cv = _as_tensor(sim), torch.as_tensor(np.asarray(caption_video), dtype=torch.long)
    _check(s, cv)
    out = []
    for start in range(0, s.shape[0], chunk):
        rows = s[start : start + chunk]  # [c, V]
        idx = cv[start : start + chunk]
        true = rows.gather(1, idx[:, None])  # [c, 1]
        ahead = (rows >= true).sum(1) - 1  # excludes the true video itself
        out.append(ahead + 1)
    return torch.cat(out).numpy() if out else np.zeros(0, np.int64)


def v2t_ranks(sim: ArrayLike, caption_video: ArrayLike, chunk: int = 1024) -> np.ndarray:
    """Rank of each video's best-ranked caption among all captions (pessimistic ties).

    A video with several captions counts as a hit at K if ANY of its captions ranks within K: its
    rank is ``1 + #{captions of other videos scoring >= its best own caption}``. Videos without a caption get rank ``num_captions
    + 1`` (never a hit) and a warning.

    Args:
        sim: Similarities ``[num_captions, num_videos]``.
        caption_video: Index of each caption's video ``[num_captions]``.
        chunk: Video columns processed at once (memory ``num_captions x chunk``).

    Returns:
        ``int64 [num_videos]`` ranks.
    """
    s, cv = _as_tensor(sim), torch.as_tensor(np.asarray(caption_video), dtype=torch.long)
    _check(s, cv)
    n_cap, n_vid = s.shape
    own = s.gather(1, cv[:, None])[:, 0]  # [C] each caption's score with its own video
    best = torch.full((n_vid,), float("-inf"), dtype=s.dtype)
    best.scatter_reduce_(0, cv, own, reduce="amax")  # [V] best own-caption score
    own_at_best = torch.zeros(n_vid, dtype=torch.long)
    own_at_best.scatter_add_(0, cv, (own >= best[cv]).long())  # own captions tied at the top
    ranks = torch.empty(n_vid, dtype=torch.long)
    for start in range(0, n_vid, chunk):
        cols = s[:, start : start + chunk]  # [C, c]
        b = best[start : start + chunk]  # [c]
        # captions of other videos scoring >= the best own caption
        ahead = (cols >= b[None, :]).sum(0) - own_at_best[start : start + chunk]
        ranks[start : start + chunk] = ahead + 1
    ranks[torch.isinf(best)] = n_cap + 1
    missing = int((ranks == n_cap + 1).sum())
    if missing:
        logger.warning("%d videos have no caption; they count as v2t misses", missing)
    return ranks.numpy()


def rank_summary(ranks: np.ndarray, prefix: str) -> dict[str, float]:
    """R@1/5/10 (percent), median rank and mean rank of a rank vector, keys ``{prefix}_R@K``."""
    r = np.asarray(ranks, dtype=np.float64)
    out = {f"{prefix}_R@{k}": float(100.0 * (r <= k).mean()) if len(r) else 0.0 for k in RECALL_KS}
    out[f"{prefix}_MdR"] = float(np.median(r)) if len(r) else float("nan")
    out[f"{prefix}_MnR"] = float(r.mean()) if len(r) else float("nan")
    return out


def retrieval_metrics(
    sim: ArrayLike, caption_video: ArrayLike, chunk: int = 1024
) -> dict[str, float]:
    """Text-to-video and video-to-text retrieval metrics.

    Args:
        sim: Similarities ``[num_captions, num_videos]``.
        caption_video: Index of each caption's video ``[num_captions]``.
        chunk: Rows/columns per chunk.

    Returns:
        ``t2v_R@1, t2v_R@5, t2v_R@10, t2v_MdR, t2v_MnR``, the same with ``v2t_``, and ``rsum``,
        the six-term sum t2v R@1+R@5+R@10 + v2t R@1+R@5+R@10 (600 is perfect).
    """
    return metrics_of_ranks(t2v_ranks(sim, caption_video, chunk),
                            v2t_ranks(sim, caption_video, chunk))


def metrics_of_ranks(t2v: np.ndarray, v2t: np.ndarray) -> dict[str, float]:
    """:func:`retrieval_metrics` from ranks already computed (:func:`t2v_ranks`,
    :func:`v2t_ranks`)."""
    out = rank_summary(t2v, "t2v")
    out.update(rank_summary(v2t, "v2t"))
    out["rsum"] = sum(out[f"{d}_R@{k}"] for d in ("t2v", "v2t") for k in RECALL_KS)
    return out


def twin_accuracy(sim: ArrayLike, pairs: list[tuple[int, int]], tol: float = 1e-5) -> float:
    """How often a twin caption prefers its own video over the time-reversed twin.

    Rule: for each pair ``(i, j)`` (caption i <-> video i, as in the synthetic test split) each
    caption scores 1 if its own video is more similar by more than ``tol``, 0 if less, and 0.5
    for a tie within ``tol``. An order-blind model (mean pooling of per-frame features) sees
    identical twins, ties on every caption and scores exactly 0.5; ``tol`` absorbs float
    summation-order noise.

    Args:
        sim: Similarities ``[num_captions, num_videos]`` of the test split.
        pairs: Twin pairs, e.g. ``tokred.synth.load_meta(dir).twin_pairs``.
        tol: Tie tolerance on similarity differences.

    Returns:
        Accuracy in ``[0, 1]`` (nan without pairs).
    """
    s = torch.as_tensor(sim, dtype=torch.float64)
    if not pairs:
        return float("nan")
    p = torch.as_tensor(pairs, dtype=torch.long)
    i, j = torch.cat([p[:, 0], p[:, 1]]), torch.cat([p[:, 1], p[:, 0]])
    margin = s[i, i] - s[i, j]  # [2P] own minus twin
    score = torch.where(margin.abs() <= tol, 0.5, (margin > 0).double())
    return float(score.mean())


def dual_softmax(sim: ArrayLike, temperature: float = 100.0) -> torch.Tensor:
    """Extra, not part of the standard protocol: Dual Softmax Loss (DSL) inference re-weighting.

    Multiplies each similarity by the softmax over captions (column-wise prior), as in CAMoE /
    DSL (Cheng et al. 2021). It uses the whole test set at once, so report it separately from
    the plain metrics.

    Args:
        sim: Similarities ``[num_captions, num_videos]``.
        temperature: Logit scale applied before the softmax.

    Returns:
        Re-weighted similarities ``[num_captions, num_videos]`` (float tensor).
    """
    s = _as_tensor(sim)
    return s * torch.softmax(s * temperature, dim=0)


def save_similarity(
    path: str | Path,
    sim: ArrayLike,
    caption_video: ArrayLike,
    meta: dict[str, Any] | None = None,
) -> Path:
    """Saves a similarity matrix for offline post-processing (DSL, QB-Norm) as ``.npz``.

    Args:
        path: Output file (``.npz`` is appended by numpy if missing).
        sim: Similarities ``[num_captions, num_videos]``.
        caption_video: Index of each caption's video.
        meta: JSON-serialisable metadata (model, reducer, dataset, ...).

    Returns:
        The written path.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    s = _as_tensor(sim).to(torch.float32).numpy()
    np.savez_compressed(
        path,
        sim=s,
        caption_video=np.asarray(caption_video, dtype=np.int64),
        meta=np.array(json.dumps(meta or {})),
    )
    return path if path.suffix == ".npz" else path.with_name(path.name + ".npz")


def load_similarity(path: str | Path) -> tuple[np.ndarray, np.ndarray, dict[str, Any]]:
    """Loads ``(sim, caption_video, meta)`` written by :func:`save_similarity`."""
    with np.load(Path(path), allow_pickle=False) as f:
        return f["sim"], f["caption_video"], json.loads(str(f["meta"]))
