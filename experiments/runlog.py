"""``OUT/sweep.log``: a sweep's log lines with timestamps, after its command line and provenance.

Every run on an output directory appends to the same file, so a resumed sweep's log follows
the first run's, each run starting with the command that began it.
"""

from __future__ import annotations

import contextlib
import json
import logging
from collections.abc import Iterator
from pathlib import Path
from typing import Callable

LOG_NAME = "sweep.log"
FORMAT = "%(asctime)s [pid %(process)d] %(levelname)s %(name)s: %(message)s"
# The library's, the built-in reducers' (CenterCLIP's spectral warnings) and this package's.
LOGGERS = ("tokred", "tokred_methods", __name__.split(".")[0])
log = logging.getLogger(__name__)
Note = Callable[..., None]


@contextlib.contextmanager
def sweep_log(out: Path, provenance: dict) -> Iterator[Note]:
    """Append this run's log to ``out/sweep.log`` while the block runs.

    INFO and above from the :data:`LOGGERS` (tokred's, its built-in reducers' and this
    application's) are written with timestamps and the process id (shards of one sweep share
    the file), after a ``start:`` line (the command line) and a ``provenance:`` line (JSON).
    Yields ``note(text, show=True)``: write
    ``text`` to the log and, with ``show``, print it (it does not pass through the console's
    log handler, so it is not shown twice).
    """
    handler = logging.FileHandler(Path(out) / LOG_NAME, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter(FORMAT))
    handler.setLevel(logging.INFO)
    loggers = [logging.getLogger(name) for name in LOGGERS]
    levels = [lg.level for lg in loggers]
    for lg in loggers:
        lg.addHandler(handler)
        lg.setLevel(logging.INFO)

    def note(text: str, show: bool = True) -> None:
        if show:
            print(text, flush=True)
        handler.handle(log.makeRecord(log.name, logging.INFO, __file__, 0, text, None, None))

    note(f"start: {provenance.get('command')}", show=False)
    note(f"provenance: {json.dumps(provenance, sort_keys=True, default=str)}", show=False)
    try:
        yield note
    finally:  # tests run several sweeps in one process
        for lg, level in zip(loggers, levels):
            lg.removeHandler(handler)
            lg.setLevel(level)
        handler.close()
