"""Sweep runner: config validation with line numbers, expansion, ids, shards, records, resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from tokred_experiments import sweep
from tokred_experiments.cache import cached_step, step_result
from tokred_experiments.config import ConfigError, load_config
from tokred_experiments.records import (
    append_record,
    load_results,
    merge_files,
    read_records,
    trial_id,
)

ROOT = Path(__file__).resolve().parents[1]

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
        - {name: tome, sweep: {r: [2, 3, 4]}}
"""


def write(tmp_path: Path, text: str, name: str = "c.yaml") -> Path:
    p = tmp_path / name
    p.write_text(textwrap.dedent(text))
    return p


def line_of(text: str, needle: str) -> int:
    """1-based line of the first line containing ``needle``."""
    return next(i for i, line in enumerate(text.splitlines(), 1) if needle in line)


@pytest.mark.parametrize("bad, needle, expect", [
    ("{name: tomee, sweep: {r: [2, 3, 4]}}", "tomee", ["unknown reducer 'tomee'", "'tome'"]),
    ("{name: tome, sweep: {rr: [2, 3]}}", "rr:", ["unknown option 'rr'", "'r'"]),
    ("{name: tome, sweep: {r: 2}}", "r: 2}", ["non-empty list", "r: [2]"]),
    ("{name: centerclip, options: {segments: 5}}", "segments: 5",
     ["cannot run on scale-B32 with 12 frames", "change the option value"]),
])
def test_reducer_errors_name_the_line_and_fix(tmp_path, bad, needle, expect):
    text = COST.replace("{name: tome, sweep: {r: [2, 3, 4]}}", bad)
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    msg = str(err.value)
    assert f"c.yaml:{line_of(text, needle)}:" in msg
    for part in expect:
        assert part in msg


@pytest.mark.parametrize("old, new, expect", [
    ("  batch_sizes: [1]", "  batch_size: [1]", "did you mean 'batch_sizes'"),
    ("      reducers:", "      reducer:", "did you mean 'reducers'"),
    ("cost:", "costs:", "did you mean 'cost'"),
])
def test_typo_keys_are_reported_with_line(tmp_path, old, new, expect):
    text = COST.replace(old, new)
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    key = new.strip().split(":")[0]
    assert f"c.yaml:{line_of(text, new.strip())}: unknown key '{key}'" in str(err.value)
    assert expect in str(err.value)


QUALITY = """\
name: q
quality:
  model: scale-B32
  frames: 8
  data: {kind: synth, synth: {train_videos: 16, test_videos: 12, frames: 8}}
  base: {mode: scratch, max_steps: 3, batch_size: 8, train_frames: 2, frame_pool: 8}
  finetune: {mode: full, max_steps: 1, batch_size: 8}
  reducers:
    - none
    - {name: tome, options: {r: 2}}
"""


@pytest.mark.parametrize("old, new, needle, expect", [
    ("frame_pool: 8}", "frame_pool: 1}", "base:", "frame_pool=1 must be at least train_frames"),
    ("mode: scratch,", "mode: scrach,", "base:", "mode must be one of"),
    ("batch_size: 8}\n  reducers", "batch_size: 8, patch_dropout: 0.5}\n  reducers",
     "{name: tome", "needs reducer 'none'"),
])
def test_bad_recipe_values_stop_before_any_trial(tmp_path, old, new, needle, expect):
    text = QUALITY.replace(old, new)
    assert text != QUALITY
    with pytest.raises(ConfigError) as err:
        load_config(write(tmp_path, text))
    assert f"c.yaml:{line_of(text, needle)}:" in str(err.value)
    assert expect in str(err.value)
    assert len(load_config(write(tmp_path, QUALITY, "ok.yaml")).trials) == 4


def test_missing_msrvtt_data_stops_at_once_but_cost_only_runs(tmp_path, monkeypatch):
    monkeypatch.setenv("MSRVTT_ROOT", str(tmp_path / "nowhere"))
    path = ROOT / "experiments/configs/msrvtt_vitb32.yaml"
    with pytest.raises(ConfigError, match="nowhere.*does not exist.*--cost-only"):
        load_config(path)
    cfg = load_config(path, cost_only=True)
    assert cfg.trials and {t.kind for t in cfg.trials} <= {"cost", "provenance"}
    monkeypatch.setenv("MSRVTT_ROOT", str(tmp_path))  # data present, weights missing
    monkeypatch.setenv("CLIP_WEIGHTS", str(tmp_path / "ViT-B-32.pt"))
    with pytest.raises(ConfigError, match=r"msrvtt_vitb32.yaml:\d+: pretrained weights .*ViT-B-32.pt"
                                          r".* not found.*CLIP_WEIGHTS"):
        load_config(path)


