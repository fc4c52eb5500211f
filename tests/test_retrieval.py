"""Retrieval model: caption truncation, text tower at 32 positions, InfoNCE, trainable recipes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from tokred.retrieval import (
    CaptionTokenizer,
    RetrievalModel,
    TextEncoder,
    contrastive_loss,
    truncate_tokens,
)
from tokred.training.optim import (
    FROZEN_EMBEDDINGS,
    configure_trainable,
    make_optimizer,
    make_scheduler,
)

EOT = 49407


def test_truncate_keeps_eot_last_when_cut():
    short = [49406, 5, 6, EOT] + [0] * 6
    long = [49406] + list(range(10, 18)) + [EOT]
    out = truncate_tokens(torch.tensor([short, long]), 5)
    assert out.tolist() == [[49406, 5, 6, EOT, 0], [49406, 10, 11, 12, EOT]]


def test_tokenizer_truncates_long_caption_to_32_with_eot():
    tok = CaptionTokenizer(32)
    words = " ".join(["red"] * 60)
    out = tok(["a red circle", words, "a red circle"])
    assert out.shape == (3, 32)
    assert out[1, -1] == EOT and out[1].argmax() == 31
    assert out[0].argmax() == 4 and torch.equal(out[0], out[2])  # SOT a red circle EOT


def test_text_tower_at_32_equals_open_clip_at_77_for_short_captions(clip_scale):
    """The causal mask makes positions before EOT independent of the context length."""
    import open_clip

    caps = ["a red circle moves left at the top", "a small blue cross in the top left corner"]
    full = open_clip.tokenize(caps)  # [2, 77]
    ref = clip_scale.encode_text(full, normalize=True)
    ours = TextEncoder(clip_scale, 32)(truncate_tokens(full, 32))
    torch.testing.assert_close(ours, ref, atol=1e-5, rtol=1e-5)


def _reference_infonce(t, v, scale):
    """Plain loops: mean over rows of -log softmax at the diagonal, both directions."""
    n = t.shape[0]
    sim = [[scale * float(t[i] @ v[j]) for j in range(n)] for i in range(n)]
    t2v = sum(-sim[i][i] + math.log(sum(math.exp(s) for s in sim[i])) for i in range(n)) / n
    v2t = (
        sum(-sim[j][j] + math.log(sum(math.exp(sim[i][j]) for i in range(n))) for j in range(n)) / n
    )
    return 0.5 * (t2v + v2t)


def test_contrastive_loss_matches_reference():
    g = torch.Generator().manual_seed(0)
    t = F.normalize(torch.randn(5, 8, generator=g), dim=-1)
    v = F.normalize(torch.randn(5, 8, generator=g), dim=-1)
    loss = contrastive_loss(t, v, torch.tensor(7.0))
    assert loss.item() == pytest.approx(_reference_infonce(t, v, 7.0), rel=1e-5)
    with pytest.raises(ValueError, match="one caption per video"):
        contrastive_loss(t, v[:4], torch.tensor(1.0))


def test_scheduler_warmup_then_cosine():
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=1.0)
    sched = make_scheduler(opt, total_steps=10, warmup=0.2)  # 2 warm-up steps
    lrs = []
    for _ in range(10):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.step()
    want = [0.5, 1.0] + [0.5 * (1 + math.cos(math.pi * k / 8)) for k in range(8)]
    assert lrs == pytest.approx(want)


@pytest.fixture()
def tiny_model():
    from test_ddp import tiny_clip

    torch.manual_seed(0)
    return RetrievalModel(tiny_clip(), None, frames=2)


def test_full_recipe_freezes_exactly_the_clip4clip_embeddings(tiny_model):
    configure_trainable(tiny_model, "full")
    frozen = {n for n, p in tiny_model.clip.named_parameters() if not p.requires_grad}
    assert frozen == {
        "visual.conv1.weight",
        "visual.class_embedding",
        "visual.positional_embedding",
        "visual.ln_pre.weight",
        "visual.ln_pre.bias",
        "token_embedding.weight",
        "positional_embedding",
    }
    assert all(n.startswith(FROZEN_EMBEDDINGS) for n in frozen)
    assert tiny_model.clip.logit_scale.requires_grad


def test_scratch_trains_everything_and_lora_only_adapters(tiny_model):
    n_all = sum(p.numel() for p in tiny_model.parameters())
    assert configure_trainable(tiny_model, "scratch") == n_all
    n = configure_trainable(tiny_model, "lora", lora_rank=2)
    names = [k for k, p in tiny_model.named_parameters() if p.requires_grad]
    assert names and all("parametrizations" in k and "original" not in k for k in names)
    # rank 2 on 2 visual (width 32) + 1 text (width 32) blocks: A [2, 32] + B [96, 2] each
    assert n == 3 * (2 * 32 + 96 * 2)
    assert not tiny_model.clip.logit_scale.requires_grad


def test_optimizer_excludes_norms_biases_and_scale_from_decay(tiny_model):
    configure_trainable(tiny_model, "scratch")
    opt = make_optimizer(tiny_model, 1e-3, (0.9, 0.98), 0.2)
    no_decay, decay = ({id(p) for p in g["params"]} for g in opt.param_groups)
    named = dict(tiny_model.named_parameters())
    assert id(named["clip.logit_scale"]) in no_decay
    assert id(named["clip.visual.transformer.resblocks.0.ln_1.weight"]) in no_decay
    assert id(named["clip.visual.transformer.resblocks.0.attn.in_proj_bias"]) in no_decay
    assert id(named["clip.visual.transformer.resblocks.0.attn.in_proj_weight"]) in decay
    assert [g["weight_decay"] for g in opt.param_groups] == [0.0, 0.2]


def test_schedule_is_a_function_of_the_step_alone():
    from tokred.training.optim import WarmupCosine

    sched = WarmupCosine(total_steps=100, warmup=0.1)
    assert sched(0) == pytest.approx(0.1) and sched(9) == pytest.approx(1.0)  # 10 warm-up steps
    assert sched(50) == pytest.approx(0.5 * (1 + math.cos(math.pi * 40 / 90)), abs=1e-9)
    assert sched(100) == pytest.approx(0.0, abs=1e-12)
    assert [sched(s) for s in range(100)] == [WarmupCosine(100, 0.1)(s) for s in range(100)]
