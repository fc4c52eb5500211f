"""The cost section's figures: paired speed-ups against GMACs and training activation memory,
one panel per backbone, the papers' ratios beside ours where the setting matches."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from tokred.cost.record import SUSPECT_FACTOR  # noqa: E402

from .plot_labels import Label, place_labels, point_label, short_setting, write_key  # noqa: E402
from .plot_style import (  # noqa: E402
    GMACS_LABEL,
    PUBLISHED_STYLE,
    legend_below,
    legend_outside,
    reducer_colours,
    save,
    scale_for,
    styled,
    variant_fmt,
    variants,
)
from .report_cost import published_ratios  # noqa: E402
from .report_header import hardware_of  # noqa: E402


def backbones(c: pd.DataFrame) -> list[str]:
    """Backbones ordered from cheapest to most expensive (ViT-B/32 before ViT-B/16)."""
    return list(c.groupby("backbone")["GMACs"].max().sort_values().index)


def _speed_lines(ax, g: pd.DataFrame, colours: dict) -> list[Label]:
    """One line per reducer variant with the per-round spread as error bars."""
    labels = []
    for curve, red, k, rows in variants(g):
        rows = rows.sort_values("GMACs")
        err = np.vstack([rows["speed-up"] - rows["speed-up low"],
                         rows["speed-up high"] - rows["speed-up"]]).clip(min=0)
        ax.errorbar(rows["GMACs"], rows["speed-up"], yerr=err, fmt=variant_fmt(k),
                    color=colours[red], label=curve, ms=6, capsize=3, lw=1.4)
        labels += [Label(x, y, "none" if red == "none" else point_label(red, o), colours[red],
                         short_setting(red, o))
                   for x, y, o in zip(rows["GMACs"], rows["speed-up"], rows["options"])]
    return labels


def _published_speed(ax, g: pd.DataFrame, pubs: list[dict]) -> list[Label]:
    """The published speed-up (CenterCLIP Table 3b, V100) of the same setting at our GMACs."""
    pts = []
    for _, r in g[g["reducer"] != "none"].iterrows():
        ratios = published_ratios(pubs, r["backbone"], r["reducer"], r["options"])
        if ratios is not None:
            pts.append((r["GMACs"], ratios[1], r))
    if not pts:
        return []
    ax.scatter([p[0] for p in pts], [p[1] for p in pts], label="published speed-up (V100)",
               **PUBLISHED_STYLE)
    return [Label(x, y, "paper " + point_label(r["reducer"], r["options"]), "k",
                  "published " + short_setting(r["reducer"], r["options"]))
            for x, y, r in pts]


def _reference_lines(ax, g: pd.DataFrame) -> None:
    """The ideal speed-up (none's GMACs / GMACs), the suspect line above it, suspect points."""
    bad = g[g["suspect"]]
    if not bad.empty:
        ax.plot(bad["GMACs"], bad["speed-up"], "x", color="red", ms=12, mew=2,
                label=f"suspect: > {SUSPECT_FACTOR:g} x ideal")
    base_gmacs = (g["GMACs"] * g["ideal"]).median()  # none's GMACs, as every row records it
    xs = np.linspace(g["GMACs"].min(), g["GMACs"].max(), 50)
    ax.plot(xs, base_gmacs / xs, ":", color="grey", label="ideal: none's GMACs / GMACs")
    ax.plot(xs, SUSPECT_FACTOR * base_gmacs / xs, "--", color="red", lw=0.8, alpha=0.6,
            label=f"{SUSPECT_FACTOR:g} x ideal")


@styled
def speed_figure(c: pd.DataFrame, path: Path, pubs: list[dict] | None = None,
                 records: list[dict] | None = None) -> bool:
    """Paired speed-up over none vs GMACs, one line per reducer variant with the per-round
    spread as error bars, every point labelled, the ideal and the suspect line above it, the
    papers' speed-ups where the setting matches; the device from the ``records``."""
    c = c.dropna(subset=["speed-up"]) if not c.empty else c
    if c.empty:
        return False
    bbs = backbones(c)
    colours = reducer_colours(c["reducer"])
    fig, axes = plt.subplots(1, len(bbs), figsize=(6.2 * len(bbs) + 2.8, 5.2), squeeze=False)
    labels = []
    for ax, bb in zip(axes[0], bbs):
        g = c[c["backbone"] == bb]
        found = _speed_lines(ax, g, colours) + _published_speed(ax, g, pubs or [])
        _reference_lines(ax, g)
        scale_for(ax, "y", list(g["speed-up"]) + [1.0])
        ax.set_xlabel(GMACS_LABEL, fontsize=10)
        ax.set_ylabel("speed-up over none (median per-round ratio)")
        ax.set_title(f"{bb}, random weights\non {hardware_of(records or [], g['id'])}")
        ax.grid(alpha=0.3)
        labels.append(found)
    legend_outside(axes[0][-1], axes[0])
    fig.tight_layout()
    for ax, found in zip(axes[0], labels):
        write_key(ax, place_labels(ax, found))
    save(fig, path)
    return True


PAPER_MEM = "paper: MeM / its baseline's, at that % of our none (not MiB)"


def _published_memory(g: pd.DataFrame, pubs: list[dict]) -> list[float | None]:
    """Per row of ``g``: the training-memory ratio the papers publish for the same setting
    (CenterCLIP's MeM over its baseline's; None where no paper reports it, and for none)."""
    out = []
    for _, r in g.iterrows():
        ratios = None if r["reducer"] == "none" else published_ratios(
            pubs, r["backbone"], r["reducer"], r["options"])
        out.append(None if ratios is None else ratios[0])
    return out


@styled
def memory_figure(c: pd.DataFrame, path: Path, pubs: list[dict] | None = None) -> bool:
    """Training activation MiB per video, one bar per setting (named on the axis; value and %
    of none at the bar's end). Where a paper reports the setting, its training-memory ratio
    (MeM over its baseline's, a ratio of another quantity) is a diamond at that percentage of
    our none's bar, read on the top axis (% of the baseline), and is written in the bar's text;
    it is never a MiB value."""
    c = c.dropna(subset=["act. MiB/video"])
    if c.empty:
        return False
    bbs = backbones(c)
    colours = reducer_colours(c["reducer"])
    rows = c.groupby("backbone").size().max()
    fig, axes = plt.subplots(1, len(bbs), figsize=(7.0 * len(bbs) + 1.0, 0.42 * rows + 2.3),
                             squeeze=False)
    for ax, bb in zip(axes[0], bbs):
        g = c[c["backbone"] == bb].sort_values("act. MiB/video", ascending=False)
        y = np.arange(len(g))
        mib = g["act. MiB/video"].to_numpy(float)
        ax.barh(y, mib, color=[colours[r] for r in g["reducer"]])
        none = g.loc[g["reducer"] == "none", "act. MiB/video"]
        none_mib = float(none.iloc[0]) if not none.empty else None
        paper = _published_memory(g, pubs or []) if none_mib else [None] * len(g)
        at = [None if q is None else q * none_mib for q in paper]  # x of each diamond
        hits = [(x, yi) for yi, x in enumerate(at) if x is not None]
        if hits:
            ax.scatter(*zip(*hits), label=PAPER_MEM, **PUBLISHED_STYLE)
            top = ax.secondary_xaxis("top", functions=(lambda x, n=none_mib: 100 * x / n,
                                                       lambda p, n=none_mib: p * n / 100))
            top.set_xlabel("% of the baseline (bars: our none; diamonds: the paper's)")
        pct = g["memory %"] if "memory %" in g else pd.Series(np.nan, index=g.index)
        for yi, (v, p, q, x) in enumerate(zip(mib, pct, paper, at)):
            text = (f" {v:.1f}" + (f" ({p:.0f} %)" if pd.notna(p) else "")
                    + (f"; paper MeM {100 * q:.0f} %" if q is not None else ""))
            ax.text(max(v, x or 0) * 1.01 + (0.02 * mib.max() if x else 0), yi, text,
                    va="center", fontsize=9)
        ax.set_yticks(y, [short_setting(r, o) for r, o in zip(g["reducer"], g["options"])])
        ax.invert_yaxis()
        ax.set_xlim(0, (1.6 if hits else 1.3) * max([mib.max(), *(x for x, _ in hits)]))
        ax.set_xlabel("training activations per video (MiB, full fine-tuning)")
        ax.set_title(f"{bb}, {g['frames'].iloc[0]} frames (random weights)",
                     pad=10 if hits else None)
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    for ax in axes[0]:
        legend_below(ax)
    save(fig, path)
    return True


MEM_NOT_COMPARABLE = (
    "A diamond is a ratio, drawn at that percentage of our none's bar (top axis) and written as "
    "'paper MeM x %' in the bar's text, never a MiB value: MeM is the average GPU memory of the "
    "whole training (weights, optimiser state and a batch's activations, in GB), ours the "
    "activations one video keeps, so the two percentages are not comparable (as the quality "
    "section says of MeM and our MiB).")


def _published_backbones(c: pd.DataFrame, pubs: list[dict]) -> tuple[list[str], list[str]]:
    """Backbones with and without a published cost ratio for one of their settings."""
    has = {r["backbone"] for _, r in c.iterrows()
           if published_ratios(pubs, r["backbone"], r["reducer"], r["options"]) is not None}
    return [b for b in backbones(c) if b in has], [b for b in backbones(c) if b not in has]


def _published_caption(c: pd.DataFrame, pubs: list[dict], what: str) -> str:
    with_, without = _published_backbones(c, pubs)
    text = (f"Black diamonds: {what} for the same setting (CenterCLIP Table 3b, V100), on "
            f"{', '.join(with_)}. " if with_ else "")
    if without:
        text += (f"No paper reports a number for these settings on {', '.join(without)}"
                 + (" (the synthetic benchmark's scale model)" if "scale-B32" in without else "")
                 + ", so none is plotted there.")
    return text


def cost_figures(cost: pd.DataFrame, out: Path, records: list[dict],
                 pubs: list[dict]) -> list[tuple[str, str]]:
    """The speed-up and memory figures with their captions."""
    figs = []
    if speed_figure(cost, out / "speed_vs_gmacs.png", pubs, records):
        figs.append(("speed_vs_gmacs.png", "Random weights: speed-up over none against GMACs "
                     f"per backbone, measured on {hardware_of(records, cost['id'])}, one line per "
                     "reducer and algorithm variant (CenterCLIP k-medoids and spectral apart), "
                     "every point labelled with its setting; each point is the median of "
                     "per-round ratios with none timed in the same interleaved rounds of the "
                     "same trial, its bar the rounds' inter-quartile range (min-max with fewer "
                     "than 5 rounds). Dotted: what the GMACs alone predict (none's GMACs / "
                     "GMACs); points below it lose time to the reducer's own work or to small, "
                     "memory-bound kernels. Red crosses: suspect, more than the dashed line (a "
                     "changed machine load or a measurement problem, not a real speed-up). "
                     + _published_caption(cost, pubs, "the published speed-up")))
    if memory_figure(cost, out / "memory.png", pubs):
        figs.append(("memory.png", "Random weights: activation memory one video keeps for "
                     "backward in a full fine-tuning step (MiB; in brackets % of none's), per "
                     "reducer setting (exact, so no error bars). "
                     + _published_caption(cost, pubs, "CenterCLIP's training-memory ratio "
                                          "(MeM over its baseline's MeM)")
                     + (MEM_NOT_COMPARABLE if _published_backbones(cost, pubs)[0] else "")))
    return figs
