"""The papers' numbers (``published.csv``) and the result rows they stand beside.

A published row names its setting by a reducer preset (``tokred list`` shows them; empty: the
reducer's defaults). A result row gets it when its backbone, reducer and options agree, the
options compared with the reducer's defaults filled in on both sides, so ``{segments: 4}`` and
CenterCLIP's ``B6-4-49`` are the same setting.
"""

from __future__ import annotations

import csv
import logging
from pathlib import Path

log = logging.getLogger(__name__)
PUBLISHED_CSV = Path(__file__).with_name("published.csv")


def load_published(path: Path = PUBLISHED_CSV) -> list[dict]:
    """Rows of ``published.csv``, numbers parsed, ``options`` the row's preset's options.

    A preset that cannot be resolved here (its reducer not installed) gives ``options`` None:
    the row then stands beside no result.
    """
    if not path.exists():
        return []
    rows = []
    with open(path, newline="") as f:
        for row in csv.DictReader(line for line in f if not line.startswith("#")):
            preset = row.pop("preset", "") or None
            rows.append({**{k: _num(v) for k, v in row.items()}, "preset": preset,
                         "options": preset_options(row["reducer"], preset)})
    return rows


def preset_options(reducer: str, preset: str | None) -> dict | None:
    """The options of ``reducer``'s ``preset`` (``{}`` for None; None when unresolvable)."""
    if preset is None:
        return {}
    try:
        from tokred import resolve_options

        return resolve_options(reducer, preset)[1]
    except (KeyError, ImportError, ValueError) as err:  # the report runs without the plugins
        log.warning("published.csv: preset %s.%s not resolved (%s); its rows are not shown",
                    reducer, preset, err)
        return None


def _num(v):
    if v in ("", None):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return v
    return int(f) if f.is_integer() and "." not in str(v) else f


def matches(pub: dict, backbone: str, reducer: str, options: dict) -> bool:
    """The published row describes the same backbone, reducer and options (defaults filled)."""
    if pub["backbone"] != backbone or pub["reducer"] != reducer or pub["options"] is None:
        return False
    return _filled(reducer, options) == _filled(reducer, pub["options"])


def _filled(reducer: str, options: dict) -> dict:
    full = {**option_defaults(reducer), **options}
    # a tuple default such as TempMe's (8, 9, 10) equals the [8, 9, 10] of a YAML or JSON record
    return {k: list(v) if isinstance(v, tuple) else v for k, v in full.items()}


def option_defaults(reducer: str) -> dict:
    """The keyword options of ``reducer`` with their defaults (``{}`` when not installed)."""
    try:
        from tokred import reducer_options

        return reducer_options(reducer)
    except Exception:  # report must work without the plugin installed
        return {}


def published_for(rows: list[dict], backbone: str, reducer: str, options: dict,
                  dataset: str, mode: str | None = None) -> dict | None:
    """The first published row with the same dataset, mode and setting (None if none)."""
    for p in rows:
        if p.get("dataset") != dataset or (mode is not None and p.get("mode") != mode):
            continue
        if matches(p, backbone, reducer, options):
            return p
    return None
