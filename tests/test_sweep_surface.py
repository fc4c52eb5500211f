"""``tokred sweep`` for users (issue 15): KEY=VALUE overrides validated like the file, shipped
configs by name, reducers from local plugin files, provenance and sweep.log in every run,
fine-tune checkpoints deleted unless kept."""

from __future__ import annotations

import hashlib
import json
import textwrap
from pathlib import Path

import pytest
from test_cli_surface import write_plugin
from test_train import TINY
from tokred_experiments import sweep
from tokred_experiments.config import ConfigError, find_config, load_config
from tokred_experiments.records import read_records

from tokred.backbones.embedded import EMBEDDED_MODELS
from tokred.cli import main

COST = """\
name: t
seed: 3
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


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def ids(cfg) -> list[str]:
    return sorted(t.id for t in cfg.trials)


# ---------------------------------------------------------------- overrides
def test_an_override_makes_the_trials_an_edited_file_makes(tmp_path):
    path = write(tmp_path / "c.yaml", COST)
    edited = write(tmp_path / "e.yaml", COST.replace("repeats: 1", "repeats: 2").replace(
        "[2, 3]", "[4]").replace("frames: 12", "frames: 12\n  clock: cpu"))
    cfg = load_config(path, overrides=["cost.repeats=2", "cost.runs.0.reducers.1.sweep.r=[4]",
                                       "cost.clock=cpu"])
    assert ids(cfg) == ids(load_config(edited)) != ids(load_config(path))
    saved = write(tmp_path / "saved.yaml", cfg.text)  # what a run keeps as OUT/config.yaml
    assert ids(load_config(saved)) == ids(cfg)


def test_an_override_reaching_into_an_anchor_changes_it_everywhere(tmp_path):
    text = COST.replace("name: t\n", "name: t\ndefaults:\n  opts: &opts {r: 2}\n").replace(
        "{name: tome, sweep: {r: [2, 3]}}", "{name: tome, options: *opts}")
    path = write(tmp_path / "c.yaml", text)
    cfg = load_config(path, overrides=["defaults.opts.r=4"])
    assert ids(cfg) == ids(load_config(write(tmp_path / "e.yaml", text.replace("r: 2", "r: 4"))))


@pytest.mark.parametrize("item, expect", [
    ("cost.runs.0.repeatz=2", r"override cost.runs.0.repeatz=2: unknown key 'repeatz'.*did you "
                              r"mean 'repeats'"),
    ("sed=1", r"override sed=1: unknown key 'sed' in top level; did you mean 'seed'"),
    ("cost.repeats=0", r"override cost.repeats=0: repeats must be a positive integer"),
    ("cost.runs.2.repeats=1", r"cost.runs is a list of 1 item; index it with 0..0"),
    ("cost.frames.x=1", r"cost.frames is 12, not a mapping"),
    ("cost.runs.0.reducers.1.sweep.rr=[2]", r"override cost.runs.0.reducers.1.sweep.rr=\[2\]: "
                                            r"unknown option 'rr'"),
    ("quality.data.synth.seeed=1", r"unknown key 'seeed' in 'quality.data.synth'; did you mean "
                                   r"'seed'"),
    ("repeats", r"must look like key.path=value"),
    ("cost.repeats=[1", r"not valid YAML"),
])
def test_a_bad_override_is_a_config_error_naming_it(tmp_path, item, expect):
    path = write(tmp_path / "c.yaml", COST)
    with pytest.raises(ConfigError, match=expect) as err:
        load_config(path, overrides=[item])
    assert "c.yaml:" not in str(err.value)  # the override, not a line of the file


def test_overrides_on_the_command_line_are_saved_as_the_effective_config(tmp_path, monkeypatch):
    from tokred_experiments import trials

    monkeypatch.setattr(trials, "cost_trial", lambda s, ctx: {"gmacs": 1.0, "tokens_out": 1})
    path = write(tmp_path / "c.yaml", COST)
    out = tmp_path / "out"
    argv = ["--config", str(path), "--out", str(out), "--no-progress", "--no-report",
            "cost.runs.0.reducers.1.sweep.r=[4]"]
    assert sweep.main(argv) == 0
    saved = (out / "config.yaml").read_text()
    assert saved.startswith("# Effective config") and "cost.runs.0.reducers.1.sweep.r=[4]" in saved
    done = {r["id"] for r in read_records(out / "results.jsonl")}
    assert done == set(ids(load_config(out / "config.yaml"))) and len(done) == 2
    assert sweep.main(["--config", str(path), "--out", str(out), "--no-progress",
                       "cost.repeats=0"]) == 2


# ---------------------------------------------------------------- shipped configs by name
def test_a_shipped_config_by_its_bare_name(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert find_config("smoke") == find_config("smoke.yaml") != Path("smoke")
    assert find_config("smoke").parent.name == "configs"
    (tmp_path / "smoke").write_text("a local file wins")
    assert find_config("smoke") == Path("smoke")
    with pytest.raises(FileNotFoundError, match="did you mean 'smoke'.*Shipped configs: default"):
        find_config("smok")
    assert main(["sweep", "--config", "smok", "--out", str(tmp_path / "o")]) == 2
    assert "did you mean 'smoke'" in capsys.readouterr().err


# ---------------------------------------------------------------- plugins, provenance, log
def test_a_config_with_plugins_sweeps_a_reducer_from_a_local_file(tmp_path, monkeypatch):
    (tmp_path / "plugins").mkdir()
    plugin = write_plugin(tmp_path / "plugins" / "keep.py", "sweep_keep_every")
    text = COST.replace("name: t\n", "name: t\nplugins: [plugins/keep.py]\n").replace(
        "        - none\n", "        - none\n        - {name: sweep_keep_every, options: "
        "{layer: 3}}\n")
    path = write(tmp_path / "c.yaml", text)
    out = tmp_path / "out"
    monkeypatch.chdir(tmp_path / "plugins")  # plugin paths are relative to the config file
    assert sweep.main(["--config", str(path), "--out", str(out), "--no-progress",
                       "--threads", "1"]) == 0
    records = read_records(out / "results.jsonl")
    assert len(records) == 4 and all(r["status"] == "ok" for r in records)
    mine = next(r for r in records if r["settings"]["reducer"] == "sweep_keep_every")
    none = next(r for r in records if r["settings"]["reducer"] == "none")
    assert mine["metrics"]["tokens_out"] < none["metrics"]["tokens_out"]
    prov = mine["provenance"]
    (mine_file,) = prov["plugins"]  # the sweep's own, whatever else this process loaded
    assert mine_file["path"] == str(plugin.resolve())
    assert mine_file["sha256"] == hashlib.sha256(plugin.read_bytes()).hexdigest()
    assert prov["seed"] == 3 and prov["machine"]["threads"] == 1
    assert prov["command"].startswith("tokred sweep --config")
    assert len(prov["code"]["commit"] or "x" * 40) == 40 and "dirty" in prov["code"]
    assert {"torch", "open_clip_torch", "timm", "fvcore", "numpy", "decord", "av"} \
        <= set(prov["software"])
    assert str(plugin.resolve()) in (out / "config.yaml").read_text()  # absolute when saved
    assert "sweep_keep_every" in (out / "report" / "report.md").read_text()
    monkeypatch.chdir(tmp_path.parent)  # the saved config loads its plugin from anywhere
    assert ids(load_config(out / "config.yaml", preflight=False)) == ids(load_config(path))


def test_plugin_errors_name_where_the_plugin_was_given(tmp_path):
    path = write(tmp_path / "c.yaml", COST.replace("name: t\n", "name: t\nplugins: [nope.py]\n"))
    with pytest.raises(ConfigError, match=r"c.yaml:2: plugin file .*nope.py.* does not exist"):
        load_config(path)
    path = write(tmp_path / "d.yaml", COST.replace("name: t\n", "name: t\nplugins: nope.py\n"))
    with pytest.raises(ConfigError, match="plugins must be a list"):
        load_config(path)


def test_sweep_plugin_flag_and_the_log_of_each_run(tmp_path, monkeypatch):
    from tokred_experiments import trials

    monkeypatch.setattr(trials, "cost_trial", lambda s, ctx: {"gmacs": 1.0, "tokens_out": 1})
    plugin = write_plugin(tmp_path / "keep_flag.py", "sweep_keep_flag")
    path = write(tmp_path / "c.yaml", COST.replace("        - none\n",
                                                   "        - none\n        - sweep_keep_flag\n"))
    out = tmp_path / "out"
    argv = ["--config", str(path), "--out", str(out), "--no-progress", "--no-report",
            "--plugin", str(plugin)]
    assert sweep.main(argv) == 0
    assert sweep.main(argv) == 0  # resumed: nothing to run, the log grows
    log = (out / "sweep.log").read_text().splitlines()
    starts = [line for line in log if "start: tokred sweep --config" in line]
    assert len(starts) == 2 and "--plugin" in starts[0]
    prov = json.loads(next(line for line in log if "provenance: " in line)
                      .split("provenance: ", 1)[1])
    assert [p["reducers"] for p in prov["plugins"]] == [["sweep_keep_flag"]]
    assert any("trial " in line and ": ok in" in line for line in log)
    assert "ran 0 trials" in log[-1]
    assert sweep.main(["--config", str(out / "config.yaml"), "--out", str(out),
                       "--no-progress", "--no-report"]) == 0  # the saved config names the plugin


# ---------------------------------------------------------------- fine-tune checkpoints
QUALITY = """\
quality:
  model: tiny-test
  frames: 2
  data: {{kind: synth, synth: {{train_videos: 8, test_videos: 6, frames: 4, size: 32,
                                workers: 1}}}}
  base: {{mode: scratch, max_steps: 1, batch_size: 4, threads: 1}}
  finetune: {{mode: full, max_steps: 1, batch_size: 4, threads: 1}}
  modes: [finetuned]
  reducers:
    - none
    - {{name: tome, options: {{r: 1}}{own}}}
{section}"""


@pytest.fixture()
def tiny(monkeypatch):
    monkeypatch.setitem(EMBEDDED_MODELS, "tiny-test", TINY)


def test_fine_tune_checkpoints_are_deleted_unless_kept(tmp_path, tiny):
    path = write(tmp_path / "c.yaml", QUALITY.format(own=", finetune: {keep_checkpoints: true}",
                                                     section=""))
    out = tmp_path / "out"
    assert sweep.main(["--config", str(path), "--out", str(out), "--no-progress",
                       "--no-report"]) == 0
    records = {r["settings"]["reducer"]: r for r in read_records(out / "results.jsonl")}
    kept = out / "trials" / records["tome"]["id"]
    gone = out / "trials" / records["none"]["id"]
    assert (kept / "model.pt").is_file() and records["tome"]["metrics"]["checkpoint"]
    assert not any(gone.glob("*.pt")) and records["none"]["metrics"]["checkpoint"] is None
    assert (gone / "train_log.jsonl").is_file()
    assert list((out / "cache").glob("base-*/model.pt"))  # the base model stays
    plain = load_config(write(tmp_path / "p.yaml", QUALITY.format(own="", section="")))
    assert ids(plain) == ids(load_config(path))  # keeping changes no trial id
    every = load_config(path, overrides=["quality.keep_checkpoints=true"])
    assert every.keep == set(ids(every))


@pytest.mark.parametrize("own, section, expect", [
    ("", "  keep_checkpoints: yes please", r"c.yaml:12: keep_checkpoints must be true or false"),
    (", finetune: {keep_checkpoints: 1}", "", r"c.yaml:11: keep_checkpoints must be true or"),
])
def test_keep_checkpoints_is_validated(tmp_path, tiny, own, section, expect):
    path = write(tmp_path / "c.yaml", QUALITY.format(own=own, section=section))
    with pytest.raises(ConfigError, match=expect):
        load_config(path, preflight=False)


def test_the_base_model_always_keeps_its_checkpoint(tmp_path, tiny):
    path = write(tmp_path / "c.yaml", QUALITY.format(own="", section=""))
    with pytest.raises(ConfigError, match="override quality.base.keep_checkpoints=true: the base"):
        load_config(path, overrides=["quality.base.keep_checkpoints=true"])


def test_train_and_eval_write_their_provenance(tmp_path, tiny):
    import torch

    from tokred.synth import SynthConfig, generate

    data = generate(tmp_path / "synth", SynthConfig(train_videos=8, test_videos=6, frames=4,
                                                    size=32, workers=1))
    run = tmp_path / "run"
    assert main(["train", "--root", str(data), "--out", str(run), "--model", "tiny-test",
                 "--mode", "scratch", "--frames", "2", "--batch-size", "4", "--max-steps", "1",
                 "--threads", "1", "--seed", "7"]) == 0
    meta = torch.load(run / "model.pt", weights_only=True)["meta"]
    assert meta["provenance"]["seed"] == 7 and meta["provenance"]["machine"]["device"] == "cpu"
    assert main(["eval", "--checkpoint", str(run / "model.pt"), "--root", str(data), "--frames",
                 "2", "--out", str(tmp_path / "ev"), "--threads", "1", "--device", "cpu"]) == 0
    metrics = json.loads((tmp_path / "ev" / "metrics.json").read_text())
    assert metrics["provenance"]["command"] and "numpy" in metrics["provenance"]["software"]
