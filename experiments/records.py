"""results.jsonl: append-only trial records that survive a kill at any moment.

Each record is one complete JSON line written with a single ``write`` under an exclusive
``flock``, then flushed and fsynced. A kill can at worst leave a torn last line (no trailing
newline); readers ignore it, and writers cut it off before appending, so it is never merged
with the next record. A results file is only ever replaced whole (``merge`` into an existing
file): the new content goes to a temporary file, fsynced, then renamed over it, under the same
lock, so a kill leaves the old file or the new one, never a part.
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


def _locked(path: Path) -> int:
    """An fd of ``path`` (created if needed) under an exclusive ``flock``.

    The lock is taken on the file the path names once it is held: a merge may have renamed
    a new file over the path while this process waited on the old one.
    """
    while True:
        fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o644)
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            if os.fstat(fd).st_ino == os.stat(path).st_ino:
                return fd
        except FileNotFoundError:
            pass
        os.close(fd)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    os.fsync(fd)


def append_record(path: str | Path, record: dict) -> None:
    """Append ``record`` as one JSON line, atomically with respect to kills and other writers."""
    line = (json.dumps(record, sort_keys=True, default=str) + "\n").encode()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    fd = _locked(Path(path))
    try:
        _cut_torn_tail(fd)
        _write_all(fd, line)
    finally:
        os.close(fd)


def replace_records(path: str | Path, records: Iterable[dict], held: int | None = None) -> None:
    """Make ``path`` hold exactly ``records``: a temporary file in the same directory, fsynced,
    renamed over ``path`` (the directory fsynced too). ``held``: an fd of ``path`` whose lock
    the caller holds (taken here otherwise)."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    data = "".join(json.dumps(r, sort_keys=True, default=str) + "\n" for r in records).encode()
    fd = _locked(path) if held is None else held
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        out = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
        try:
            _write_all(out, data)
        finally:
            os.close(out)
        os.replace(tmp, path)
        _fsync_dir(path.parent)
    finally:
        tmp.unlink(missing_ok=True)
        if held is None:
            os.close(fd)


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_records(path: str | Path) -> list[dict]:
    """All complete records of one file, in order; a torn or corrupt line is skipped."""
    p = Path(path)
    if not p.exists():
        return []
    lines = p.read_bytes().split(b"\n")
    if lines and lines[-1]:
        log.warning("%s: ignoring a torn last line (%d bytes)", p, len(lines[-1]))
    return _parse_lines(lines[:-1], p, 1)


def _parse_lines(lines: list[bytes], p: Path, first: int) -> list[dict]:
    """The usable records of complete ``lines`` of ``p`` (line ``first`` first); a corrupt or
    unusable one is skipped with a warning naming its line."""
    out = []
    for i, raw in enumerate(lines, first):
        if not raw.strip():
            continue
        try:
            rec = json.loads(raw)
        except json.JSONDecodeError:
            log.warning("%s:%d: ignoring a corrupt record", p, i)
            continue
        problem = record_problem(rec)
        if problem:
            log.warning("%s:%d: ignoring a record %s", p, i, problem)
            continue
        out.append(rec)
    return out


class FinishedTrials:
    """The ids with an ``ok`` record in the results files of output dir ``out``, kept up to date
    by :meth:`refresh` at the cost of what was written since the last refresh.

    Each results file is read on from where the last refresh stopped (after its last complete
    line: a torn or half-written one is read again next time); a file replaced whole (another
    inode, e.g. by ``merge``) or cut shorter is read from its start. Ids are never removed:
    records are only appended, and a merge keeps every ``ok`` one.
    """

    def __init__(self, out: str | Path):
        self.out = Path(out)
        self.ids: set[str] = set()
        self._seen: dict[Path, tuple[int, int, int]] = {}  # file -> (inode, bytes, lines) read

    def refresh(self) -> set[str]:
        """Read what was appended since the last call; returns :attr:`ids`."""
        for f in result_files([self.out]):
            try:
                fh = open(f, "rb")
            except FileNotFoundError:  # replaced or removed since it was listed
                continue
            with fh:
                st = os.fstat(fh.fileno())
                inode, pos, lines = self._seen.get(f, (st.st_ino, 0, 0))
                if inode != st.st_ino or st.st_size < pos:
                    pos, lines = 0, 0
                fh.seek(pos)
                data = fh.read()
            complete = data[: data.rfind(b"\n") + 1].split(b"\n")[:-1]
            for rec in _parse_lines(complete, f, lines + 1):
                if rec.get("status") == "ok":
                    self.ids.add(rec["id"])
            self._seen[f] = (st.st_ino, pos + sum(len(x) + 1 for x in complete),
                             lines + len(complete))
        return self.ids


REQUIRED = {  # kind -> settings every finished (ok) record of that kind has
    "cost": ("backbone", "frames"),
    "quality": ("model", "mode"),
    "provenance": ("model", "frames"),
}


def record_problem(rec) -> str | None:
    """What makes ``rec`` unusable as a trial record, or None: no string ``id``; or, for a
    record of a known kind, no ``status``, no ``settings`` naming its reducer and options, or,
    finished (status ok), no ``metrics`` mapping or settings without the kind's keys (the
    report reads these without checking again)."""
    if not isinstance(rec, dict) or not isinstance(rec.get("id"), str):
        return "without a string 'id'"
    if rec.get("kind") not in REQUIRED:
        return None  # not a trial of this sweep runner's kinds: the report skips it anyway
    settings = rec.get("settings")
    if not isinstance(settings, dict) or not isinstance(rec.get("status"), str):
        return "without 'settings' (a mapping) and 'status'"
    need = ("reducer", "options") + (REQUIRED[rec["kind"]] if rec["status"] == "ok" else ())
    missing = [f"settings.{k}" for k in need if k not in settings]
    if missing:
        return f"missing {', '.join(missing)}"
    if rec["status"] == "ok" and not isinstance(rec.get("metrics"), dict):
        return "with status ok but no 'metrics' mapping"
    return None


def result_files(paths: Iterable[str | Path], strict: bool = False) -> list[Path]:
    """Expand directories to their ``results*.jsonl`` files (sorted); keep files as given;
    a path that does not exist adds nothing (a warning names it).

    Raises:
        FileNotFoundError: with ``strict``, an input that does not exist or a directory
            without results files.
    """
    files: list[Path] = []
    for p in map(Path, paths):
        found = sorted(p.glob("results*.jsonl")) if p.is_dir() else [p] if p.exists() else []
        if strict and not found:
            what = "does not exist" if not p.exists() else "holds no results*.jsonl"
            raise FileNotFoundError(f"{p} {what}; give sweep output directories or their "
                                    f"results*.jsonl files")
        if not p.exists():
            log.warning("%s does not exist; no results read from it", p)
        files.extend(found)
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
    """Write the merged records of ``inputs`` to ``output`` (one per trial); returns the count.

    Every input must exist (a typo is refused before anything is written). ``output`` may be
    one of the inputs: it is read and replaced under its lock, atomically (see the module doc).

    Raises:
        FileNotFoundError: an input does not exist or is a directory without results files.
    """
    inputs = list(inputs)
    files = result_files(inputs, strict=True)
    out = Path(output)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd = _locked(out)  # appends to the output wait, and none is lost by the rename
    try:
        merged = latest(rec for f in files for rec in read_records(f))
        replace_records(out, sorted(merged.values(), key=lambda r: r["id"]), held=fd)
    finally:
        os.close(fd)
    return len(merged)
