"""The validation layer (tokred.cli.args rules and paths, TrainConfig, sweep numbers), user
errors printed as one ``error:`` line by every command (issue 14, bug 12), readers and
checkpoints that are damaged or in the wrong encoding, records with missing fields, and the
encoder's input checks."""

from __future__ import annotations

import argparse
import json
import textwrap
from pathlib import Path

import numpy as np
import pytest
import torch
from test_train import TINY
from tokred_experiments.config import ConfigError, load_config
from tokred_experiments.records import read_records

from tokred.backbones.embedded import EMBEDDED_MODELS
from tokred.cli import main
from tokred.cli.args import FRACTION, POSITIVE_INT, existing_file, output_dir, output_file
from tokred.data import load_split
from tokred.training import TrainConfig

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    from tokred.synth import SynthConfig, generate

    out = tmp_path_factory.mktemp("synth")
    return generate(out, SynthConfig(train_videos=8, test_videos=6, frames=4, size=32, workers=1))


# the rules and path types -------------------------------------------------------------------

def test_rules_read_numbers_and_refuse_the_impossible():
    assert POSITIVE_INT.check("3", "n") == 3 and POSITIVE_INT.check(4.0, "n") == 4
    assert FRACTION.check("1e-1", "warmup") == pytest.approx(0.1)  # YAML reads 1e-1 as text
    for bad in (0, -1, 2.5, True, "two", float("nan"), float("inf"), None):
        with pytest.raises(ValueError, match="n must be a positive integer"):
            POSITIVE_INT.check(bad, "n")
    with pytest.raises(ValueError, match=r"warmup must be in \[0, 1\)"):
        FRACTION.check(1.0, "warmup")
    with pytest.raises(argparse.ArgumentTypeError, match="got '0'"):
        POSITIVE_INT("0")


def test_output_and_input_paths_are_checked_before_any_work(tmp_path):
    assert output_dir(str(tmp_path / "new" / "deeper")) == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()  # checked, not created
    (tmp_path / "file").write_text("x")
    for bad in ("/proc/tokred-out", str(tmp_path / "file" / "sub")):
        with pytest.raises(argparse.ArgumentTypeError):
            output_dir(bad)
    with pytest.raises(argparse.ArgumentTypeError, match="is a directory"):
        output_file(str(tmp_path))
    with pytest.raises(argparse.ArgumentTypeError, match="does not exist"):
        existing_file(str(tmp_path / "missing.yaml"))
    assert list(tmp_path.iterdir()) == [tmp_path / "file"]  # no probe left behind


def test_train_config_checks_types_and_reads_yaml_numbers():
    assert TrainConfig(lr="1e-3").lr == pytest.approx(1e-3)
    for field, value in [("cache", "no"), ("seed", -1), ("data", "msrvt"), ("sampling", "x"),
                         ("betas", [0.9]), ("device", "gpu"), ("reducer_options", [1])]:
        with pytest.raises(ValueError, match=field):
            TrainConfig(**{field: value})


@pytest.mark.parametrize("old, new, needle", [
    ("repeats: 1", "repeats: 0", "repeats must be a positive integer"),
    ("batch_sizes: [1]", "batch_sizes: [0]", "batch_sizes must be a positive integer"),
    ("batch_sizes: [1]", "batch_sizes: 4", "non-empty list"),
    ("frames: 12", "frames: twelve", "frames must be a positive integer"),
    ("warmup: 0", "warmup: -1", "warmup must be an integer >= 0"),
    ("name: t\n", "name: t\nseed: -2\n", "seed must be an integer >= 0"),
])
def test_sweep_numbers_are_checked_with_their_line(tmp_path, old, new, needle):
    from test_reliability import COST

    text = COST.replace(old, new)
    path = tmp_path / "c.yaml"
    path.write_text(text)
    line = next(i for i, x in enumerate(text.splitlines(), 1) if new.strip().split("\n")[-1] in x)
    with pytest.raises(ConfigError, match=rf"c.yaml:{line}: .*{needle}"):
        load_config(path)


# one line per user error, from every command ------------------------------------------------

def _commands(tmp_path: Path, synth: Path) -> dict[str, list[str]]:
    (tmp_path / "zero.pt").write_bytes(b"")
    (tmp_path / "file").write_text("x")
    table = tmp_path / "table"
    table.mkdir()
    (table / "train.csv").write_text("video,caption\n")  # header only
    return {
        "list": ["list", "--bogus"],
        "measure": ["measure", "--frames", "0"],
        "synth": ["synth", "--out", str(tmp_path / "s"), "--size", "-1"],
        "train": ["train", "--root", str(tmp_path / "missing"), "--out", str(tmp_path / "t"),
                  "--model", "tiny-test", "--mode", "scratch", "--frames", "2"],
        "eval": ["eval", "--checkpoint", str(tmp_path / "zero.pt"), "--root", str(synth)],
        "data": ["data", "check", str(table), "--data", "csv", "--no-progress"],
        "sweep": ["sweep", "--config", str(tmp_path / "missing.yaml"), "--out", str(tmp_path)],
        "report": ["report", str(ROOT / "tests"), "-o", str(tmp_path / "file" / "report")],
        "merge": ["merge", str(tmp_path / "typo"), "-o", str(tmp_path / "m.jsonl")],
    }


@pytest.mark.parametrize("command", ["list", "measure", "synth", "train", "eval", "data", "sweep",
                                     "report", "merge"])
