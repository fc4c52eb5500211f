"""Report figures (matplotlib, Agg): trade-offs, memory, token schedules, token provenance."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from tokred.cost.record import SUSPECT_FACTOR  # noqa: E402

from .plots_tokens import provenance_figure  # noqa: E402
from .published import option_defaults  # noqa: E402
from .tables import ORDER, curve_label, reducer_rank  # noqa: E402

log = logging.getLogger(__name__)
GMACS_LABEL = "visual GMACs per video (10$^9$ multiply-accumulates; GFLOPs = 2 x GMACs)"


FIXED = {"none": 7, **{n: i for i, n in enumerate(ORDER[1:])}}  # none grey, built-ins 0..4


def reducer_colours(names) -> dict[str, tuple]:
    """The same colour for a reducer in every figure (built-ins fixed, others after them)."""
    cmap = plt.get_cmap("tab10")
    others = [n for n in sorted(set(names)) if n not in FIXED]
    spare = [i for i in range(10) if i not in FIXED.values()]
    colours = {n: cmap(i) for n, i in FIXED.items()}
    colours.update({n: cmap(spare[i % len(spare)]) for i, n in enumerate(others)})
    return colours


def backbones(c: pd.DataFrame) -> list[str]:
    """Backbones ordered from cheapest to most expensive (ViT-B/32 before ViT-B/16)."""
    return list(c.groupby("backbone")["GMACs"].max().sort_values().index)


def _legend_outside(ax, axes=None) -> None:
    """Legend right of ``ax`` with the entries of all ``axes`` (each label once)."""
    seen: dict[str, object] = {}
    for a in axes if axes is not None else [ax]:
        for h, label in zip(*a.get_legend_handles_labels()):
            seen.setdefault(label, h)
    ax.legend(list(seen.values()), list(seen), loc="upper left", bbox_to_anchor=(1.01, 1.0),
              fontsize=8, frameon=False)


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


def point_label(reducer: str, options: dict, preset: str | None) -> str:
    """A frontier point's short label: its preset, else the options that differ from the
    reducer's defaults (``layer=8 segments=6``; empty for the defaults themselves)."""
    if isinstance(preset, str) and preset:
        return preset
    defaults = option_defaults(reducer)
    return " ".join(f"{k}={_short(v)}" for k, v in sorted(options.items())
                    if _short(v) != _short(defaults.get(k)))


def _short(v) -> str:
    return ",".join(map(str, v)) if isinstance(v, (list, tuple)) else str(v)


PAPER_BACKBONE = {"scale-B32": "ViT-B-32"}  # the scale model runs ViT-B/32's schedules


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


def _errors(g: pd.DataFrame) -> np.ndarray:
    """``[2, n]`` R-Sum error bars (value - low, high - value); 0 where no interval is stored."""
    if "R-Sum low" not in g:
        return np.zeros((2, len(g)))
    low = (g["R-Sum"] - g["R-Sum low"]).fillna(0.0).clip(lower=0)
    high = (g["R-Sum high"] - g["R-Sum"]).fillna(0.0).clip(lower=0)
    return np.vstack([low.to_numpy(float), high.to_numpy(float)])


def _curves(ax, g: pd.DataFrame, xcol: str, colours: dict) -> None:
    """One line with 95 % error bars per reducer variant (``tables.curve_label``), each point
    labelled by :func:`point_label` (a label shared by several lines at the same cost, as
    segment schedules are, is written once)."""
    variants: dict[str, int] = {}
    placed: set[tuple] = set()
    rest = g[g["reducer"] != "none"]
    keys = pd.Series([curve_label(r, o) for r, o in zip(rest["reducer"], rest["options"])],
                     index=rest.index, dtype=object)
    for curve in sorted(set(keys), key=lambda c: (reducer_rank(c.split(" ")[0]), c)):
        gr = rest[keys == curve].sort_values(xcol)
        red = gr["reducer"].iloc[0]
        k = variants[red] = variants.get(red, -1) + 1  # a reducer's 2nd variant: dotted, squares
        ax.errorbar(gr[xcol], gr["R-Sum"], yerr=_errors(gr), fmt="os^D"[k % 4] + "-:"[k % 2],
                    color=colours[red], label=curve, ms=4, lw=1.2, capsize=2, elinewidth=0.8)
        for _, row in gr.iterrows():
            text = point_label(red, row["options"], row.get("preset"))
            if text and (row[xcol], text) not in placed:
                placed.add((row[xcol], text))
                ax.annotate(text, (row[xcol], row["R-Sum"]), fontsize=5, xytext=(3, 3),
                            textcoords="offset points")


def _none_reference(ax, g: pd.DataFrame, xcol: str) -> None:
    """``none``: its point with error bar, a dotted line at its R-Sum and its 95 % band."""
    base = g[g["reducer"] == "none"]
    if base.empty:
        return
    b = base.iloc[0]
    ax.errorbar([b[xcol]], [b["R-Sum"]], yerr=_errors(base.iloc[:1]), fmt="o", color="grey",
                ms=6, capsize=3, label="none")
    ax.axhline(b["R-Sum"], color="grey", ls=":", lw=1)
    if pd.notna(b.get("R-Sum low")):
        ax.axhspan(b["R-Sum low"], b["R-Sum high"], color="grey", alpha=0.12,
                   label="none's 95 % interval")


