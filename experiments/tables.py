"""Results records -> pandas tables (cost and quality) in the papers' column layout."""

from __future__ import annotations

import math

import pandas as pd

from tokred.cost.record import SUSPECT_FACTOR, is_suspect

from .published import option_defaults
from .run_facts import known, protocol, run_facts

DIRS = ("t2v", "v2t")
RANK_COLS = [f"{d}_{m}" for d in DIRS for m in ("R@1", "R@5", "R@10", "MdR", "MnR")]
# Three parameter counts, each named for what it counts (report.PARAMS_NOTE says why they
# differ): every parameter of the model and reducer (what the cost section's memory
# measurement trains), TempMe's LoRA recipe, and what a quality row's fine-tune really trained.
PARAMS_ALL, PARAMS_LORA, PARAMS_TRAINED = "params (all)", "params (LoRA r=8)", "params trained"
QUALITY_MEM = "act. MiB/video (training, full fine-tune)"


def setting(reducer: str, options: dict) -> str:
    """``tome r=2`` / ``centerclip segments=4`` / ``none``."""
    opts = " ".join(f"{k}={option_value(v)}" for k, v in sorted(options.items()))
    return f"{reducer} {opts}".strip()


def option_value(v) -> str:
    """An option value as settings and labels show it (a list comma-joined: ``8,9,10``)."""
    return ",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)


NOT_PAIRED = "not paired: rerun"
SPEED_COLS = ("speed-up", "speed-up low", "speed-up high", "speed-up spread", "rounds", "ideal",
              "suspect", "speed batch", "videos/s", "ms/video")


def _timing(m: dict) -> dict:
    """Speed columns of a cost record, all at the batch size its speed-up was taken at.

    The speed-up is the record's own paired one (none and the reducer timed in the same
    interleaved rounds of one trial): the median per-round ratio, its low/high (``speed-up
    spread`` says whether they are the quartiles or min-max) and rounds, beside the GMACs ideal
    of the same record and whether the speed-up is suspect. A record without one (written before
    speed-ups were paired) gets no speed columns: a speed-up is never re-computed from two
    trials timed apart.
    """
    if "speedup" not in m:
        return {**dict.fromkeys(SPEED_COLS, math.nan), "speed-up spread": NOT_PAIRED,
                "suspect": False}
    vps = m["videos_per_s"][str(m["speedup_batch"])]
    return {"speed-up": m["speedup"], "speed-up low": m["speedup_low"],
            "speed-up high": m["speedup_high"], "speed-up spread": m["speedup_spread"],
            "rounds": m["speedup_rounds"], "ideal": m["ideal_speedup"],
            "suspect": is_suspect(m["speedup"], m["ideal_speedup"]),
            "speed batch": m["speedup_batch"], "videos/s": vps, "ms/video": 1000 / vps}


def speedup_text(row) -> str:
    """``1.31x [1.28, 1.35]``, flagged when suspect, or :data:`NOT_PAIRED` for an old record."""
    if not known(row.get("speed-up")):
        return NOT_PAIRED
    text = f"{row['speed-up']:.2f}x [{row['speed-up low']:.2f}, {row['speed-up high']:.2f}]"
    if row["suspect"]:
        text += f" (suspect: above {SUSPECT_FACTOR:g} x the {row['ideal']:.2f}x ideal)"
    return text


def rounds_text(row) -> str:
    """``5 (IQR)`` / ``2 (min-max)``: the rounds and what a speed-up's low/high are."""
    if not known(row.get("rounds")):
        return "-"
    return f"{int(row['rounds'])} ({row['speed-up spread']})"


