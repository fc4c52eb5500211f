"""Cost numbers a reviewer can rerun: analytic MACs vs fvcore, activation memory, throughput."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest
import torch
from torch import nn

from tokred import create_reducer, list_reducers, paper_presets
from tokred.cli.measure import main
from tokred.cost import (
    Timing,
    activation_bytes,
    fvcore_video_macs,
    inference_throughput,
    interleaved_throughput,
    time_calls,
    train_step_time,
    visual_macs,
)
from tokred.cost.measure import measure
from tokred.cost.memory import activation_per_video, cuda_peak_mb, module_tensors, peak_rss_mb
from tokred.cost.specs import reducer_specs
from tokred.cost.timing import PairedTiming, paired_throughput, paired_timing
from tokred.encoder import Trace, VideoEncoder
from tokred.training.precision import autocast


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """One intra-op thread: on a shared 2-core machine, OpenMP barriers with 2 threads stall
    each small op for a scheduler slice (tens of ms) whenever the other core is busy."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def _configs(model: str) -> list[tuple[str, dict]]:
    """The papers' settings on ``model`` (presets), and the defaults of reducers without any."""
    return [(s.name, s.options) for s in reducer_specs(["paper"], model)] + [
        (n, {}) for n in list_reducers() if n != "none" and not paper_presets(n, model)]


def _reducer(name: str, opts: dict):
    try:
        return create_reducer(name, **opts)
    except ImportError as err:  # a plugin another engineer has not landed yet
        pytest.skip(f"reducer {name!r} does not import yet: {err}")


def _encoder(visual, name, opts, frames=12):
    return VideoEncoder(visual, _reducer(name, opts), frames).eval()


# ---------------------------------------------------------------- MACs: analytic vs fvcore
@pytest.mark.parametrize("name, opts", _configs("ViT-B-32"), ids=str)
def test_fvcore_equals_analytic_b32(b32, name, opts):
    _check_fvcore(b32, name, opts, 52.90)


@pytest.mark.slow
@pytest.mark.parametrize("name, opts", _configs("ViT-B-16"), ids=str)
def test_fvcore_equals_analytic_b16(b16, name, opts):
    _check_fvcore(b16, name, opts, 210.76)


def _check_fvcore(visual, name, opts, reference):
    enc = _encoder(visual, name, opts)
    trace = Trace(enc.spec)
    count = fvcore_video_macs(enc, 12, trace=trace)  # eval + inference_mode inside
    assert len(trace.layers) == 12 and trace.attn_tokens()[0] == 12 * enc.spec.tokens_per_frame
    analytic = visual_macs(trace)
    assert count.unaccounted == {}, "an op with arithmetic escaped every handle"
    assert count.by_op["scaled_dot_product_attention"] > 0
    # the layers' own ops (linear, conv, SDPA) are exactly what the analytic formula counts
    assert abs(count.layer_macs - analytic) / analytic < 0.01
    assert count.layer_macs == analytic
    # the rest is the readout projection of the CLS tokens and the reducer's own work
    with torch.inference_mode():
        size = enc.spec.image_size
        readout_tokens = enc.encode_frames(torch.zeros(1, 12, 3, size, size)).shape[1]
    proj = readout_tokens * visual.visual.proj.numel()
    assert count.rest_macs >= proj
    print(f"{name} {opts}: analytic {analytic / 1e9:.3f}, fvcore layers "
          f"{count.layer_macs / 1e9:.3f}, reducer work measured "
          f"{(count.rest_macs - proj) / 1e9:.3f} (estimate {enc.reducer.work_macs(trace) / 1e9:.3f})")
    if name == "none":
        assert round(analytic / 1e9, 2) == reference
        assert count.rest_macs == proj  # nothing else is a contraction


