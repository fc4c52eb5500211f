"""The wrapped encoder reproduces open_clip exactly and validates its input."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F

from tokred import create_reducer
from tokred.backbones import OpenCLIPVisual, UnsupportedBackbone
from tokred.encoder import VideoEncoder
from tokred.models import create_clip


def _video(b=2, t=12, size=224, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(b, t, 3, size, size, generator=g)


def _reference(model, video):
    """open_clip's own encode_image per frame, then normalise-mean-normalise."""
    b, t = video.shape[:2]
    with torch.no_grad():
        f = model.encode_image(video.flatten(0, 1)).view(b, t, -1)
    return F.normalize(F.normalize(f, dim=-1).mean(1), dim=-1)


def test_none_equals_open_clip_encode_image(clip_b32, b32):
    video = _video()
    enc = VideoEncoder(b32, create_reducer("none"), 12).eval()
    with torch.no_grad():
        ours = enc(video)
    assert torch.allclose(ours, _reference(clip_b32, video), atol=1e-5)


def test_none_per_frame_readout_equals_open_clip(clip_b32, b32):
    video = _video(1, 3)
    enc = VideoEncoder(b32, None, 3).eval()
    with torch.no_grad():
        frames = enc.encode_frames(video)[0]
        ref = clip_b32.encode_image(video[0])
    assert torch.allclose(frames, ref, atol=1e-5)


def test_tome_r0_equals_none(b32):
    video = _video()
    with torch.no_grad():
        a = VideoEncoder(b32, create_reducer("none"), 12).eval()(video)
        b = VideoEncoder(b32, create_reducer("tome", r=0), 12).eval()(video)
    assert torch.equal(a, b)


def test_encoder_does_not_mutate_open_clip(clip_b32, b32):
    before = copy.deepcopy(clip_b32.state_dict())
    modules = [type(m) for m in clip_b32.modules()]
    with torch.no_grad():
        VideoEncoder(b32, create_reducer("tome", r=3), 12)(_video(1))
    assert [type(m) for m in clip_b32.modules()] == modules
    for k, v in clip_b32.state_dict().items():
        assert torch.equal(v, before[k]), k


@pytest.mark.parametrize("shape, match", [
    ((12, 3, 224, 224), r"\[B, T, 3, H, W\].*video\[None\]"),
    ((1, 12, 1, 224, 224), r"\[B, T, 3, H, W\]"),
    ((1, 12, 3, 112, 112), r"224x224.*112x112"),
])
def test_bad_input_shapes_are_named(b32, shape, match):
    enc = VideoEncoder(b32, None, 12)
    with pytest.raises(ValueError, match=match):
        enc(torch.zeros(shape))


def test_vit_b16_and_l14_are_supported():
    for name, tokens in [("ViT-B-16", 197), ("ViT-L-14", 257)]:
        torch.manual_seed(0)
        enc = VideoEncoder(OpenCLIPVisual(create_clip(name).visual, name), None, 2)
        assert enc.spec.tokens_per_frame == tokens


def test_unsupported_towers_are_refused():
    import open_clip

    torch.manual_seed(0)
    rn = open_clip.create_model("RN50")
    with pytest.raises(UnsupportedBackbone, match="not an open_clip VisionTransformer"):
        OpenCLIPVisual(rn.visual)
    coca = open_clip.create_model("coca_ViT-B-32")
    with pytest.raises(UnsupportedBackbone, match="attentional pooling"):
        OpenCLIPVisual(coca.visual)


def test_trace_counts_and_missing_weights_error():
    with pytest.raises(ValueError, match="unknown CLIP model 'ViT-B-33'"):
        create_clip("ViT-B-33")
    with pytest.raises(FileNotFoundError, match="does not exist"):
        create_clip("ViT-B-32", pretrained="/nonexistent/clip.pt")


def test_unavailable_pretrained_tag_says_how_to_pass_a_file(monkeypatch):
    import open_clip

    def offline(*a, **k):
        raise OSError("network is unreachable")

    monkeypatch.setattr(open_clip, "create_model", offline)
    with pytest.raises(RuntimeError, match="pass its local path as pretrained="):
        create_clip("ViT-B-32", pretrained="openai")


def test_local_checkpoint_clip4clip_layout(tmp_path, clip_scale):
    sd = {"clip." + k: v for k, v in clip_scale.state_dict().items()}
    sd["loss_fct.weight"] = torch.zeros(1)
    path = tmp_path / "ckpt.pth"
    torch.save({"state_dict": {"module." + k: v for k, v in sd.items()}}, path)
    torch.manual_seed(123)
    model = create_clip("scale-B32", pretrained=str(path))
    for k, v in clip_scale.state_dict().items():
        assert torch.equal(model.state_dict()[k], v), k
