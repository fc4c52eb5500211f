"""results.jsonl: append-only trial records that survive a kill at any moment.

Each record is one complete JSON line written with a single ``write`` under an exclusive
``flock``, then flushed and fsynced. A kill can at worst leave a torn last line (no trailing
newline); readers ignore it, and writers cut it off before appending, so it is never merged
with the next record.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import logging
import os
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)


def trial_id(settings: dict) -> str:
    """Stable id: the first 12 hex digits of the SHA-1 of the canonical JSON of ``settings``."""
    text = json.dumps(settings, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha1(text.encode()).hexdigest()[:12]


def _cut_torn_tail(fd: int) -> None:
    """Truncate anything after the last newline (a record torn by a kill)."""
    end = os.lseek(fd, 0, os.SEEK_END)
    if end == 0:
        return
    pos = end
    while pos > 0:
        step = min(4096, pos)
        chunk = os.pread(fd, step, pos - step)
        nl = chunk.rfind(b"\n")
        if nl >= 0:
            cut = pos - step + nl + 1
            break
        pos -= step
    else:
        cut = 0
    if cut != end:
        log.warning("dropping a torn record (%d bytes) at the end of the results file", end - cut)
        os.ftruncate(fd, cut)


def append_record(path: str | Path, record: dict) -> None:
    """Append ``record`` as one JSON line, atomically with respect to kills and other writers."""
    line = (json.dumps(record, sort_keys=True, default=str) + "\n").encode()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        _cut_torn_tail(fd)
        view = memoryview(line)
        while view:
            view = view[os.write(fd, view):]
        os.fsync(fd)
    finally:
        os.close(fd)


def read_records(path: str | Path) -> list[dict]:
    """All complete records of one file, in order; a torn or corrupt line is skipped."""
    out = []
    p = Path(path)
    if not p.exists():
        return out
    data = p.read_bytes()
    lines = data.split(b"\n")
    if lines and lines[-1]:
        log.warning("%s: ignoring a torn last line (%d bytes)", p, len(lines[-1]))
    for i, raw in enumerate(lines[:-1]):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
        except json.JSONDecodeError:
            log.warning("%s:%d: ignoring a corrupt record", p, i + 1)
            continue
        if isinstance(rec, dict) and "id" in rec:
            out.append(rec)
    return out


def result_files(paths: Iterable[str | Path]) -> list[Path]:
    """Expand directories to their ``results*.jsonl`` files (sorted); keep files as given."""
    files: list[Path] = []
    for p in map(Path, paths):
        files.extend(sorted(p.glob("results*.jsonl")) if p.is_dir() else [p])
    return files


def latest(records: Iterable[dict]) -> dict[str, dict]:
    """One record per trial id: the last ``ok`` one if any, else the last one."""
    best: dict[str, dict] = {}
    for rec in records:
        old = best.get(rec["id"])
        if old is None or rec.get("status") == "ok" or old.get("status") != "ok":
            best[rec["id"]] = rec
    return best


def load_results(paths: Iterable[str | Path]) -> dict[str, dict]:
    """Merged view (one record per trial id) of result files and/or directories."""
    records: list[dict] = []
    for f in result_files(paths):
        records.extend(read_records(f))
    return latest(records)


def merge_files(inputs: Iterable[str | Path], output: str | Path) -> int:
    """Write the merged records of ``inputs`` to ``output`` (one per trial); returns the count."""
    merged = load_results(inputs)
    out = Path(output)
    if out.exists():
        out.unlink()
    for rec in sorted(merged.values(), key=lambda r: r["id"]):
        append_record(out, rec)
    return len(merged)
