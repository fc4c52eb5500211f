"""Point labels for the report figures: a short setting name beside every point, placed where it
overlaps no other label and no marker; a point with no free place gets a number and a line in
a key under the panel."""

from __future__ import annotations

from dataclasses import dataclass

from matplotlib.text import Text
from matplotlib.transforms import Bbox

from .plot_style import LABEL_SIZE
from .published import option_defaults
from .tables import curve_label, option_value

SEGMENT_KEYS = ("layer", "segments", "k")  # CenterCLIP's "B6-4-49" notation, as its presets

# Candidate places (offset in points, horizontal and vertical alignment), nearest first.
OFFSETS = [(7, 5, "left", "bottom"), (7, -5, "left", "top"), (-7, 5, "right", "bottom"),
           (-7, -5, "right", "top"), (0, 11, "center", "bottom"), (0, -11, "center", "top"),
           (11, 0, "left", "center"), (-11, 0, "right", "center"), (7, 17, "left", "bottom"),
           (7, -17, "left", "top"), (-7, 17, "right", "bottom"), (-7, -17, "right", "top"),
           (0, 25, "center", "bottom"), (0, -25, "center", "top")]
# Farther places, reached only when every near one is taken: a thin line leads to the point.
FAR = [(dx * r, dy * r, ha, va) for r in (30, 44) for dx, dy, ha, va in
       [(1, 0.6, "left", "bottom"), (1, -0.6, "left", "top"), (-1, 0.6, "right", "bottom"),
        (-1, -0.6, "right", "top"), (0, 1, "center", "bottom"), (0, -1, "center", "top")]]
MARKER_PX = 9.0  # half the side of the box kept free around every marker (stars included)


def point_label(reducer: str, options: dict) -> str:
    """A point's short setting name: ``B6-4-49`` (layer-segments-k, as CenterCLIP and its
    baselines name their settings) or ``r=2`` (the reducer's first option, always shown), plus
    any other option that differs from the reducer's defaults, a string one by its value alone
    (``spectral B6-4-49``: the algorithm variant, which also names the point's line)."""
    defaults = option_defaults(reducer)
    full = {**defaults, **options}
    if not full:
        return reducer
    if all(k in full for k in SEGMENT_KEYS[:2]):
        head = "B" + "-".join(option_value(full[k]) for k in SEGMENT_KEYS if k in full)
        shown = set(SEGMENT_KEYS)
    else:
        first = next(iter(defaults or options))
        head, shown = f"{first}={option_value(full[first])}", {first}
    changed = {k: v for k, v in sorted(options.items())
               if k not in shown and option_value(v) != option_value(defaults.get(k))}
    kinds = [v for v in changed.values() if isinstance(v, str)]
    rest = [f"{k}={option_value(v)}" for k, v in changed.items() if not isinstance(v, str)]
    return " ".join([*kinds, head, *rest])


def short_setting(reducer: str, options: dict) -> str:
    """``none``, ``tome r=2``, ``centerclip (algorithm=spectral) spectral B6-4-49``: the line
    and the point label together, for places where a setting stands alone (bars, keys)."""
    if reducer == "none":
        return "none"
    return f"{curve_label(reducer, options)} {point_label(reducer, options)}"


@dataclass
class Label:
    """A point to label: data position, text and colour (its line's)."""

    x: float
    y: float
    text: str
    colour: object = "k"
    key: str | None = None  # the text of the key line when the point is numbered (default: text)


