"""Fixes from a code review of experiments/ and methods/: the provenance section's base model,
config values checked with their line (reducer entries' options/sweep, cost clock/memory/fvcore),
the sweep log's loggers and CenterCLIP's re-raised clustering errors."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
from tokred_experiments.config import ConfigError, load_config


def write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def line_of(text: str, needle: str) -> int:
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


# 1: provenance `weights: base` is the quality section's base model ---------------------------

QUALITY = """\
name: q
quality:
  model: scale-B32
  frames: 8
  data: {kind: synth, synth: {train_videos: 16, test_videos: 12, frames: 8}}
  base: {mode: scratch, max_steps: 3, batch_size: 8, train_frames: 2, frame_pool: 8}
  modes: [training_free]
  reducers:
    - none
provenance:
  model: scale-B32
  frames: 12
  weights: base
  reducers:
    - none
"""


def test_provenance_on_the_base_model_uses_the_quality_sections_base(tmp_path):
    """Other frames than the quality section's: the base model the quality trials use (trained
    at the quality section's frames), not a second one trained for the provenance frames."""
    cfg = load_config(write(tmp_path, QUALITY))
    quality = [t for t in cfg.trials if t.kind == "quality"]
    prov = [t for t in cfg.trials if t.kind == "provenance"]
    assert prov and prov[0].settings["frames"] == 12  # the pictures keep their own frames
    q = quality[0].settings  # the key quality.quality_trial builds (seed 0: not written)
    assert prov[0].settings["base_of"] == {"model": "scale-B32", "weights": None, "frames": 8,
                                           "data": q["data"], "base": q["base"]}


def test_provenance_on_the_base_model_refuses_another_model(tmp_path):
    text = QUALITY.replace("provenance:\n  model: scale-B32", "provenance:\n  model: ViT-B-32")
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    msg = str(err.value)
    assert f"c.yaml:{line_of(text, 'model: ViT-B-32')}:" in msg
    assert "scale-B32" in msg and "ViT-B-32" in msg and "weights: random" in msg


# 5, 6: reducer entries and cost settings checked with their line -----------------------------

COST = """\
name: t
cost:
  frames: 12
  batch_sizes: [1]
  repeats: 1
  warmup: 0
  memory: false
  fvcore: false
  runs:
    - backbone: scale-B32
      reducers:
        - none
        - {name: tome, sweep: {r: [2, 3]}}
"""


@pytest.mark.parametrize("entry, needle, expect", [
    ("{name: tome, options: [2]}", "options: [2]", "'options' of a reducer entry must be a mapping"),
    ("{name: tome, options: 2}", "options: 2", "'options' of a reducer entry must be a mapping"),
    ("{name: tome, sweep: [r, 2]}", "sweep: [r", "'sweep' of a reducer entry must be a mapping"),
])
def test_reducer_options_and_sweep_must_be_mappings(tmp_path, entry, needle, expect):
    text = COST.replace("{name: tome, sweep: {r: [2, 3]}}", entry)
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    assert f"c.yaml:{line_of(text, needle)}:" in str(err.value)
    assert expect in str(err.value)


@pytest.mark.parametrize("old, new, expect", [
    ("  warmup: 0\n", "  warmup: 0\n  clock: wal\n", "clock must be one of ['cpu', 'wall']"),
    ("  memory: false", "  memory: no_thanks", "memory must be true or false"),
    ("  fvcore: false", "  fvcore: 1", "fvcore must be true or false"),
    ("    - backbone: scale-B32\n", "    - backbone: scale-B32\n      memory: 'false'\n",
     "memory must be true or false"),
])
def test_cost_clock_memory_and_fvcore_are_checked(tmp_path, old, new, expect):
    text = COST.replace(old, new)
    assert text != COST
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    needle = new.strip().splitlines()[-1].strip()
    assert f"c.yaml:{line_of(text, needle)}:" in str(err.value)
    assert expect in str(err.value)


def test_cost_clock_is_kept_when_valid(tmp_path):
    text = COST.replace("  warmup: 0\n", "  warmup: 0\n  clock: cpu\n")
    assert {t.settings["clock"] for t in load_config(write(tmp_path, text)).trials} == {"cpu"}
    assert all("clock" not in t.settings for t in load_config(write(tmp_path, COST)).trials)


# 4: the sweep log has the reducers' warnings --------------------------------------------------