def test_fused_mha_and_sdpa_are_counted(clip_b32):
    """fvcore alone skips open_clip's fused attention under inference_mode; the handles fix it."""
    from fvcore.nn import FlopCountAnalysis

    from tokred.cost.flops import count_macs

    class Encode(nn.Module):
        def __init__(self, clip):
            super().__init__()
            self.clip = clip

        def forward(self, x):
            return self.clip.encode_image(x)

    images = torch.randn(2, 3, 224, 224)
    with torch.inference_mode():
        plain = FlopCountAnalysis(Encode(clip_b32), (images,))
        plain.unsupported_ops_warnings(False)
        plain_total = plain.total()
        ours = count_macs(Encode(clip_b32), (images,))
    assert "aten::_native_multi_head_attention" in plain.unsupported_ops()
    patch = 49 * 3 * 32**2 * 768
    blocks = 12 * (4 * 50 * 768**2 + 2 * 50**2 * 768 + 8 * 50 * 768**2)
    expected = 2 * (patch + blocks + 768 * 512)  # 2 images; + CLS projection
    assert ours.macs == expected
    assert plain_total < 0.7 * ours.macs  # the 35.4-vs-52.9 trap, per image


def test_text_tower_analytic_equals_fvcore(clip_b32):
    """Per caption: 12 blocks at 512 wide (+ the EOT projection), nothing else multiplies."""
    from tokred.cost.flops import count_macs
    from tokred.cost.measure import text_gmacs

    class Text(nn.Module):
        def __init__(self, clip):
            super().__init__()
            self.clip = clip

        def forward(self, tokens):
            return self.clip.encode_text(tokens)

    tokens = torch.randint(1, 1000, (2, 77))
    tokens[:, 9] = 49407  # EOT: the pooled position
    with torch.inference_mode():
        c = count_macs(Text(clip_b32), (tokens,))
    per_caption = 12 * (4 * 77 * 512**2 + 2 * 77**2 * 512 + 8 * 77 * 512**2) + 512 * 512
    assert c.macs == 2 * per_caption and c.unaccounted == {}
    assert text_gmacs(clip_b32, 77) * 1e9 == pytest.approx(per_caption, rel=1e-12)


def test_sdpa_handle_on_a_hand_made_graph():
    from tokred.cost.flops import count_macs

    class Attn(nn.Module):
        def forward(self, q, k, v):
            return nn.functional.scaled_dot_product_attention(q, k, v)

    q, k, v = torch.randn(2, 3, 5, 8), torch.randn(2, 3, 7, 8), torch.randn(2, 3, 7, 4)
    with torch.inference_mode():
        c = count_macs(Attn(), (q, k, v))
    assert c.macs == 2 * 3 * 5 * 7 * (8 + 4)


# ---------------------------------------------------------------- activation memory
def test_activation_bytes_on_hand_made_graph():
    w = nn.Parameter(torch.randn(8, 16))
    x = torch.randn(4, 8, requires_grad=True)
    # mm saves x (for w's grad) and w (excluded); relu saves its output [4, 16]
    assert activation_bytes(lambda: (x @ w).relu().sum(), exclude=[w]) == (4 * 8 + 4 * 16) * 4
    # two views of one storage saved by one op count once
    assert activation_bytes(lambda: (x.view(32) * x.view(4, 8).flatten()).sum()) == 4 * 8 * 4


def test_activation_per_video_removes_batch_independent_tensors():
    w = nn.Parameter(torch.randn(8, 8))

    def forward(b):
        x = torch.randn(b, 8, requires_grad=True)
        merged = w * 2  # a weight-sized tensor saved once per forward, like a folded adapter
        return (x @ merged).sum()

    per_video, fixed = activation_per_video(forward, [w])
    assert per_video == 8 * 4 and fixed == 8 * 8 * 4


