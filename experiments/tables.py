"""Results records -> pandas tables (cost and quality) in the papers' column layout."""

from __future__ import annotations

import math
from pathlib import Path

import pandas as pd

from tokred.cost.record import SUSPECT_FACTOR, is_suspect

from .published import option_defaults

DIRS = ("t2v", "v2t")
RANK_COLS = [f"{d}_{m}" for d in DIRS for m in ("R@1", "R@5", "R@10", "MdR", "MnR")]


def setting(reducer: str, options: dict) -> str:
    """``tome r=2`` / ``centerclip segments=4`` / ``none``."""
    opts = " ".join(f"{k}={_fmt(v)}" for k, v in sorted(options.items()))
    return f"{reducer} {opts}".strip()


def _fmt(v) -> str:
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
    if not _known(row.get("speed-up")):
        return NOT_PAIRED
    text = f"{row['speed-up']:.2f}x [{row['speed-up low']:.2f}, {row['speed-up high']:.2f}]"
    if row["suspect"]:
        text += f" (suspect: above {SUSPECT_FACTOR:g} x the {row['ideal']:.2f}x ideal)"
    return text


def rounds_text(row) -> str:
    """``5 (IQR)`` / ``2 (min-max)``: the rounds and what a speed-up's low/high are."""
    if not _known(row.get("rounds")):
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
            "reducer GMACs": m.get("reducer_work_gmacs", 0.0), "tokens out": m["tokens_out"],
            "act. MiB/video": m.get("activation_mb_per_video_full", math.nan),
            **_timing(m),
            "fvcore GMACs": m.get("fvcore_gmacs", math.nan),
            "trainable params": m.get("trainable_params", 0),
            "trainable (LoRA)": m.get("trainable_params_lora"),
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
               "MeM act. MiB/video": m.get("activation_mib", math.nan),
               "train peak RSS MiB": m.get("train_peak_rss_mib", math.nan),
               "ms/video": m.get("ms_per_video", math.nan), "videos/s": m.get("videos_per_s"),
               "GMACs": m.get("gmacs", math.nan), "tokens out": m.get("tokens_out"),
               "trainable params": m.get("trainable_params"), "R-Sum": m.get("rsum"),
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
            "spectral empty": m.get("spectral_empty_graph"), "spectral k": _fmt(k)}


def spectral_note(row) -> str:
    """One line on the spectral affinity graphs of a row (empty graphs: positional choice)."""
    n, total = row.get("spectral empty"), row.get("spectral segments")
    if not _known(total):
        return "spectral graph counts not recorded (the trial ran before they were counted)"
    n, total = int(n) if _known(n) else 0, int(total)
    if n:
        k = row.get("spectral k") or "k"
        return (f"spectral graph empty in {n:,} of {total:,} segments: the selection is "
                f"positional (the first {k} tokens of each segment)")
    return f"spectral graph non-empty in all {total:,} segments"


def _known(v) -> bool:
    return v is not None and not (isinstance(v, float) and math.isnan(v))


def _plural(n: int, word: str) -> str:
    return f"{n:,} {word}{'' if n == 1 else 's'}"


# What the published MSR-VTT rows were run with (CenterCLIP Table 3b: MSR-VTT 1k-A test, 9k
# training split, 12 frames, 5 epochs from the OpenAI CLIP weights); a row is "as published"
# only when its record shows the same.
PROTOCOL = {"msrvtt": {"test_captions": 1000, "frames": 12, "epochs": 5.0, "train_videos": 9000}}


def run_facts(s: dict, m: dict) -> dict:
    """What a quality trial ran, from its record: weights, test size, frames, training."""
    base = m.get("base_train") or {}
    kind = m.get("weights_kind") or ("file" if s.get("weights") else "scratch")
    name = m.get("weights_file") or (Path(s["weights"]).name if s.get("weights") else None)
    return {"weights kind": kind, "weights file": name,
            "weights sha": (m.get("weights_sha256") or "")[:8] or None,
            "weights release": m.get("weights_release"),
            "test captions": m.get("num_captions"), "test videos": m.get("num_videos"),
            "chance t2v R@1": m.get("chance_R@1"), "frames": m.get("frames", s.get("frames")),
            "base total steps": base.get("total_steps"), "base epochs": m.get("base_epochs"),
            "train videos": m.get("train_videos"), "train steps": m.get("train_steps"),
            "train epochs": m.get("train_epochs"), "recipe epochs": m.get("recipe_epochs"),
            "recipe steps": m.get("recipe_steps")}