def test_sweep_log_has_the_methods_loggers(tmp_path):
    import logging

    from tokred_experiments.runlog import LOG_NAME, sweep_log

    with sweep_log(tmp_path, {"command": "tokred sweep"}):
        logging.getLogger("tokred_methods.centerclip").warning("empty spectral graph")
        logging.getLogger("tokred_experiments.sweep").info("trial done")
    text = (tmp_path / LOG_NAME).read_text()
    assert "tokred_methods.centerclip: empty spectral graph" in text
    assert "tokred_experiments.sweep: trial done" in text


# 16: CenterCLIP re-raises a clustering error that names no video as it was --------------------

def test_centerclip_reraises_other_errors_without_making_them_their_own_cause(monkeypatch):
    import torch
    from tokred_methods.centerclip import CenterCLIP

    from tokred import TokenState
    from tokred.spec import BackboneSpec

    red = CenterCLIP(segments=4, k=10)
    red.setup(BackboneSpec("ViT-B-32", 768, 12, 12, 3072, 32, 224, 7, frames=12))
    boom = ValueError("clustering failed")

    def fail(*args, **kwargs):
        raise boom

    monkeypatch.setattr(red, "select", fail)
    s = TokenState.start(torch.randn(12, 50, 16), 12)
    with pytest.raises(ValueError) as err:
        red.pre_block(s, 6)
    assert err.value is boom
    assert err.value.__cause__ is None


# 14: a sweep process keeps its decoded test videos when it builds another backbone ----------

def test_building_a_backbone_keeps_the_decoded_videos(tmp_path):
    from tokred_experiments.trials import Context, _backbone

    ctx = Context(out=tmp_path)
    ctx.videos["test split"] = "decoded"
    first = _backbone("scale-B32", ctx)
    assert _backbone("scale-B32", ctx) is first  # built once
    assert ctx.videos == {"test split": "decoded"} and list(ctx.models) == ["scale-B32"]


# 15: the runner's finished-trial check reads only what was written since ---------------------

def ok(i: str) -> dict:
    return {"id": i, "kind": "cost", "status": "ok", "metrics": {},
            "settings": {"backbone": "scale-B32", "frames": 12, "reducer": "none",
                         "options": {}}}


def test_finished_trials_reads_appended_records_torn_lines_and_replaced_files(tmp_path):
    from tokred_experiments.records import FinishedTrials, append_record, merge_files

    done = FinishedTrials(tmp_path)
    assert done.refresh() == set()
    append_record(tmp_path / "results.jsonl", ok("a"))
    append_record(tmp_path / "results.jsonl", {**ok("b"), "status": "error"})
    assert done.refresh() == {"a"}
    with open(tmp_path / "results.jsonl", "ab") as f:  # a record torn by a kill
        f.write(b'{"id": "torn", "status": "ok"')
    assert done.refresh() == {"a"}
    append_record(tmp_path / "results.jsonl", ok("b"))  # cuts the torn tail first
    append_record(tmp_path / "results.shard-0-of-2.jsonl", ok("c"))  # a file that appeared
    assert done.refresh() == {"a", "b", "c"}
    other = tmp_path / "elsewhere"
    append_record(other / "results.jsonl", ok("d"))
    merge_files([tmp_path / "results.jsonl", other], tmp_path / "results.jsonl")  # replaced
    assert done.refresh() == {"a", "b", "c", "d"}


def test_a_trial_finished_by_another_process_meanwhile_is_skipped(tmp_path, monkeypatch):
    from tokred_experiments import sweep, trials
    from tokred_experiments.records import append_record, read_records

    cfg = load_config(write(tmp_path, COST))
    out, ran = tmp_path / "out", []
    last = cfg.trials[-1]

    def cost_trial(s, ctx):  # the first trial: another process finishes the last one meanwhile
        if not ran:
            append_record(out / "results.other.jsonl", {**ok(last.id), "settings": last.settings})
        ran.append(s)
        return {"gmacs": 1.0, "tokens_out": 1}

    monkeypatch.setattr(trials, "cost_trial", cost_trial)
    assert sweep.run_sweep(cfg, out, progress=False) == {"ok": 2, "error": 0}
    assert last.settings not in ran and len(ran) == 2
    assert last.id not in {r["id"] for r in read_records(out / "results.jsonl")}