def test_activation_memory_follows_the_token_counts(scale):
    """none > tome r=2 > tempme; centerclip B6-3,49 < none (scale model: B/32's schedules)."""
    configs = [("none", {}), ("tome", {"r": 2}), ("tempme", {}), ("centerclip", {"segments": 3})]
    act, tokens = {}, {}
    for name, opts in configs:
        enc = _encoder(scale, name, opts).train()
        trace = enc.trace(12)
        tokens[name] = (sum(trace.attn_tokens()), sum(trace.mlp_tokens()))
        act[name], _ = activation_per_video(
            lambda b, e=enc: e(torch.randn(b, 12, 3, 56, 56)), module_tensors(enc))
    ratios = {n: act[n] / act["none"] for n in act}
    print("activation ratios vs none:", {n: round(r, 3) for n, r in ratios.items()})
    assert act["none"] > act["tome"] > act["tempme"] and act["centerclip"] < act["none"]
    for name in ("tome", "tempme", "centerclip"):
        lo = min(t / n for t, n in zip(tokens[name], tokens["none"]))
        hi = max(t / n for t, n in zip(tokens[name], tokens["none"]))
        # blocks hold memory per token processed; the embedding (same for all) and the merge
        # bookkeeping (sizes, gathered copies) can only pull the ratio up, by a bounded amount
        assert lo - 0.02 <= ratios[name] <= hi + 0.12, (name, lo, hi, ratios[name])


def test_cuda_peak_refuses_cpu():
    with pytest.raises(ValueError, match="CUDA device"):
        cuda_peak_mb({"x": lambda: None}, "cpu")


@pytest.mark.slow
def test_peak_rss_of_training_exceeds_inference():
    job = dict(model="scale-B32", reducer="none", options={}, frames=12, batch=2,
               mode="full", precision="fp32", threads=1)
    infer = peak_rss_mb({**job, "phase": "infer"})
    train = peak_rss_mb({**job, "phase": "train"})
    assert infer["peak_rss_mb"] >= 0 and train["peak_rss_mb"] > infer["peak_rss_mb"]


# ---------------------------------------------------------------- throughput protocol
class FakeClock:
    def __init__(self):
        self.now = 0.0

    def __call__(self):
        return self.now


def test_time_calls_discards_warmup_and_reports_median_and_spread():
    clock = FakeClock()
    durations = iter([100.0, 50.0, 5.0, 1.0, 4.0, 2.0, 3.0])

    def fn():
        clock.now += next(durations)

    t = time_calls(fn, items=6, warmup=2, repeats=5, clock=clock)
    assert t.times == [5.0, 1.0, 4.0, 2.0, 3.0]
    assert t.median == 3.0 and t.per_second == 2.0
    assert t.spread == pytest.approx((4.0 - 2.0) / 2 / 3.0)


class FakeEncoder(nn.Module):
    """Takes ``cost`` fake seconds per video; records the mode it was called in."""

    def __init__(self, clock, cost):
        super().__init__()
        self.clock, self.cost = clock, cost
        self.backbone = SimpleNamespace(spec=SimpleNamespace(image_size=4))
        self.w = nn.Parameter(torch.ones(()))
        self.calls = []

    def forward(self, video):
        self.calls.append((video.shape[0], self.training, torch.is_inference_mode_enabled()))
        self.clock.now += self.cost * video.shape[0]
        return (video.flatten(1)[:, :3] * self.w).float()


def test_inference_throughput_bookkeeping():
    clock = FakeClock()
    enc = FakeEncoder(clock, 0.5).train()
    out = inference_throughput(enc, frames=2, batch_sizes=(1, 4), warmup=1, repeats=3,
                               clock=clock)
    assert {b: t.per_second for b, t in out.items()} == {1: 2.0, 4: 2.0}
    assert all(t.spread == 0.0 and len(t.times) == 3 for t in out.values())
    assert enc.calls == [(1, False, True)] * 4 + [(4, False, True)] * 4
    assert enc.training  # mode restored


