"""Report figures (matplotlib, Agg, PNG + SVG): the cost-quality frontier here, the cost figures
in :mod:`.plots_cost`, token schedules and provenance in :mod:`.plots_tokens`."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .plot_labels import Label, place_labels, point_label, short_setting, write_key  # noqa: E402
from .plot_style import (  # noqa: E402
    GMACS_LABEL,
    PUBLISHED_STYLE,
    legend_outside,
    reducer_colours,
    save,
    scale_for,
    styled,
    variant_fmt,
    variants,
)
from .published import published_for  # noqa: E402

log = logging.getLogger(__name__)
PAPER_BACKBONE = {"scale-B32": "ViT-B-32"}  # the scale model runs ViT-B/32's schedules


def pareto_front(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Indices of the points not dominated by a cheaper-or-equal and better-or-equal point,
    sorted by cost (lower ``x`` is better, higher ``y`` is better)."""
    order = np.lexsort((-y, x))
    front, best = [], -math.inf
    for i in order:
        if y[i] > best:
            front.append(i)
            best = y[i]
    return np.asarray(front, dtype=int)


def paper_tag(reducer: str, options: dict, model: str) -> str | None:
    """The preset tag when ``options`` are a setting the papers publish for ``model``'s
    backbone (``tokred.paper_presets``), else None."""
    from tokred import paper_presets, preset_of

    try:
        papers = paper_presets(reducer, PAPER_BACKBONE.get(model, model))
    except (KeyError, ImportError):  # a reducer not installed here
        return None
    tag = preset_of(reducer, options)
    return tag if tag in papers else None


def published_rsum(pubs: list[dict], row: pd.Series) -> float | None:
    """R-Sum the papers publish for ``row``'s model, setting, data and mode (all six recalls
    reported), else None; never for the synthetic benchmark (no paper ran it)."""
    if row["data"] == "synth":
        return None
    p = published_for(pubs, row["model"], row["reducer"], row["options"], row["data"],
                      row["mode"])
    recalls = [p.get(f"{d}_R@{k}") for d in ("t2v", "v2t") for k in (1, 5, 10)] if p else []
    return float(sum(recalls)) if recalls and None not in recalls else None


def _errors(g: pd.DataFrame) -> np.ndarray:
    """``[2, n]`` R-Sum error bars (value - low, high - value); 0 where no interval is stored."""
    if "R-Sum low" not in g:
        return np.zeros((2, len(g)))
    low = (g["R-Sum"] - g["R-Sum low"]).fillna(0.0).clip(lower=0)
    high = (g["R-Sum high"] - g["R-Sum"]).fillna(0.0).clip(lower=0)
    return np.vstack([low.to_numpy(float), high.to_numpy(float)])


def _curves(ax, g: pd.DataFrame, xcol: str, colours: dict) -> list[Label]:
    """One line with 95 % error bars per reducer variant; returns each point's label."""
    labels = []
    for curve, red, k, rows in variants(g[g["reducer"] != "none"]):
        rows = rows.sort_values(xcol)
        ax.errorbar(rows[xcol], rows["R-Sum"], yerr=_errors(rows), fmt=variant_fmt(k),
                    color=colours[red], label=curve, ms=5, lw=1.4, capsize=2.5, elinewidth=0.9)
        labels += [Label(x, y, point_label(red, o), colours[red], short_setting(red, o))
                   for x, y, o in zip(rows[xcol], rows["R-Sum"], rows["options"])]
    return labels


def _none_reference(ax, g: pd.DataFrame, xcol: str) -> list[Label]:
    """``none``: its point with error bar, a dotted line at its R-Sum and its 95 % band."""
    base = g[g["reducer"] == "none"]
    if base.empty:
        return []
    b = base.iloc[0]
    ax.errorbar([b[xcol]], [b["R-Sum"]], yerr=_errors(base.iloc[:1]), fmt="o", color="grey",
                ms=7, capsize=3, label="none")
    ax.axhline(b["R-Sum"], color="grey", ls=":", lw=1)
    if pd.notna(b.get("R-Sum low")):
        ax.axhspan(b["R-Sum low"], b["R-Sum high"], color="grey", alpha=0.12,
                   label="none's 95 % interval")
    return [Label(b[xcol], b["R-Sum"], "none", "dimgrey")]