def weights_text(row) -> str:
    """``ViT-B-32.pt (sha256 40d36571, open_clip ViT-B-32/openai)`` / trained here / random."""
    kind = row.get("weights kind")
    if kind == "random":
        return "random (untrained)"
    if kind == "scratch":
        steps, ep, n = row.get("base steps"), row.get("base epochs"), row.get("train videos")
        if not _known(steps):
            return f"{row['model']} trained from scratch here (steps not recorded)"
        return (f"{row['model']} trained from scratch here ({_plural(int(steps), 'step')}"
                + (f", {ep:.2f} epochs" if _known(ep) else "")
                + (f" of {_plural(int(n), 'video')}" if _known(ep) and _known(n) else "") + ")")
    if kind == "tag":
        return f"open_clip pretrained tag {row.get('weights file')}"
    sha, rel = row.get("weights sha"), row.get("weights release")
    return (f"{row.get('weights file')} (" + (f"sha256 {sha}" if _known(sha) else
                                              "hash not recorded")
            + (f", the open_clip {rel} release file" if _known(rel) else "") + ")")


def test_text(row) -> str:
    """``1,000 test captions / 1,000 test videos, chance t2v R@1 0.10 %``."""
    caps, vids = row.get("test captions"), row.get("test videos")
    if not (_known(vids) and _known(caps)):
        return "test size not recorded"
    chance = row.get("chance t2v R@1")
    chance = chance if _known(chance) else 100.0 / int(vids)
    return (f"{_plural(int(caps), 'test caption')}, {_plural(int(vids), 'test video')} (chance "
            f"t2v R@1 = 1/{int(vids):,} = {chance:.2f} %)")


def training_text(row) -> str:
    """The training a row's numbers come after (never a recipe's plan, only what ran)."""
    if row.get("mode") != "finetuned":
        return "none: the reducer is inserted into the weights above"
    steps = row.get("train steps")
    if not _known(steps):
        return "fine-tune (steps not recorded)"
    ep, n = row.get("train epochs"), row.get("train videos")
    text = f"fine-tune {_plural(int(steps), 'step')}"
    if _known(ep):
        text += f" ({ep:.2f} epochs" + (f" of {_plural(int(n), 'video')}" if _known(n) else "") + ")"
    plan = row.get("recipe epochs")
    if _known(plan):
        text += f", recipe {plan:g} epochs"
    elif _known(row.get("recipe steps")):
        text += f", recipe max_steps {int(row['recipe steps'])}"
    return text


def protocol(row) -> str:
    """``as published`` or ``not comparable: <why>`` against the papers' MSR-VTT protocol."""
    ref = PROTOCOL.get(row.get("data"))
    if ref is None:
        return "not comparable: " + ("synthetic data" if row.get("data") == "synth"
                                     else f"no published protocol for {row.get('data')}")
    why = []
    kind = row.get("weights kind")
    if kind == "random":
        why.append("random weights")
    elif kind == "scratch":
        why.append("weights trained from scratch here, not CLIP")
    caps = row.get("test captions")
    if not _known(caps):
        why.append("test size not recorded")
    elif int(caps) != ref["test_captions"]:
        why.append(f"{int(caps):,} test captions, not {ref['test_captions']:,}")
    if _known(row.get("frames")) and int(row["frames"]) != ref["frames"]:
        why.append(f"{int(row['frames'])} frames, not {ref['frames']}")
    if row.get("mode") == "finetuned":
        ep, n = row.get("train epochs"), row.get("train videos")
        if not _known(ep):
            why.append("training length not recorded")
        elif ep < ref["epochs"] - 1e-6:
            why.append(f"fine-tuned {ep:.2f} epochs, not {ref['epochs']:g}")
        if _known(n) and int(n) != ref["train_videos"]:
            why.append(f"{int(n):,} training videos, not {ref['train_videos']:,}")
    return "as published" if not why else "not comparable: " + "; ".join(why)


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