def test_interleaved_throughput_gives_per_round_times_of_every_encoder():
    clock = FakeClock()
    a, b = FakeEncoder(clock, 1.0).train(), FakeEncoder(clock, 2.0).eval()
    out = interleaved_throughput({"a": a, "b": b}, 2, (2,), rounds=3, warmup=1, repeats=2,
                                 clock=clock)
    assert out["a"][2].times == [2.0] * 3 and out["b"][2].times == [4.0] * 3  # one per round
    assert out["a"][2].per_second == 1.0 and out["b"][2].per_second == 0.5
    assert PairedTiming(out["a"][2], out["b"][2]).ratios == [0.5] * 3
    assert len(a.calls) == len(b.calls) == 1 + 3 * 2
    assert all(not training and inference for _, training, inference in a.calls)
    assert a.training and not b.training  # modes restored


class Program:
    """Callables whose durations come from lists, on one fake clock that can slow down."""

    def __init__(self, **durations: list[float]):
        self.clock, self.slow, self.log = FakeClock(), 1.0, []
        self.durations = {k: iter(v) for k, v in durations.items()}

    def fn(self, key: str):
        def call():
            self.log.append(key)
            self.clock.now += self.slow * next(self.durations[key])

        return call


def test_paired_timing_reports_median_and_spread_of_per_round_ratios():
    # warm-up (discarded), then 5 rounds; none / reducer per round: 2, 1.5, 3, 2.5, 1
    p = Program(none=[99, 2, 3, 3, 5, 1], red=[99, 1, 2, 1, 2, 1])
    t = paired_timing(p.fn("none"), p.fn("red"), items=4, rounds=5, warmup=1, clock=p.clock)
    assert t.base.times == [2, 3, 3, 5, 1] and t.timing.times == [1, 2, 1, 2, 1]
    assert t.ratios == [2.0, 1.5, 3.0, 2.5, 1.0]
    assert t.speedup == 2.0 and t.spread == "IQR" and t.bounds == (1.5, 2.5)
    # the order alternates: none first in even rounds, the reducer first in odd ones
    assert p.log == ["none", "red"] + ["none", "red", "red", "none"] * 2 + ["none", "red"]
    d = t.to_dict()
    assert (d["speedup"], d["low"], d["high"], d["rounds"], d["items"]) == (2.0, 1.5, 2.5, 5, 4)
    p = Program(a=[1, 4, 6], b=[1, 2, 2])
    few = paired_timing(p.fn("a"), p.fn("b"), items=1, rounds=2, warmup=1, clock=p.clock)
    assert few.spread == "min-max" and few.bounds == (2.0, 3.0) and few.speedup == 2.5


def test_drift_between_rounds_cancels_in_the_ratio():
    """The machine slows down 3x halfway: separate timings would disagree, the pairs do not."""
    p = Program(none=[2.0] * 7, red=[1.0] * 7)
    none, red = p.fn("none"), p.fn("red")

    def red_then_drift():
        red()
        if p.log.count("red") == 4:  # after round 3 of 6 (warm-up included)
            p.slow = 3.0

    t = paired_timing(none, red_then_drift, items=1, rounds=6, warmup=1, clock=p.clock)
    assert t.speedup == 2.0 and t.bounds == (2.0, 2.0)
    assert t.base.times[-1] == 3 * t.base.times[0]  # the clock really slowed down
    # what dividing two separate timings would report: none fast, the reducer slow
    assert t.base.times[0] / t.timing.times[-1] == pytest.approx(2 / 3)


def test_paired_timing_refuses_unpaired_sides():
    with pytest.raises(ValueError, match="same rounds and batch on both sides.*paired_timing"):
        PairedTiming(Timing([1.0, 1.0], 0, 1), Timing([1.0], 0, 1))
    assert PairedTiming.itself(Timing([1.0, 3.0], 0, 2)).ratios == [1.0, 1.0]