def _paper_marks(ax, g: pd.DataFrame, xcol: str) -> None:
    """A star around every point that is a setting the papers publish."""
    tags = [paper_tag(r, o, m) for r, o, m in zip(g["reducer"], g["options"], g["model"])]
    hit = g[[t is not None for t in tags]]
    if not hit.empty:
        ax.scatter(hit[xcol], hit["R-Sum"], marker="*", s=220, facecolors="none",
                   edgecolors="k", linewidths=1.0, zorder=5, label="papers' setting")


def _percent_axis(ax, g: pd.DataFrame) -> None:
    """A top axis in % of none's GMACs (when the panel has a none row)."""
    base = g.loc[g["reducer"] == "none", "GMACs"]
    if base.empty:
        return
    b = float(base.iloc[0])
    top = ax.secondary_xaxis("top", functions=(lambda x: 100 * x / b, lambda p: p * b / 100))
    top.set_xlabel("% of none's GMACs", fontsize=8)


def tradeoff_figure(q: pd.DataFrame, xcol: str, xlabel: str, path: Path, title: str,
                    lower_is_better: bool = True) -> bool:
    """R-Sum with 95 % error bars vs a cost column: one panel per mode, one line per reducer
    variant, ``none`` as a reference band, the papers' settings starred, Pareto front dashed."""
    q = q.dropna(subset=[xcol, "R-Sum"])
    if q.empty:
        return False
    modes = list(dict.fromkeys(q["mode"]))
    colours = reducer_colours(q["reducer"])
    fig, axes = plt.subplots(1, len(modes), figsize=(6.4 * len(modes) + 2.4, 5.0), squeeze=False)
    for ax, mode in zip(axes[0], modes):
        g = q[q["mode"] == mode]
        _none_reference(ax, g, xcol)
        _curves(ax, g, xcol, colours)
        _paper_marks(ax, g, xcol)
        x, y = g[xcol].to_numpy(float), g["R-Sum"].to_numpy(float)
        front = pareto_front(x if lower_is_better else -x, y)
        ax.step(x[front], y[front], "--", color="k", lw=1, where="post", label="Pareto front")
        if xcol == "GMACs":
            _percent_axis(ax, g)
        ax.set_title(f"{mode.replace('_', '-')}", fontsize=10)
        ax.set_xlabel(xlabel, fontsize=8)
        ax.set_ylabel("R-Sum (t2v + v2t R@1+5+10, %), 95 % interval")
        ax.grid(alpha=0.3)
    _legend_outside(axes[0][-1], axes[0])
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def memory_figure(c: pd.DataFrame, path: Path) -> bool:
    c = c.dropna(subset=["act. MiB/video"])
    if c.empty:
        return False
    bbs = backbones(c)
    colours = reducer_colours(c["reducer"])
    rows = c.groupby("backbone").size().max()
    fig, axes = plt.subplots(1, len(bbs), figsize=(6.5 * len(bbs), 0.32 * rows + 1.6),
                             squeeze=False)
    for ax, bb in zip(axes[0], bbs):
        g = c[c["backbone"] == bb].sort_values("act. MiB/video")
        ax.barh(g["setting"], g["act. MiB/video"], color=[colours[r] for r in g["reducer"]])
        ax.set_xlabel("training activations per video (MiB, full fine-tuning)")
        ax.set_title(f"{bb}, {g['frames'].iloc[0]} frames (random weights)", fontsize=10)
        ax.tick_params(axis="y", labelsize=7)
        ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def tokens_figure(c: pd.DataFrame, path: Path) -> bool:
    c = c[c["attn_tokens"].map(len) > 0] if not c.empty else c
    if c.empty:
        return False
    bbs = backbones(c)
    colours = reducer_colours(c["reducer"])
    styles = ["-", "--", ":", "-."]
    fig, axes = plt.subplots(1, len(bbs), figsize=(5.5 * len(bbs) + 2, 4.2), squeeze=False)
    for ax, bb in zip(axes[0], bbs):
        g = c[c["backbone"] == bb]
        for red, gr in g.groupby("reducer"):
            for k, (_, row) in enumerate(gr.iterrows()):
                ax.plot(range(len(row["attn_tokens"])), row["attn_tokens"], styles[k % 4],
                        marker="o", ms=3, color=colours[red], label=row["setting"])
        ax.set_xlabel("layer (0-based)")
        ax.set_ylabel("tokens per video entering attention")
        ax.set_title(f"{bb}, {g['frames'].iloc[0]} frames", fontsize=10)
        ax.grid(alpha=0.3)
        _legend_outside(ax)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def speed_figure(c: pd.DataFrame, path: Path) -> bool:
    """Paired speed-up over none vs GMACs with the per-round spread as error bars, the ideal
    (speed-up = none's GMACs / GMACs) and the suspect line above it; suspect points marked."""
    c = c.dropna(subset=["speed-up"]) if not c.empty else c
    if c.empty:
        return False
    bbs = backbones(c)
    colours = reducer_colours(c["reducer"])
    fig, axes = plt.subplots(1, len(bbs), figsize=(5.2 * len(bbs) + 1.8, 4.2), squeeze=False)
    for ax, bb in zip(axes[0], bbs):
        g = c[c["backbone"] == bb]
        for red, gr in g.groupby("reducer"):
            gr = gr.sort_values("GMACs")
            err = [gr["speed-up"] - gr["speed-up low"], gr["speed-up high"] - gr["speed-up"]]
            ax.errorbar(gr["GMACs"], gr["speed-up"], yerr=err, fmt="o-", color=colours[red],
                        label=red, ms=5, capsize=3)
        bad = g[g["suspect"]]
        if not bad.empty:
            ax.plot(bad["GMACs"], bad["speed-up"], "x", color="red", ms=11, mew=2,
                    label=f"suspect: > {SUSPECT_FACTOR:g} x ideal")
        for _, row in bad.iterrows():
            ax.annotate("suspect", (row["GMACs"], row["speed-up"]), fontsize=7, color="red",
                        xytext=(5, -10), textcoords="offset points")
        base_gmacs = (g["GMACs"] * g["ideal"]).median()  # none's GMACs, as every row records it
        xs = np.linspace(g["GMACs"].min(), g["GMACs"].max(), 50)
        ax.plot(xs, base_gmacs / xs, ":", color="grey", label="ideal: none's GMACs / GMACs")
        ax.plot(xs, SUSPECT_FACTOR * base_gmacs / xs, "--", color="red", lw=0.8, alpha=0.6,
                label=f"{SUSPECT_FACTOR:g} x ideal")
        ax.set_xlabel(GMACS_LABEL, fontsize=8)
        ax.set_ylabel("speed-up over none (median per-round ratio)")
        ax.set_title(f"{bb} (random weights)", fontsize=10)
        ax.grid(alpha=0.3)
    _legend_outside(axes[0][-1], axes[0])
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return True


