"""Results records -> pandas tables (cost and quality) in the papers' column layout."""

from __future__ import annotations

import csv
import math
from pathlib import Path

import pandas as pd

PUBLISHED_CSV = Path(__file__).with_name("published.csv")
DIRS = ("t2v", "v2t")
RANK_COLS = [f"{d}_{m}" for d in DIRS for m in ("R@1", "R@5", "R@10", "MdR", "MnR")]


def setting(reducer: str, options: dict) -> str:
    """``tome r=2`` / ``centerclip segments=4`` / ``none``."""
    opts = " ".join(f"{k}={_fmt(v)}" for k, v in sorted(options.items()))
    return f"{reducer} {opts}".strip()


def _fmt(v) -> str:
    return ",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)


def normalise_measure(rec: dict) -> dict:
    """Add the sweep's flat keys to a ``tokred.cost.measure`` record (its keys are kept)."""
    out = dict(rec)
    timings = rec.get("timings", {})
    out["throughput"] = {b: {"videos_per_s": t["per_second"],
                             "ms_per_video": 1000 * t["median_s"] / t["items"],
                             "spread": t["spread"], "times_s": t["times"]}
                         for b, t in timings.items()}
    if out["throughput"]:
        best = max(out["throughput"].values(), key=lambda r: r["videos_per_s"])
        out["videos_per_s"], out["ms_per_video"] = best["videos_per_s"], best["ms_per_video"]
        out["videos_per_s_by_batch"] = rec.get("videos_per_s")
    out["reducer_gmacs"] = rec.get("reducer_work_gmacs", 0.0)
    out["activation_mib"] = rec.get("activation_mb_per_video_full")  # MB = 2**20 bytes there
    out["activation_lora_mib"] = rec.get("activation_mb_per_video_lora")
    out["trainable_params_lora"] = rec.get("trainable_params_lora")
    out["cost_backend"] = "tokred.cost.measure"
    return out


def _spread(m: dict) -> float:
    """Relative half-IQR of the timing at the best batch size (noise indicator)."""
    runs = list((m.get("throughput") or {}).values())
    if not runs:
        return math.nan
    return max(runs, key=lambda r: r["videos_per_s"]).get("spread", math.nan)


def cost_frame(records: list[dict]) -> pd.DataFrame:
    """One row per finished cost trial, with ratios to ``none`` on the same backbone and T."""
    rows = []
    for r in records:
        if r.get("kind") != "cost" or r.get("status") != "ok":
            continue
        s, m = r["settings"], r["metrics"]
        if "ms_per_video" not in m and "timings" in m:
            m = normalise_measure(m)
        rows.append({
            "id": r["id"], "backbone": s["backbone"], "weights": s.get("weights", "random"),
            "frames": s["frames"], "reducer": s["reducer"], "options": s["options"],
            "setting": setting(s["reducer"], s["options"]), "GMACs": m["gmacs"],
            "reducer GMACs": m.get("reducer_gmacs", 0.0), "tokens out": m["tokens_out"],
            "act. MiB/video": m.get("activation_mib", math.nan),
            "ms/video": m["ms_per_video"], "videos/s": m["videos_per_s"],
            "timing spread": _spread(m),
            "fvcore GMACs": m.get("fvcore_gmacs", math.nan),
            "trainable params": m.get("trainable_params", 0),
            "trainable (LoRA)": m.get("trainable_params_lora"),
            "attn_tokens": m.get("attn_tokens", []),
        })
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df = df.assign(_order=df["reducer"].map(reducer_rank))
    df = df.sort_values(["backbone", "_order", "reducer", "GMACs"],
                        ascending=[True, True, True, False]).drop(columns="_order")
    return _add_ratios(df, ["backbone", "frames"])


ORDER = ("none", "tome", "tempme", "centerclip", "pooling", "sparse")


def reducer_rank(name: str) -> int:
    """Table order: the baseline first, then the papers' reducers, then the rest."""
    return ORDER.index(name) if name in ORDER else len(ORDER)


