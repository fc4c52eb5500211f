"""Provenance records: full commit and dirty flag, dependency versions, CPU model, command line."""

from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

from tokred import env


def test_provenance_names_code_software_machine_and_command():
    rec = env.provenance("cpu", argv=["/usr/bin/tokred", "sweep", "--out", "a b"], seed=3)
    json.dumps(rec)
    assert rec["seed"] == 3 and rec["command"] == "tokred sweep --out 'a b'"
    for dep in ("torch", "open_clip_torch", "timm", "fvcore", "numpy", "pandas", "matplotlib",
                "av"):
        assert dep in rec["software"]
    assert rec["software"]["torch"] and rec["software"]["tokred"]
    m = rec["machine"]
    assert m["device"] == "cpu" and m["gpu"] is None and m["threads"] >= 1
    assert m["cpu"] not in ("", "x86_64")  # a model name, not the architecture


def test_code_records_the_full_commit_and_the_dirty_flag():
    root = Path(env.__file__).resolve().parent.parent
    head = subprocess.run(["git", "rev-parse", "HEAD"], cwd=root, capture_output=True,
                          text=True).stdout.strip()
    c = env.code()
    if not head:  # not a git checkout (an installed copy): the version is the reference
        assert c["commit"] is None
        return
    assert c["commit"] == head and re.fullmatch(r"[0-9a-f]{40}", c["commit"])
    assert isinstance(c["dirty"], bool)
