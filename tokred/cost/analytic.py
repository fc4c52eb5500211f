"""Analytic multiply-accumulate counts (MACs; FLOPs = 2 x MACs) from a token trace.

Per sequence with ``n`` tokens entering attention and ``m`` entering the MLP, width ``D`` and
MLP hidden width ``F``: ``4 n D^2`` (qkv and output projections) + ``2 n^2 D`` (QK^T and AV) +
``2 m D F`` (MLP; ``8 m D^2`` when F = 4D), plus the patch embedding
``frames * patches * 3 * p^2 * D``. LayerNorms, softmax, GELU and additions are not counted
(they are not MACs), as fvcore does not count them.
"""

from __future__ import annotations

from tokred.encoder import Trace


def block_macs(n: int, m: int, width: int, mlp_hidden: int) -> int:
    """MACs of one block for one sequence of ``n`` attention and ``m`` MLP tokens."""
    return 4 * n * width**2 + 2 * n * n * width + 2 * m * width * mlp_hidden


def visual_macs(trace: Trace) -> int:
    """MACs per video of the visual tower (patch embedding + blocks) for a recorded trace."""
    s = trace.spec
    total = s.frames * s.patches * 3 * s.patch_size**2 * s.width
    for r in trace.layers:
        total += r.attn_seqs * (4 * r.attn_tokens * s.width**2 + 2 * r.attn_tokens**2 * s.width)
        total += r.mlp_seqs * 2 * r.mlp_tokens * s.width * s.mlp_hidden
    return total


def text_macs(tokens: int, width: int, layers: int, mlp_hidden: int | None = None) -> int:
    """MACs per caption of a CLIP text tower on ``tokens`` positions (no reduction)."""
    hidden = mlp_hidden or 4 * width
    return layers * block_macs(tokens, tokens, width, hidden)


def gmacs(trace: Trace) -> float:
    """Visual GMACs per video (10^9 MACs; multiply by 2 for GFLOPs)."""
    return visual_macs(trace) / 1e9
