"""LoRA on open_clip's fused qkv: the equation, zero init, folding, freezing, errors."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tokred.backbones import OpenCLIPVisual
from tokred.encoder import VideoEncoder
from tokred.models import create_clip
from tokred.training.lora import (
    LoRAWeight,
    add_lora,
    apply_lora,
    count_trainable,
    fold_lora,
    lora_parameters,
    mark_only_trainable,
)


@pytest.fixture()
def clip():
    """A fresh scale model per test (LoRA modifies the model in place)."""
    torch.manual_seed(0)
    return create_clip("scale-B32").eval()


def _randomise_b(params, seed=1):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in params:
            if p.shape[1] < p.shape[0]:  # B is [3*width, r]
                p.copy_(torch.randn(p.shape, generator=g) * 0.05)


def _images(n=2, size=56, seed=0):
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(seed))


def _text(clip, n=2):
    return torch.randint(1, 1000, (n, clip.context_length), generator=torch.Generator().manual_seed(0))


def test_qkv_equals_w_x_plus_b_plus_b_a_x():
    torch.manual_seed(0)
    attn = torch.nn.MultiheadAttention(16, 4, batch_first=True)
    w = attn.in_proj_weight.detach().clone()
    a, b = add_lora(attn, rank=3)
    assert a.shape == (3, 16) and b.shape == (48, 3)
    assert torch.all(b == 0) and a.abs().max() <= 1 / math.sqrt(16)  # kaiming a=sqrt(5) bound
    _randomise_b([b])
    x = torch.randn(2, 5, 16)
    qkv = F.linear(x, attn.in_proj_weight, attn.in_proj_bias)
    ref = x @ w.T + attn.in_proj_bias + (x @ a.T) @ b.T
    assert torch.allclose(qkv, ref, atol=1e-5)


def test_zero_init_leaves_both_towers_unchanged(clip):
    imgs, text = _images(), _text(clip)
    with torch.no_grad():
        before = clip.encode_image(imgs), clip.encode_text(text)
        apply_lora(clip, rank=4)
        after = clip.encode_image(imgs), clip.encode_text(text)
    # B = 0 exactly; the parametrised module may take another (equally exact) MHA kernel path
    assert torch.allclose(before[0], after[0], atol=1e-5)
    assert torch.allclose(before[1], after[1], atol=1e-5)


def test_fold_keeps_outputs_and_restores_plain_weights(clip):
    keys = set(clip.state_dict())
    imgs, text = _images(), _text(clip)
    with torch.no_grad():
        base = clip.encode_image(imgs)
    params = apply_lora(clip, rank=8)
    _randomise_b(params)
    with torch.no_grad():
        adapted_img, adapted_txt = clip.encode_image(imgs), clip.encode_text(text)
    assert (adapted_img - base).abs().max() > 1e-3  # the adapters matter, so the test can fail
    fold_lora(clip)
    with torch.no_grad():
        folded_img, folded_txt = clip.encode_image(imgs), clip.encode_text(text)
    assert torch.allclose(folded_img, adapted_img, atol=1e-5)
    assert torch.allclose(folded_txt, adapted_txt, atol=1e-5)
    assert lora_parameters(clip) == [] and set(clip.state_dict()) == keys
    assert type(clip.visual.transformer.resblocks[0].attn) is torch.nn.MultiheadAttention


def test_tokred_encoder_sees_the_adapters(clip):
    """The encoder's own attention (F.linear on in_proj_weight) and open_clip agree under LoRA."""
    _randomise_b(apply_lora(clip, rank=4, towers=("visual",)))
    video = _images(3)[None]  # [1, 3 frames, 3, 56, 56]
    enc = VideoEncoder(OpenCLIPVisual(clip.visual, "scale-B32"), None, 3).eval()
    with torch.no_grad():
        ours = enc.encode_frames(video)[0]
        ref = clip.encode_image(video[0])
    assert torch.allclose(ours, ref, atol=1e-5)


def test_counts_layers_and_towers(clip):
    width_v, width_t = 128, 128
    params = apply_lora(clip, rank=8, towers=("visual",), layers=[0, 11])
    assert len(params) == 4
    assert sum(p.numel() for p in params) == 2 * (8 * width_v + 3 * width_v * 8)
    params += apply_lora(clip, rank=2, towers="text")
    assert sum(p.numel() for p in lora_parameters(clip)) == (
        2 * (8 * width_v + 3 * width_v * 8) + 4 * (2 * width_t + 3 * width_t * 2))
    assert {id(p) for p in lora_parameters(clip)} == {id(p) for p in params}


def test_mark_only_trainable_freezes_everything_else(clip):
    params = apply_lora(clip, rank=4)
    extra = torch.nn.Parameter(torch.zeros(1, 3, 1, 128))
    n = mark_only_trainable(clip, extra=[extra])
    assert n == sum(p.numel() for p in params) + extra.numel()
    assert n == count_trainable(clip, [extra]) == count_trainable(clip, [extra], clip)
    assert not clip.logit_scale.requires_grad
    assert not clip.visual.conv1.weight.requires_grad
    attn = clip.visual.transformer.resblocks[3].attn
    assert not attn.parametrizations.in_proj_weight.original.requires_grad
    assert all(p.requires_grad for p in params) and extra.requires_grad


def test_gradients_reach_a_and_b_not_w(clip):
    params = apply_lora(clip, rank=4)
    _randomise_b(params)
    mark_only_trainable(clip)
    (clip.encode_image(_images()).sum() + clip.encode_text(_text(clip)).sum()).backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)
    attn = clip.transformer.resblocks[0].attn
    assert attn.parametrizations.in_proj_weight.original.grad is None


def test_errors_name_the_problem(clip):
    with pytest.raises(ValueError, match=r"layers \[12\] out of range.*0\.\.11"):
        apply_lora(clip, layers=[12])
    with pytest.raises(ValueError, match="unknown tower 'audio'"):
        apply_lora(clip, towers=("audio",))
    with pytest.raises(ValueError, match="rank must be a positive int"):
        LoRAWeight(6, 2, 0)
    with pytest.raises(ValueError, match=r"layers \[11\] out of range for the text tower \(blocks 0\.\.3\)"):
        apply_lora(clip, layers=[0, 11])  # the scale model's text tower has 4 blocks
    assert lora_parameters(clip) == []  # nothing was applied to the visual tower either
    apply_lora(clip, towers=("visual",), layers=[1])
    with pytest.raises(ValueError, match="1 of the chosen attention layers already carry"):
        apply_lora(clip, towers=("visual",), layers=[1, 2])
    with pytest.raises(ValueError, match="already carries a LoRA adapter"):
        add_lora(clip.visual.transformer.resblocks[1].attn)


def test_unsupported_tower_is_refused():
    import open_clip

    torch.manual_seed(0)
    rn = open_clip.create_model("RN50")
    with pytest.raises(ValueError, match="visual tower"):
        apply_lora(rn, towers=("visual",))


def test_state_dict_round_trip(clip):
    params = apply_lora(clip, rank=4)
    _randomise_b(params)
    state = clip.state_dict()
    assert any(k.endswith("parametrizations.in_proj_weight.0.B") for k in state)
    torch.manual_seed(5)
    other = create_clip("scale-B32").eval()
    apply_lora(other, rank=4)
    other.load_state_dict(state)
    imgs = _images()
    with torch.no_grad():
        assert torch.equal(other.encode_image(imgs), clip.encode_image(imgs))
