"""Uncertainty in the quality report: 95 % intervals beside every recall, and in sentences
which differences are real (paired bootstrap tests on the stored per-query ranks).

Every quality record stores the 95 % bootstrap interval of each recall and R-Sum (``ci``,
:func:`tokred.retrieval.stats.bootstrap`), which the tables print beside the value, and the
1-based rank of each query (``ranks``: t2v per caption, v2t per video). Two trials scored on the *same* queries are compared with
:func:`tokred.retrieval.stats.paired`: the same resampled queries for both, so the interval of
the difference reflects only how differently the two models rank those queries. Each reducer
row is tested against ``none`` of its table (same model, mode and data), and rows of different
reducers (or algorithm variants) at about the same cost against each other. Ranks are only
comparable when the queries are identical: the same data config and split, hence the same
caption and video counts; otherwise the sentence says "not comparable" and why.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pandas as pd

from tokred.retrieval.stats import Comparison, Interval, paired

from .plots import pareto_front
from .tables import CI_COLS, curve_label

NEAR = 0.05  # rows whose GMACs differ by at most 5 % are "at similar cost"
METRIC = "R-Sum"  # the papers' single quality number; the tables hold every R@K with its interval
N_BOOT = 2000
NO_CI = "[n/a]"


def with_intervals(table: pd.DataFrame, src: pd.DataFrame) -> pd.DataFrame:
    """``table`` with every recall / R-Sum column of :data:`CI_COLS` it has written as
    ``12.4 [10.9, 13.9]`` (the 95 % interval of ``src``'s same row), or ``12.4 [n/a]`` where
    the record has none."""
    table = table.copy()
    for c in [c for c in CI_COLS if c in table.columns]:
        table[c] = [interval_text(r.get(c), r.get(f"{c} low"), r.get(f"{c} high"))
                    for _, r in src.iterrows()]
    return table


def interval_text(value, low, high) -> str:
    """``12.4 [10.9, 13.9]``; ``12.4 [n/a]`` without an interval; ``-`` without a value."""
    if value is None or pd.isna(value):
        return "-"
    if low is None or high is None or pd.isna(low) or pd.isna(high):
        return f"{value:.1f} {NO_CI}"
    return f"{value:.1f} [{low:.1f}, {high:.1f}]"


def interval_note(g: pd.DataFrame) -> str:
    """What the bracketed intervals are, and which rows have none (older records)."""
    text = ("Every R@K and R-Sum of our rows is followed by its 95 % bootstrap interval "
            "[low, high] over the test queries (percentile intervals, 2,000 resamples of the "
            "captions for t2v and of the videos for v2t; the point estimate is the value "
            "before it). Two rows whose intervals overlap may still differ significantly: the "
            "paired tests below decide that.")
    old = [r["setting"] for _, r in g.iterrows()
           if pd.notna(r.get("R-Sum")) and pd.isna(r.get("R-Sum low"))]
    if old:
        text += (f" {NO_CI}: no interval, the record predates stored intervals ("
                 f"{', '.join(old)}); rerun those trials in a fresh --out to get them.")
    return text


@dataclass(frozen=True)
class Queries:
    """What a trial was scored on (``key``) and its per-query ranks (None: not recorded)."""

    key: tuple
    captions: int | None
    videos: int | None
    ranks: tuple[np.ndarray, np.ndarray] | None


def queries_of(records: list[dict]) -> dict[str, Queries]:
    """Trial id -> :class:`Queries` for every finished quality record."""
    out = {}
    for r in records:
        if r.get("kind") != "quality" or r.get("status") != "ok":
            continue
        s, m = r["settings"], r["metrics"]
        ranks = m.get("ranks")
        key = (json.dumps(s.get("data") or {}, sort_keys=True), s.get("split", "test"),
               m.get("num_captions"), m.get("num_videos"))
        out[r["id"]] = Queries(key, m.get("num_captions"), m.get("num_videos"),
                               None if not ranks else (np.asarray(ranks["t2v"]),
                                                       np.asarray(ranks["v2t"])))
    return out


def label(row: pd.Series) -> str:
    """``centerclip B6-4-49``: the preset tag names a setting of several options more briefly;
    otherwise the row's ``setting`` text (``tome r=2``, ``centerclip layer=2 segments=1``)."""
    preset = row.get("preset")
    if isinstance(preset, str) and preset and len(row["options"]) > 1:
        return f"{row['reducer']} {preset}"
    return row["setting"]


def _not_comparable(a: Queries, b: Queries) -> str | None:
    """Why two trials' ranks cannot be paired (None: the same queries)."""
    if a.key == b.key:
        return None
    if (a.captions, a.videos) != (b.captions, b.videos):
        return (f"not comparable: different test queries ({a.captions or '?'} captions / "
                f"{a.videos or '?'} videos vs {b.captions or '?'} / {b.videos or '?'})")
    return "not comparable: different data config or split (other test queries)"


def compare(a: pd.Series, b: pd.Series, queries: dict[str, Queries]) -> dict:
    """Paired test of row ``a`` minus row ``b`` (``METRIC``), or why there is none.

    Returns:
        ``{"a", "b", "comparison"}`` (a :class:`~tokred.retrieval.stats.Comparison`) when the
        two rows were scored on the same queries, else ``{"a", "b", "reason"}``.
    """
    qa, qb = queries.get(a["id"]), queries.get(b["id"])
    out = {"a": a, "b": b}
    if qa is None or qb is None or qa.ranks is None or qb.ranks is None:
        return {**out, "reason": "no test: per-query ranks not recorded (the trial ran before "
                                 "they were stored; rerun it)"}
    why = _not_comparable(qa, qb)
    if why is not None:
        return {**out, "reason": why}
    return {**out, "comparison": paired(qa.ranks, qb.ranks, METRIC, n_boot=N_BOOT)}


def _p(c) -> str:
    return "p < 0.001" if c.p < 0.001 else f"p = {c.p:.3f}"


def _verdict(c) -> str:
    return f"{'significant' if c.significant else 'not significant'} ({_p(c)})"


def _diff(c) -> str:
    d = c.diff
    return f"{d.value:+.1f} [{d.low:+.1f}, {d.high:+.1f}]"


def versus_none_sentence(res: dict) -> str:
    """``tome r=2 vs none: R-Sum -1.2 [-3.0, +0.6], not significant (p = 0.190)``."""
    head = f"{label(res['a'])} vs {label(res['b'])}"
    if "reason" in res:
        return f"{head}: {res['reason']}"
    return f"{head}: {METRIC} {_diff(res['comparison'])}, {_verdict(res['comparison'])}"


def pair_sentence(res: dict, base_gmacs: float | None) -> str:
    """One sentence on two settings at similar cost, the better one (point estimate) first."""
    a, b = res["a"], res["b"]
    at = _cost_text(a, b, base_gmacs)
    if "reason" in res:
        return f"{at}{label(a)} vs {label(b)}: {res['reason']}"
    c = res["comparison"]
    if c.diff.value < 0:  # name the better one first
        c = _flip(c)
        a, b = b, a
    if c.significant:
        return (f"{at}{label(a)} beats {label(b)} by {c.diff.value:.1f} [{c.diff.low:.1f}, "
                f"{c.diff.high:.1f}] {METRIC} (significant, {_p(c)})")
    return f"{at}{label(a)} vs {label(b)}: {METRIC} {_diff(c)}, {_verdict(c)}"


def _flip(c: Comparison) -> Comparison:
    d = c.diff
    return Comparison(c.metric, Interval(-d.value, -d.high, -d.low), c.p)


def _cost_text(a: pd.Series, b: pd.Series, base_gmacs: float | None) -> str:
    if base_gmacs:
        lo, hi = sorted((100 * a["GMACs"] / base_gmacs, 100 * b["GMACs"] / base_gmacs))
        pct = f"~{lo:.0f} %" if round(lo) == round(hi) else f"~{lo:.0f}-{hi:.0f} %"
        return f"at {pct} of none's GMACs, "
    return f"at ~{a['GMACs']:.2f} GMACs, "


def near_pairs(g: pd.DataFrame, tol: float = NEAR) -> list[tuple[pd.Series, pd.Series]]:
    """Pairs of rows of different curves (reducer or algorithm variant; ``none`` excluded)
    whose GMACs are within ``tol`` of each other, costliest first."""
    rows = [r for _, r in g[g["reducer"] != "none"].sort_values("GMACs", ascending=False)
            .iterrows() if pd.notna(r["GMACs"])]
    pairs = []
    for i, a in enumerate(rows):
        for b in rows[i + 1:]:
            same_curve = curve_label(a["reducer"], a["options"]) == curve_label(
                b["reducer"], b["options"])
            if not same_curve and abs(a["GMACs"] - b["GMACs"]) <= tol * max(a["GMACs"], b["GMACs"]):
                pairs.append((a, b))
    return pairs


def significance_lines(g: pd.DataFrame, queries: dict[str, Queries]) -> list[str]:
    """The report's paragraphs on one quality table: every row against ``none``, then the
    pairs at similar cost, each as a sentence saying whether it is significant at 95 %."""
    if not queries:
        return []
    base = g[g["reducer"] == "none"]
    vs_none = [compare(r, _none_for(r, base, queries), queries)
               for _, r in g[g["reducer"] != "none"].iterrows() if not base.empty]
    base_gmacs = float(base.iloc[0]["GMACs"]) if not base.empty else None
    pairs = [compare(a, b, queries) for a, b in near_pairs(g)]
    if not vs_none and not pairs:
        return []
    tested = [r["comparison"] for r in vs_none + pairs if "comparison" in r]
    lines = [f"**Which differences are significant** (paired bootstrap of the {METRIC} "
             f"difference over the same test queries, {N_BOOT:,} resamples; significant at "
             f"95 % when the interval excludes 0. {len(tested)} test"
             f"{'' if len(tested) == 1 else 's'}: even with no real "
             f"difference about {len(tested) / 20:.1f} of them would come out significant by "
             f"chance, so read single borderline results with care).", ""]
    if vs_none:
        lines += [_summary(vs_none), "", *[f"- {versus_none_sentence(r)}" for r in vs_none], ""]
    if pairs:
        lines += [f"Settings of different reducers at similar cost (GMACs within "
                  f"{100 * NEAR:.0f} % of each other):", "",
                  *[f"- {pair_sentence(r, base_gmacs)}" for r in pairs], ""]
    return lines


def _none_for(row: pd.Series, base: pd.DataFrame, queries: dict[str, Queries]) -> pd.Series:
    """The ``none`` row scored on the same queries as ``row`` (else the first ``none``)."""
    q = queries.get(row["id"])
    for _, b in base.iterrows():
        qb = queries.get(b["id"])
        if q is not None and qb is not None and qb.key == q.key:
            return b
    return base.iloc[0]


def _summary(vs_none: list[dict]) -> str:
    done = [r["comparison"] for r in vs_none if "comparison" in r]
    better = sum(c.significant and c.diff.value > 0 for c in done)
    worse = sum(c.significant and c.diff.value < 0 for c in done)
    untested = len(vs_none) - len(done)
    return (f"Against `none` ({METRIC}, reducer minus none): {worse} of {len(done)} tested "
            f"settings are significantly worse, {better} significantly better, "
            f"{len(done) - worse - better} not significantly different"
            + (f"; {untested} could not be tested (see below)." if untested else "."))


def pareto_lines(g: pd.DataFrame) -> list[str]:
    """The settings on the GMACs / R-Sum Pareto front (point estimates), cheapest first."""
    g = g.dropna(subset=["GMACs", "R-Sum"])
    if g.empty:
        return []
    front = pareto_front(g["GMACs"].to_numpy(float), g["R-Sum"].to_numpy(float))
    names = [f"{label(g.iloc[i])} ({g.iloc[i]['R-Sum']:.1f} at {g.iloc[i]['GMACs']:.2f} GMACs)"
             for i in front]
    return ["Pareto front (no other setting is both cheaper and better by point estimate; "
            "neighbours on it may not differ significantly): " + ", ".join(names) + ".", ""]