def _paper_marks(ax, g: pd.DataFrame, xcol: str) -> None:
    """A star around every point that is a setting the papers publish."""
    tags = [paper_tag(r, o, m) for r, o, m in zip(g["reducer"], g["options"], g["model"])]
    hit = g[[t is not None for t in tags]]
    if not hit.empty:
        ax.scatter(hit[xcol], hit["R-Sum"], marker="*", s=260, facecolors="none",
                   edgecolors="k", linewidths=1.0, zorder=5, label="papers' setting")


def _published_points(ax, g: pd.DataFrame, xcol: str, pubs: list[dict]) -> list[Label]:
    """The papers' R-Sum for the same setting at our row's cost (black diamonds)."""
    pts = [(r[xcol], v, r) for _, r in g.iterrows()
           if (v := published_rsum(pubs, r)) is not None]
    if not pts:
        return []
    ax.scatter([p[0] for p in pts], [p[1] for p in pts], label="published R-Sum, same setting",
               **PUBLISHED_STYLE)
    return [Label(x, y, "paper " + point_label(r["reducer"], r["options"]), "k",
                  "published " + short_setting(r["reducer"], r["options"]))
            for x, y, r in pts]


def _front(ax, g: pd.DataFrame, xcol: str, lower_is_better: bool) -> None:
    """The Pareto front of the point estimates, dashed; not drawn (nor in the legend) when it
    is one point, which no line can show."""
    x, y = g[xcol].to_numpy(float), g["R-Sum"].to_numpy(float)
    front = pareto_front(x if lower_is_better else -x, y)
    if len(front) > 1:
        ax.step(x[front], y[front], "--", color="k", lw=1, where="post", label="Pareto front")


def _percent_axis(ax, g: pd.DataFrame) -> None:
    """A top axis in % of none's GMACs (when the panel has a none row)."""
    base = g.loc[g["reducer"] == "none", "GMACs"]
    if base.empty:
        return
    b = float(base.iloc[0])
    top = ax.secondary_xaxis("top", functions=(lambda x: 100 * x / b, lambda p: p * b / 100))
    top.set_xlabel("% of none's GMACs")


@styled
def tradeoff_figure(q: pd.DataFrame, xcol: str, xlabel: str, path: Path, title: str,
                    lower_is_better: bool = True, pubs: list[dict] | None = None) -> bool:
    """R-Sum with 95 % error bars vs a cost column: one panel per mode, one line per reducer
    variant, every point labelled, ``none`` as a reference band, the papers' settings starred,
    their published R-Sum (``pubs``) as diamonds, Pareto front dashed. Writes PNG + SVG."""
    q = q.dropna(subset=[xcol, "R-Sum"])
    if q.empty:
        return False
    modes = list(dict.fromkeys(q["mode"]))
    colours = reducer_colours(q["reducer"])
    dense = q.groupby("mode").size().max() > 12  # room for the labels of a 30-point frontier
    fig, axes = plt.subplots(1, len(modes), squeeze=False,
                             figsize=((10.0 if dense else 7.0) * len(modes) + 2.8,
                                      7.0 if dense else 5.6))
    labels = []
    for ax, mode in zip(axes[0], modes):
        g = q[q["mode"] == mode]
        found = _none_reference(ax, g, xcol) + _curves(ax, g, xcol, colours)
        _paper_marks(ax, g, xcol)
        found += _published_points(ax, g, xcol, pubs or [])
        _front(ax, g, xcol, lower_is_better)
        scale_for(ax, "x", g[xcol])
        if xcol == "GMACs":
            _percent_axis(ax, g)
        ax.set_title(mode.replace("_", "-"))
        ax.set_xlabel(xlabel)
        ax.set_ylabel("R-Sum (t2v + v2t R@1+5+10, %), 95 % interval")
        ax.grid(alpha=0.3)
        labels.append(found)
    legend_outside(axes[0][-1], axes[0])
    fig.suptitle(title)
    fig.tight_layout()
    for ax, mode, found in zip(axes[0], modes, labels):
        g = q[q["mode"] == mode]
        bars = zip(g[xcol], *(g[c] if c in g else g["R-Sum"] for c in ("R-Sum low", "R-Sum high")))
        write_key(ax, place_labels(ax, found, bars=[b for b in bars if pd.notna(b[1])]))
    save(fig, path)
    return True


