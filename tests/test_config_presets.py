"""Reducer presets in sweep configs: resolved at load time to the options they stand for, so the
shipped configs keep the trial ids (and finished results) they had with the options written out."""

from __future__ import annotations

import textwrap
from pathlib import Path

import pytest
import yaml
from tokred_experiments.config import ConfigError, load_config
from tokred_experiments.published import load_published
from tokred_experiments.records import append_record
from tokred_experiments.report import write_report

from tokred import get_reducer_class, paper_presets, preset_of
from tokred.registry import split_spec

CONFIGS = Path(__file__).resolve().parents[1] / "experiments" / "configs"
SHIPPED = ["default.yaml", "smoke.yaml", "msrvtt_vitb32.yaml", "msrvtt_vitb16.yaml",
           "scale_bench.yaml"]
BUILT_IN = ["centerclip", "none", "pooling", "sparse", "tempme", "tome"]

# Trial counts and ids of the shipped configs from before they used presets (options written
# out): results recorded then are still found on resume. default.yaml has changed since
# (fixed-step base training, the frontier, a cost section of the papers' settings at batch 1),
# so its pins are ids taken after those changes; ViT-B/16's runs kept their settings.
BEFORE = {
    "default.yaml": (49, {"144b2e0719c2": "cost ViT-B-32 centerclip:k=49,layer=6,segments=4",
                          "8d5e5f579108": "cost ViT-B-32 centerclip:algorithm=spectral,k=49,"
                                          "layer=6,segments=4",
                          "a3c1b71c8257": "cost ViT-B-16 tempme:cross=0.3"}),
    "smoke.yaml": (11, {"10f3761faac5": "quality scale-B32 tome:r=2 finetuned",
                        "e5a98b2e3420": "provenance scale-B32 tome:r=2"}),
    "msrvtt_vitb32.yaml": (38, {"aa06bf1ba5cb": "cost ViT-B-32 centerclip:algorithm=spectral,"
                                                "k=49,layer=6,segments=3",
                                "3767968590c3": "quality ViT-B-32 centerclip:algorithm=kmedoids,"
                                                "k=49,layer=6,segments=4 finetuned",
                                "23156841a93a": "cost ViT-B-32 sparse:k=49,layer=6,segments=4"}),
    "msrvtt_vitb16.yaml": (38, {"70828c35ed60": "cost ViT-B-16 centerclip:algorithm=kmedoids,"
                                                "k=160,layer=6,segments=6",
                                "bc9d4cc56772": "quality ViT-B-16 sparse:k=160,layer=6,segments=4 "
                                                "finetuned"}),
}


@pytest.fixture(autouse=True)
def default_paths(monkeypatch):
    """The MSR-VTT configs' ${VAR:-default} paths at their defaults (part of the trial ids)."""
    monkeypatch.delenv("CLIP_WEIGHTS", raising=False)
    monkeypatch.delenv("MSRVTT_ROOT", raising=False)


@pytest.mark.parametrize("name", sorted(BEFORE))
def test_shipped_configs_keep_their_trial_ids(name):
    count, known = BEFORE[name]
    titles = {t.id: t.title for t in load_config(CONFIGS / name, preflight=False).trials}
    assert count is None or len(titles) == count
    assert {i: titles.get(i) for i in known} == known


def written_out(entry):
    """A reducer entry with its preset replaced by the preset's options, as the class lists
    them (read here from ``presets`` directly, not through the config loader)."""
    entry = {"name": entry} if isinstance(entry, str) else dict(entry)
    name, tag = split_spec(entry["name"])
    tag = entry.pop("preset", tag)
    if tag is None:
        return entry
    preset = get_reducer_class(name).presets[tag]
    return {**entry, "name": name, "options": {**preset, **(entry.get("options") or {})}}


@pytest.mark.parametrize("name", SHIPPED)
def test_preset_entries_equal_their_written_out_options(name, tmp_path):
    raw = yaml.safe_load((CONFIGS / name).read_text())
    lists = list(raw.get("cost", {}).get("runs", []))
    lists += [raw[s] for s in ("quality", "provenance") if s in raw]
    used = 0
    for holder in lists:
        used += sum(written_out(e) != ({"name": e} if isinstance(e, str) else e)
                    for e in holder["reducers"])
        holder["reducers"] = [written_out(e) for e in holder["reducers"]]
    assert used, f"{name} uses no preset"
    plain = tmp_path / name
    plain.write_text(yaml.safe_dump(raw, sort_keys=False))
    ids = [t.id for t in load_config(CONFIGS / name, preflight=False).trials]
    assert ids == [t.id for t in load_config(plain, preflight=False).trials]


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
        - ENTRY
