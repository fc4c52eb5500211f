"""The quality report's uncertainty and frontier: intervals beside every recall, significance in
sentences from paired tests on stored ranks, the R-Sum-vs-GMACs figure, the default frontier."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from matplotlib.container import ErrorbarContainer
from tokred_experiments import plots
from tokred_experiments.config import load_config
from tokred_experiments.records import append_record
from tokred_experiments.report import write_report
from tokred_experiments.tables import quality_frame

from tokred import create_reducer, paper_presets, preset_of
from tokred.backbones import OpenCLIPVisual
from tokred.cost.analytic import gmacs
from tokred.encoder import VideoEncoder
from tokred.retrieval.stats import METRICS, bootstrap, point

ROOT = Path(__file__).resolve().parents[1]
N_CAP, N_VID = 400, 200


def ranked_rec(i: int, reducer: str, options: dict, t2v, v2t, gmacs: float,
               test_videos: int = N_VID, with_ci: bool = True) -> dict:
    """A training-free synthetic quality record with per-query ranks, as evaluate stores it."""
    t2v, v2t = np.asarray(t2v), np.asarray(v2t)
    p = point(t2v, v2t)
    m = {**{k: p[k] for k in METRICS[:-1]}, "rsum": p["R-Sum"], "gmacs": gmacs,
         "t2v_MdR": 1.0, "t2v_MnR": 2.0, "v2t_MdR": 1.0, "v2t_MnR": 2.0, "tokens_out": 100,
         "num_captions": len(t2v), "num_videos": len(v2t),
         "ranks": {"t2v": t2v.tolist(), "v2t": v2t.tolist()}}
    if with_ci:
        m["ci"] = {k: [c.low, c.high] for k, c in bootstrap(t2v, v2t, n_boot=300).items()}
    data = {"kind": "synth", "synth": {"seed": 0, "test_videos": test_videos}}
    return {"id": f"q{i}", "kind": "quality", "status": "ok", "metrics": m,
            "settings": {"model": "scale-B32", "mode": "training_free", "reducer": reducer,
                         "options": options, "data": data, "split": "test"}}


def hits(n: int, share: float, miss: int = 20) -> np.ndarray:
    """Ranks with the first ``share`` of ``n`` queries at rank 1, the rest at ``miss``."""
    return np.where(np.arange(n) < int(share * n), 1, miss)


def report(tmp_path, recs, config=None) -> str:
    for r in recs:
        append_record(tmp_path / "results.jsonl", r)
    return write_report([tmp_path], tmp_path / "report", config=config).read_text()


def test_every_recall_and_rsum_has_its_interval(tmp_path):
    t2v, v2t = hits(N_CAP, 0.3), hits(N_VID, 0.4, miss=3)
    recs = [ranked_rec(0, "none", {}, t2v, v2t, 1.5),
            ranked_rec(1, "tome", {"r": 2}, t2v, v2t, 1.1, with_ci=False)]  # an older record
    text = report(tmp_path, recs)
    ci = recs[0]["metrics"]["ci"]
    row = next(r for r in text.splitlines() if r.startswith("| SYNTHETIC | none |"))
    for m in ("t2v_R@1", "t2v_R@5", "v2t_R@10", "R-Sum"):
        value = recs[0]["metrics"]["rsum" if m == "R-Sum" else m]
        assert f"| {value:.1f} [{ci[m][0]:.1f}, {ci[m][1]:.1f}] |" in row, m
    old = next(r for r in text.splitlines() if r.startswith("| SYNTHETIC | tome r=2 |"))
    assert "| 30.0 [n/a] |" in old
    assert "[n/a]: no interval, the record predates stored intervals (tome r=2)" in text
    q = quality_frame(recs)
    assert q.loc[q["reducer"] == "none", "t2v_R@1 low"].item() == ci["t2v_R@1"][0]


def test_significance_sentences_on_known_ranks(tmp_path):
    base_t2v, base_v2t = hits(N_CAP, 0.5), hits(N_VID, 0.5)
    same_t2v = base_t2v.copy()
    same_t2v[[0, 1]], same_t2v[[-1, -2]] = 20, 1  # two gained, two lost: no difference
    recs = [ranked_rec(0, "none", {}, base_t2v, base_v2t, 1.50),
            ranked_rec(1, "tome", {"r": 2}, same_t2v, base_v2t, 1.14),
            ranked_rec(2, "tome", {"r": 8}, hits(N_CAP, 0.1), hits(N_VID, 0.1), 0.420),
            ranked_rec(3, "tempme", {"r": 8}, base_t2v, base_v2t, 0.421),  # as tome r=8
            ranked_rec(4, "centerclip", {"layer": 2, "segments": 1}, hits(300, 0.5),
                       hits(150, 0.5), 0.37, test_videos=150)]  # other test queries
    text = report(tmp_path, recs)
    assert "- tome r=2 vs none: R-Sum +0.0 [" in text
    line = next(s for s in text.splitlines() if s.startswith("- tome r=2 vs none"))
    assert line.endswith("not significant (p = 1.000)")
    line = next(s for s in text.splitlines() if s.startswith("- tome r=8 vs none"))
    assert "R-Sum -" in line and line.endswith("significant (p < 0.001)")
    assert "not significant" not in line
    line = next(s for s in text.splitlines() if s.startswith("- centerclip layer=2"))
    assert "not comparable: different test queries (300 captions / 150 videos vs 400 / 200)" \
        in line
    assert "- at ~28 % of none's GMACs, tempme r=8 beats tome r=8 by " in text
    assert "1 of 3 tested settings are significantly worse, 0 significantly better, 2 not " \
           "significantly different; 1 could not be tested" in text


def test_frontier_figure_error_bars_one_line_per_variant(tmp_path, monkeypatch):
    t2v, v2t = hits(N_CAP, 0.3), hits(N_VID, 0.3)
    recs = [ranked_rec(0, "none", {}, t2v, v2t, 1.52)]
    for i, (red, opts, g) in enumerate([
            ("tome", {"r": 2}, 1.14), ("tome", {"r": 4}, 0.77),
            ("centerclip", {"layer": 6, "segments": 4, "k": 49}, 1.02),
            ("centerclip", {"layer": 2, "segments": 1}, 0.37),
            ("centerclip", {"layer": 6, "segments": 4, "k": 49, "algorithm": "spectral"}, 1.02),
            ("centerclip", {"layer": 2, "segments": 1, "algorithm": "spectral"}, 0.37)]):
        recs.append(ranked_rec(i + 1, red, opts, hits(N_CAP, 0.3 - 0.02 * i), v2t, g))
    drawn = []
    monkeypatch.setattr(plots.plt, "close", drawn.append)
    q = quality_frame(recs).assign(preset=lambda d: [preset_of(r, o) for r, o in
                                                     zip(d["reducer"], d["options"])])
    path = tmp_path / "frontier.png"
    assert plots.tradeoff_figure(q, "GMACs", plots.GMACS_LABEL, path, "t")
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    ax = drawn[0].axes[0]
    bars = [c for c in ax.containers if isinstance(c, ErrorbarContainer)]
    assert len(bars) == 4 and all(c.has_yerr for c in bars)  # none + 3 curves
    labels = ax.get_legend_handles_labels()[1]
    for want in ("none", "tome", "centerclip", "centerclip (algorithm=spectral)",
                 "papers' setting", "Pareto front", "none's 95 % interval"):
        assert labels.count(want) == 1, want
    # both CenterCLIP paper presets (k-medoids and spectral B6-4-49) and tome r2 are starred
    stars = [c for c in ax.collections if c.get_label() == "papers' setting"][0]
    assert len(stars.get_offsets()) == 3


@pytest.fixture(scope="module")
def default_quality():
    cfg = load_config(ROOT / "experiments/configs/default.yaml", preflight=False)
    return cfg, [t for t in cfg.trials if t.kind == "quality"]


def test_default_config_is_a_training_free_frontier(default_quality, clip_scale):
    _, trials = default_quality
    backbone = OpenCLIPVisual(clip_scale.visual, "scale-B32")

    def cost(reducer: str, options: dict) -> float:
        return gmacs(VideoEncoder(backbone, create_reducer(reducer, **options), 12).trace(12))

    base = cost("none", {})
    by: dict[str, list[float]] = {}
    presets: dict[str, set] = {}
    for t in trials:
        s = t.settings
        assert s["mode"] == "training_free" and s["data"]["synth"]["test_videos"] == 1000
        assert s["data"]["synth"]["extra_test_captions"] is True
        by.setdefault(s["reducer"], []).append(cost(s["reducer"], s["options"]) / base)
        presets.setdefault(s["reducer"], set()).add(preset_of(s["reducer"], s["options"]))
    for red in ("tome", "centerclip", "pooling", "sparse", "tempme"):
        pct = by[red]
        assert len(pct) >= 5 and max(pct) / min(pct) >= 3, (red, pct)
        assert min(pct) < 0.3 and max(pct) > 0.7, (red, pct)  # ~25-100 % of none's GMACs
        published = {p for p in paper_presets(red, "ViT-B-32") if "spectral" not in p}
        assert published <= presets[red], (red, published - presets[red])


def test_report_selects_the_default_frontier(default_quality, tmp_path):
    cfg, trials = default_quality
    rng = np.random.default_rng(0)
    recs = []
    for t in trials:
        share = 0.3 + 0.05 * rng.random()
        rec = ranked_rec(0, t.settings["reducer"], t.settings["options"], hits(60, share),
                         hits(30, share), 1.5 * rng.random() + 0.3, with_ci=False)
        recs.append({**rec, "id": t.id, "settings": t.settings})
    stray = ranked_rec(99, "tome", {"r": 13}, hits(60, 0.3), hits(30, 0.3), 0.2)
    text = report(tmp_path, recs + [stray], config=cfg)
    rows = [r for r in text.splitlines() if r.startswith("| SYNTHETIC |")]  # the one table
    assert len(rows) == len(trials) and not any("r=13" in r for r in rows)
    assert "](rsum_vs_gmacs.png)" in text and "vs none: R-Sum" in text
