"""Contract tests every registered reducer gets for free (parametrized over list_reducers())."""

from __future__ import annotations

import pytest
import torch

from tokred import TokenReducer, create_reducer, list_reducers
from tokred.encoder import Trace, VideoEncoder

FRAMES = 12


class Checked(TokenReducer):
    """Wraps a reducer and checks the state invariants at every site."""

    def __init__(self, inner: TokenReducer) -> None:
        super().__init__()
        self.inner = inner

    @property
    def prop_attn(self) -> bool:  # type: ignore[override]
        return self.inner.prop_attn

    def setup(self, spec):
        super().setup(spec)
        self.inner.setup(spec)

    def _check(self, before, after):
        assert after.x.shape[0] == after.batch * after.groups
        assert after.batch == before.batch, "a reducer must not mix videos"
        assert after.size.shape[:2] == after.x.shape[:2]
        assert after.groups * after.tokens <= before.groups * before.tokens, "tokens increased"
        assert torch.isfinite(after.x).all(), "NaN/inf in tokens"
        if after.groups == before.groups and after.prefix == before.prefix:
            assert torch.equal(after.x[:, : after.prefix], before.x[:, : before.prefix]), "CLS changed"
        return after

    def pre_block(self, s, layer):
        return self._check(s, self.inner.pre_block(s, layer))

    def post_attn(self, s, layer, keys):
        return self._check(s, self.inner.post_attn(s, layer, keys))


@pytest.fixture(scope="module", params=list_reducers())
def encoder(request, scale):
    torch.manual_seed(0)
    reducer = create_reducer(request.param)
    return VideoEncoder(scale, Checked(reducer), FRAMES).eval()


def _video(b, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, FRAMES, 3, 56, 56, generator=g)


def test_layout_no_nan_and_tokens_never_increase(encoder):
    trace = Trace(encoder.spec)
    with torch.no_grad():
        out = encoder(_video(2), trace)
    assert out.shape == (2, encoder.backbone.visual.output_dim)
    assert torch.isfinite(out).all()
    assert torch.allclose(out.norm(dim=-1), torch.ones(2), atol=1e-5)
    tokens = [t for rec in trace.layers for t in (rec.attn_per_video, rec.mlp_per_video)]
    assert all(a >= b for a, b in zip(tokens, tokens[1:])), tokens
    assert tokens[0] == FRAMES * encoder.spec.tokens_per_frame


def test_deterministic(encoder):
    with torch.no_grad():
        assert torch.equal(encoder(_video(2)), encoder(_video(2)))


def test_batch_of_one_equals_inside_a_batch(encoder):
    video = _video(3)
    with torch.no_grad():
        together = encoder(video)
        alone = torch.cat([encoder(video[i : i + 1]) for i in range(3)])
    assert torch.allclose(together, alone, atol=1e-5)


def test_videos_do_not_leak_into_each_other(encoder):
    video = _video(2)
    other = video.clone()
    other[1] = torch.randn_like(other[1])
    with torch.no_grad():
        assert torch.allclose(encoder(video)[0], encoder(other)[0], atol=1e-5)
