"""Chaining reducers and running under bf16 autocast (the CPU twin of fp16 AMP)."""

from __future__ import annotations

import pytest
import torch

from tokred import Chain, TokenReducer, create_reducer
from tokred.encoder import VideoEncoder


def _video(t=4, size=56):
    return torch.randn(2, t, 3, size, size, generator=torch.Generator().manual_seed(0))


def test_chain_of_identity_and_tome_equals_tome(scale):
    video = _video()
    with torch.no_grad():
        a = VideoEncoder(scale, create_reducer("tome", r=3), 4)(video)
        b = VideoEncoder(scale, Chain(TokenReducer(), create_reducer("tome", r=3)), 4)(video)
    assert torch.equal(a, b)


def test_chain_applies_in_order_and_rejects_stale_keys(scale):
    enc = VideoEncoder(scale, Chain(create_reducer("tome", r=1), create_reducer("tome", r=1)), 4)
    with pytest.raises(RuntimeError, match="cannot use the attention keys"):
        enc(_video())
    with pytest.raises(ValueError, match="at least one"):
        Chain()


def test_bf16_autocast_runs_and_stays_close(scale):
    enc = VideoEncoder(scale, create_reducer("tome", r=2), 4).eval()
    video = _video()
    with torch.no_grad():
        ref = enc(video)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            low = enc(video)
    assert torch.isfinite(low).all()
    assert torch.nn.functional.cosine_similarity(ref, low.float()).min() > 0.98


def test_a_new_clip_length_reruns_reducer_setup(scale):
    enc = VideoEncoder(scale, create_reducer("tome", r=2), 12)
    with torch.no_grad():
        enc(_video(t=4))
    assert enc.spec.frames == 4
