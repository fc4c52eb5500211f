"""Expensive steps shared by many trials (data generation, base training), done once per
output dir and reused: ``cached_step`` builds into a temp dir and renames it into place, so a
killed step leaves no half-built cache entry, and an exclusive lock lets parallel shards wait
for the first one instead of redoing the work."""

from __future__ import annotations

import fcntl
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any, Callable

from .records import trial_id

log = logging.getLogger(__name__)
DONE = "step.json"


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
    with open(final.parent / f".{final.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
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
