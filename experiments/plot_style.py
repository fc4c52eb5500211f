"""What every report figure shares: fonts readable at 100 %, colours per reducer, axis scales,
the legend and saving as PNG plus SVG."""

from __future__ import annotations

import functools
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FuncFormatter, LogLocator, MaxNLocator  # noqa: E402

from .tables import ORDER, curve_label, reducer_rank  # noqa: E402

# Sizes in points at the saved 120 dpi, so a figure shown at 100 % has >= 10 pt tick labels;
# SVG keeps text as text (searchable, editable in a vector editor, and what the tests read).
STYLE = {"font.size": 10, "axes.titlesize": 11, "axes.labelsize": 11, "xtick.labelsize": 10,
         "ytick.labelsize": 10, "legend.fontsize": 10, "figure.titlesize": 12,
         "svg.fonttype": "none"}
GMACS_LABEL = "visual GMACs per video (10$^9$ multiply-accumulates; GFLOPs = 2 x GMACs)"
PUBLISHED_STYLE = {"marker": "D", "s": 60, "facecolors": "none", "edgecolors": "k",
                   "linewidths": 1.3, "zorder": 6}  # the papers' numbers: black open diamonds
LABEL_SIZE = 9  # point labels: the one place a smaller size is needed to keep them apart
DPI = 120
FIXED = {"none": 7, **{n: i for i, n in enumerate(ORDER[1:])}}  # none grey, built-ins 0..4


def styled(draw):
    """Run a figure function under :data:`STYLE` (text takes its size when it is created)."""

    @functools.wraps(draw)
    def run(*args, **kwargs):
        with plt.rc_context(STYLE):
            return draw(*args, **kwargs)

    return run


def save(fig, path: Path) -> None:
    """Write ``path`` as PNG and its ``.svg`` sibling (tight bounding box: keys and legends
    outside the axes are kept), then close the figure."""
    path = Path(path)
    for suffix in (".png", ".svg"):
        fig.savefig(path.with_suffix(suffix), dpi=DPI, bbox_inches="tight")
    plt.close(fig)


def reducer_colours(names) -> dict[str, tuple]:
    """The same colour for a reducer in every figure (built-ins fixed, others after them)."""
    cmap = plt.get_cmap("tab10")
    others = [n for n in sorted(set(names)) if n not in FIXED]
    spare = [i for i in range(10) if i not in FIXED.values()]
    colours = {n: cmap(i) for n, i in FIXED.items()}
    colours.update({n: cmap(spare[i % len(spare)]) for i, n in enumerate(others)})
    return colours


def variants(df: pd.DataFrame) -> list[tuple[str, str, int, pd.DataFrame]]:
    """The rows of ``df`` split into one line per reducer and algorithm variant
    (:func:`tables.curve_label`, e.g. CenterCLIP k-medoids and spectral apart), in table
    order: ``(curve label, reducer, k, rows)`` with ``k`` the variant's index in its reducer."""
    keys = pd.Series([curve_label(r, o) for r, o in zip(df["reducer"], df["options"])],
                     index=df.index, dtype=object)
    out, seen = [], {}
    for curve in sorted(set(keys), key=lambda c: (reducer_rank(c.split(" ")[0]), c)):
        rows = df[keys == curve]
        red = rows["reducer"].iloc[0]
        seen[red] = seen.get(red, -1) + 1
        out.append((curve, red, seen[red], rows))
    return out


def variant_fmt(k: int) -> str:
    """Marker and line style of a reducer's ``k``-th variant (0: circles, solid line)."""
    return ["o-", "s:", "^--", "D-."][k % 4]


def legend_outside(ax, axes=None) -> None:
    """Legend right of ``ax`` with the entries of all ``axes`` (each label once)."""
    seen: dict[str, object] = {}
    for a in axes if axes is not None else [ax]:
        for h, label in zip(*a.get_legend_handles_labels()):
            seen.setdefault(label, h)
    if seen:
        ax.legend(list(seen.values()), list(seen), loc="upper left", bbox_to_anchor=(1.01, 1.0),
                  frameon=False)


def legend_below(ax) -> None:
    """The legend under the x-axis label, once the layout is final (it then takes no room
    from the axes; the tight bounding box of :func:`save` keeps it)."""
    if not ax.get_legend_handles_labels()[1]:
        return
    renderer = ax.figure.canvas.get_renderer()
    box, tight = ax.get_window_extent(renderer), ax.get_tightbbox(renderer)  # tight: labels too
    ax.legend(loc="upper left", bbox_to_anchor=(0.0, (tight.y0 - box.y0) / box.height),
              borderaxespad=0.2, frameon=False)


def scale_for(ax, axis: str, values) -> bool:
    """A log scale when ``values`` span a decade or more, ticked at 1, 2, 5 x 10^n with plain
    numbers; returns whether it is logarithmic."""
    vals = [float(v) for v in values if v is not None and pd.notna(v) and float(v) > 0]
    if not vals or max(vals) / min(vals) < 10:
        return False
    getattr(ax, f"set_{axis}scale")("log")
    target = getattr(ax, f"{axis}axis")
    target.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0)))
    target.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    target.set_minor_formatter(FuncFormatter(lambda v, _: ""))
    return True


def integer_ticks(ax, axis: str) -> None:
    """Only whole numbers on ``axis`` (layers, token counts)."""
    getattr(ax, f"{axis}axis").set_major_locator(MaxNLocator(integer=True))
