"""The token-provenance picture: which patches of one video each reducer keeps, merges or drops."""

from __future__ import annotations

import colorsys
import textwrap
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

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
    opts = textwrap.fill(" ".join(f"{k}={v}" for k, v in sorted(s["options"].items())), 24)
    head = f"{s['reducer']}\n{opts}" if opts else s["reducer"]
    return (f"{head}\n{m['out_rows'] * m['out_tokens']} tokens out\n"
            f"{m['merged_tokens']} merged tokens\n{m['dropped']} patches dropped")


def provenance_figure(records: list[dict], path: Path, max_frames: int = 12) -> str:
    """Draw one row per provenance record; returns the figure caption."""
    from .provenance import synthetic_video
    from .validate import spec_for

    order = ["none", "tome", "tempme", "centerclip", "pooling", "sparse"]
    records = sorted(records, key=lambda r: (order.index(r["settings"]["reducer"])
                                             if r["settings"]["reducer"] in order else 99,
                                             str(r["settings"]["options"])))
    frames = records[0]["metrics"]["frames"]
    shown = min(frames, max_frames)
    fig, axes = plt.subplots(len(records), shown, figsize=(0.95 * shown + 2.0,
                                                           1.05 * len(records) + 0.35),
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
                ax.set_title(f"frame {f}", fontsize=7)
        row[0].set_ylabel(_row_label(rec), rotation=0, ha="right", va="center", fontsize=7)
    width = fig.get_figwidth()
    fig.subplots_adjust(left=1.95 / width, right=0.995, top=1 - 0.3 / fig.get_figheight(),
                        bottom=0.02, wspace=0.05, hspace=0.08)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    weights = {r["settings"].get("weights", "random") for r in records}
    weights_text = "random weights" if weights == {"random"} else "trained base weights"
    checks = f"{sum(r['metrics']['size_check'] for r in records)}/{len(records)} reducers"
    return CAPTION.format(weights=weights_text, frames=frames, checks=checks)
