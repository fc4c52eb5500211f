"""The report's quality section: one table per model, mode and data in CenterCLIP's Table 3
layout with 95 % intervals, the papers' rows beside matching settings, significance sentences,
the Pareto front and, on the synthetic benchmark, the per-caption-type detail."""

from __future__ import annotations

import pandas as pd

from .published import published_for
from .report_cost import spectral_lines
from .run_facts import PROTOCOL, test_text, training_text, weights_text
from .tables import PARAMS_TRAINED, QUALITY_MEM, RANK_COLS, to_markdown
from .uncertainty import (
    interval_note,
    pareto_lines,
    queries_of,
    significance_lines,
    with_intervals,
)

QUALITY_COLS = ["data", "setting", QUALITY_MEM, "ms/video", *RANK_COLS, "R-Sum", "GMACs",
                "GMACs %", "tokens out", PARAMS_TRAINED, "twin acc.", "preset"]
COLUMNS_NOTE = (
    "Columns follow CenterCLIP Table 3 (t2v/v2t R@1/5/10, MdR, MnR, speed) extended with "
    "R-Sum (t2v+v2t R@1+5+10), GMACs (visual, per video), tokens out, '" + PARAMS_TRAINED + "' "
    "and the reducer preset the setting amounts to. '" + QUALITY_MEM + "' is what one video "
    "keeps for backward in a full fine-tuning step of the evaluated encoder (MiB, counted from "
    "the tensors autograd saves); CenterCLIP's 'MeM' column is something else, the average GPU "
    "memory of its training in GB (2 V100s for ViT-B/32, 8 for ViT-B/16), so the two are not "
    "comparable: published rows show it as 'MeM ... GB'.")
SYNTH_NOTE = ("**SYNTHETIC**: every number in this table comes from the shipped synthetic "
              "benchmark with a small CLIP trained from scratch; it checks the pipeline and "
              "relative behaviour, it is not comparable to MSR-VTT.")
PROTOCOL_NOTE = {"msrvtt": (
    f"'protocol': 'as published' only when the record shows the papers' protocol (MSR-VTT 1k-A: "
    f"{PROTOCOL['msrvtt']['test_captions']:,} test captions, {PROTOCOL['msrvtt']['frames']} "
    f"frames, pretrained CLIP weights; fine-tuned rows {PROTOCOL['msrvtt']['epochs']:g} epochs "
    f"on the {PROTOCOL['msrvtt']['train_videos']:,} training videos), otherwise 'not "
    f"comparable' and why: such a row does not test the published numbers beside it.")}


def quality_section(df: pd.DataFrame, pubs: list[dict], records: list[dict] | None = None,
                    cost_frames=()) -> list[str]:
    """One table per model, mode and data with 95 % intervals, then in sentences which
    differences are significant (paired tests on the ``records``' per-query ranks).
    ``cost_frames``: the frame counts of the cost section, named when they differ."""
    lines = ["## Retrieval quality", ""]
    if df.empty:
        return lines + ["(no finished quality trials)", ""]
    queries = queries_of(records or [])
    for (model, mode, data), g in df.groupby(["model", "mode", "data"], sort=False):
        g = with_gmacs_pct(g)
        lines += [heading(g, model, mode, data, cost_frames), "", run_line(g), ""]
        lines += [SYNTH_NOTE, ""] if data == "synth" else []
        lines += weights_warning(g)
        table = with_intervals(g[QUALITY_COLS], g)
        table["data"] = table["data"].map(lambda d: "SYNTHETIC" if d == "synth" else d)
        if data != "synth":
            table["protocol"] = g["protocol"]
        table = _with_published(table, g, pubs, data, mode)
        published = ("" if data == "synth" else " Rows 'published:' are the papers' numbers "
                     "(V100 GB and ms) for the same setting. " + PROTOCOL_NOTE.get(data, ""))
        lines += [to_markdown(table), "", COLUMNS_NOTE + published, "", interval_note(g), ""]
        lines += significance_lines(g, queries)
        lines += pareto_lines(g)
        lines += spectral_lines(g, "counted over every test video evaluated")
        if data == "synth":
            lines += synth_detail(g, mode)
    return lines


def heading(g: pd.DataFrame, model: str, mode: str, data: str, cost_frames=()) -> str:
    """``### SYNTHETIC benchmark, scale model: scale-B32, training-free, 8 frames (the cost
    section ran at 12 frames)``: the frames quality was measured at, and the cost section's
    when they differ."""
    tag = "SYNTHETIC benchmark, scale model" if data == "synth" else data
    frames = sorted({int(f) for f in g["frames"] if pd.notna(f)})
    text = f"### {tag}: {model}, {mode.replace('_', '-')}, "
    if not frames:
        text += "frames not recorded"
    else:
        text += f"{'/'.join(map(str, frames))} frames"
    other = sorted({int(f) for f in cost_frames} - set(frames))
    if other:
        text += f" (the cost section ran at {'/'.join(map(str, other))} frames)"
    return text