def test_expansion_ids_and_shards(tmp_path):
    cfg = load_config(write(tmp_path, COST))
    opts = [(t.settings["reducer"], t.settings["options"]) for t in cfg.trials]
    assert opts == [("none", {}), ("tome", {"r": 2}), ("tome", {"r": 3}), ("tome", {"r": 4})]
    again = load_config(write(tmp_path, COST, "d.yaml"))
    assert [t.id for t in cfg.trials] == [t.id for t in again.trials]  # stable across loads
    assert all(t.id == trial_id(t.settings) for t in cfg.trials)
    changed = load_config(write(tmp_path, COST.replace("repeats: 1", "repeats: 2"), "e.yaml"))
    assert not {t.id for t in cfg.trials} & {t.id for t in changed.trials}
    shards = [[t.id for t in cfg.trials if sweep.in_shard(t, (i, 3))] for i in range(3)]
    assert sorted(sum(shards, [])) == sorted(t.id for t in cfg.trials)  # a partition


def test_torn_last_line_is_ignored_and_never_merged(tmp_path):
    path = tmp_path / "results.jsonl"
    append_record(path, {"id": "a", "status": "ok"})
    with open(path, "ab") as f:
        f.write(b'{"id": "b", "status": "o')  # a kill in the middle of a write
    assert [r["id"] for r in read_records(path)] == ["a"]
    append_record(path, {"id": "c", "status": "ok"})
    lines = path.read_text().splitlines()
    assert [json.loads(x)["id"] for x in lines] == ["a", "c"]


def test_latest_ok_wins_and_merge(tmp_path):
    a, b = tmp_path / "a.jsonl", tmp_path / "b.jsonl"
    append_record(a, {"id": "x", "status": "error"})
    append_record(a, {"id": "y", "status": "ok", "v": 1})
    append_record(b, {"id": "x", "status": "ok"})
    append_record(b, {"id": "y", "status": "error"})
    merged = load_results([a, b])
    assert {k: r["status"] for k, r in merged.items()} == {"x": "ok", "y": "ok"}
    assert merge_files([a, b], tmp_path / "m.jsonl") == 2
    assert sorted(r["id"] for r in read_records(tmp_path / "m.jsonl")) == ["x", "y"]


def test_cached_step_builds_once_and_survives_failure(tmp_path):
    calls = []

    def build(d: Path) -> int:
        calls.append(d)
        (d / "f.txt").write_text("x")
        return 7

    def broken(d: Path) -> int:
        raise RuntimeError("killed")

    with pytest.raises(RuntimeError):
        cached_step(tmp_path, "data", {"k": 1}, broken)
    first = cached_step(tmp_path, "data", {"k": 1}, build)
    second = cached_step(tmp_path, "data", {"k": 1}, build)
    assert first == second and len(calls) == 1 and step_result(first) == 7
    assert (first / "f.txt").read_text() == "x"


def test_failing_trial_is_recorded_and_retried(tmp_path, monkeypatch):
    from tokred_experiments import trials

    cfg = load_config(write(tmp_path, COST))
    real = trials.cost_trial
    fail_id = cfg.trials[2].id

    def flaky(s, ctx):
        if trial_id({"kind": "cost", **s}) == fail_id:
            raise ValueError("boom")
        return {"gmacs": 1.0}

    monkeypatch.setattr(trials, "cost_trial", flaky)
    assert sweep.run_sweep(cfg, tmp_path / "out", progress=False) == {"ok": 3, "error": 1}
    bad = load_results([tmp_path / "out"])[fail_id]
    assert bad["status"] == "error" and "ValueError: boom" in bad["error"]
    assert "boom" in bad["traceback"]
    monkeypatch.setattr(trials, "cost_trial", lambda s, ctx: {"gmacs": 2.0})
    assert sweep.run_sweep(cfg, tmp_path / "out", progress=False) == {"ok": 1, "error": 0}
    assert load_results([tmp_path / "out"])[fail_id]["status"] == "ok"
    assert real is not trials.cost_trial


