"""Tables (Markdown + CSV) and figures from results files alone (no model needed).

Usage::

    tokred report runs/default            # writes runs/default/report/
    tokred report runs/a runs/b -o merged/  # several result dirs or files
"""

from __future__ import annotations

import argparse
import datetime as dt
import logging
import sys
from pathlib import Path

import pandas as pd

from tokred.cost.record import SUSPECT_FACTOR

from .published import load_published, published_for
from .records import load_results, result_files
from .tables import (
    NOT_PAIRED,
    PROTOCOL,
    RANK_COLS,
    cost_frame,
    is_spectral,
    quality_frame,
    rounds_text,
    spectral_note,
    speedup_text,
    test_text,
    to_markdown,
    training_text,
    weights_text,
)
from .uncertainty import (
    interval_note,
    pareto_lines,
    queries_of,
    significance_lines,
    with_intervals,
)

log = logging.getLogger(__name__)

COST_COLS = ["setting", "preset", "weights", "GMACs", "fvcore GMACs", "GMACs %", "reducer GMACs",
             "tokens out", "act. MiB/video", "memory %", "speed-up [low, high]", "rounds", "ideal",
             "videos/s", "ms/video", "trainable params", "trainable (LoRA)"]
QUALITY_COLS = ["data", "setting", "MeM act. MiB/video", "ms/video", *RANK_COLS, "R-Sum",
                "GMACs", "GMACs %", "tokens out", "trainable params", "twin acc.", "preset"]
SPEED_NOTE = (
    "Speed is measured in pairs, never as a ratio of two trials timed minutes apart: each "
    "trial times its reducer and `none` (over the same weights, on the same fixed batch) in its "
    "own process, in interleaved rounds of one call each (none, reducer | reducer, none | ...). "
    "'speed-up' is the median over the rounds of none's time / the reducer's time in the same "
    "round, at the largest batch size timed (CPU inference); [low, high] is the inter-quartile "
    "range of the per-round ratios with 5 or more rounds, their min-max with fewer ('rounds' "
    "says which). A change in the machine's speed between rounds cancels in each ratio; the "
    "`none` row is its own baseline (1.00x). 'ideal' = none's GMACs / the row's, what the "
    "removed work alone predicts: a speed-up more than {factor:g} x its ideal is flagged "
    "'suspect' (the machine's load changed within rounds, or the measurement is broken), not "
    "believed. 'videos/s' and 'ms/video' are the reducer's absolute speed at that batch size: "
    "they move with the machine's load, compare speed-ups instead. '{not_paired}': the trial "
    "was recorded before speed-ups were paired; run it again (a sweep skips finished trials: "
    "use a fresh --out) to measure one.")
GMACS_NOTE = ("GMACs = 10^9 multiply-accumulates of the visual tower per video, counted "
              "analytically from the token trace (1 MAC = 2 FLOPs; fvcore's 'flops' are MACs). "
              "'reducer GMACs' is the reducer's own estimated work (matching/clustering).")


def with_presets(df: pd.DataFrame) -> pd.DataFrame:
    """A ``preset`` column: the reducer preset each row's options amount to, defaults filled
    (``tokred.preset_of``; None for other settings, whose ``setting`` text says it all)."""
    if df.empty:
        return df
    from tokred import preset_of

    return df.assign(preset=[preset_of(r, o) for r, o in zip(df["reducer"], df["options"])])


def _published_cost(pubs: list[dict], row: pd.Series) -> tuple[str, str]:
    """Published memory and speed ratios to the baseline for the same setting (or '')."""
    p = published_for(pubs, row["backbone"], row["reducer"], row["options"], "msrvtt", "finetuned")
    base = published_for(pubs, row["backbone"], "none", {}, "msrvtt", "finetuned")
    if p is None or base is None or p.get("mem_gb") is None:
        return "", ""
    return (f"{100 * p['mem_gb'] / base['mem_gb']:.0f} %",
            f"{base['ms_per_video'] / p['ms_per_video']:.2f}x")


def cost_section(df: pd.DataFrame, pubs: list[dict]) -> tuple[list[str], pd.DataFrame]:
    lines = ["## Cost (random weights)", "",
             "Cost does not depend on the weights, so these rows use randomly initialised "
             "backbones (**random weights**). " + GMACS_NOTE + " Memory = activations one video "
             "keeps for backward in a full fine-tuning step (MiB, counted from the tensors "
             "autograd saves, so device-independent); GMACs, tokens and memory are exact. "
             + SPEED_NOTE.format(factor=SUSPECT_FACTOR, not_paired=NOT_PAIRED) + " "
             "'paper' columns: the published MSR-VTT ratio to the baseline for the same "
             "setting (training GPU memory and inference speed on V100), where one exists.",
             ""]
    if df.empty:
        return lines + ["(no finished cost trials)", ""], df
    paper = df.apply(lambda r: _published_cost(pubs, r), axis=1, result_type="expand")
    df = df.assign(**{"paper memory %": paper[0], "paper speed-up": paper[1]})
    for (bb, frames), g in df.groupby(["backbone", "frames"], sort=True):
        lines += [f"### {bb}, {frames} frames, random weights", "",
                  to_markdown(_speed_shown(g)[COST_COLS + ["paper memory %", "paper speed-up"]]),
                  ""]
        lines += spectral_lines(g, "counted on one random video through this random-weight "
                                   "backbone")
    return lines, df