def test_paired_throughput_runs_both_on_the_same_batch():
    clock = FakeClock()
    base, enc = FakeEncoder(clock, 1.0), FakeEncoder(clock, 0.25)
    out = paired_throughput(base, enc, frames=2, batch_sizes=(1, 4), rounds=3, warmup=1,
                            clock=clock)
    assert {b: t.speedup for b, t in out.items()} == {1: 4.0, 4: 4.0}
    assert [c[0] for c in base.calls] == [c[0] for c in enc.calls] == [1] * 4 + [4] * 4


def test_train_step_time_trains_and_times():
    clock = FakeClock()
    enc = FakeEncoder(clock, 0.25).eval()
    t = train_step_time(enc, frames=2, batch=2, warmup=1, repeats=2, clock=clock)
    assert t.times == [0.5, 0.5] and t.items == 2
    assert all(training and not inference for _, training, inference in enc.calls)
    assert not torch.equal(enc.w.detach(), torch.ones(()))  # the optimiser stepped
    assert not enc.training


def test_clock_choice():
    import time

    from tokred.cost.measure import clock_fn

    assert clock_fn("cpu") is time.process_time and clock_fn("wall") is time.perf_counter
    with pytest.raises(ValueError, match="on a GPU use clock='wall'"):
        clock_fn("cpu", "cuda")
    with pytest.raises(ValueError, match="clock must be one of"):
        clock_fn("tsc")


def test_autocast_contexts():
    with autocast("cpu", "bf16"):
        y = nn.Linear(4, 4)(torch.randn(2, 4))
    assert y.dtype == torch.bfloat16
    with pytest.raises(ValueError, match="fp16 autocast needs a CUDA device.*bf16"):
        autocast("cpu", "fp16")
    with pytest.raises(ValueError, match="precision must be one of"):
        autocast("cpu", "fp8")


# ---------------------------------------------------------------- records and the command
def test_measure_record_is_consistent():
    rec = measure("scale-B32", "tome", {"r": 2}, 12, batch_sizes=(1,), repeats=1, warmup=0)
    assert rec["gflops"] == pytest.approx(2 * rec["gmacs"])
    assert abs(rec["fvcore_rel_diff"]) < 0.01 and rec["fvcore_unaccounted_ops"] == {}
    assert rec["fvcore_layer_gmacs"] == pytest.approx(rec["gmacs"], rel=1e-12)
    assert rec["attn_tokens"][:3] == [600, 576, 552] and rec["tokens_out"] == 12 * 26
    assert rec["reducer_work_gmacs"] > 0 and rec["text_gmacs_per_caption"] > 0
    assert rec["activation_mb_per_video_lora"] < rec["activation_mb_per_video_full"]
    assert rec["trainable_params_lora"] < rec["trainable_params"]
    assert set(rec["videos_per_s"]) == {"1"} and rec["env"]["threads"] >= 1
    json.dumps(rec)


def test_measure_command_writes_jsonl_and_table(tmp_path, capsys):
    out = tmp_path / "cost.jsonl"
    assert main(["--model", "scale-B32", "--reducer", "none", "tome:r=3", "--batch-size", "1",
                 "--repeats", "1", "--warmup", "0", "--rounds", "1", "--skip-memory",
                 "--out", str(out)]) == 0
    rows = [json.loads(line) for line in out.read_text().splitlines()]
    assert [(r["reducer"], r["options"]) for r in rows] == [("none", {}), ("tome", {"r": 3})]
    text = capsys.readouterr().out
    assert "speedup" in text and "tome:r=3" in text


def test_paper_reducers_lists_every_registered_reducer():
    specs = reducer_specs(["paper"], "ViT-B-16")
    assert {s.name for s in specs} == {n for n in list_reducers()
                                       if n == "none" or paper_presets(n, "ViT-B-16")}
    assert any(s.name == "tempme" and s.options["r"] == 10 for s in specs)
    timm_specs = reducer_specs(["paper"], "timm:vit_base_patch16_224")
    assert [(s.name, s.options) for s in timm_specs] == [("none", {}), ("tome", {"r": 16})]