@pytest.mark.slow
def test_kill_mid_trial_then_resume_runs_every_trial_once(tmp_path):
    cfg = write(tmp_path, COST.replace("repeats: 1", "repeats: 3"))
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "tokred_experiments.sweep", "--config", str(cfg), "--out", str(out),
           "--no-report", "--no-progress"]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.Popen(cmd, cwd=ROOT, env=env, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    results = out / "results.jsonl"
    deadline = time.time() + 120
    while time.time() < deadline and not (results.exists() and results.read_bytes().count(b"\n")):
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    done_before = len(read_records(results))
    assert 1 <= done_before < 4, "the kill should land while trials remain"
    subprocess.run(cmd, cwd=ROOT, env=env, check=True, capture_output=True)
    ids = [r["id"] for r in read_records(results)]
    expected = {t.id for t in load_config(cfg).trials}
    assert sorted(ids) == sorted(expected)  # every trial exactly once
    assert all(r["status"] == "ok" for r in read_records(results))


@pytest.mark.slow
def test_smoke_config_end_to_end(tmp_path):
    """config -> trials -> results -> tables -> figures, within the smoke budget."""
    out = tmp_path / "smoke"
    t0 = time.perf_counter()
    rc = sweep.main(["--config", str(ROOT / "experiments/configs/smoke.yaml"), "--out", str(out),
                     "--no-progress"])
    took = time.perf_counter() - t0
    assert rc == 0
    records = read_records(out / "results.jsonl")
    cfg = load_config(ROOT / "experiments/configs/smoke.yaml")
    assert sorted(r["id"] for r in records) == sorted(t.id for t in cfg.trials)
    assert {r["kind"] for r in records} == {"cost", "quality", "provenance"}
    report = (out / "report" / "report.md").read_text()
    assert "SYNTHETIC" in report and "random weights" in report
    for png in ("rsum_vs_gmacs.png", "memory.png", "tokens_per_layer.png",
                "token_provenance.png", "speed_vs_gmacs.png", "rsum_vs_speed.png"):
        data = (out / "report" / png).read_bytes()
        assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000, png
        assert f"]({png})" in report
    for table in ("cost.csv", "quality.csv"):
        assert len((out / "report" / table).read_text().splitlines()) >= 3
    print(f"smoke sweep: {took:.0f} s")


FIXTURES = ROOT / "tests" / "fixtures"


def msrvtt_root(tmp_path: Path) -> Path:
    """An MSR-VTT (CLIP4Clip layout) root: the fixture annotation files plus an (empty) video
    file for every video of the test and train splits."""
    import shutil

    from tokred.data import load_split

    root = tmp_path / "msrvtt"
    shutil.copytree(FIXTURES / "msrvtt", root)
    (root / "videos").mkdir()
    for split in ("test", "train"):
        for v in load_split("msrvtt", root, split).videos:
            v.path.write_bytes(b"")
    return root


@pytest.fixture
def msrvtt_env(tmp_path, monkeypatch):
    """MSRVTT_ROOT and CLIP_WEIGHTS pointing at a complete tmp layout."""
    root = msrvtt_root(tmp_path)
    weights = tmp_path / "ViT-B-32.pt"
    weights.write_bytes(b"not really weights")
    monkeypatch.setenv("MSRVTT_ROOT", str(root))
    monkeypatch.setenv("CLIP_WEIGHTS", str(weights))
    return root


@pytest.mark.parametrize("config", ["msrvtt_vitb32.yaml", "msrvtt_vitb16.yaml"])
def test_fp16_recipe_needs_cuda_at_load_time(msrvtt_env, monkeypatch, config):
    """The shipped MSR-VTT recipes say fp16: valid on a CUDA machine, a ConfigError naming the
    precision line and the fix on a CPU-only one (before any trial)."""
    import torch

    path = ROOT / "experiments/configs" / config
    text = path.read_text()
    assert "precision: fp16" in text  # the GPU recipe is kept as published
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    cfg = load_config(path)
    assert any(t.settings.get("mode") == "finetuned" for t in cfg.trials)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert f"{config}:{line_of(text, 'precision: fp16')}: precision: fp16 needs CUDA" in msg
    assert "torch.cuda.is_available() is False" in msg
    assert "use precision: bf16 or fp32 on CPU, or run on a CUDA machine" in msg
    assert len(load_config(path, cost_only=True).trials)  # the cost part still runs
    # a report of a GPU run, written on a CPU machine, still selects the config's trials
    assert [t.id for t in load_config(path, preflight=False).trials] == [t.id for t in cfg.trials]


@pytest.mark.parametrize("old, new, needle", [
    ("batch_size: 8, train_frames", "batch_size: 8, precision: fp16, train_frames", "base:"),
    ("finetune: {mode: full,", "finetune: {mode: full, precision: fp16,", "finetune:"),
    ("    - {name: tome, options: {r: 2}}",
     "    - {name: tome, options: {r: 2}, finetune: {precision: fp16}}", "{name: tome"),
    ("finetune: {mode: full,", "finetune: {mode: full, device: cuda,", "finetune:"),
])
def test_recipe_precision_checked_where_it_is_set(tmp_path, monkeypatch, old, new, needle):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    text = QUALITY.replace(old, new)
    assert text != QUALITY
    with pytest.raises(ConfigError, match="CUDA") as err:
        load_config(write(tmp_path, text))
    assert f"c.yaml:{line_of(text, needle)}:" in str(err.value)
    bf16 = text.replace("precision: fp16", "precision: bf16").replace("device: cuda", "device: cpu")
    assert len(load_config(write(tmp_path, bf16, "ok.yaml")).trials) == 4


def test_missing_video_stops_before_any_trial(msrvtt_env, monkeypatch, tmp_path):
    """A video of the evaluated split missing: ConfigError naming the file, before any trial
    (also with --shard), instead of per trial after the whole cost section."""
    import torch
    from tokred_experiments import trials

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    path = ROOT / "experiments/configs/msrvtt_vitb32.yaml"
    assert load_config(path).trials  # the complete layout passes
    gone = msrvtt_env / "videos" / "video9771.mp4"
    gone.unlink()
    with pytest.raises(ConfigError) as err:
        load_config(path)
    msg = str(err.value)
    assert f"msrvtt_vitb32.yaml:{line_of(path.read_text(), 'root: ${MSRVTT_ROOT')}:" in msg
    assert str(gone) in msg and "1 of the 5 videos of the MSR-VTT test split are missing" in msg
    assert "--cost-only" in msg
    ran = []
    monkeypatch.setattr(trials, "run_trial", lambda t, ctx: ran.append(t) or {})
    for shard in ([], ["--shard", "1/2"]):
        out = tmp_path / f"out{len(shard)}"
        assert sweep.main(["--config", str(path), "--out", str(out), "--no-progress", *shard]) == 2
        assert not ran and not out.exists()
    gone.write_bytes(b"")
    (msrvtt_env / "videos" / "video1.mp4").unlink()  # a training video (fine-tune trials)
    with pytest.raises(ConfigError, match=r"1 of the 3 videos of the MSR-VTT train split .*video1\.mp4"):
        load_config(path)
    assert load_config(path, cost_only=True).trials  # --cost-only reads no data


def test_empty_msrvtt_root_names_the_annotation_file(tmp_path, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setenv("MSRVTT_ROOT", str(tmp_path))
    weights = tmp_path / "w.pt"
    weights.write_bytes(b"x")
    monkeypatch.setenv("CLIP_WEIGHTS", str(weights))
    with pytest.raises(ConfigError, match=r"test split .*MSRVTT_JSFUSION_test\.csv not found"):
        load_config(ROOT / "experiments/configs/msrvtt_vitb32.yaml")


def test_synthetic_data_is_not_opened_at_load_time(tmp_path):
    cfg = load_config(write(tmp_path, QUALITY))  # generated by the sweep, nothing to list yet
    assert {t.settings["data"]["kind"] for t in cfg.trials} == {"synth"}


def test_msrvtt_configs_list_the_zero_shot_rows(msrvtt_env, monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    for name, model in (("msrvtt_vitb32.yaml", "ViT-B-32"), ("msrvtt_vitb16.yaml", "ViT-B-16")):
        cfg = load_config(ROOT / "experiments/configs" / name)
        none = [(t.settings["mode"], t.settings["weights"]) for t in cfg.trials
                if t.kind == "quality" and t.settings["reducer"] == "none"]
        assert sorted(none) == [("finetuned", os.environ["CLIP_WEIGHTS"]),
                                ("training_free", os.environ["CLIP_WEIGHTS"])]
        assert all(t.settings["model"] == model for t in cfg.trials if t.kind == "quality")


SPECTRAL = """\
name: spectral
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
        - {name: centerclip, options: {layer: 6, segments: 4, k: 49}, sweep: {algorithm: [kmedoids, spectral]}}
"""


def test_spectral_graph_counts_recorded_and_reported(tmp_path):
    """Cost trials of the spectral reducer record its graph counters (one video, batch 1) and
    the report says for the row whether the selection was positional."""
    out = tmp_path / "out"
    rc = sweep.main(["--config", str(write(tmp_path, SPECTRAL)), "--out", str(out),
                     "--no-progress"])
    assert rc == 0
    recs = {r["settings"]["options"].get("algorithm", "-"): r["metrics"]
            for r in read_records(out / "results.jsonl")}
    assert recs["spectral"]["spectral_segments"] == 4  # 12 frames in 4 segments, one video
    assert 0 <= recs["spectral"]["spectral_empty_graph"] <= 4
    assert "spectral_segments" not in recs["kmedoids"] and "spectral_segments" not in recs["-"]
    report = (out / "report" / "report.md").read_text()
    n = recs["spectral"]["spectral_empty_graph"]
    want = (f"spectral graph empty in {n} of 4 segments: the selection is positional (the first "
            f"49 tokens of each segment)" if n else "spectral graph non-empty in all 4 segments")
    assert f"- centerclip algorithm=spectral k=49 layer=6 segments=4: {want}" in report
    assert report.count("spectral graph") == 1
