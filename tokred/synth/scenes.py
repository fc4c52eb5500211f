"""Scenes of the synthetic benchmark: what a video shows, how it is rendered, how it is captioned.

A scene has a textured background, a large *mover* sliding across one lane, a large *event* object
that appears or disappears, and sometimes a small object in a corner; the vocabulary is closed (8
colours, 4 shapes, 4 directions, lanes, corners). See :mod:`tokred.synth.generate`.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Optional

import numpy as np

COLOURS = {
    "red": (220, 40, 40),
    "green": (40, 190, 60),
    "blue": (50, 80, 230),
    "yellow": (235, 215, 40),
    "purple": (150, 60, 200),
    "white": (245, 245, 245),
    "black": (25, 25, 25),
    "cyan": (40, 200, 220),
}


SHAPES = ("circle", "square", "triangle", "cross")


DIRECTIONS = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}


OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}


LANES = {
    "h": ("at the top", "in the middle", "at the bottom"),
    "v": ("on the left", "in the middle", "on the right"),
}


CORNERS = ("top left", "top right", "bottom left", "bottom right")


REGIONS = (  # [row][column] of GRID cells, for the static event object
    ("at the top left", "at the top", "at the top right"),
    ("on the left", "in the centre", "on the right"),
    ("at the bottom left", "at the bottom", "at the bottom right"),
)


LARGE, SMALL = 9.0, 3.0  # object radii on the 64 px canvas (large ~2 patches at 56 px / 8)
GRID = (16, 32, 48)  # lane / slot centres on the 64 px reference canvas


TYPES = ("static", "direction", "order", "small")


@dataclass(frozen=True)
class Scene:
    """One video's content; ``render`` turns it into frames ``[F, S, S, 3]``."""

    bg: int  # texture seed
    mover: tuple[str, str]  # (colour, shape)
    direction: str
    lane: int  # index into GRID across the motion axis
    event_obj: tuple[str, str]
    event_pos: tuple[int, int]  # (x, y) indices into GRID, off the mover's lane
    event: str  # "appear" | "disappear"
    order: str  # "move_first" | "event_first"
    small: Optional[tuple[str, str, int]] = None  # (colour, shape, corner index)

    def reversed(self) -> Scene:
        """The scene whose rendering is this one's played backwards."""
        return replace(
            self,
            direction=OPPOSITE[self.direction],
            event="disappear" if self.event == "appear" else "appear",
            order="event_first" if self.order == "move_first" else "move_first",
        )


def _axis(d: str) -> str:
    return "h" if d in ("left", "right") else "v"


def _timeline(s: Scene, F: int) -> tuple[int, int, int]:
    """``(motion_start, motion_frames, event_frame)``; event_first is move_first time-reversed."""
    h = F // 2
    e = h + (F - h) // 2
    return (0, h, e) if s.order == "move_first" else (F - h, h, F - e)


def _shape_mask(shape: str, cx: float, cy: float, r: float, n: int) -> np.ndarray:
    y, x = np.mgrid[0:n, 0:n] + 0.5
    dx, dy = x - cx, y - cy
    if shape == "circle":
        return dx**2 + dy**2 <= r**2
    if shape == "square":
        return (np.abs(dx) <= 0.9 * r) & (np.abs(dy) <= 0.9 * r)
    if shape == "triangle":
        return (dy <= r) & (dy >= -r) & (np.abs(dx) <= (dy + r) / 2)
    return ((np.abs(dx) <= r / 3) | (np.abs(dy) <= r / 3)) & (np.abs(dx) <= r) & (np.abs(dy) <= r)


