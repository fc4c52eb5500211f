"""The report's header: what the records ran on and with (code, software, machine, command,
seed), summarised over all records, with warnings when they cannot be reproduced from one
commit or were run on several machines. The per-record detail stays in results.jsonl.

A record written by the sweep carries ``provenance`` (:func:`tokred.env.provenance`); older
records have only ``versions`` (short commit, host, CPU, threads, a few versions) and
``device``, which are read instead.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from pathlib import Path

import pandas as pd

from .tables import to_markdown

NOT_RECORDED = "not recorded"


def machine_of(rec: dict) -> dict:
    """The record's machine (``provenance.machine``), else what older records kept."""
    prov = (rec.get("provenance") or {}).get("machine")
    if prov:
        return prov
    # the sweep's versions first: every older record has them, only cost records have env
    v, env = rec.get("versions") or {}, (rec.get("metrics") or {}).get("env") or {}
    return {"host": v.get("host"), "cpu": v.get("cpu") or env.get("cpu"),
            "threads": v.get("threads") or env.get("threads"),
            "device": rec.get("device") or env.get("device") or "cpu", "gpu": None}


def hardware_label(rec: dict) -> str:
    """``cpu: AMD EPYC, 2 threads`` or ``cuda:0: NVIDIA A100-SXM4-80GB``: where the record's
    speeds were measured."""
    m = machine_of(rec)
    device = str(m.get("device") or "cpu")
    if m.get("gpu"):
        return f"{device}: {m['gpu']}"
    threads = f", {m['threads']} threads" if m.get("threads") else ""
    return f"{device}: {m.get('cpu') or 'CPU model not recorded'}{threads}"


def hardware_of(records: list[dict], ids=None) -> str:
    """The distinct :func:`hardware_label` of ``records`` (those in ``ids`` when given),
    joined with `` / ``; ``device not recorded`` for none."""
    ids = None if ids is None else set(ids)
    labels = dict.fromkeys(hardware_label(r) for r in records if ids is None or r.get("id") in ids)
    return " / ".join(labels) or "device not recorded"


def _code(rec: dict) -> tuple[str, str, object]:
    """(tokred version, commit, dirty) of a record; dirty None when not recorded."""
    code = (rec.get("provenance") or {}).get("code")
    if code:
        return str(code.get("version")), code.get("commit") or "no git checkout", code.get("dirty")
    v = rec.get("versions") or {}
    return str(v.get("tokred")), f"{v['git']} (short)" if v.get("git") else NOT_RECORDED, None


def _software(rec: dict) -> dict:
    soft = (rec.get("provenance") or {}).get("software")
    if soft:
        return {k: v for k, v in soft.items() if k != "tokred"}
    v = rec.get("versions") or {}
    return {k: v[k] for k in ("python", "torch", "open_clip") if v.get(k)}


def _counted(values: list[str]) -> str:
    """One value, or each distinct value with how many records have it."""
    counts = Counter(values)
    if len(counts) == 1:
        return values[0]
    return "; ".join(f"{v} ({n} record{'' if n == 1 else 's'})" for v, n in counts.most_common())


def _code_cell(rec: dict) -> str:
    version, commit, dirty = _code(rec)
    state = {True: "**dirty** (uncommitted changes)", False: "clean"}.get(dirty,
                                                                          "dirty state not recorded")
    return f"tokred {version}, commit `{commit}`, {state}"


def _machine_cell(rec: dict) -> str:
    m = machine_of(rec)
    cores = f" ({m['cpu_count']} logical cores)" if m.get("cpu_count") else ""
    inter = f" ({m['interop_threads']} inter-op)" if m.get("interop_threads") else ""
    gpu = f", GPU {m['gpu']}" + (f" (CUDA {m['cuda']})" if m.get("cuda") else "") \
        if m.get("gpu") else ""
    return (f"host {m.get('host') or '?'}: {m.get('cpu') or 'CPU model not recorded'}{cores}, "
            f"{m.get('threads') or '?'} threads{inter}, device {m.get('device') or 'cpu'}{gpu}")


def _software_cell(records: list[dict]) -> str:
    names = sorted(dict.fromkeys(k for r in records for k in _software(r)),
                   key=lambda n: n != "python")  # Python first, then as recorded
    parts, missing = [], []
    for name in names:
        values = [str(_software(r).get(name)) for r in records if name in _software(r)]
        if set(values) == {"None"}:
            missing.append(name)
        else:
            parts.append(f"{name} {_counted(values)}")
    return ", ".join(parts) + (f" (not installed: {', '.join(missing)})" if missing else "")


def _seed(rec: dict) -> str:
    prov = rec.get("provenance") or {}
    if "seed" in prov:
        return str(prov["seed"])
    seed = (rec.get("settings") or {}).get("seed")
    return NOT_RECORDED if seed is None else str(seed)


def _plugins(rec: dict) -> str:
    """The reducer plugin files a record's run loaded (``--plugin``), each with its SHA-256."""
    return ", ".join(f"`{p['path']}` (sha256 {str(p.get('sha256'))[:12]})"
                     for p in (rec.get("provenance") or {}).get("plugins") or [])


def provenance_lines(records: list[dict]) -> list[str]:
    """A small table (code, software, machine, command, seed over all ``records``) and a
    warning line for dirty trees and for records from several commits or hosts."""
    if not records:
        return []
    rows = [("code", _counted([_code_cell(r) for r in records])),
            ("software", _software_cell(records)),
            ("machine", _counted([_machine_cell(r) for r in records])),
            ("command", _counted([f"`{(r.get('provenance') or {}).get('command')}`"
                                  if (r.get("provenance") or {}).get("command") else NOT_RECORDED
                                  for r in records])),
            ("seed", _counted([_seed(r) for r in records]))]
    plugins = [_plugins(r) for r in records]
    if any(plugins):
        rows.append(("plugin files", _counted([p or "none" for p in plugins])))
    table = to_markdown(pd.DataFrame(rows, columns=["provenance", "over all records"]))
    return ["What the records ran on and with (each record's own in results.jsonl: "
            "`provenance`, or `versions` in older records):", "",
            table, "", *warning_lines(records)]


def warning_lines(records: list[dict]) -> list[str]:
    """``**Warning**`` lines: records from a dirty tree, from several commits, several hosts."""
    out = []
    dirty = sum(_code(r)[2] is True for r in records)
    if dirty:
        out.append(f"**Warning**: {dirty} of {len(records)} records ran from a tree with "
                   "uncommitted changes (dirty): their commit alone does not reproduce them.")
    commits = sorted({_code(r)[1] for r in records})
    if len(commits) > 1:
        out.append(f"**Warning**: the records come from {len(commits)} commits "
                   f"({', '.join(commits)}): rows may differ by the code, not only the setting.")
    hosts = sorted({str(machine_of(r).get("host")) for r in records})
    if len(hosts) > 1:
        out.append(f"**Warning**: the records come from {len(hosts)} hosts ({', '.join(hosts)}): "
                   "speeds (videos/s, ms/video) are comparable only within one host.")
    return [line for w in out for line in (w, "")]


def header_lines(name: str, description, files: list[Path], records: list[dict]) -> list[str]:
    """Title, description, where the records came from and :func:`provenance_lines`."""
    lines = [f"# Sweep report: {name}", ""]
    if description:
        lines += [str(description), ""]
    ok = sum(r.get("status") == "ok" for r in records)
    lines += [f"Generated {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC from "
              f"{', '.join(map(str, files))}: {ok} finished trials, {len(records) - ok} failed. "
              "Tables: `cost.csv`, `quality.csv`.", ""]
    return lines + provenance_lines(records)