FRONTIER_CAPTION = (
    "the cost-quality frontier: R-Sum with its 95 % bootstrap interval against visual GMACs per "
    "video (top axis: % of none's), one line per reducer and algorithm variant across its "
    "settings, every point labelled with its setting (B6-4-49 = layer 6, 4 segments, 49 tokens "
    "kept per segment; numbered points are listed under their panel); grey: none with its "
    "interval as a band; stars: the settings the papers publish for this backbone (ViT-B/32 "
    "for the scale model); dashed: Pareto front of the point estimates (no other setting is "
    "both cheaper and better; not drawn when it is a single point). Whether two points differ "
    "is decided by the paired tests in the quality section, not by overlapping bars. ")


def quality_figures(quality: pd.DataFrame, out: Path, records: list[dict],
                    pubs: list[dict]) -> list[tuple[str, str]]:
    """The frontier (R-Sum vs GMACs) and R-Sum vs measured speed, per data and model."""
    from .report_header import hardware_of

    figs = []
    groups = list(quality.groupby(["data", "model"], sort=False))
    for (data, model), q in groups:
        synth = data == "synth"
        tag = "SYNTHETIC benchmark, scale model" if synth else f"{data}, {model}"
        suffix = "" if len(groups) == 1 else f"_{data}_{model}"
        head = "SYNTHETIC: " if synth else f"{data}, {model}: "
        published = ("No paper reports numbers on the synthetic benchmark, so no published "
                     "point is plotted." if synth else _published_text(q, pubs))
        name = f"rsum_vs_gmacs{suffix}.png"
        if tradeoff_figure(q, "GMACs", GMACS_LABEL, out / name, f"R-Sum vs cost ({tag})",
                           pubs=pubs):
            figs.append((name, head + FRONTIER_CAPTION + published))
        hw = hardware_of(records, q["id"])
        name = f"rsum_vs_speed{suffix}.png"
        if tradeoff_figure(q, "videos/s", f"inference throughput (videos/s) on {hw}",
                           out / name, f"R-Sum vs speed ({tag})", lower_is_better=False):
            figs.append((name, f"{head}R-Sum against the measured inference throughput of the "
                         f"evaluated model on {hw} (log axis when it spans a decade). The "
                         "papers' speeds were measured on V100 GPUs, not this device: not "
                         "plotted."))
    return figs


def _published_text(q: pd.DataFrame, pubs: list[dict]) -> str:
    """Caption sentence on the papers' R-Sum points of ``q`` (how many, or why none)."""
    n = sum(published_rsum(pubs, r) is not None for _, r in q.iterrows())
    if not n:
        return "No published R-Sum exists for these settings, so none is plotted."
    return (f"Black diamonds: the R-Sum the papers publish for {n} of these settings "
            "(experiments/published.csv, e.g. CenterCLIP Table 3b), drawn at our row's GMACs.")


def make_figures(cost: pd.DataFrame, quality: pd.DataFrame, out: Path, records: list[dict],
                 pubs: list[dict] | None = None) -> list[tuple[str, str]]:
    """Draw every figure the data allows (PNG + SVG); returns ``(PNG name, caption)`` pairs."""
    from .plots_cost import cost_figures
    from .plots_tokens import TOKENS_CAPTION, provenance_figure, tokens_figure

    pubs = pubs or []
    figs = quality_figures(quality, out, records, pubs) if not quality.empty else []
    if not cost.empty:
        figs += cost_figures(cost, out, records, pubs)
        if tokens_figure(cost, out / "tokens_per_layer.png"):
            figs.append(("tokens_per_layer.png", TOKENS_CAPTION))
    prov = [r for r in records if r.get("kind") == "provenance" and r.get("status") == "ok"]
    if prov:
        figs.append(("token_provenance.png", provenance_figure(prov, out / "token_provenance.png")))
    return figs