def place_labels(ax, labels: list[Label], avoid=(), bars=()) -> list[str]:
    """Annotate every point of ``labels`` on ``ax`` without overlaps.

    Call it once the figure's layout is final (after ``tight_layout``): positions are
    computed in pixels. Each label takes the first place (:data:`OFFSETS`, then :data:`FAR`)
    inside the axes that overlaps no label placed before it, no marker (the labelled points
    and the ``avoid`` points) and no error bar (``bars``: ``(x, low, high)``), all in data
    coordinates; a label may cross error bars when nothing else is left; failing that the
    point gets a number (placed the same way) and its text goes to the returned key.

    Returns:
        The key lines, ``["1 tome r=2", ...]`` (empty when every label found a place).
    """
    renderer = ax.figure.canvas.get_renderer()
    points = [(lab.x, lab.y) for lab in labels] + list(avoid)
    taken = [_box(ax, x, y, y, MARKER_PX) for x, y in points]
    bar_boxes = [_box(ax, x, low, high, 2.0) for x, low, high in bars if low < high]
    frame = ax.get_window_extent(renderer)
    key: list[str] = []
    for lab in labels:
        if any(_place(ax, lab, lab.text, renderer, taken, extra, frame)
               for extra in (bar_boxes, [])):
            continue
        key.append(f"{len(key) + 1} {lab.key or lab.text}")
        if not _place(ax, lab, str(len(key)), renderer, taken, [], frame):
            _annotate(ax, str(len(key)), lab, *OFFSETS[0])  # overlapping beats missing
    return key


def _box(ax, x: float, low: float, high: float, half: float) -> Bbox:
    """The pixel box around ``x`` from ``low`` to ``high``, ``half`` pixels to each side."""
    (px, p0), (_, p1) = ax.transData.transform([(x, low), (x, high)])
    return Bbox.from_extents(px - half, min(p0, p1) - half, px + half, max(p0, p1) + half)


def _annotate(ax, text: str, lab: Label, dx: float, dy: float, ha: str, va: str,
              leader: bool = False):
    """The label itself: on a translucent white box above every line, so crossings stay
    readable; ``leader``: with a thin line to its point."""
    arrow = {"arrowstyle": "-", "color": lab.colour, "lw": 0.6, "shrinkA": 0, "shrinkB": 4}
    return ax.annotate(text, (lab.x, lab.y), xytext=(dx, dy), textcoords="offset points",
                       ha=ha, va=va, fontsize=LABEL_SIZE, color=lab.colour, zorder=10,
                       fontweight="bold" if text.isdigit() else "normal",
                       arrowprops=arrow if leader else None,
                       bbox={"boxstyle": "square,pad=0.05", "fc": "white", "ec": "none",
                             "alpha": 0.75})


def _place(ax, lab: Label, text: str, renderer, taken: list[Bbox], extra: list[Bbox],
           frame: Bbox) -> bool:
    """Put ``text`` at the first place clear of ``taken`` and ``extra`` (its box then joins
    ``taken``); False, and nothing drawn, when there is none."""
    for dx, dy, ha, va, leader in [(*o, False) for o in OFFSETS] + [(*o, True) for o in FAR]:
        ann = _annotate(ax, text, lab, dx, dy, ha, va, leader)
        ann.update_positions(renderer)
        box = Text.get_window_extent(ann, renderer)  # the text alone, not its leader line
        inside = frame.containsx(box.x0) and frame.containsx(box.x1) and \
            frame.containsy(box.y0) and frame.containsy(box.y1)
        if inside and not any(box.overlaps(t) for t in taken + extra):
            taken.append(box)
            return True
        ann.remove()
    return False


def write_key(ax, key: list[str]) -> None:
    """The numbered points' labels under the panel's x-axis label, as many per line as fit the
    panel's width."""
    if not key:
        return
    chars = max(20, int(ax.get_window_extent().width / (LABEL_SIZE * 0.6 * ax.figure.dpi / 72)))
    lines = [""]
    for entry in ["numbered points:", *key]:
        if lines[-1] and len(lines[-1]) + 3 + len(entry) > chars:
            lines.append("")
        lines[-1] += ("   " if lines[-1] else "") + entry
    ax.annotate("\n".join(lines), (0, 0), xycoords=("axes fraction", ax.xaxis.label),
                xytext=(0, -8), textcoords="offset points", ha="left", va="top",
                fontsize=LABEL_SIZE)
