"""TempMe: exact token schedules, the parity rule, temporal embeddings, LoRA recipe, gradients."""

from __future__ import annotations

import pytest
import torch
from tokred_methods.tempme import TempMe
from tokred_methods.tome import ToMe

from tokred import BackboneSpec, TokenState, create_reducer
from tokred.backbones import OpenCLIPVisual
from tokred.cost import gmacs
from tokred.encoder import VideoEncoder
from tokred.models import create_clip
from tokred.training.lora import apply_lora, fold_lora, lora_parameters, mark_only_trainable

B32_ATTN = list(range(600, 431, -24)) + [288, 186, 118, 107]
B32_MLP = list(range(576, 407, -24)) + [264, 168, 107, 97]


def reference_schedule(t, r, layers, frames, cross=0.3, intra=0.1, blocks=12, T=12):
    """Per-video (attn, mlp) tokens with the official integer arithmetic (docs/algorithms.md §4, item 4)."""
    clips, c, attn, mlp = T, 1, [], []
    for layer in range(blocks):
        if layer in layers:
            f = frames[layers.index(layer)]
            r0 = min(int(t * f * cross), (t - c) * f // 2)
            r1 = min(int((t * f - r0) * intra), ((t - c) * f - r0) // 2)
            t, c, clips = t * f - r0, c * f, clips // f
        elif layers and layer > layers[0]:
            r1 = min(int(t * intra), (t - c) // 2)
        else:
            r1 = min(r, (t - c) // 2)
        attn.append(clips * t)
        t -= r1
        mlp.append(clips * t)
    return attn, mlp, clips * t


def test_b32_defaults_trace_and_gmacs(b32):
    trace = VideoEncoder(b32, create_reducer("tempme"), 12).trace()
    assert trace.attn_tokens() == B32_ATTN
    assert trace.mlp_tokens() == B32_MLP
    assert trace.tokens_out == 97 and trace.out_seqs == 1
    d = trace.to_dict()
    assert d["attn_seqs"] == [12] * 8 + [6, 3, 1, 1]
    assert d["attn_tokens"][8:] == [48, 62, 118, 107] and d["mlp_tokens"][8:] == [44, 56, 107, 97]
    assert gmacs(trace) == pytest.approx(34.70, abs=0.01)


@pytest.mark.parametrize("r, tail, out, g", [
    (2, [2196, 1524, 963, 607, 547], 493, 161.08),
    (10, [1524, 984, 624, 395, 356], 321, 127.4),
])
def test_b16_traces(b16, r, tail, out, g):
    trace = VideoEncoder(b16, create_reducer("tempme", r=r), 12).trace()
    attn = trace.attn_tokens()
    assert attn[:8] == [12 * (197 - r * i) for i in range(8)] and attn[7:] == tail
    assert trace.tokens_out == out
    assert (trace.attn_tokens(), trace.mlp_tokens(), out) == reference_schedule(197, r, [8, 9, 10], [2, 2, 3])
    assert gmacs(trace) == pytest.approx(g, abs=0.05 if g == 127.4 else 0.01)


@pytest.mark.parametrize("opts", [
    {},
    {"merge_layers": [6, 8, 10], "merge_frames": [3, 2, 2]},
    {"merge_layers": [4, 11], "merge_frames": [4, 3], "cross": 0.5, "intra": 0.25, "r": 3},
    {"merge_layers": [0], "merge_frames": [12], "cross": 0.45},
])
def test_schedule_equals_official_arithmetic(scale, opts):
    """The state-derived merge counts equal docs/algorithms.md §4 formulas for other schedules too."""
    trace = VideoEncoder(scale, TempMe(**opts), 12).trace()
    ref = TempMe(**opts)
    expect = reference_schedule(50, ref.r, list(ref.merge_layers), list(ref.merge_frames),
                                ref.cross, ref.intra)
    assert (trace.attn_tokens(), trace.mlp_tokens(), trace.tokens_out) == expect


def _enc_blocks(enc, video, layers):
    s = enc.embed(video)
    for layer in range(layers):
        s = enc.block(s, layer)
    return s


def test_imgme_is_bit_identical_to_tome_r2(b32):
    video = torch.randn(1, 12, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ours = _enc_blocks(VideoEncoder(b32, TempMe(), 12), video, 8)
        tome = _enc_blocks(VideoEncoder(b32, ToMe(r=2), 12), video, 8)
    assert torch.equal(ours.x, tome.x) and torch.equal(ours.size, tome.size)
    assert (ours.groups, ours.prefix, ours.tokens) == (12, 1, 34)


# ---------------------------------------------------------------- matching on hand-made inputs
def tome_reference(metric, x, r):
    """Plain ToMe on one row with CLS at 0: A = 0,2,4.. (CLS row -inf), B = 1,3,5..; mean merge."""
    k = metric / metric.norm(dim=-1, keepdim=True)
    a_idx, b_idx = list(range(0, len(k), 2)), list(range(1, len(k), 2))
    score = k[a_idx] @ k[b_idx].T
    score[0] = -float("inf")
    best, arg = score.max(dim=-1)
    order = best.argsort(descending=True).tolist()
    src = [a_idx[i] for i in order[:r]]
    kept = sorted(a_idx[i] for i in order[r:])
    groups = {j: [j] + [a_idx[i] for i in order[:r] if b_idx[arg[i]] == j] for j in b_idx}
    return torch.stack([x[i] for i in kept] + [x[groups[j]].mean(0) for j in b_idx]), src


def _state(x, prefix, groups=1, frames=12):
    return TokenState(x=x, size=torch.ones(*x.shape[:2], 1), groups=groups, prefix=prefix,
                      frames=frames)


def _setup(reducer, width=8, frames=12):
    reducer.setup(BackboneSpec("toy", width, 12, 2, 4 * width, 8, 56, 7, frames))
    return reducer


@pytest.mark.parametrize("n", [11, 12, 30])
def test_one_cls_matching_equals_tome(n):
    torch.manual_seed(n)
    metric, x = torch.randn(1, n, 8), torch.randn(1, n, 8)
    reducer = _setup(TempMe())
    r = reducer.after_attn(n, 1)
    assert r > 0
    out = reducer.post_attn(_state(x, 1), layer=11, keys=metric)
    ref, _ = tome_reference(metric[0], x[0], r)
    assert torch.allclose(out.x[0], ref, atol=1e-6)
    # the ClipMe path (hidden states as metric, f = 1) matches the same way
    single = _setup(TempMe(merge_layers=[8], merge_frames=[1], frame_pos=False), frames=1)
    out = single.pre_block(_state(x, 1, frames=1), layer=8)
    ref, _ = tome_reference(x[0], x[0], min(int(n * 0.3), (n - 1) // 2))
    assert torch.allclose(out.x[0], ref, atol=1e-6)


def parity_reference(ids, cls, src, dst):
    """Output ids for one merge src -> dst: [CLS, kept A ascending, B] with the parity rule."""
    patches = ids[cls:]
    a_off = 1 if cls % 2 else 0
    a, b = patches[a_off::2], patches[1 - a_off::2]
    assert src in a and dst in b, "hand-made pair must cross the partition"
    return ids[:cls] + [i for i in a if i != src] + [(i + src) / 2 if i == dst else i for i in b]


@pytest.mark.parametrize("cls, n, src, dst", [
    (2, 12, 6, 9),     # even: A = patch positions 0,2,4,.. (absolute 2,4,..), B = 3,5,..
    (4, 14, 12, 5),
    (12, 19, 16, 13),
    (3, 12, 8, 5),     # odd: A = patch positions 1,3,.. (absolute 4,6,..), B = 3,5,..
])
def test_parity_rule_on_handmade_tokens(cls, n, src, dst):
    eye = torch.eye(n)
    metric = eye.clone()
    metric[src] = eye[dst] + 0.01 * eye[src]  # src's only similar token is dst
    metric[: cls] = eye[dst]                  # CLS tokens would match dst too: must be protected
    x = torch.arange(n, dtype=torch.float)[None, :, None]
    reducer = _setup(TempMe())
    out = reducer.post_attn(_state(x, cls), layer=11, keys=metric[None])
    assert reducer.after_attn(n, cls) == 1
    assert out.x[0, :, 0].tolist() == parity_reference(list(range(n)), cls, src, dst)


def test_join_puts_all_cls_first_and_keeps_frame_order():
    """Through all sites with toy keys: the 12 frame CLS lead the final sequence, in order."""
    reducer = _setup(TempMe(), width=4)
    n, frames = 50, 12
    ids = torch.arange(frames * n, dtype=torch.float).view(frames, n)  # CLS of frame i = i * 50
    x = torch.cat([ids[..., None], torch.randn(frames, n, 3)], dim=-1)
    s = _state(x, 1, groups=12)
    for layer in range(12):
        s = reducer.pre_block(s, layer)
        s = reducer.post_attn(s, layer, keys=s.x[..., 1:])
    assert (s.groups, s.prefix, s.tokens) == (1, 12, 97)
    assert s.x[0, :12, 0].tolist() == [float(i * n) for i in range(frames)]
    assert s.size.sum().item() == frames * n


def test_join_order_at_the_first_clipme_layer():
    reducer = _setup(TempMe(cross=0.0, frame_pos=False))
    x = torch.arange(12 * 5, dtype=torch.float).view(12, 5, 1)
    s = reducer.pre_block(_state(x, 1, groups=12), layer=8)
    assert (s.groups, s.prefix, s.tokens) == (6, 2, 10)
    assert s.x[1, :, 0].tolist() == [10, 15, 11, 12, 13, 14, 16, 17, 18, 19]


def test_temporal_embedding_changes_values_not_matches(monkeypatch):
    import tokred_methods.tempme as mod

    seen, original = [], mod.bipartite_match

    def recording(metric, r, prefix=1):
        seen.append(original(metric, r, prefix))
        return seen[-1]

    monkeypatch.setattr(mod, "bipartite_match", recording)
    reducer = _setup(TempMe(), width=8)
    torch.manual_seed(0)
    s = _state(torch.randn(2 * 12, 34, 8), 1, groups=12)  # 2 videos entering L8
    zero = reducer.pre_block(s, 8)
    with torch.no_grad():
        reducer.temporal[0].normal_()
    moved = reducer.pre_block(s, 8)
    a, b = seen
    for name in ("unm_idx", "src_idx", "dst_idx"):
        assert torch.equal(getattr(a, name), getattr(b, name))
    assert torch.equal(zero.size, moved.size)
    emb = reducer.temporal[0][0, :, 0]  # [12, C]
    cls_shift = (moved.x[:, :2] - zero.x[:, :2]).reshape(2, 12, 8)
    assert torch.allclose(cls_shift, emb.expand(2, -1, -1), atol=1e-6)  # CLS: own clip's vector
    assert (moved.x - zero.x).abs().max() > 0.1


# ---------------------------------------------------------------- options and parameters
@pytest.mark.parametrize("opts, frames, msg", [
    ({}, 8, r"multiply to 12 but the video has 8 frames \(factor 3 does not divide the 2 clips"),
    ({"merge_frames": [5, 2, 3]}, 12, r"multiply to 30.*factor 5 does not divide the 12 clips"),
    ({"merge_layers": [8, 9, 12]}, 12, r"merge_layers \[12\] out of range.*0\.\.11"),
    ({"merge_layers": [8, 9]}, 12, r"\(2 layers\).*\(3 factors\)"),
    ({"merge_layers": [9, 8, 10]}, 12, "strictly increasing"),
    ({"cross": 1.5}, 12, r"cross=1.5 must be a proportion"),
    ({"merge_frames": [2, 0, 6]}, 12, "positive int"),
])
def test_setup_validation_names_the_numbers(opts, frames, msg):
    with pytest.raises(ValueError, match=msg):
        _setup(TempMe(**opts), frames=frames)


def test_temporal_parameters_setup_is_idempotent_and_saved():
    reducer = _setup(TempMe(), width=8)
    assert [tuple(p.shape) for p in reducer.temporal] == [(1, 12, 1, 8), (1, 6, 1, 8), (1, 3, 1, 8)]
    assert all(torch.all(p == 0) for p in reducer.temporal)
    first = list(reducer.temporal)
    with torch.no_grad():
        first[1].fill_(0.5)
    _setup(reducer, width=8)
    assert all(p is q for p, q in zip(reducer.temporal, first))
    other = _setup(TempMe(), width=8)
    other.load_state_dict(reducer.state_dict())
    assert torch.equal(other.temporal[1], first[1])
    _setup(reducer, width=16)  # another backbone width: new zero parameters, same layout
    assert [tuple(p.shape) for p in reducer.temporal] == [(1, 12, 1, 16), (1, 6, 1, 16), (1, 3, 1, 16)]
    assert all(p is not q and torch.all(p == 0) for p, q in zip(reducer.temporal, first))


def test_dash_form_from_bench_specs():
    from tokred.cost.specs import parse_reducer

    name, opts = parse_reducer("tempme:merge_layers=6-8-10,merge_frames=3-2-2,r=3")
    reducer = create_reducer(name, **opts)
    assert (reducer.merge_layers, reducer.merge_frames, reducer.r) == ((6, 8, 10), (3, 2, 2), 3)
    with pytest.raises(ValueError, match=r"merge_frames='2-x'.*'8-9-10'"):
        TempMe(merge_frames="2-x")


def test_no_frame_pos_has_no_parameters():
    assert list(_setup(TempMe(frame_pos=False)).parameters()) == []


def test_lora_recipe_b32_trainable_count():
    torch.manual_seed(0)
    clip = create_clip("ViT-B-32")
    reducer = TempMe()
    VideoEncoder(OpenCLIPVisual(clip.visual, "ViT-B-32"), reducer, 12)
    apply_lora(clip, rank=8)
    assert mark_only_trainable(clip, extra=reducer.parameters()) == 507_648
    assert sum(p.numel() for p in reducer.parameters()) == 768 * (12 + 6 + 3)
    assert sum(p.numel() for p in lora_parameters(clip.visual)) == 12 * (8 * 768 + 3 * 768 * 8)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in lora_parameters(clip):
            p.copy_(torch.randn(p.shape, generator=g) * 0.02)
        images = torch.randn(2, 3, 224, 224, generator=g)
        text = torch.randint(1, 49000, (2, 77), generator=g)
        adapted = clip.encode_image(images), clip.encode_text(text)
        fold_lora(clip)
        folded = clip.encode_image(images), clip.encode_text(text)
    assert torch.allclose(adapted[0], folded[0], atol=1e-5)
    assert torch.allclose(adapted[1], folded[1], atol=1e-5)


def test_lora_fold_with_tempme_keeps_the_output(clip_scale):
    import copy

    clip = copy.deepcopy(clip_scale)
    reducer = TempMe()
    enc = VideoEncoder(OpenCLIPVisual(clip.visual, "scale-B32"), reducer, 12)
    apply_lora(clip, rank=8)
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for p in lora_parameters(clip):
            p.copy_(torch.randn(p.shape, generator=g) * 0.02)
        for p in reducer.temporal:
            p.copy_(torch.randn(p.shape, generator=g) * 0.1)
    video = torch.randn(2, 12, 3, 56, 56, generator=g)
    with torch.no_grad():
        base = VideoEncoder(OpenCLIPVisual(clip_scale.visual, "scale-B32"), TempMe(), 12)(video)
        adapted = enc(video)
        assert (adapted - base).abs().max() > 1e-3  # adapters and embeddings matter
        fold_lora(clip)
        folded = enc(video)
    assert torch.allclose(adapted, folded, atol=1e-5)


def test_gradients_reach_lora_and_temporal_through_merges(clip_scale):
    import copy

    clip = copy.deepcopy(clip_scale)
    reducer = TempMe()
    enc = VideoEncoder(OpenCLIPVisual(clip.visual, "scale-B32"), reducer, 12)
    params = apply_lora(clip, rank=4, towers=("visual",))
    with torch.no_grad():
        for p in params[1::2]:
            p.normal_(std=0.05)
    mark_only_trainable(clip, extra=reducer.parameters())
    video = torch.randn(2, 12, 3, 56, 56, generator=torch.Generator().manual_seed(0))
    target = torch.randn(clip.visual.output_dim, generator=torch.Generator().manual_seed(1))
    (enc(video) @ target).sum().backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in params)  # incl. L11
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in reducer.temporal)
    assert clip.visual.conv1.weight.grad is None


def test_work_macs_counts_only_merging_layers(scale):
    """A x B similarity products: keys (head dim) after attention, hidden states at ClipMe."""
    idle = TempMe(r=0, cross=0.0, intra=0.0)
    assert idle.work_macs(VideoEncoder(scale, idle, 12).trace()) == 0
    busy = TempMe()
    trace = VideoEncoder(scale, busy, 12).trace()
    width, d = 128, 128 // trace.spec.heads
    keys = 12 * sum((n // 2) ** 2 for n in range(50, 35, -2))  # ImgMe L0..L7
    keys += 6 * 24**2 + 3 * 31**2 + 59**2 + 53**2  # L8..L11 after attention (48, 62, 118, 107)
    hidden = 6 * 34**2 + 3 * 44**2 + 84**2  # joined 68, 88, 168 tokens before attention
    assert busy.work_macs(trace) == keys * d + hidden * width


# ---------------------------------------------------------------- benchmark helpers
def test_bench_command_runs_on_the_scale_model(tmp_path):
    import json

    from tokred.cli.measure import main

    path = tmp_path / "bench.jsonl"
    assert main(["--model", "scale-B32", "--reducer", "tempme", "--repeats", "1", "--warmup", "0",
                 "--rounds", "1", "--batch-size", "1", "--train-step", "lora", "--train-batch",
                 "2", "--threads", "1", "--skip-fvcore", "--out", str(path)]) == 0
    none, tempme = [json.loads(line) for line in path.read_text().splitlines()]
    assert (none["reducer"], tempme["reducer"]) == ("none", "tempme")
    assert (none["tokens_out"], tempme["tokens_out"]) == (600, 97)
    assert tempme["ideal_speedup"] == pytest.approx(none["gmacs"] / tempme["gmacs"])
    assert tempme["trainable_params_lora"] - none["trainable_params_lora"] == 128 * (12 + 6 + 3)
    lora = "activation_mb_per_video_lora"
    assert 0 < tempme[lora] < none[lora] and tempme["train_step_s"] > 0
    assert tempme["memory_ratio"] == pytest.approx(tempme[lora] / none[lora])
