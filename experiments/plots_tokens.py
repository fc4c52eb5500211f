"""Token figures: how many tokens enter each layer per setting, and the token-provenance
picture (which patches of one video each reducer keeps, merges or drops)."""

from __future__ import annotations

import colorsys
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from .plot_labels import Label, place_labels, point_label, short_setting, write_key  # noqa: E402
from .plot_style import (  # noqa: E402
    integer_ticks,
    legend_outside,
    reducer_colours,
    save,
    scale_for,
    styled,
    variant_fmt,
)
from .plots_cost import backbones  # noqa: E402
from .tables import reducer_rank  # noqa: E402

TOKENS_CAPTION = (
    "Tokens per video entering attention at each layer (from the encoder's token trace), one "
    "line per distinct schedule: settings that share one (CenterCLIP, pooling and sparse at "
    "the same layer and segments, or both CenterCLIP algorithms) are one line, named in the "
    "legend by every setting and labelled at the last layer; log axis when the counts span a "
    "decade.")
CAPTION = (
    "Token provenance on one SYNTHETIC video (scale model, {weights}; columns = the {frames} "
    "input frames). Every output token of the last block is drawn in its own colour over the "
    "input patches it stands for: patches sharing a colour, within a frame or across frames, "
    "were merged into one token; untinted patches survive as their own token; darkened patches "
    "were dropped. Exact, not estimated: each reducer site is linear in the features once its "
    "assignment is chosen, so the assignment is read from a vector-Jacobian product of the "
    "site (the forward is unchanged), and the patch counts are checked against the reducer's "
    "own token sizes (check passed: {checks})."
)


def schedules(g: pd.DataFrame) -> list[list[pd.Series]]:
    """The rows of ``g`` grouped by identical tokens-per-layer schedules, in table order
    (CenterCLIP, pooling and sparse at one layer/segments setting share one)."""
    groups: dict[tuple, list[pd.Series]] = {}
    for _, row in g.iterrows():
        groups.setdefault(tuple(row["attn_tokens"]), []).append(row)
    return list(groups.values())


@styled
def tokens_figure(c: pd.DataFrame, path: Path) -> bool:
    """Tokens per video entering attention at each layer: one line per distinct schedule,
    named in the legend by every setting that has it and labelled at its last layer."""
    c = c[c["attn_tokens"].map(len) > 0] if not c.empty else c
    if c.empty:
        return False
    bbs = backbones(c)
    colours = reducer_colours(c["reducer"])
    fig, axes = plt.subplots(1, len(bbs), figsize=(10.5 * len(bbs), 5.0), squeeze=False)
    labels = []
    for ax, bb in zip(axes[0], bbs):
        g = c[c["backbone"] == bb]
        labels.append(_schedule_lines(ax, g, colours))
        layers = max(len(t) for t in g["attn_tokens"])
        ax.set_xticks(range(layers))
        if not scale_for(ax, "y", [v for t in g["attn_tokens"] for v in t]):
            integer_ticks(ax, "y")
        ax.set_xlabel("layer (0-based)")
        ax.set_ylabel("tokens per video entering attention")
        ax.set_title(f"{bb}, {g['frames'].iloc[0]} frames")
        ax.grid(alpha=0.3)
        legend_outside(ax)
    fig.tight_layout()
    for ax, bb, found in zip(axes[0], bbs, labels):
        every = [(i, v) for t in c.loc[c["backbone"] == bb, "attn_tokens"] for i, v in enumerate(t)]
        write_key(ax, place_labels(ax, found, avoid=every))
    save(fig, path)
    return True