def _speed_shown(g: pd.DataFrame) -> pd.DataFrame:
    """The speed columns as shown: speed-up [low, high] (a suspect one flagged), rounds, ideal."""
    return g.assign(**{"speed-up [low, high]": g.apply(speedup_text, axis=1),
                       "rounds": g.apply(rounds_text, axis=1),
                       "ideal": [f"{v:.2f}x" if pd.notna(v) else "-" for v in g["ideal"]]})


def spectral_lines(g: pd.DataFrame, counted: str) -> list[str]:
    """A note for every CenterCLIP spectral row: how many segments had an empty graph."""
    rows = [r for _, r in g.iterrows()
            if is_spectral(r["reducer"], r["options"]) or pd.notna(r.get("spectral segments"))]
    if not rows:
        return []
    return [f"Spectral affinity graphs ({counted}; an empty graph is one where every "
            "off-diagonal affinity underflows to 0, e.g. with the paper's sigma on ViT tokens):",
            "", *[f"- {r['setting']}: {spectral_note(r)}" for r in rows], ""]


def quality_section(df: pd.DataFrame, pubs: list[dict],
                    records: list[dict] | None = None) -> list[str]:
    """One table per model, mode and data with 95 % intervals, then in sentences which
    differences are significant (paired tests on the ``records``' per-query ranks)."""
    lines = ["## Retrieval quality", ""]
    if df.empty:
        return lines + ["(no finished quality trials)", ""]
    queries = queries_of(records or [])
    for (model, mode, data), g in df.groupby(["model", "mode", "data"], sort=False):
        g = with_gmacs_pct(g)
        tag = "SYNTHETIC benchmark, scale model" if data == "synth" else data
        lines += [f"### {tag}: {model}, {mode.replace('_', '-')}", "", run_line(g), ""]
        if data == "synth":
            lines += ["**SYNTHETIC**: every number in this table comes from the shipped synthetic "
                      "benchmark with a small CLIP trained from scratch; it checks the pipeline "
                      "and relative behaviour, it is not comparable to MSR-VTT.", ""]
        lines += weights_warning(g)
        table = with_intervals(g[QUALITY_COLS], g)
        table["data"] = table["data"].map(lambda d: "SYNTHETIC" if d == "synth" else d)
        if data != "synth":
            table["protocol"] = g["protocol"]
        table = _with_published(table, g, pubs, data, mode)
        published = ("" if data == "synth" else " Rows 'published:' are the papers' numbers "
                     "(V100 GB and ms) for the same setting. " + PROTOCOL_NOTE.get(data, ""))
        lines += [to_markdown(table), "",
                  "Columns follow CenterCLIP Table 3 (MeM, Speed, t2v/v2t R@1/5/10, MdR, MnR) "
                  "extended with R-Sum (t2v+v2t R@1+5+10), GMACs (visual, per video), tokens out, "
                  "trainable parameters and the reducer preset the setting amounts to."
                  + published, "", interval_note(g), ""]
        lines += significance_lines(g, queries)
        lines += pareto_lines(g)
        lines += spectral_lines(g, "counted over every test video evaluated")
        if data == "synth":
            lines += synth_detail(g, mode)
    return lines


def with_gmacs_pct(g: pd.DataFrame) -> pd.DataFrame:
    """``GMACs %``: each row's GMACs relative to ``none`` of the same table (NaN without one)."""
    base = g.loc[g["reducer"] == "none", "GMACs"]
    return g.assign(**{"GMACs %": 100 * g["GMACs"] / base.iloc[0] if not base.empty
                       else float("nan")})


PROTOCOL_NOTE = {"msrvtt": (
    f"'protocol': 'as published' only when the record shows the papers' protocol (MSR-VTT 1k-A: "
    f"{PROTOCOL['msrvtt']['test_captions']:,} test captions, {PROTOCOL['msrvtt']['frames']} "
    f"frames, pretrained CLIP weights; fine-tuned rows {PROTOCOL['msrvtt']['epochs']:g} epochs "
    f"on the {PROTOCOL['msrvtt']['train_videos']:,} training videos), otherwise 'not "
    f"comparable' and why: such a row does not test the published numbers beside it.")}


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
    if data == "synth":
        return table
    rows = []
    for (_, ours), (_, src) in zip(table.iterrows(), g.iterrows()):
        rows.append(ours.to_dict())
        p = published_for(pubs, src["model"], src["reducer"], src["options"], data, mode)
        if p is not None:
            pub = {c: p.get(c) for c in RANK_COLS}
            pub.update({"data": data, "setting": f"published: {p['method']}",
                        "preset": p.get("preset"),
                        "MeM act. MiB/video": f"{p['mem_gb']} GB ({p['hardware']})"
                        if p.get("mem_gb") else None,
                        "ms/video": f"{p['ms_per_video']} ({p['hardware']})"
                        if p.get("ms_per_video") else None,
                        "trainable params": p.get("trainable_params"),
                        "protocol": f"published ({p['source']})"})
            rows.append(pub)
    return pd.DataFrame(rows, columns=table.columns)


