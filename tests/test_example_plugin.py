"""The example plugin package: installed with pip, found through the entry point, swept by name."""

from __future__ import annotations

import shutil
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from tokred import create_reducer, list_reducers, registry

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "examples" / "tokred-example-reducer"


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    """pip-install the example into a temp --target dir and put it on sys.path."""
    tmp = tmp_path_factory.mktemp("plugin")
    src = tmp / "src"
    shutil.copytree(PACKAGE, src, ignore=shutil.ignore_patterns("build", "*.egg-info"))
    target = tmp / "site"
    subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps",
                    "--no-build-isolation", "--target", str(target), str(src)],
                   check=True, capture_output=True)
    if "drop_half" in list_reducers():
        pytest.skip("drop_half is already installed here; uninstall it to test the install path")
    sys.path.insert(0, str(target))
    yield target
    sys.path.remove(str(target))
    registry._REGISTRY.pop("drop_half", None)
    for mod in [m for m in sys.modules if m.startswith("tokred_example")]:
        del sys.modules[mod]


def test_listed_through_entry_point(installed):
    assert "drop_half" in list_reducers()
    assert registry.reducer_options("drop_half") == {"layer": 6, "stride": 2}


def test_runs_in_the_encoder_with_its_exact_schedule(installed, scale):
    from tokred.encoder import VideoEncoder

    enc = VideoEncoder(scale, create_reducer("drop_half", layer=4, stride=2), frames=12)
    trace = enc.trace()
    assert trace.attn_tokens() == [600] * 4 + [12 * 26] * 8  # 1 CLS + ceil(49 / 2) patches
    video = torch.randn(2, 12, 3, 56, 56)
    s = enc.embed(video)
    for layer in range(4):
        s = enc.block(s, layer)
    kept = enc.reducer.pre_block(s, 4)
    assert torch.equal(kept.x, s.x[:, [0, *range(1, 50, 2)]])  # CLS + patches 0, 2, 4, ...
    with pytest.raises(ValueError, match="layer=12 is outside"):
        VideoEncoder(scale, create_reducer("drop_half", layer=12), frames=12)


@pytest.mark.slow
def test_smoke_sweep_by_name(installed, tmp_path):
    from tokred_experiments import sweep
    from tokred_experiments.records import read_records

    cfg = tmp_path / "plugin.yaml"
    cfg.write_text(textwrap.dedent("""\
        name: plugin
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
                - {name: drop_half, sweep: {layer: [4, 8]}}
        """))
    assert sweep.main(["--config", str(cfg), "--out", str(tmp_path / "out"), "--no-progress"]) == 0
    recs = {r["settings"]["options"].get("layer"): r for r in
            read_records(tmp_path / "out" / "results.jsonl")}
    assert recs[4]["metrics"]["tokens_out"] == 12 * 26 and recs[None]["metrics"]["tokens_out"] == 600
    assert "drop_half layer=8" in (tmp_path / "out" / "report" / "report.md").read_text()
