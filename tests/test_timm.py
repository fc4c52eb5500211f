"""timm ViTs through the same encoder: exact no-op, ToMe's image protocol, honest refusals."""

from __future__ import annotations

import pytest
import torch

from tokred import create_reducer
from tokred.backbones import UnsupportedBackbone
from tokred.backbones.timmvit import TimmViT
from tokred.cost import fvcore_video_macs, visual_macs
from tokred.encoder import VideoEncoder

timm = pytest.importorskip("timm")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def vit_b16():
    torch.manual_seed(0)
    return timm.create_model("vit_base_patch16_224", pretrained=False).eval()


def _images(b=2, size=224, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, 3, size, size, generator=g)


def test_spec_of_vit_base_patch16(vit_b16):
    s = TimmViT(vit_b16, "timm:vit_base_patch16_224").spec
    assert (s.width, s.layers, s.heads, s.mlp_hidden) == (768, 12, 12, 3072)
    assert (s.patch_size, s.image_size, s.grid, s.tokens_per_frame) == (16, 224, 14, 197)


@pytest.mark.parametrize("pre_logits", [False, True])
def test_none_equals_timm_forward(vit_b16, pre_logits):
    images = _images()
    enc = VideoEncoder(TimmViT(vit_b16, pre_logits=pre_logits), create_reducer("none"), 1).eval()
    with torch.no_grad():
        ref = vit_b16.forward_head(vit_b16.forward_features(images), pre_logits=pre_logits)
        ours = enc.encode_frames(images[:, None])[:, 0]  # T = 1: image mode
    assert ours.shape == ref.shape
    assert torch.allclose(ours, ref, atol=1e-5)


def _tome_schedule(tokens: int, r: int, layers: int) -> list[int]:
    """Tokens entering attention per layer for ToMe with one protected CLS (plain loop)."""
    out = []
    for _ in range(layers):
        out.append(tokens)
        tokens -= min(r, (tokens - 1) // 2)
    return out


def test_tome_r16_image_mode(vit_b16):
    enc = VideoEncoder(TimmViT(vit_b16), create_reducer("tome", r=16), 1).eval()
    trace = enc.trace(1)
    assert trace.attn_tokens() == _tome_schedule(197, 16, 12)
    with torch.no_grad():
        out = enc.encode_frames(_images()[:, None])
    assert out.shape == (2, 1, 1000) and torch.isfinite(out).all()
    full = VideoEncoder(TimmViT(vit_b16), None, 1).trace(1)
    # ToMe's paper: r=16 on ViT-B/16 roughly halves the work (it reports 2.05x on a V100)
    assert 1.9 < visual_macs(full) / visual_macs(trace) < 2.1


def test_tome_r0_equals_none_and_fvcore_agrees(vit_b16):
    images = _images(1)
    enc = VideoEncoder(TimmViT(vit_b16), create_reducer("tome", r=0), 1).eval()
    none = VideoEncoder(TimmViT(vit_b16), None, 1).eval()
    with torch.no_grad():
        assert torch.equal(enc(images[:, None]), none(images[:, None]))
    tome = VideoEncoder(TimmViT(vit_b16), create_reducer("tome", r=16), 1).eval()
    trace = tome.trace(1)
    count = fvcore_video_macs(tome, 1)
    head = 768 * 1000
    expected = visual_macs(trace) + head + tome.reducer.work_macs(trace)
    assert count.unaccounted == {}
    assert abs(count.macs - expected) / expected < 0.01


def test_layerscale_model_equals_timm_forward():
    torch.manual_seed(0)
    m = timm.create_model("vit_tiny_patch16_224", pretrained=False, init_values=0.1,
                          drop_path_rate=0.0).eval()
    enc = VideoEncoder(TimmViT(m), None, 1).eval()
    images = _images(2)
    with torch.no_grad():
        ref = m.forward_head(m.forward_features(images))
        ours = enc.encode_frames(images[:, None])[:, 0]
    assert torch.allclose(ours, ref, atol=1e-5)  # LayerScale ls1/ls2 applied


@pytest.mark.parametrize("kwargs, match", [
    ({"reg_tokens": 4}, "register tokens"),
    ({"class_token": False, "global_pool": "avg"}, "no class token"),
    ({"global_pool": "avg"}, "global_pool='avg'"),
    ({"qk_norm": True}, "qk-norm"),
    ({"global_pool": "map"}, "global_pool='map'"),
])
def test_unsupported_timm_models_are_refused(kwargs, match):
    torch.manual_seed(0)
    m = timm.create_model("vit_tiny_patch16_224", pretrained=False, **kwargs)
    with pytest.raises(UnsupportedBackbone, match=match):
        TimmViT(m)


def test_non_vit_and_other_blocks_are_refused():
    torch.manual_seed(0)
    with pytest.raises(UnsupportedBackbone, match="not a timm VisionTransformer"):
        TimmViT(timm.create_model("resnet18", pretrained=False))
    from timm.models.vision_transformer import ParallelScalingBlock

    m = timm.create_model("vit_tiny_patch16_224", pretrained=False,
                          block_fn=ParallelScalingBlock)
    with pytest.raises(UnsupportedBackbone, match="ParallelScalingBlock"):
        TimmViT(m)