"""


def load(tmp_path, entry: str):
    text = COST.replace("ENTRY", entry)
    path = tmp_path / "c.yaml"
    path.write_text(textwrap.dedent(text))
    return load_config(path), text


def test_options_and_sweep_override_the_preset(tmp_path):
    cfg, _ = load(tmp_path, "{name: centerclip, preset: B6-4-49, options: {k: 30}, "
                            "sweep: {segments: [3, 6]}}")
    assert [t.settings["options"] for t in cfg.trials[1:]] == [
        {"layer": 6, "segments": 3, "k": 30}, {"layer": 6, "segments": 6, "k": 30}]
    spec, _ = load(tmp_path, "{name: tempme.r10, options: {cross: 0.2}}")
    assert spec.trials[1].settings["options"] == {
        "r": 10, "merge_layers": [8, 9, 10], "merge_frames": [2, 2, 3], "cross": 0.2,
        "intra": 0.1}


@pytest.mark.parametrize("entry, needle, expect", [
    ("centerclip.B6-4-50", "centerclip.B6", ["no preset 'B6-4-50'", "Did you mean", "'B6-4-49'",
                                             "Presets: B6-4-49, B6-3-49", "tokred list"]),
    ("{name: centerclip,\n           preset: B6-4-50}", "preset:", ["no preset 'B6-4-50'"]),
    ("{name: tome.r2, preset: r3}", "tome.r2", ["tome.r2 and preset='r3' disagree"]),
    ("tomee.r2", "tomee", ["unknown reducer 'tomee'", "'tome'"]),
])
def test_bad_presets_name_the_line_and_the_presets(tmp_path, entry, needle, expect):
    with pytest.raises(ConfigError) as err:
        load(tmp_path, entry)
    text = COST.replace("ENTRY", entry)
    line = next(i for i, s in enumerate(text.splitlines(), 1) if needle in s)
    assert f"c.yaml:{line}:" in str(err.value)
    for part in expect:
        assert part in str(err.value)


def test_scale_bench_is_every_reducer_at_its_paper_preset():
    cfg = load_config(CONFIGS / "scale_bench.yaml")
    assert {t.kind for t in cfg.trials} == {"quality"} and cfg.label == "SYNTHETIC"
    got = sorted((t.settings["reducer"], preset_of(t.settings["reducer"], t.settings["options"]),
                  t.settings["mode"]) for t in cfg.trials)
    paper = {n: (paper_presets(n, "ViT-B-32") or [None])[0] for n in BUILT_IN}
    assert got == sorted((n, paper[n], m) for n in BUILT_IN
                         for m in ("finetuned", "training_free"))
    s = cfg.trials[0].settings
    assert (s["model"], s["frames"], s["data"]) == ("scale-B32", 12,
                                                     {"kind": "synth", "synth": {"seed": 0}})
    default = load_config(CONFIGS / "default.yaml", preflight=False).raw["quality"]["base"]
    assert s["base"] == default  # the base recipe of make sweep


def test_published_rows_name_resolvable_presets():
    rows = load_published()
    assert rows and all(r["options"] is not None for r in rows)
    assert {r["preset"] for r in rows if r["reducer"] == "centerclip"} == {
        "B6-4-49", "B6-3-49", "spectral-B6-4-49", "spectral-B6-3-49", "B6-4-160"}


def test_report_names_the_preset_of_each_row(tmp_path):
    for i, (red, opts) in enumerate([("none", {}), ("centerclip", {"segments": 4}),
                                     ("centerclip", {"segments": 5, "k": 30})]):
        append_record(tmp_path / "results.jsonl", {
            "id": f"c{i}", "kind": "cost", "status": "ok",
            "settings": {"backbone": "ViT-B-32", "frames": 12, "reducer": red,
                         "options": opts, "weights": "random"},
            "metrics": {"gmacs": 10.0 - i, "tokens_out": 100, "ms_per_video": 10.0,
                        "videos_per_s": 100.0, "attn_tokens": [600] * 12}})
    text = write_report([tmp_path], tmp_path / "report").read_text()
    cells = {r.split(" | ")[0]: r.split(" | ")[1] for r in text.splitlines()
             if r.startswith("| none") or r.startswith("| centerclip")}
    assert cells == {"| none": "-", "| centerclip segments=4": "B6-4-49",
                     "| centerclip k=30 segments=5": "-"}
