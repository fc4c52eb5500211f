"""The report's cost section: GMACs, tokens, memory and paired speed-ups per backbone and frame
count (random weights), beside the papers' ratios where the setting matches."""

from __future__ import annotations

import pandas as pd

from tokred.cost.record import SUSPECT_FACTOR

from .published import published_for
from .report_header import hardware_of
from .tables import (
    NOT_PAIRED,
    PARAMS_ALL,
    PARAMS_LORA,
    is_spectral,
    rounds_text,
    spectral_note,
    speedup_text,
    to_markdown,
)

COST_COLS = ["setting", "preset", "weights", "activation", "GMACs", "fvcore GMACs", "GMACs %", "reducer GMACs",
             "tokens out", "act. MiB/video", "memory %", "speed-up [low, high]", "rounds", "ideal",
             "videos/s", "ms/video", PARAMS_ALL, PARAMS_LORA]
SPEED_NOTE = (
    "Speed is measured in pairs, never as a ratio of two trials timed minutes apart: each "
    "trial times its reducer and `none` (over the same weights, on the same fixed batch) in its "
    "own process, in interleaved rounds of one call each (none, reducer | reducer, none | ...). "
    "'speed-up' is the median over the rounds of none's time / the reducer's time in the same "
    "round, at the largest batch size timed (inference on the device each table names); "
    "[low, high] is the inter-quartile "
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


def published_cost(pubs: list[dict], row: pd.Series) -> tuple[str, str]:
    """Published memory and speed ratios to the baseline for the same setting (or '')."""
    ratios = published_ratios(pubs, row["backbone"], row["reducer"], row["options"])
    if ratios is None:
        return "", ""
    return f"{100 * ratios[0]:.0f} %", f"{ratios[1]:.2f}x"


def published_ratios(pubs: list[dict], backbone: str, reducer: str,
                     options: dict) -> tuple[float, float] | None:
    """(training memory / the baseline's, the baseline's ms / the setting's ms) published for
    this setting on MSR-VTT (CenterCLIP Table 3b, V100), or None."""
    p = published_for(pubs, backbone, reducer, options, "msrvtt", "finetuned")
    base = published_for(pubs, backbone, "none", {}, "msrvtt", "finetuned")
    if p is None or base is None or p.get("mem_gb") is None:
        return None
    return p["mem_gb"] / base["mem_gb"], base["ms_per_video"] / p["ms_per_video"]


def cost_section(df: pd.DataFrame, pubs: list[dict],
                 records: list[dict] | None = None) -> tuple[list[str], pd.DataFrame]:
    """One table per backbone and frame count; returns the lines and ``df`` with the papers'
    ratios added. ``records``: where each table's speeds were measured (provenance)."""
    lines = ["## Cost (random weights)", "",
             "Cost does not depend on the weights, so these rows use randomly initialised "
             "backbones (**random weights**). " + GMACS_NOTE + " Memory = activations one video "
             "keeps for backward in a full fine-tuning step (MiB, counted from the tensors "
             "autograd saves, so device-independent); GMACs, tokens and memory are exact. "
             "'activation' is the MLP activation of the measured network: QuickGELU for the "
             "architectures OpenAI published (the papers' CLIP networks, whose QuickGELU keeps "
             "one more tensor for backward than GELU), GELU for the scale models. "
             + SPEED_NOTE.format(factor=SUSPECT_FACTOR, not_paired=NOT_PAIRED) + " "
             "'paper' columns: the published MSR-VTT ratio to the baseline for the same "
             "setting (training GPU memory and inference speed on V100), where one exists. "
             "'paper memory %' is CenterCLIP's MeM (the average GPU memory of the whole "
             "training in GB: weights, optimiser state and a batch's activations) as a % of its "
             "baseline's; 'memory %' counts only the activations one video keeps, so the two "
             "are not comparable.",
             ""]
    if df.empty:
        return lines + ["(no finished cost trials)", ""], df
    paper = df.apply(lambda r: published_cost(pubs, r), axis=1, result_type="expand")
    df = df.assign(**{"paper memory %": paper[0], "paper speed-up": paper[1]})
    for (bb, frames), g in df.groupby(["backbone", "frames"], sort=True):
        lines += [f"### {bb}, {frames} frames, random weights", "",
                  f"Speeds measured on {hardware_of(records or [], g['id'])}.", "",
                  to_markdown(speed_shown(g)[COST_COLS + ["paper memory %", "paper speed-up"]]),
                  ""]
        lines += spectral_lines(g, "counted on one random video through this random-weight "
                                   "backbone")
    return lines, df


def speed_shown(g: pd.DataFrame) -> pd.DataFrame:
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