def _background(seed: int, n: int) -> np.ndarray:
    """Static smooth texture: grey base + tint + three low-frequency waves, ``[n, n, 3]``."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:n, 0:n] / n
    img = np.full((n, n), rng.uniform(95, 140))  # black (25) and white (245) stay apart
    for _ in range(3):
        fx, fy = rng.integers(-3, 4, size=2)
        img += rng.uniform(6, 12) * np.sin(
            2 * np.pi * (fx * x + fy * y) + rng.uniform(0, 2 * np.pi)
        )
    tint = rng.uniform(-10, 10, size=3)
    return img[..., None] + tint  # [n, n, 3] float


def render(s: Scene, F: int, n: int) -> np.ndarray:
    """Renders a scene to uint8 frames ``[F, n, n, 3]`` (deterministic, no randomness)."""
    k = n / 64.0
    bg = _background(s.bg, n)
    start, steps, e_frame = _timeline(s, F)
    dx, dy = DIRECTIONS[s.direction]
    lane = GRID[s.lane]
    a0, a1 = (GRID[0], GRID[-1]) if dx + dy > 0 else (GRID[-1], GRID[0])  # travel along the axis
    frames = np.empty((F, n, n, 3), dtype=np.uint8)
    for t in range(F):
        img = bg.copy()
        if (t >= e_frame) == (s.event == "appear"):
            ex, ey = GRID[s.event_pos[0]], GRID[s.event_pos[1]]
            img[_shape_mask(s.event_obj[1], ex * k, ey * k, LARGE * k, n)] = COLOURS[s.event_obj[0]]
        i = min(max(t - start, 0), steps - 1)
        # exact integer numerator, so a scene and its reversal place the mover identically
        pos = (a0 * (steps - 1) + (a1 - a0) * i) / max(steps - 1, 1)
        mx, my = (pos, lane) if dx else (lane, pos)
        img[_shape_mask(s.mover[1], mx * k, my * k, LARGE * k, n)] = COLOURS[s.mover[0]]
        if s.small:
            c = 5 if s.small[2] in (0, 2) else 59
            r = 5 if s.small[2] in (0, 1) else 59
            img[_shape_mask(s.small[1], c * k, r * k, SMALL * k, n)] = COLOURS[s.small[0]]
        frames[t] = np.clip(img, 0, 255).astype(np.uint8)
    return frames


def _random_scene(rng: np.random.Generator, small_prob: float) -> Scene:
    cols, shapes = list(COLOURS), list(SHAPES)
    mover = (cols[rng.integers(len(cols))], shapes[rng.integers(len(shapes))])
    while (ev := (cols[rng.integers(len(cols))], shapes[rng.integers(len(shapes))])) == mover:
        pass
    direction = list(DIRECTIONS)[rng.integers(4)]
    lane = int(rng.integers(3))
    off = [i for i in range(3) if i != lane]
    along, across = int(rng.integers(3)), off[rng.integers(2)]
    pos = (along, across) if _axis(direction) == "h" else (across, along)
    small = None
    if rng.random() < small_prob:
        small = (
            cols[rng.integers(len(cols))],
            shapes[rng.integers(len(shapes))],
            int(rng.integers(4)),
        )
    return Scene(
        int(rng.integers(2**31)),
        mover,
        direction,
        lane,
        ev,
        pos,
        ("appear", "disappear")[rng.integers(2)],
        ("move_first", "event_first")[rng.integers(2)],
        small,
    )


def caption_keys(s: Scene) -> dict[str, tuple]:
    """What each caption type asserts about a scene (a caption is true iff its key matches)."""
    keys: dict[str, tuple] = {
        "static": (s.event_obj, s.event_pos, s.mover),
        "direction": (s.mover, s.direction, s.lane),
        "order": (s.mover, s.direction, s.event_obj, s.event, s.order),
    }
    if s.small:
        keys["small"] = s.small
    return keys


def caption(s: Scene, kind: str, variant: int = 0) -> str:
    """English caption of ``kind`` for a scene; ``variant`` picks a paraphrase (0 = canonical)."""
    m, e = " ".join(s.mover), " ".join(s.event_obj)
    verb = "appears" if s.event == "appear" else "disappears"
    if kind == "static":
        where = REGIONS[s.event_pos[1]][s.event_pos[0]]
        return f"a {e} {where} and a {m}" if variant == 0 else f"a {m} and a {e} {where}"
    if kind == "direction":
        lane = LANES[_axis(s.direction)][s.lane]
        return (
            f"a {m} moves {s.direction} {lane}"
            if variant == 0
            else f"{lane} a {m} moves {s.direction}"
        )
    if kind == "order":
        first, second = f"a {m} moves {s.direction}", f"a {e} {verb}"
        if s.order == "event_first":
            first, second = second, first
        return f"{'first ' if variant else ''}{first}, then {second}"
    if kind == "small" and s.small:
        obj, corner = " ".join(s.small[:2]), CORNERS[s.small[2]]
        return (
            f"a small {obj} in the {corner} corner"
            if variant == 0
            else f"in the {corner} corner a small {obj}"
        )
    raise ValueError(f"no {kind!r} caption for {s}; types: {TYPES}")