def error_section(records: list[dict]) -> list[str]:
    bad = [r for r in records if r.get("status") != "ok"]
    if not bad:
        return []
    lines = ["## Failed trials", "", "A rerun of the sweep retries them.", "",
             "| id | kind | setting | error |", "|---|---|---|---|"]
    for r in bad:
        s = r["settings"]
        err = str(r.get("error", "")).replace("|", "/").replace("\n", " ")[:200]
        lines.append(f"| {r['id']} | {r['kind']} | {s['reducer']} {s['options']} | {err} |")
    return lines + [""]


def write_report(inputs: list[str | Path], out: str | Path, config=None) -> Path:
    """Write ``report.md``, CSV tables and PNG figures for the results in ``inputs``."""
    from .plots import make_figures

    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    records = list(load_results(inputs).values())
    if config is not None:  # only the trials of this config (a results file may hold older ones)
        ids = {t.id for t in config.trials}
        records = [r for r in records if r["id"] in ids]
    pubs = load_published()
    cost, quality = with_presets(cost_frame(records)), with_presets(quality_frame(records))
    name = getattr(config, "name", None) or Path(inputs[0]).name
    lines = [f"# Sweep report: {name}", ""]
    desc = (getattr(config, "raw", {}) or {}).get("description")
    if desc:
        lines += [str(desc), ""]
    ok = sum(r.get("status") == "ok" for r in records)
    lines += [f"Generated {dt.datetime.now(dt.timezone.utc):%Y-%m-%d %H:%M} UTC from "
              f"{', '.join(map(str, result_files(inputs)))}: {ok} finished trials, "
              f"{len(records) - ok} failed. Tables: `cost.csv`, `quality.csv`.", ""]
    lines += _env_lines(records)
    cost_lines, cost = cost_section(cost, pubs)
    lines += cost_lines + quality_section(quality, pubs, records)
    figures = make_figures(cost, quality, out, records)
    if figures:
        lines += ["## Figures", ""]
        for fig, caption in figures:
            lines += [f"![{fig}]({fig})", "", f"*{caption}*", ""]
    lines += error_section(records)
    lines += ["## Sources", "", "Published numbers: `experiments/published.csv` (copied from the "
              "papers; see the note at its top).", ""]
    _write_csv(cost, out / "cost.csv")
    _write_csv(quality, out / "quality.csv")
    index = out / "report.md"
    index.write_text("\n".join(lines))
    return index


def _env_lines(records: list[dict]) -> list[str]:
    versions = [r.get("versions") or {} for r in records]
    if not versions:
        return []
    v = versions[-1]
    commits = sorted({x.get("git") or "?" for x in versions})
    hosts = sorted({x.get("host") or "?" for x in versions})
    return [f"Environment: torch {v.get('torch')}, open_clip {v.get('open_clip')}, tokred "
            f"{v.get('tokred')}, {v.get('cpu')} with {v.get('threads')} threads, device "
            f"{records[-1].get('device', 'cpu')}; git commit(s) {', '.join(commits)}; "
            f"host(s) {', '.join(hosts)}.", ""]


def _write_csv(df: pd.DataFrame, path: Path) -> None:
    drop = [c for c in ("attn_tokens",) if c in df.columns]
    df.drop(columns=drop).to_csv(path, index=False)


def _saved_config(inputs: list[str]):
    """The config a single sweep dir was run with (selects its trials), else None (all)."""
    if len(inputs) != 1 or not (Path(inputs[0]) / "config.yaml").is_file():
        return None
    from .config import ConfigError, load_config

    try:
        return load_config(Path(inputs[0]) / "config.yaml", preflight=False)
    except ConfigError as err:  # e.g. MSR-VTT data missing here: report every record instead
        log.warning("not selecting trials by %s: %s", Path(inputs[0]) / "config.yaml", err)
        return None


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="tokred report", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("inputs", nargs="+", help="result dirs or results*.jsonl files")
    p.add_argument("-o", "--out", help="report dir (default: INPUT/report for one dir)")
    a = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    first = Path(a.inputs[0])
    out = Path(a.out) if a.out else (first if first.is_dir() else first.parent) / "report"
    if not result_files(a.inputs):
        print(f"no results*.jsonl in {a.inputs}", file=sys.stderr)
        return 2
    print(f"report: {write_report(a.inputs, out, config=_saved_config(a.inputs))}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
