"""``tokred measure``: reducer specs, the baseline, the one cost record, site timing, train step."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch

from tokred import create_reducer
from tokred.cli.measure import main, table
from tokred.cost import compare, site_timing
from tokred.cost.build import build
from tokred.cost.measure import measure
from tokred.cost.record import (
    KEYS,
    append_jsonl,
    check_keys,
    is_suspect,
    read_jsonl,
    speed_fields,
)
from tokred.cost.sites import SiteTimer
from tokred.cost.specs import ReducerSpec, parse_reducer, reducer_specs
from tokred.cost.timing import PairedTiming, Timing
from tokred.encoder import VideoEncoder
from tokred.models import TIMM_PREFIX, create_backbone

FAST = dict(batch_sizes=(1,), repeats=1, warmup=0, fvcore=False, activation=False)


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Timing on a shared 2-core machine: one thread avoids OpenMP barrier stalls."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# ---------------------------------------------------------------- specs
def test_specs_resolve_presets_and_options_over_them():
    assert parse_reducer("tome:r=2,prop_attn=false") == ("tome", {"r": 2, "prop_attn": False})
    assert parse_reducer("centerclip.B6-3-49") == ("centerclip", {"layer": 6, "segments": 3, "k": 49})
    name, opts = parse_reducer("centerclip.spectral-B6-4-49:k=30")
    assert (name, opts["k"], opts["algorithm"]) == ("centerclip", 30, "spectral")
    assert parse_reducer("tempme.r2:merge_layers=7-8-9")[1]["merge_layers"] == "7-8-9"


def test_paper_specs_come_from_the_presets():
    specs = reducer_specs(["centerclip.paper"], "ViT-B-32")
    assert [s.label for s in specs] == ["none", "centerclip.B6-4-49", "centerclip.B6-3-49",
                                        "centerclip.spectral-B6-4-49", "centerclip.spectral-B6-3-49"]
    over = reducer_specs(["tempme.paper:cross=0.5"], "ViT-B-16")
    assert [(s.label, s.options["r"], s.options["cross"]) for s in over[1:]] == [
        ("tempme.r2", 2, 0.5), ("tempme.r10", 10, 0.5)]
    timm = reducer_specs(["paper"], "timm:vit_base_patch16_224")
    assert timm == [ReducerSpec("none", "none", {}), ReducerSpec("tome.r16", "tome", {"r": 16})]
    every = {s.name for s in reducer_specs(["paper"], "ViT-B-32")}
    assert every == {"none", "tome", "centerclip", "pooling", "sparse", "tempme"}


def test_spec_errors_name_the_fix():
    with pytest.raises(KeyError, match=r"no preset 'B6-3'.*Did you mean.*Presets: B6-4-49, "):
        parse_reducer("centerclip.B6-3")
    with pytest.raises(KeyError, match=r"no paper setting of 'centerclip' on 'scale-B32'.*"
                                       r"ViT-B-32, ViT-B-16.*B6-4-49"):
        reducer_specs(["centerclip.paper"], "scale-B32")
    with pytest.raises(ValueError, match="must be key=value"):
        parse_reducer("tome:r")
    with pytest.raises(KeyError, match="unknown reducer 'tomee'.*Did you mean 'tome'"):
        parse_reducer("tomee.r2")


def test_the_baseline_is_added_once_and_first():
    assert reducer_specs(["tome.r2"], "ViT-B-32") == [
        ReducerSpec("none", "none", {}), ReducerSpec("tome.r2", "tome", {"r": 2})]
    specs = reducer_specs(["tome:r=3", "none"], "ViT-B-32")
    assert [s.label for s in specs] == ["tome:r=3", "none"]


def test_measure_rejects_a_bad_spec_with_the_available_presets(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--model", "scale-B32", "--reducer", "tome.r99"])
    assert exc.value.code == 2 and "Presets: r2, r3" in capsys.readouterr().err


# ---------------------------------------------------------------- the record
def test_one_record_type_round_trips_json(tmp_path):
    rec = measure("scale-B32", "tempme", {"merge_layers": (8, 9, 10)}, 12, **FAST)
    assert set(rec) <= KEYS and rec["options"]["merge_layers"] == [8, 9, 10]
    assert rec["preset"] == "r2"  # the defaults are TempMe's paper setting
    assert json.loads(json.dumps(rec)) == rec
    path = tmp_path / "cost.jsonl"
    append_jsonl(path, [rec, rec])
    assert read_jsonl(path) == [rec, rec]
    with pytest.raises(KeyError, match="not cost-record keys: speed_up.*CostRecord"):
        check_keys({**rec, "speed_up": 1.0})


def _paired(base_s: list[float], times_s: list[float], items: int) -> PairedTiming:
    return PairedTiming(Timing(base_s, 0, items), Timing(times_s, 0, items))


def test_compare_takes_the_paired_ratios_at_the_largest_batch():
    base = {"gmacs": 50.0, "train_step_s": 2.0, "activation_mb_per_video_full": 100.0}
    rec = {"gmacs": 25.0, "train_step_s": 1.0, "activation_mb_per_video_full": 60.0,
           **speed_fields({1: _paired([1.0] * 3, [0.9] * 3, 1),
                           4: _paired([3.0, 3.0, 6.0], [2.0, 2.0, 1.0], 4)})}
    got = compare(rec, base)
    assert got == pytest.approx({
        "ideal_speedup": 2.0, "speedup": 1.5, "speedup_low": 1.5, "speedup_high": 6.0,
        "speedup_spread": "min-max", "speedup_rounds": 3, "speedup_batch": 4, "ratio": 0.75,
        "speedup_suspect": False, "train_step_ratio": 0.5, "memory_ratio": 0.6})
    # the largest batch's own rounds, not a ratio of the two records' videos/s
    assert rec["videos_per_s"]["4"] == pytest.approx(2.0) and "videos_per_s" not in base
    assert compare({"gmacs": 25.0}, base) == {"ideal_speedup": 2.0}


@pytest.mark.parametrize("speedup, ideal, suspect", [
    (1.0, 1.0, False), (1.1, 1.0, False), (1.1001, 1.0, True), (7.72, 1.48, True),
    (4.64, 1.98, True), (0.97, 1.34, False), (1.62, 1.48, False), (1.63, 1.48, True)])
def test_a_speedup_above_1_1_x_its_ideal_is_suspect(speedup, ideal, suspect):
    assert is_suspect(speedup, ideal) is suspect
    rec = {"gmacs": 52.9 / ideal, **speed_fields({2: _paired([speedup] * 5, [1.0] * 5, 2)})}
    assert compare(rec, {"gmacs": 52.9})["speedup_suspect"] is suspect


def test_measure_prints_paired_speedups_against_none(tmp_path, capsys):
    out = tmp_path / "cost.jsonl"
    assert main(["--model", "scale-B32", "--reducer", "tome.r2", "--batch-size", "1", "2",
                 "--repeats", "1", "--warmup", "1", "--rounds", "2", "--skip-memory",
                 "--skip-fvcore", "--out", str(out)]) == 0
    none, tome = read_jsonl(out)
    for rec in (none, tome):
        assert set(rec["paired_timings"]) == {"1", "2"} and rec["speedup_batch"] == 2
        assert rec["speedup_rounds"] == 2 and rec["speedup_spread"] == "min-max"
        p = rec["paired_timings"]["2"]
        assert p["base_s"] == none["paired_timings"]["2"]["times_s"]  # the same rounds
        assert p["ratios"] == pytest.approx([b / t for b, t in zip(p["base_s"], p["times_s"])])
        assert rec["speedup_low"] <= rec["speedup"] <= rec["speedup_high"]
    assert (none["speedup"], none["speedup_low"], none["speedup_high"]) == (1.0, 1.0, 1.0)
    assert tome["ideal_speedup"] == pytest.approx(none["gmacs"] / tome["gmacs"])
    text = capsys.readouterr().out
    line = next(row for row in text.splitlines() if " tome.r2 " in row)
    cell = (f"{tome['speedup']:.2f}x [{tome['speedup_low']:.2f}, {tome['speedup_high']:.2f}]"
            + (" SUSPECT" if tome["speedup_suspect"] else ""))
    assert cell in line and "speedup [low, high]" in text and "min-max of the per-round" in text


def test_table_flags_a_suspect_speedup():
    rec = {"model": "m", "gmacs": 1.0, "tokens_out": 5, "speedup": 4.64, "speedup_low": 4.5,
           "speedup_high": 4.7, "speedup_rounds": 3, "ideal_speedup": 1.98,
           "speedup_suspect": True, "speedup_spread": "min-max"}
    assert "4.64x [4.50, 4.70] SUSPECT" in table([("tome.r4", rec)], [4])


def test_table_leaves_out_what_was_not_measured():
    recs = [("none", {"model": "m", "gmacs": 2.0, "tokens_out": 10, "reducer_work_gmacs": 0.0}),
            ("tome.r2", {"model": "m", "gmacs": 1.0, "tokens_out": 5, "reducer_work_gmacs": 0.1,
                         "site_share": 0.25})]
    text = table(recs, [4])
    head = text.splitlines()[0]
    assert "site %" in head and "25.0%" in text
    assert "fvcore" not in head and "train s" not in head and "RSS" not in head


# ---------------------------------------------------------------- site timing
@pytest.mark.parametrize("name, opts, sites", [
    ("tome", {"r": 2}, {f"post_attn@{layer}" for layer in range(12)}),
    ("centerclip", {"segments": 3}, {"pre_block@6"}),
])
def test_site_share_is_a_fraction_of_the_forward(name, opts, sites):
    t = site_timing(build("scale-B32", name, opts).encoder, 12, batch=1, warmup=1, repeats=2)
    assert set(t.inputs) == sites and set(t.per_video()) == sites
    assert 0 < t.share < 1 and len(t.forward.times) == 2


def test_site_timer_changes_nothing_but_the_clock(scale):
    reducer = create_reducer("tempme")
    enc = VideoEncoder(scale, reducer, 12).eval()
    timed = VideoEncoder(scale, SiteTimer(reducer), 12).eval()
    video = torch.randn(2, 12, 3, 56, 56)
    with torch.inference_mode():
        assert torch.equal(enc(video), timed(video))
    assert timed.trace().attn_tokens() == enc.trace().attn_tokens()
    assert timed.reducer.prop_attn and timed.reducer.work_macs(enc.trace()) > 0


# ---------------------------------------------------------------- training step
def test_lora_train_step_times_and_memory_for_none_and_tempme():
    fast = {**FAST, "activation": True}
    base = measure("scale-B32", "none", {}, 12, train_step="lora", **fast)
    rec = measure("scale-B32", "tempme", {}, 12, train_step="lora", **fast)
    rec.update(compare(rec, base))
    for r in (base, rec):
        assert r["train_step_mode"] == "lora" and r["train_step_s"] > 0 and r["train_batch"] == 2
        assert 0 < r["activation_mb_per_video_lora"] < r["activation_mb_per_video_full"]
    assert rec["trainable_params_lora"] - base["trainable_params_lora"] == 128 * (12 + 6 + 3)
    assert rec["memory_ratio"] == pytest.approx(
        rec["activation_mb_per_video_lora"] / base["activation_mb_per_video_lora"])
    assert rec["train_step_ratio"] == pytest.approx(rec["train_step_s"] / base["train_step_s"])
    with pytest.raises(ValueError, match="train_step must be one of"):
        measure("scale-B32", "none", {}, 12, train_step="LoRA", **FAST)


# ---------------------------------------------------------------- command and factory
def test_help_shows_defaults_and_choices(capsys):
    with pytest.raises(SystemExit) as exc:
        main(["--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert exc.value.code == 0
    for part in ("(default: 3)", "(default: auto)", "{full,lora}", "{fp32,bf16,fp16}",
                 "(default: ['tome.r2'])", "(default: [1, 4])", "{cpu,wall}"):
        assert part in text, part


def test_create_backbone_parses_timm_names():
    pytest.importorskip("timm")
    b = create_backbone(f"{TIMM_PREFIX}vit_tiny_patch16_224")
    assert b.adapter.spec.name == "timm:vit_tiny_patch16_224" and b.adapter.model is b.host
    with pytest.raises(ValueError, match="timm ViTs are GELU"):
        create_backbone(f"{TIMM_PREFIX}vit_tiny_patch16_224", quick_gelu=True)
    with pytest.raises(ValueError, match="random weights here"):
        create_backbone(f"{TIMM_PREFIX}vit_tiny_patch16_224", "openai")


def test_memory_does_not_import_measure():
    code = "import sys, tokred.cost.memory; print('tokred.cost.measure' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