def make_figures(cost: pd.DataFrame, quality: pd.DataFrame, out: Path,
                 records: list[dict]) -> list[tuple[str, str]]:
    """Draw every figure the data allows; returns ``(file name, caption)`` pairs."""
    figs: list[tuple[str, str]] = []
    synth = not quality.empty and (quality["data"] == "synth").any()
    tag = "SYNTHETIC benchmark, scale model" if synth else "retrieval"
    if not quality.empty:
        title = f"R-Sum vs cost ({tag})"
        if tradeoff_figure(quality, "GMACs", GMACS_LABEL, out / "rsum_vs_gmacs.png", title):
            figs.append(("rsum_vs_gmacs.png", f"{'SYNTHETIC: ' if synth else ''}the "
                         "cost-quality frontier: R-Sum with its 95 % bootstrap interval against "
                         "visual GMACs per video (top axis: % of none's), one line per reducer "
                         "and algorithm variant across its settings; grey: none with its "
                         "interval as a band; stars: the settings the papers publish for this "
                         "backbone (ViT-B/32 for the scale model); dashed: Pareto front of the "
                         "point estimates (no other setting is both cheaper and better). "
                         "Whether two points differ is decided by the paired tests in the "
                         "quality section, not by overlapping bars."))
        if tradeoff_figure(quality, "videos/s", "inference throughput (videos/s, CPU)",
                           out / "rsum_vs_speed.png", title, lower_is_better=False):
            figs.append(("rsum_vs_speed.png", f"{'SYNTHETIC: ' if synth else ''}R-Sum against "
                         "measured inference throughput of the evaluated model on this CPU."))
    if not cost.empty:
        if speed_figure(cost, out / "speed_vs_gmacs.png"):
            figs.append(("speed_vs_gmacs.png", "Random weights: speed-up over none against "
                         "GMACs per backbone, each the median of per-round ratios with none "
                         "timed in the same interleaved rounds of the same trial; bars: the "
                         "rounds' inter-quartile range (min-max with fewer than 5 rounds). "
                         "Dotted: what the GMACs alone predict (none's GMACs / GMACs); points "
                         "below it lose time to the reducer's own work or to small, memory-bound "
                         "kernels. Red crosses: suspect, more than the dashed line (a changed "
                         "machine load or a measurement problem, not a real speed-up)."))
        if memory_figure(cost, out / "memory.png"):
            figs.append(("memory.png", "Random weights: activation memory one video keeps for "
                         "backward in a full fine-tuning step (MiB), per reducer setting."))
        if tokens_figure(cost, out / "tokens_per_layer.png"):
            figs.append(("tokens_per_layer.png", "Tokens per video entering attention at "
                         "each layer, per reducer setting (from the encoder's token trace)."))
    prov = [r for r in records if r.get("kind") == "provenance" and r.get("status") == "ok"]
    if prov:
        caption = provenance_figure(prov, out / "token_provenance.png")
        figs.append(("token_provenance.png", caption))
    return figs
