"""Processes sharing one output dir: cached steps built once, and trials run once.

Expensive steps shared by many trials (data generation, base training) are done once per
output dir and reused: ``cached_step`` builds into a temp dir and renames it into place, so a
killed step leaves no half-built cache entry, and an exclusive lock lets parallel shards wait
for the first one instead of redoing the work. A process waiting on that lock says who holds
it (pid, host, since when, and whether it is stopped) and what to do.

Trials are claimed: ``claim`` creates ``OUT/claims/<trial id>.claim`` (holder pid, host,
start) before a trial runs and removes it after its record is written, so two unsharded runs
on one output split the trials instead of running each twice. A claim whose process is gone
(killed) is stale and taken over.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
import json
import logging
import os
import shutil
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any, Callable

from .records import trial_id

log = logging.getLogger(__name__)
DONE = "step.json"
WAIT_REPORT_S = 60.0  # how often a waiting process repeats who it waits for


def cached_step(cache: Path, name: str, key: dict, build: Callable[[Path], Any]) -> Path:
    """Directory of step ``name`` for settings ``key``, building it with ``build(tmp_dir)`` once.

    Args:
        cache: the sweep's cache directory.
        name: step kind (``data``, ``base``), used in the directory name.
        key: every setting the step's output depends on (hashed into the directory name).
        build: writes the step's outputs into the given (empty) directory; its return value
            (JSON-serialisable) is stored in ``step.json`` next to them.

    Returns:
        The finished directory (contains ``step.json``).
    """
    final = Path(cache) / f"{name}-{trial_id(key)}"
    if (final / DONE).exists():
        return final
    final.parent.mkdir(parents=True, exist_ok=True)
    # "a": opening must not truncate the holder's note that a waiting process reads
    with open(final.parent / f".{final.name}.lock", "a+") as lock:
        wait_for_lock(lock, f"shared step {final.name}")
        if (final / DONE).exists():  # another shard finished it while we waited
            return final
        tmp = final.parent / f".{final.name}.tmp-{os.getpid()}"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        log.info("building shared step %s (%s)", final.name, name)
        result = build(tmp)
        (tmp / DONE).write_text(json.dumps({"key": key, "result": result}, indent=1,
                                           default=str))
        shutil.rmtree(final, ignore_errors=True)
        os.replace(tmp, final)
    return final


def step_result(step_dir: Path) -> Any:
    """The value ``build`` returned for a finished step."""
    return json.loads((Path(step_dir) / DONE).read_text())["result"]


def wait_for_lock(lock: IO[str], what: str, poll_s: float = 0.5) -> None:
    """Take the exclusive ``flock`` of ``lock``, then note this process in it.

    While another process holds it, log which process that is and, when it is stopped, how to
    let it go on or end it: at once, whenever that changes, and every :data:`WAIT_REPORT_S`.
    """
    waited, reported, said = 0.0, 0.0, None
    while True:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except BlockingIOError:
            lock.seek(0)
            text = _waiting_text(_parse(lock.read()))
            if text != said or waited - reported >= WAIT_REPORT_S:  # news, or a reminder
                log.warning("waiting for %s: %s", what, text)
                said, reported = text, waited
            time.sleep(poll_s)
            waited += poll_s
    lock.seek(0)
    lock.truncate()
    lock.write(json.dumps(holder()))
    lock.flush()


def _waiting_text(info: dict | None) -> str:
    if info is None:
        return "held by another process (which did not say who it is)"
    who = describe(info)
    state = holder_state(info)
    if state == "stopped":
        return (f"{who} holds it, and that process is stopped (Ctrl-Z / SIGSTOP): resume it "
                f"with `kill -CONT {info['pid']}` (or `fg` in its shell), or end it with "
                f"`kill {info['pid']}`")
    if state == "unknown":
        return f"{who} holds it (another host: its state is not visible from here)"
    return f"{who} is building it; this process continues when it is done"


def holder() -> dict:
    """This process, as a lock or claim records it."""
    return {"pid": os.getpid(), "host": socket.gethostname(), "start": _start_time(os.getpid()),
            "since": dt.datetime.now().astimezone().isoformat(timespec="seconds")}


def describe(info: dict) -> str:
    return f"pid {info.get('pid')} on {info.get('host')} (since {info.get('since')})"


def holder_state(info: dict) -> str:
    """``alive``, ``stopped``, ``gone`` (ended, or its pid reused) or ``unknown`` (another
    host) for a holder recorded by :func:`holder`."""
    if info.get("host") != socket.gethostname():
        return "unknown"
    pid = info.get("pid")
    if not isinstance(pid, int) or pid == os.getpid():
        return "gone"  # this process holds nothing it is not running right now
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return "gone"
    except PermissionError:
        pass  # exists, owned by another user
    if info.get("start") is not None and _start_time(pid) != info["start"]:
        return "gone"
    return "stopped" if _proc_state(pid) in ("T", "t") else "alive"


def _proc_stat(pid: int) -> list[str] | None:
    """Fields of ``/proc/PID/stat`` after the command name (None where there is no /proc)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    return text[text.rindex(")") + 2 :].split()


def _start_time(pid: int) -> int | None:
    stat = _proc_stat(pid)
    return int(stat[19]) if stat else None  # field 22: start time in clock ticks after boot


def _proc_state(pid: int) -> str | None:
    stat = _proc_stat(pid)
    return stat[0] if stat else None


def _parse(text: str) -> dict | None:
    try:
        info = json.loads(text)
    except ValueError:
        return None
    return info if isinstance(info, dict) else None


@contextlib.contextmanager
def claim(out: Path, trial: str) -> Iterator[dict | None]:
    """Hold the claim on ``trial`` in ``out`` while the block runs.

    Yields None when this process holds it, else the holder's info (a live process, or one on
    another host: the trial is left to it). A stale claim (its process gone) is taken over.
    """
    claims = Path(out) / "claims"
    claims.mkdir(parents=True, exist_ok=True)
    path = claims / f"{trial}.claim"
    with open(claims / ".lock", "a") as lock:  # claims are made and taken over one at a time
        fcntl.flock(lock, fcntl.LOCK_EX)
        other = _parse(path.read_text()) if path.exists() else None
        busy = other is not None and holder_state(other) != "gone"
        if not busy:
            if path.exists():
                log.warning("taking over the stale claim of trial %s (%s)", trial,
                            describe(other) if other else "unreadable")
            tmp = claims / f".{trial}.tmp-{os.getpid()}"
            tmp.write_text(json.dumps(holder()))
            os.replace(tmp, path)
    if busy:
        yield other
        return
    try:
        yield None
    finally:
        path.unlink(missing_ok=True)