def _schedule_lines(ax, g: pd.DataFrame, colours: dict) -> list[Label]:
    """Draw each schedule of ``g`` (none underneath, wide and grey); returns end labels."""
    labels, seen = [], {}
    for rows in schedules(g):
        red = rows[0]["reducer"]
        tokens = rows[0]["attn_tokens"]
        k = seen[red] = seen.get(red, -1) + 1
        style = {"lw": 3.5, "alpha": 0.5, "zorder": 1} if red == "none" else {"lw": 1.5, "ms": 4}
        names = [short_setting(r["reducer"], r["options"]) for r in rows]
        ax.plot(range(len(tokens)), tokens, variant_fmt(k), color=colours[red],
                label="\n= ".join(names), **style)
        text = " / ".join(dict.fromkeys("none" if r["reducer"] == "none" else
                                        point_label(r["reducer"], r["options"]) for r in rows))
        labels.append(Label(len(tokens) - 1, tokens[-1], text, colours[red], " = ".join(names)))
    return labels


def token_colour(j: int) -> np.ndarray:
    """A distinct, saturated RGB colour (0..1) for token ``j`` (golden-ratio hues)."""
    h = (j * 0.61803398875) % 1.0
    s = 0.65 + 0.35 * ((j * 7) % 3) / 2
    return np.asarray(colorsys.hsv_to_rgb(h, s, 0.95))


def paint(frames: np.ndarray, owner: np.ndarray, grid: int) -> np.ndarray:
    """Frames ``[T,S,S,3]`` uint8 + owner ``[T*grid*grid]`` -> painted float ``[T,S,S,3]``."""
    t, size = frames.shape[:2]
    patch = size // grid
    img = frames.astype(float) / 255.0
    counts = np.bincount(owner[owner >= 0], minlength=owner.max() + 2)
    own = owner.reshape(t, grid, grid)
    for f in range(t):
        for gy in range(grid):
            for gx in range(grid):
                j = own[f, gy, gx]
                cell = img[f, gy * patch:(gy + 1) * patch, gx * patch:(gx + 1) * patch]
                if j < 0:
                    cell *= 0.15
                elif counts[j] > 1:
                    cell[:] = 0.35 * cell + 0.65 * token_colour(int(j))
    return img


def _row_label(rec: dict) -> str:
    s, m = rec["settings"], rec["metrics"]
    head = textwrap.fill(short_setting(s["reducer"], s["options"]), 22)
    return (f"{head}\n{m['out_rows'] * m['out_tokens']} tokens out\n"
            f"{m['merged_tokens']} merged tokens\n{m['dropped']} patches dropped")


@styled
def provenance_figure(records: list[dict], path: Path, max_frames: int = 12) -> str:
    """Draw one row per provenance record; returns the figure caption."""
    from .provenance import synthetic_video
    from .validate import spec_for

    records = sorted(records, key=lambda r: (reducer_rank(r["settings"]["reducer"]),
                                             str(r["settings"]["options"])))
    frames = records[0]["metrics"]["frames"]
    shown = min(frames, max_frames)
    fig, axes = plt.subplots(len(records), shown, figsize=(1.0 * shown + 2.4,
                                                           1.15 * len(records) + 0.4),
                             squeeze=False)
    for row, rec in zip(axes, records):
        m = rec["metrics"]
        spec = spec_for(rec["settings"]["model"])
        raw, _ = synthetic_video(m["frames"], spec.image_size)
        img = paint(raw, np.asarray(m["owner"]), m["grid"])
        for f, ax in enumerate(row):
            ax.imshow(img[f], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if rec is records[0]:
                ax.set_title(f"frame {f}", fontsize=10)
        row[0].set_ylabel(_row_label(rec), rotation=0, ha="right", va="center", fontsize=10)
    width = fig.get_figwidth()
    fig.subplots_adjust(left=2.35 / width, right=0.995, top=1 - 0.35 / fig.get_figheight(),
                        bottom=0.02, wspace=0.05, hspace=0.1)
    save(fig, path)
    weights = {r["settings"].get("weights", "random") for r in records}
    weights_text = "random weights" if weights == {"random"} else "trained base weights"
    checks = f"{sum(r['metrics']['size_check'] for r in records)}/{len(records)} reducers"
    return CAPTION.format(weights=weights_text, frames=frames, checks=checks)