def test_user_errors_print_one_error_line_and_exit_2(command, synth, tmp_path, capsys,
                                                     monkeypatch):
    from tokred_experiments.records import append_record

    monkeypatch.setitem(EMBEDDED_MODELS, "tiny-test", TINY)
    args = _commands(tmp_path, synth)[command]
    if command == "report":  # a results dir the report can read, an output it cannot write
        append_record(tmp_path / "r" / "results.jsonl", {"id": "x", "status": "error"})
        args[1] = str(tmp_path / "r")
    assert main(args) == 2
    out = capsys.readouterr()
    assert "error:" in out.err and "Traceback" not in out.err + out.out


def test_debug_shows_the_traceback(synth, tmp_path):
    (tmp_path / "zero.pt").write_bytes(b"")
    with pytest.raises(ValueError, match="empty"):
        main(["--debug", "eval", "--checkpoint", str(tmp_path / "zero.pt"), "--root", str(synth)])


def test_bugs_keep_their_traceback(monkeypatch):
    import sys
    import types

    import tokred.cli

    def broken(argv):
        raise KeyError("an internal mistake")

    monkeypatch.setitem(sys.modules, "tokred_test_broken", types.SimpleNamespace(main=broken))
    monkeypatch.setitem(tokred.cli.COMMANDS, "broken", ("tokred_test_broken:main", ""))
    with pytest.raises(KeyError):
        main(["broken"])


# damaged, empty or mis-encoded inputs -------------------------------------------------------

def _table(tmp_path: Path, name: str, data: bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(data)
    return path


def test_caption_files_in_other_encodings_or_empty(tmp_path):
    ok = _table(tmp_path, "bom.csv", "\ufeffvideo,caption\na.mp4,un café\n".encode())
    assert load_split("csv", ok).captions == ["un café"]
    latin = _table(tmp_path, "latin.csv", "video,caption\na.mp4,un café\n".encode("latin-1"))
    with pytest.raises(ValueError, match="latin.csv: not UTF-8.*save it as UTF-8"):
        load_split("csv", latin)
    for name, data in [("head.csv", b"video,caption\n"), ("empty.csv", b"")]:
        with pytest.raises(ValueError, match=f"{name}.*(no video|header row)"):
            load_split("csv", _table(tmp_path, name, data))
    bad = _table(tmp_path, "bad.jsonl", b'{"video": "a.mp4", "caption": "x"}\n{"video": \n')
    with pytest.raises(ValueError, match="bad.jsonl:2: not a JSON record"):
        load_split("jsonl", bad)


def test_msrvtt_data_json_of_another_layout(tmp_path):
    root = tmp_path / "m"
    root.mkdir()
    (root / "MSRVTT_train.9k.csv").write_text("video_id\nvideo0\n")
    (root / "MSRVTT_data.json").write_text("{}")
    with pytest.raises(ValueError, match="MSRVTT_data.json: expected an object with a 'sentences'"):
        load_split("msrvtt", root, "train")
    (root / "MSRVTT_data.json").write_text('{"sentences": [{"video": "video0"}]}')
    with pytest.raises(ValueError, match="not in the layout read_msrvtt reads"):
        load_split("msrvtt", root, "train")


def test_truncated_and_empty_checkpoints_name_the_file(tmp_path):
    from tokred.backbones.weights import read_checkpoint

    good = tmp_path / "good.pt"
    torch.save({"w": torch.zeros(1000)}, good)
    data = good.read_bytes()
    (tmp_path / "half.pt").write_bytes(data[: len(data) // 2])
    (tmp_path / "zero.pt").write_bytes(b"")
    (tmp_path / "text.pt").write_text("not a checkpoint")
    for name in ("half.pt", "zero.pt", "text.pt"):
        with pytest.raises(ValueError, match=f"{name}.*(empty|not a readable checkpoint)"):
            read_checkpoint(tmp_path / name)


def test_a_record_with_missing_fields_is_skipped_not_a_crash(tmp_path, capsys, caplog):
    path = tmp_path / "results.jsonl"
    path.write_text(json.dumps({"id": "x", "kind": "cost", "status": "ok",
                                "settings": {"backbone": "scale-B32"}}) + "\n"
                    + json.dumps({"id": "y", "kind": "quality", "status": "ok",
                                  "settings": {"model": "m", "mode": "finetuned",
                                               "reducer": "none", "options": {}}}) + "\n")
    with caplog.at_level("WARNING"):
        assert read_records(path) == []
    assert "results.jsonl:1: ignoring a record missing settings.reducer" in caplog.text
    assert "results.jsonl:2: ignoring a record with status ok but no 'metrics'" in caplog.text
    assert main(["report", str(tmp_path)]) == 0


def test_encoder_inputs_of_the_wrong_kind_are_explained(clip_scale):
    from tokred import create_reducer
    from tokred.backbones import OpenCLIPVisual
    from tokred.encoder import VideoEncoder

    enc = VideoEncoder(OpenCLIPVisual(clip_scale.visual, "scale-B32"), create_reducer("none"), 2)
    video = torch.zeros(1, 2, 3, 56, 56)
    with pytest.raises(TypeError, match="torch.from_numpy"):
        enc(np.zeros((1, 2, 3, 56, 56), np.float32))
    with pytest.raises(ValueError, match="uint8.*clip_preprocess"):
        enc(video.to(torch.uint8))
    with pytest.raises(ValueError, match="float16 but the model's weights are torch.float32"):
        enc(video.half())
    with torch.autocast("cpu", dtype=torch.bfloat16), torch.no_grad():
        assert enc(video.half()).ndim == 2


def test_sweep_config_errors_name_the_line(tmp_path):
    path = tmp_path / "c.yaml"
    path.write_text(textwrap.dedent("""\
        quality:
          data: {kind: synth}
          finetune: {epochs: 0}
          reducers: [tome]
        """))
    with pytest.raises(ConfigError, match=r"c.yaml:4.*epochs must be a number > 0"):
        load_config(path)
