"""Exact token provenance: which input patches each output token of the encoder stands for.

Every reducer site is, once its assignment (matching, medoids, kept subset) has been chosen,
a map that is linear in the features and the same for every channel: a size-weighted average,
a mean, or a gather (additive terms such as TempMe's temporal embedding do not depend on x).
So the vector-Jacobian product of a site with the output cotangent ``g[..., 0] = j + 1`` (the
output token's index) and ``g[..., 1] = 1`` gives, for every input token ``i`` feeding output
``j`` with weight ``w > 0``, ``(j + 1) * w`` in channel 0 and ``w`` in channel 1: their ratio is
the destination ``j`` exactly, and a zero weight means "dropped". The forward is untouched (the
recorder wraps the reducer and returns the reducer's own output). An input feeding two outputs
would give a non-integer ratio and is reported as an error, never silently rounded.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from tokred import TokenReducer, TokenState


class ProvenanceRecorder(TokenReducer):
    """Wraps a reducer; composes the patch -> token map through every site it changes."""

    def __init__(self, inner: TokenReducer) -> None:
        super().__init__()
        self.inner = inner
        self.owner: np.ndarray | None = None  # [B*T*P] current token index per input patch

    @property
    def prop_attn(self) -> bool:  # type: ignore[override]
        return self.inner.prop_attn

    def setup(self, spec) -> None:
        super().setup(spec)
        self.inner.setup(spec)

    def pre_block(self, s: TokenState, layer: int) -> TokenState:
        self._start(s)
        return self._site(lambda st: self.inner.pre_block(st, layer), s)

    def post_attn(self, s: TokenState, layer: int, keys: Tensor) -> TokenState:
        return self._site(lambda st: self.inner.post_attn(st, layer, keys), s)

    def _start(self, s: TokenState) -> None:
        if self.owner is None:  # first site: patch p of frame row r is token r*N + prefix + p
            rows, n = s.x.shape[:2]
            idx = torch.arange(rows * n).reshape(rows, n)[:, s.prefix:]
            self.owner = idx.reshape(-1).numpy()

    def _site(self, fn, s: TokenState) -> TokenState:
        x = s.x.detach().requires_grad_(True)
        with torch.enable_grad():
            out = fn(s.replace(x=x))
            if out.x is x or not out.x.requires_grad:
                return out
            dest = destinations(out.x, x)
        self.owner = np.where(self.owner >= 0, dest[np.maximum(self.owner, 0)], -1)
        return out.replace(x=out.x.detach())


def destinations(out: Tensor, inp: Tensor) -> np.ndarray:
    """For each input token (flattened ``[R_in * N_in]``) its output token index or -1."""
    rows, n, _ = out.shape
    g = torch.zeros_like(out)
    g[..., 0] = torch.arange(1, rows * n + 1, dtype=out.dtype).reshape(rows, n)
    g[..., 1] = 1.0
    (gx,) = torch.autograd.grad(out, inp, g, allow_unused=True)
    if gx is None:
        return np.full(inp.shape[0] * inp.shape[1], -1)
    code, weight = gx[..., 0].reshape(-1).double(), gx[..., 1].reshape(-1).double()
    alive = weight.abs() > 1e-12
    ratio = torch.where(alive, code / weight.where(alive, torch.ones_like(weight)), 0.0)
    dest = ratio.round()
    if alive.any() and (ratio - dest)[alive].abs().max() > 1e-3:
        raise RuntimeError("a reducer site sends an input token to several outputs; "
                           "provenance is not a partition here")
    return np.where(alive.numpy(), dest.numpy().astype(np.int64) - 1, -1)


def synthetic_video(frames: int, size: int) -> tuple[np.ndarray, Tensor]:
    """One fixed scene of the shipped synthetic benchmark: uint8 ``[T,S,S,3]`` and CLIP input."""
    from tokred.data.transforms import CLIP_MEAN, CLIP_STD
    from tokred.synth import Scene, render

    scene = Scene(bg=7, mover=("red", "circle"), direction="right", lane=0,
                  event_obj=("blue", "square"), event_pos=(1, 2), event="appear",
                  order="move_first", small=("yellow", "triangle", 3))
    raw = render(scene, frames, size)  # [T, S, S, 3] uint8
    x = torch.from_numpy(raw).float().div(255).permute(0, 3, 1, 2)  # [T, 3, S, S]
    x = (x - torch.tensor(CLIP_MEAN)[:, None, None]) / torch.tensor(CLIP_STD)[:, None, None]
    return raw, x[None]


def provenance(encoder_factory, reducer: TokenReducer, frames: int) -> dict:
    """Run ``reducer`` on the fixed synthetic video and return the patch -> output-token map.

    Args:
        encoder_factory: ``reducer -> VideoEncoder`` over the model to use.
        reducer: the reducer to trace.
        frames: clip length.

    Returns:
        ``owner`` (``[T * P]`` output token per input patch, -1 dropped), ``out_rows``,
        ``out_tokens``, ``grid``, ``size_check`` (counts agree with the reducer's own sizes)
        and ``frames_png`` is not stored: the report re-renders the same scene.
    """
    rec = ProvenanceRecorder(reducer)
    enc = encoder_factory(rec).eval()
    raw, video = synthetic_video(frames, enc.spec.image_size)
    final: dict = {}

    def grab(s: TokenState, layer: int) -> TokenState:
        if layer == enc.spec.layers - 1:
            final["size"] = s.size.detach().reshape(-1)
            final["shape"] = tuple(s.x.shape[:2])
        return s

    original = rec.post_attn
    rec.post_attn = lambda s, layer, keys: grab(original(s, layer, keys), layer)  # type: ignore
    with torch.no_grad():
        enc.encode_frames(video)
    owner = rec.owner
    counts = np.bincount(owner[owner >= 0], minlength=final["shape"][0] * final["shape"][1])
    size = final["size"].numpy()
    kept = counts > 0
    return {"owner": owner.tolist(), "out_rows": final["shape"][0],
            "out_tokens": final["shape"][1], "grid": enc.spec.grid, "frames": frames,
            "size_check": bool(np.allclose(counts[kept], size[kept])),
            "dropped": int((owner < 0).sum()), "merged_tokens": int((counts > 1).sum())}