def cost_frame(records: list[dict]) -> pd.DataFrame:
    """One row per finished cost trial: GMACs and memory ratios to ``none`` on the same
    backbone and T, and each trial's own paired speed-up (see :func:`_timing`)."""
    rows = []
    for r in records:
        if r.get("kind") != "cost" or r.get("status") != "ok":
            continue
        s, m = r["settings"], r["metrics"]  # m: a tokred.cost.record.CostRecord
        rows.append({
            "id": r["id"], "backbone": s["backbone"], "weights": s.get("weights", "random"),
            "frames": s["frames"], "reducer": s["reducer"], "options": s["options"],
            "setting": setting(s["reducer"], s["options"]), "GMACs": m["gmacs"],
            "activation": m.get("activation", "not recorded"),
            "reducer GMACs": m.get("reducer_work_gmacs", 0.0), "tokens out": m["tokens_out"],
            "act. MiB/video": m.get("activation_mb_per_video_full", math.nan),
            **_timing(m),
            "fvcore GMACs": m.get("fvcore_gmacs", math.nan),
            PARAMS_ALL: m.get("trainable_params", 0), PARAMS_LORA: m.get("trainable_params_lora"),
            "attn_tokens": m.get("attn_tokens", []),
            **spectral_cols(s, m),
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
    """GMACs % and memory % of every row against the ``none`` row of its group (exact numbers
    of separate trials may be divided; speed-ups may not, each trial pairs its own)."""

    def per_group(g: pd.DataFrame) -> pd.DataFrame:
        base = g[g["reducer"] == "none"]
        g = g.copy()
        if base.empty:
            g["GMACs %"] = math.nan
            return g
        b = base.iloc[0]
        g["GMACs %"] = 100 * g["GMACs"] / b["GMACs"]
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
               QUALITY_MEM: m.get("activation_mib", math.nan),
               "train peak RSS MiB": m.get("train_peak_rss_mib", math.nan),
               "ms/video": m.get("ms_per_video", math.nan), "videos/s": m.get("videos_per_s"),
               "GMACs": m.get("gmacs", math.nan), "tokens out": m.get("tokens_out"),
               PARAMS_TRAINED: m.get("trainable_params"), "R-Sum": m.get("rsum"),
               "recipe": (s.get("finetune") or {}).get("mode") if s["mode"] == "finetuned"
               else None,
               "twin acc.": m.get("twin_accuracy"), "train s": m.get("train_s")}
        for c in RANK_COLS:
            row[c] = m.get(c)
        row.update(interval_cols(m))
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
        row.update(run_facts(s, m))
        row.update(spectral_cols(s, m))
        row["protocol"] = protocol(row)
        rows.append(row)
    df = pd.DataFrame(rows)
    if df.empty:
        return df
    df = df.assign(_order=df["reducer"].map(reducer_rank))
    return df.sort_values(["model", "mode", "_order", "reducer", "GMACs"],
                          ascending=[True, False, True, True, False]
                          ).drop(columns="_order").reset_index(drop=True)


CI_COLS = [f"{d}_R@{k}" for d in DIRS for k in (1, 5, 10)] + ["R-Sum"]  # stats.METRICS


def interval_cols(m: dict) -> dict:
    """``{col} low`` / ``{col} high`` of each recall and R-Sum from a record's 95 % ``ci``
    (NaN for a record written before intervals were stored)."""
    ci = m.get("ci") or {}
    out = {}
    for c in CI_COLS:
        low, high = ci.get(c, (math.nan, math.nan))
        out[f"{c} low"], out[f"{c} high"] = low, high
    return out


def curve_label(reducer: str, options: dict) -> str:
    """One curve of the frontier: the reducer, with its categorical (string) options when
    they are not the defaults, e.g. ``centerclip (algorithm=spectral)``."""
    defaults = option_defaults(reducer)
    kind = [f"{k}={v}" for k, v in sorted(options.items())
            if isinstance(v, str) and v != defaults.get(k)]
    return f"{reducer} ({', '.join(kind)})" if kind else reducer


def is_spectral(reducer: str, options: dict) -> bool:
    """CenterCLIP with the spectral algorithm (the reducer whose affinity graph may be empty)."""
    return reducer == "centerclip" and options.get("algorithm") == "spectral"


def spectral_cols(s: dict, m: dict) -> dict:
    """Spectral-graph counters of a record (``None``: a spectral row that predates them)."""
    if not is_spectral(s["reducer"], s["options"]) and "spectral_segments" not in m:
        return {}
    k = s["options"].get("k", option_defaults("centerclip").get("k"))
    return {"spectral segments": m.get("spectral_segments"),
            "spectral empty": m.get("spectral_empty_graph"), "spectral k": option_value(k),
            "spectral svd redone": m.get("spectral_svd_retried")}


def spectral_note(row) -> str:
    """One line on the spectral affinity graphs of a row (empty graphs: positional choice)."""
    n, total = row.get("spectral empty"), row.get("spectral segments")
    if not known(total):
        return "spectral graph counts not recorded (the trial ran before they were counted)"
    n, total = int(n) if known(n) else 0, int(total)
    if n:
        k = row.get("spectral k") or "k"
        text = (f"spectral graph empty in {n:,} of {total:,} segments: the selection is "
                f"positional (the first {k} tokens of each segment)")
    else:
        text = f"spectral graph non-empty in all {total:,} segments"
    redone = row.get("spectral svd redone")
    if known(redone) and int(redone):
        text += (f"; the batched SVD was redone segment by segment for {int(redone):,} of them "
                 f"(MKL failed to converge or returned NaN, where the official code stops or "
                 f"clusters NaN)")
    return text


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