def with_gmacs_pct(g: pd.DataFrame) -> pd.DataFrame:
    """``GMACs %``: each row's GMACs relative to ``none`` of the same table (NaN without one)."""
    base = g.loc[g["reducer"] == "none", "GMACs"]
    return g.assign(**{"GMACs %": 100 * g["GMACs"] / base.iloc[0] if not base.empty
                       else float("nan")})


def _per_setting(g: pd.DataFrame, text) -> str:
    """``text(row)`` once when every row agrees, else each value with its settings."""
    by: dict[str, list[str]] = {}
    for _, r in g.iterrows():
        by.setdefault(text(r), []).append(r["setting"])
    if len(by) == 1:
        return next(iter(by))
    return "; ".join(f"{v} [{', '.join(s)}]" for v, s in by.items())


def run_line(g: pd.DataFrame) -> str:
    """What the rows of a quality table ran with, read from their records."""
    frames = _per_setting(g, lambda r: str(int(r["frames"])) if pd.notna(r["frames"]) else "?")
    return (f"Weights: {_per_setting(g, weights_text)}. Test set: {_per_setting(g, test_text)}. "
            f"Frames: {frames}. Training run: {_per_setting(g, training_text)}.")


def weights_warning(g: pd.DataFrame) -> list[str]:
    """A warning when the rows cannot tell reducers apart: random weights or chance level."""
    if (g["weights kind"] == "random").any():
        return ["**Random weights**: these rows come from an untrained model, so every reducer "
                "scores about the same (chance level); equal numbers here do not mean a reducer "
                "is lossless.", ""]
    r1, chance = pd.to_numeric(g["t2v_R@1"]), pd.to_numeric(g["chance t2v R@1"])
    if chance.notna().all() and r1.notna().all() and (r1 < 2 * chance).all():
        return [f"**At chance level**: every row's t2v R@1 is under twice chance "
                f"({chance.max():.2f} %), so the weights have learnt next to nothing; equal "
                f"numbers across reducers here do not mean a reducer is lossless.", ""]
    return []


def synth_detail(g: pd.DataFrame, mode: str) -> list[str]:
    """Per-caption-type t2v R@1/R@5, multiples of chance, twin accuracy and wall times."""
    from tokred.synth import TYPES

    if "x chance" not in g:
        return []
    types = [t for t in TYPES if f"{t} R@1" in g and g[f"{t} R@1"].notna().any()]
    cols = ["setting", "t2v_R@1", "x chance", "t2v_R@5", "t2v_R@10", "R-Sum"]
    cols += [f"{t} R@{k}" for t in types for k in (1, 5)]
    cols += ["twin acc.", "eval s"] + (["train s"] if mode == "finetuned" else [])
    first = g.iloc[0]
    counts = ", ".join(f"{t} {int(first[f'{t} n'])}" for t in types if pd.notna(first[f"{t} n"]))
    lines = [f"Per caption type, {mode.replace('_', '-')} (SYNTHETIC): t2v R@1 / R@5 in % "
             "(overall recalls and R-Sum with their 95 % intervals). "
             f"Chance on {int(first['captions'])} test captions ({counts}): R@1 "
             f"{first['chance R@1']:.2f} %, R@5 {first['chance R@5']:.2f} %, R@10 "
             f"{first['chance R@10']:.2f} %; 'x chance' = t2v R@1 / chance. Twin acc. = share "
             "of time-reversed twin pairs told apart (0.50 for any order-blind model).", "",
             to_markdown(with_intervals(g[[c for c in cols if c in g]], g)), ""]
    if pd.notna(first.get("base steps")):
        lines += [f"Base model (reducer none, trained from scratch once and shared by every "
                  f"row): {int(first['base steps'])} steps in {first['base train s']:.0f} s"
                  + (f" (stopped: {first['base stopped']})" if first.get("base stopped") else "")
                  + ".", ""]
    return lines


def _with_published(table: pd.DataFrame, g: pd.DataFrame, pubs: list[dict], data: str,
                    mode: str) -> pd.DataFrame:
    """``table`` with a 'published:' row after each of our rows whose setting a paper reports."""
    if data == "synth":
        return table
    rows = []
    for (_, ours), (_, src) in zip(table.iterrows(), g.iterrows()):
        rows.append(ours.to_dict())
        p = published_for(pubs, src["model"], src["reducer"], src["options"], data, mode)
        if p is not None:
            rows.append(_published_row(p, data))
    return pd.DataFrame(rows, columns=table.columns)


def _published_row(p: dict, data: str) -> dict:
    """A published row in our columns; its memory is CenterCLIP's MeM (GB), labelled so."""
    pub = {c: p.get(c) for c in RANK_COLS}
    pub.update({"data": data, "setting": f"published: {p['method']}", "preset": p.get("preset"),
                QUALITY_MEM: f"MeM {p['mem_gb']} GB ({p['hardware']})" if p.get("mem_gb")
                else None,
                "ms/video": f"{p['ms_per_video']} ({p['hardware']})"
                if p.get("ms_per_video") else None,
                PARAMS_TRAINED: p.get("trainable_params"),
                "protocol": f"published ({p['source']})"})
    return pub