def _add_ratios(df: pd.DataFrame, keys: list[str]) -> pd.DataFrame:
    def per_group(g: pd.DataFrame) -> pd.DataFrame:
        base = g[g["reducer"] == "none"]
        g = g.copy()
        if base.empty:
            g["GMACs %"], g["speed-up"] = math.nan, math.nan
            return g
        b = base.iloc[0]
        g["GMACs %"] = 100 * g["GMACs"] / b["GMACs"]
        g["speed-up"] = g["videos/s"] / b["videos/s"]
        if "act. MiB/video" in g:
            g["memory %"] = 100 * g["act. MiB/video"] / b["act. MiB/video"]
        return g

    parts = [per_group(g) for _, g in df.groupby(keys, sort=True)]
    return pd.concat(parts, ignore_index=True)


def quality_frame(records: list[dict]) -> pd.DataFrame:
    """One row per finished quality trial (both modes), with its own cost columns."""
    rows = []
    for r in records:
        if r.get("kind") != "quality" or r.get("status") != "ok":
            continue
        s, m = r["settings"], r["metrics"]
        data = s.get("data", {}).get("kind", "synth")
        row = {"id": r["id"], "model": s["model"], "mode": s["mode"], "data": data,
               "reducer": s["reducer"], "options": s["options"],
               "setting": setting(s["reducer"], s["options"]),
               "label": "SYNTHETIC" if data == "synth" else "",
               "MeM act. MiB/video": m.get("activation_mib", math.nan),
               "train peak RSS MiB": m.get("train_peak_rss_mib", math.nan),
               "ms/video": m.get("ms_per_video", math.nan), "videos/s": m.get("videos_per_s"),
               "GMACs": m.get("gmacs", math.nan), "tokens out": m.get("tokens_out"),
               "trainable params": m.get("trainable_params"), "R-Sum": m.get("rsum"),
               "twin acc.": m.get("twin_accuracy"), "train s": m.get("train_s")}
        for c in RANK_COLS:
            row[c] = m.get(c)
        if m.get("chance_R@1"):
            row["x chance"] = m["t2v_R@1"] / m["chance_R@1"]
            row.update({f"chance R@{k}": m.get(f"chance_R@{k}") for k in (1, 5, 10)})
            row["captions"] = m.get("num_captions")
        for kind, t in (m.get("per_type") or {}).items():
            row[f"{kind} R@1"], row[f"{kind} R@5"] = t.get("t2v_R@1"), t.get("t2v_R@5")
            row[f"{kind} n"] = t.get("count")
        base = m.get("base_train") or {}
        row.update({"base steps": base.get("steps"), "base train s": base.get("wall_s"),
                    "base stopped": base.get("stopped"), "eval s": m.get("eval_s")})
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df = df.assign(_order=df["reducer"].map(reducer_rank))
    return df.sort_values(["model", "mode", "_order", "reducer", "GMACs"],
                          ascending=[True, False, True, True, False]
                          ).drop(columns="_order").reset_index(drop=True)


def load_published(path: Path = PUBLISHED_CSV) -> list[dict]:
    """Rows of ``published.csv`` with ``options`` parsed from ``k=v;k=v``."""
    if not path.exists():
        return []
    rows = []
    with open(path, newline="") as f:
        for row in csv.DictReader(line for line in f if not line.startswith("#")):
            opts = {}
            for item in filter(None, (row.get("options") or "").split(";")):
                k, _, v = item.partition("=")
                opts[k.strip()] = _num(v.strip())
            rows.append({**{k: _num(v) for k, v in row.items() if k != "options"},
                         "options": opts})
    return rows


def _num(v):
    if v in ("", None):
        return None
    try:
        f = float(v)
    except (TypeError, ValueError):
        return v
    return int(f) if f.is_integer() and "." not in str(v) else f


def matches(pub: dict, backbone: str, reducer: str, options: dict) -> bool:
    """The published row describes the same backbone, reducer and (defaulted) options."""
    if pub["backbone"] != backbone or pub["reducer"] != reducer:
        return False
    full = {**_defaults(reducer), **options}
    return all(full.get(k) == v for k, v in pub["options"].items())


def _defaults(reducer: str) -> dict:
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


def to_markdown(df: pd.DataFrame, floatfmt: str = ".2f") -> str:
    """A GitHub Markdown table (no extra dependency)."""
    cols = list(df.columns)

    def cell(v) -> str:
        if v is None or (isinstance(v, float) and math.isnan(v)):
            return "-"
        if isinstance(v, float) and v.is_integer() and abs(v) >= 1000:
            return f"{int(v):,}"
        if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 10000:
            return f"{v:,}"
        if isinstance(v, float):
            return format(v, floatfmt)
        return str(v)

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join(lines)
