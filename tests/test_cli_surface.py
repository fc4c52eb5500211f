"""The user's surface (issue 15): one flag vocabulary, defaults in every help, --version,
--plugin on the commands that build reducers, provenance in what the commands write."""

from __future__ import annotations

import argparse
import hashlib
import json
import textwrap

import pytest
from tokred_experiments import sweep

from tokred.cli import data as data_cli
from tokred.cli import eval as eval_cli
from tokred.cli import main
from tokred.cli import measure as measure_cli
from tokred.cli import reducers as list_cli
from tokred.cli import synth as synth_cli
from tokred.cli import train as train_cli


def _check_parser() -> argparse.ArgumentParser:
    sub = next(a for a in data_cli.parser()._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices["check"]


PARSERS = {
    "list": list_cli.parser, "measure": measure_cli.parser, "synth": synth_cli.parser,
    "train": train_cli.parser, "eval": eval_cli.parser, "data check": _check_parser,
    "sweep": sweep.parser, "merge": sweep.merge_parser,
}
# the shared flags each command takes (the commands that compute take --device and --threads)
VOCABULARY = {
    "measure": {"--model", "--batch-size", "--out", "--device", "--threads", "--plugin"},
    "train": {"--model", "--batch-size", "--out", "--device", "--threads", "--plugin"},
    "eval": {"--model", "--batch-size", "--out", "--device", "--threads", "--plugin"},
    "sweep": {"--out", "--device", "--threads", "--plugin"},
    "data check": {"--out", "--threads"},
    "list": {"--plugin"}, "synth": {"--out"}, "merge": {"--out", "-o"},
}
OLD = {"--models", "--batch", "--batch-sizes", "--b32-batch", "--ft-batch", "--json", "--output",
       "--train-batch"}  # (synth's --workers are encoding processes, not threads: it stays)


def _visible(ap: argparse.ArgumentParser) -> list[argparse.Action]:
    return [a for a in ap._actions if a.option_strings and a.help != argparse.SUPPRESS
            and not isinstance(a, (argparse._HelpAction, argparse._VersionAction))]


@pytest.mark.parametrize("command", sorted(VOCABULARY))
def test_one_vocabulary_of_flags(command):
    ap = PARSERS[command]()
    shown = {s for a in _visible(ap) for s in a.option_strings}
    assert VOCABULARY[command] <= shown
    assert not shown & OLD, f"{command} still shows {shown & OLD}"
    device = next((a for a in ap._actions if "--device" in a.option_strings), None)
    if device is not None:
        line = ap._get_formatter()._get_help_string(device) % {"default": device.default}
        assert "(default: auto)" in line


@pytest.mark.parametrize("command", sorted(PARSERS))
def test_every_option_of_every_command_shows_its_default(command, capsys):
    ap = PARSERS[command]()
    text = " ".join(ap.format_help().split())
    formatter = ap._get_formatter()
    for action in _visible(ap):
        if action.nargs == 0 or action.required or "required" in action.help:  # switches: off
            continue
        line = formatter._get_help_string(action) % {"default": action.default}
        assert "default" in line.lower(), f"{command} {action.option_strings}: {line!r}"
        for choice in action.choices or ():
            assert str(choice) in text


def test_report_help_names_its_default_output(capsys):
    assert main(["report", "--help"]) == 0
    assert "default" in capsys.readouterr().out


def test_old_spellings_still_work_for_one_release(tmp_path):
    assert list_cli.parser().parse_args(["--json"]).format == "json"
    assert measure_cli.parser().parse_args(["--train-batch", "3"]).train_batch_size == 3
    assert _check_parser().parse_args([str(tmp_path), "--workers", "2"]).threads == 2
    out = tmp_path / "m.jsonl"
    assert sweep.merge_parser().parse_args([str(tmp_path), "--output", str(out)]).out == out


def test_train_betas_are_a_json_list_of_two_fractions(capsys):
    assert train_cli.config_from_args(["--betas", "[0.9, 0.95]"]).betas == (0.9, 0.95)
    assert "'[0.9, 0.98]'" in " ".join(train_cli.parser().format_help().split())
    for bad in ('{"r": 2}', "[0.9]", "[0.9, 1.5]"):
        with pytest.raises(SystemExit):
            train_cli.config_from_args(["--betas", bad])
        assert "--betas" in capsys.readouterr().err


def test_version(capsys):
    for flag in ("--version", "-V"):
        assert main([flag]) == 0
        text = capsys.readouterr().out
        assert text.startswith("tokred 0.1.0") and "torch " in text and "open_clip " in text


def test_a_cuda_device_is_refused_at_once_without_cuda(capsys):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    assert main(["measure", "--device", "cuda"]) == 2
    assert "CUDA is not available" in capsys.readouterr().err


PLUGIN = '''
import torch

from tokred import TokenReducer, register_reducer
from tokred.toolkits.merge import keep_tokens


@register_reducer("{name}")
class KeepEvery(TokenReducer):
    """Keeps CLS and every ``stride``-th patch from block ``layer`` on (a test plugin)."""

    def __init__(self, layer: int = 6, stride: int = 2) -> None:
        super().__init__()
        self.layer, self.stride = layer, stride

    def pre_block(self, s, layer):
        if layer != self.layer:
            return s
        idx = torch.cat([torch.arange(s.prefix), torch.arange(s.prefix, s.tokens, self.stride)])
        idx = idx.expand(s.x.shape[0], -1)
        return s.replace(x=keep_tokens(s.x, idx), size=keep_tokens(s.size, idx))
'''


def write_plugin(path, name: str):
    path.write_text(textwrap.dedent(PLUGIN.format(name=name)))
    return path


def test_list_with_a_plugin_names_its_file(tmp_path, capsys):
    path = write_plugin(tmp_path / "keep_list.py", "surface_keep_list")
    assert main(["list", "--plugin", str(path)]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines()
                if x.startswith("surface_keep_list"))
    assert f"plugin file {path.resolve()}" in line and "stride=2" in line
    assert main(["list", "--plugin", str(tmp_path / "missing.py")]) == 2


@pytest.mark.slow
def test_measure_rss_builds_a_plugin_reducer_in_its_fresh_process(tmp_path):
    """--rss measures in fresh interpreters: they load the --plugin files this one loaded."""
    path = write_plugin(tmp_path / "keep_rss.py", "surface_keep_rss")
    out = tmp_path / "m.jsonl"
    argv = ["measure", "--plugin", str(path), "--model", "scale-B32", "--reducer",
            "surface_keep_rss:layer=3", "--batch-size", "1", "--repeats", "1", "--warmup", "0",
            "--rounds", "1", "--skip-fvcore", "--skip-memory", "--skip-speed", "--rss",
            "--threads", "1", "--out", str(out)]
    assert main(argv) == 0
    rec = next(r for r in map(json.loads, out.read_text().splitlines())
               if r["reducer"] == "surface_keep_rss")
    assert rec["peak_rss_mb_train_full"] > 0 and "peak_rss_mb_train_lora" in rec


def test_measure_with_a_plugin_records_it_in_the_provenance(tmp_path, capsys):
    path = write_plugin(tmp_path / "keep_measure.py", "surface_keep_measure")
    out = tmp_path / "m.jsonl"
    argv = ["measure", "--plugin", str(path), "--model", "scale-B32", "--reducer",
            "surface_keep_measure:layer=3", "--batch-size", "1", "--repeats", "1", "--warmup",
            "0", "--rounds", "1", "--skip-fvcore", "--skip-memory", "--threads", "1", "--out",
            str(out)]
    assert main(argv) == 0
    recs = [json.loads(line) for line in out.read_text().splitlines()]
    rec = next(r for r in recs if r["reducer"] == "surface_keep_measure")
    assert rec["tokens_out"] < next(r for r in recs if r["reducer"] == "none")["tokens_out"]
    prov = rec["provenance"]
    (plugin,) = [p for p in prov["plugins"] if p["path"] == str(path.resolve())]
    assert plugin["sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()
    assert plugin["reducers"] == ["surface_keep_measure"]
    assert prov["machine"]["threads"] == 1 and prov["machine"]["cpu"] != "x86_64"
    assert set(prov) >= {"code", "software", "machine", "command"}
    assert {"timm", "fvcore", "numpy", "decord", "av"} <= set(prov["software"])
    assert "dirty" in prov["code"] and len(prov["code"]["commit"] or "x" * 40) == 40
