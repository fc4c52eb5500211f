"""Report figures and wording from hand-made records: PNG + SVG, point labels, one line per
algorithm variant, the device from the records, published points, the provenance header and
the parameter / memory column names."""

from __future__ import annotations

import re

import pytest
from matplotlib.container import ErrorbarContainer
from tokred_experiments import plot_style, plots
from tokred_experiments.plot_labels import Label, place_labels, point_label
from tokred_experiments.records import append_record
from tokred_experiments.report import write_report
from tokred_experiments.tables import cost_frame, quality_frame

from tokred.cost.record import compare, speed_fields
from tokred.cost.timing import PairedTiming, Timing

COMMIT = "0123456789abcdef0123456789abcdef01234567"


def provenance(dirty=False, commit=COMMIT, host="box", cpu="Test CPU 9000", gpu=None,
               device="cpu") -> dict:
    """A ``tokred.env.provenance()`` as the sweep stores it in every record."""
    return {"code": {"version": "0.1.0", "commit": commit, "dirty": dirty, "source": "/src"},
            "software": {"python": "3.11.7", "tokred": "0.1.0", "torch": "2.14.1",
                         "open_clip_torch": "3.3.0", "decord": None},
            "machine": {"host": host, "os": "Linux", "cpu": cpu, "cpu_count": 2, "threads": 2,
                        "interop_threads": 2, "device": device, "gpu": gpu},
            "command": "tokred sweep --config smoke.yaml --out runs/smoke", "seed": 0}


def cost_rec(i: int, reducer: str, options: dict, gmacs: float, vps: float, prov=None,
             tokens=None) -> dict:
    """A cost record on ViT-B-32 paired with none at (52.9 GMACs, 2 videos/s)."""
    base = (gmacs, vps) if reducer == "none" else (52.9, 2.0)
    paired = PairedTiming(Timing([1 / base[1]] * 3, 1, 1),
                          Timing([1 / vps, 1.1 / vps, 0.9 / vps], 1, 1))
    m = {"gmacs": gmacs, "tokens_out": int(gmacs * 10), "activation_mb_per_video_full": gmacs * 2,
         "attn_tokens": tokens or [600] * 6 + [int(gmacs * 10)] * 6,
         "trainable_params": 9_571_073, "trainable_params_lora": 65_536,
         **speed_fields({1: paired})}
    m.update(compare(m, {"gmacs": base[0]}))
    rec = {"id": f"c{i}", "kind": "cost", "status": "ok", "metrics": m,
           "settings": {"backbone": "ViT-B-32", "frames": 12, "reducer": reducer,
                        "options": options, "weights": "random"}}
    if prov is not None:
        rec["provenance"] = prov
    return rec


def quality_rec(i: int, reducer: str, options: dict, rsum: float, gmacs: float, mode="finetuned",
                data="synth", frames=8, prov=None) -> dict:
    m = {f"{d}_{k}": rsum / 6 for d in ("t2v", "v2t") for k in ("R@1", "R@5", "R@10")}
    m.update({"t2v_MdR": 3.0, "t2v_MnR": 5.0, "v2t_MdR": 3.0, "v2t_MnR": 5.0, "rsum": rsum,
              "gmacs": gmacs, "tokens_out": 100, "videos_per_s": 10 / gmacs, "frames": frames,
              "ms_per_video": 100 * gmacs, "activation_mib": 5.0, "ci": {"R-Sum": [rsum - 5,
                                                                                   rsum + 5]},
              "trainable_params": 3_205_633 if mode == "finetuned" else 0, "train_steps": 1})
    rec = {"id": f"q{i}", "kind": "quality", "status": "ok", "metrics": m,
           "settings": {"model": "ViT-B-32" if data == "msrvtt" else "scale-B32", "mode": mode,
                        "reducer": reducer, "options": options, "frames": frames,
                        "data": {"kind": data}, "finetune": {"mode": "full"}}}
    if prov is not None:
        rec["provenance"] = prov
    return rec


KMED, SPEC = {"segments": 4}, {"segments": 4, "algorithm": "spectral"}


def cost_records(prov=None) -> list[dict]:
    return [cost_rec(0, "none", {}, 52.9, 2.0, prov), cost_rec(1, "tome", {"r": 2}, 40.1, 2.5, prov),
            cost_rec(2, "tome", {"r": 4}, 27.5, 3.4, prov),
            cost_rec(3, "centerclip", KMED, 35.7, 2.8, prov),
            cost_rec(4, "centerclip", {"segments": 3}, 33.6, 2.9, prov),
            cost_rec(5, "centerclip", SPEC, 35.7, 1.0, prov),
            cost_rec(6, "centerclip", {**SPEC, "segments": 3}, 33.6, 1.1, prov)]


def report(tmp_path, recs) -> str:
    for r in recs:
        append_record(tmp_path / "results.jsonl", r)
    return write_report([tmp_path], tmp_path / "report").read_text()


@pytest.fixture
def drawn(monkeypatch):
    """Every figure closed while the test runs (kept open to inspect its artists)."""
    figs = []
    monkeypatch.setattr(plot_style.plt, "close", figs.append)
    return figs


def test_every_figure_is_png_and_svg_and_the_report_links_the_svg(tmp_path):
    recs = cost_records(provenance()) + [quality_rec(10, "none", {}, 250, 1.5),
                                         quality_rec(11, "tome", {"r": 2}, 245, 1.1)]
    text = report(tmp_path, recs)
    for name in ("rsum_vs_gmacs", "rsum_vs_speed", "speed_vs_gmacs", "memory",
                 "tokens_per_layer"):
        png, svg = tmp_path / "report" / f"{name}.png", tmp_path / "report" / f"{name}.svg"
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", name
        assert svg.read_text().lstrip().startswith("<?xml"), name
        assert f"![{name}.png]({name}.png)" in text and f"([SVG]({name}.svg))" in text
    svg = (tmp_path / "report" / "speed_vs_gmacs.svg").read_text()
    for label in ("r=2", "r=4", "B6-4-49", "spectral B6-3-49", "none"):  # SVG keeps text as text
        assert f">{label}<" in svg, label


def test_speed_figure_one_line_per_variant_labels_device_and_published(tmp_path, drawn):
    from tokred_experiments.plots_cost import speed_figure
    from tokred_experiments.published import load_published

    recs = cost_records(provenance(cpu="Test CPU 9000"))
    assert speed_figure(cost_frame(recs), tmp_path / "speed.png", load_published(), recs)
    ax = drawn[0].axes[0]
    lines = {c.get_label(): c for c in ax.containers if isinstance(c, ErrorbarContainer)}
    assert set(lines) == {"none", "tome", "centerclip", "centerclip (algorithm=spectral)"}
    assert all(c.has_yerr for c in lines.values())
    assert len(lines["centerclip"].lines[0].get_xdata()) == 2  # k-medoids alone: B6-4, B6-3
    texts = [t.get_text() for t in ax.texts]
    for label in ("r=2", "r=4", "B6-4-49", "B6-3-49", "spectral B6-4-49", "spectral B6-3-49",
                  "paper B6-4-49", "paper spectral B6-3-49"):
        assert label in texts, label
    assert "cpu: Test CPU 9000, 2 threads" in ax.get_title()
    published = [c for c in ax.collections if c.get_label() == "published speed-up (V100)"][0]
    assert sorted(round(y, 2) for _, y in published.get_offsets()) == sorted(
        round(24.4 / ms, 2) for ms in (22.9, 22.9, 40.8, 43.6))  # CenterCLIP Table 3b
    assert min(t.get_fontsize() for t in ax.get_xticklabels() + ax.get_yticklabels()) >= 10
    assert ax.xaxis.label.get_fontsize() >= 10 and min(
        t.get_fontsize() for t in ax.texts) >= 9


def test_device_label_gpu_and_older_records(tmp_path):
    from tokred_experiments.report_header import hardware_label

    assert hardware_label({"provenance": provenance(gpu="NVIDIA Test GPU", device="cuda:0")}) \
        == "cuda:0: NVIDIA Test GPU"
    old = {"device": "cpu", "versions": {"cpu": "x86_64", "threads": 4, "git": "abc1234"}}
    assert hardware_label(old) == "cpu: x86_64, 4 threads"
    env_only = {"metrics": {"env": {"cpu": "x86_64", "threads": 2, "device": "cpu"}}}
    assert hardware_label(env_only) == "cpu: x86_64, 2 threads"
    text = report(tmp_path, cost_records(provenance(cpu="Test CPU 9000")))
    assert "Speeds measured on cpu: Test CPU 9000, 2 threads." in text
    assert "CPU inference" not in text and "(videos/s, CPU)" not in text


def test_frontier_labels_published_points_and_single_point_front(tmp_path, drawn):
    from tokred_experiments.published import load_published

    recs = [quality_rec(0, "none", {}, 380, 52.9, data="msrvtt", frames=12),
            quality_rec(1, "centerclip", KMED, 390, 35.7, data="msrvtt", frames=12),
            quality_rec(2, "centerclip", SPEC, 385, 35.7, data="msrvtt", frames=12)]
    q = quality_frame(recs)
    assert plots.tradeoff_figure(q, "GMACs", plots.GMACS_LABEL, tmp_path / "f.png", "t",
                                 pubs=load_published())
    ax = drawn[0].axes[0]
    pub = [c for c in ax.collections if c.get_label() == "published R-Sum, same setting"][0]
    got = sorted(round(y, 1) for _, y in pub.get_offsets())
    # Table 3b R-Sums: CLIP4Clip meanP 388.8, k-medoids B6-4;49 390.3, spectral B6-4;49 393.7
    assert got == [388.8, 390.3, 393.7]
    labels = ax.get_legend_handles_labels()[1]
    assert "Pareto front" not in labels  # the front is one point (B6-4-49): no line to show
    labels = [t.get_text() for t in ax.texts if not t.get_text().startswith("numbered")]
    assert len(labels) == 6  # none, k-medoids, spectral and the three published points
    shown = "\n".join(t.get_text() for t in ax.texts)
    for want in ("none", "B6-4-49", "spectral B6-4-49", "paper spectral B6-4-49"):
        assert want in shown, want


def test_synthetic_captions_say_no_published_points(tmp_path):
    text = report(tmp_path, [quality_rec(0, "none", {}, 250, 1.5),
                             quality_rec(1, "tome", {"r": 2}, 245, 1.1)])
    caption = next(line for line in text.splitlines() if line.startswith("*SYNTHETIC: the "))
    assert "No paper reports numbers on the synthetic benchmark" in caption


def test_point_labels():
    assert point_label("tome", {"r": 3}) == "r=3"
    assert point_label("tempme", {}) == "r=2"  # the first option, shown even at its default
    assert point_label("tempme", {"cross": 0.5, "intra": 0.3}) == "r=2 cross=0.5 intra=0.3"
    assert point_label("centerclip", {"layer": 6, "segments": 4, "k": 49}) == "B6-4-49"
    assert point_label("centerclip", SPEC) == "spectral B6-4-49"
    assert point_label("pooling", {"segments": 3}) == "B6-3"
    assert point_label("none", {}) == "none"


def test_labels_never_overlap_and_the_rest_are_numbered(drawn):
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(4, 3))
    pts = [(i % 5, i // 5) for i in range(25)] + [(2.0, 2.02), (2.0, 2.04)]  # two crowded
    ax.plot(*zip(*pts), "o")
    fig.tight_layout()
    key = place_labels(ax, [Label(x, y, f"setting {i}") for i, (x, y) in enumerate(pts)])
    renderer = fig.canvas.get_renderer()
    boxes = [t.get_window_extent(renderer) for t in ax.texts]
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])
    numbered = [t.get_text() for t in ax.texts if t.get_text().isdigit()]
    assert len(key) == len(numbered) and all(re.match(r"\d+ setting \d+", k) for k in key)
    assert len(ax.texts) == len(pts)
    plt.close(fig)


def test_tokens_figure_integer_layers_and_shared_schedules(tmp_path, drawn):
    from tokred_experiments.plots_tokens import tokens_figure

    same = [600] * 6 + [200] * 6
    recs = [cost_rec(0, "none", {}, 52.9, 2.0), cost_rec(1, "centerclip", KMED, 35.7, 2.8,
                                                         tokens=same),
            cost_rec(2, "centerclip", SPEC, 35.7, 1.0, tokens=same),
            cost_rec(3, "tome", {"r": 16}, 8.0, 5.0,
                     tokens=[600, 500, 400, 300, 200, 100, 50, 40, 30, 20, 10, 6])]
    assert tokens_figure(cost_frame(recs), tmp_path / "t.png")
    ax = drawn[0].axes[0]
    assert list(ax.get_xticks()) == list(range(12))
    assert ax.get_yscale() == "log"  # 600 -> 6 tokens: two decades
    drawn[0].canvas.draw()
    ticks = [t.get_text() for t in ax.get_yticklabels() if t.get_text()]
    assert ticks and all(t.isdigit() for t in ticks), ticks  # plain whole numbers
    labels = ax.get_legend_handles_labels()[1]
    assert "centerclip B6-4-49\n= centerclip (algorithm=spectral) spectral B6-4-49" in labels
    assert len(ax.get_lines()) == 3


def test_header_provenance_and_warnings(tmp_path):
    recs = cost_records(provenance(dirty=True))
    recs[-1]["provenance"] = provenance(commit="f" * 40, host="other")
    text = report(tmp_path, recs)
    head = text.split("## Cost")[0]
    assert f"commit `{COMMIT}`, **dirty** (uncommitted changes) (6 records)" in head
    assert "| software | python 3.11.7, open_clip_torch 3.3.0, torch 2.14.1 (not installed: " \
           "decord) |" in head
    assert "host box: Test CPU 9000 (2 logical cores), 2 threads (2 inter-op), device cpu" in head
    assert "| command | `tokred sweep --config smoke.yaml --out runs/smoke` |" in head
    assert "| seed | 0 |" in head
    assert "**Warning**: 6 of 7 records ran from a tree with uncommitted changes" in head
    assert f"**Warning**: the records come from 2 commits ({COMMIT}, {'f' * 40})" in head
    assert "**Warning**: the records come from 2 hosts (box, other)" in head
    assert "plugin files" not in head  # no record loaded one
    recs[0]["provenance"] = {**recs[0]["provenance"], "plugins": [
        {"path": "/p/mine.py", "sha256": "ab" * 32, "reducers": ["mine"], "module": "mine"}]}
    head = report(tmp_path / "plugin", recs).split("## Cost")[0]
    assert "| plugin files | none (6 records); `/p/mine.py` (sha256 abababababab) (1 record) |" \
        in head


def test_header_of_older_records_uses_their_versions(tmp_path):
    recs = cost_records()
    for r in recs:
        r.update(versions={"tokred": "0.1.0", "torch": "2.3.0", "open_clip": "2.24.0",
                           "python": "3.11.7", "git": "9c081f2", "host": "vm", "cpu": "x86_64",
                           "threads": 2}, device="cpu")
    head = report(tmp_path, recs).split("## Cost")[0]
    assert "| code | tokred 0.1.0, commit `9c081f2 (short)`, dirty state not recorded |" in head
    assert "| software | python 3.11.7, torch 2.3.0, open_clip 2.24.0 |" in head
    assert "| machine | host vm: x86_64, 2 threads, device cpu |" in head
    assert "| command | not recorded |" in head and "**Warning**" not in head


def test_parameter_and_memory_columns_say_what_they_count(tmp_path):
    recs = cost_records() + [quality_rec(10, "none", {}, 250, 1.5),
                             quality_rec(11, "tome", {"r": 2}, 245, 1.1)]
    text = report(tmp_path, recs)
    assert "trainable params" not in text and "MeM act." not in text
    cost_head = next(line for line in text.splitlines() if line.startswith("| setting | preset"))
    assert "| params (all) | params (LoRA r=8) |" in cost_head
    quality_head = next(line for line in text.splitlines() if line.startswith("| data |"))
    assert "| act. MiB/video (training, full fine-tune) |" in quality_head
    assert "| params trained |" in quality_head
    assert text.count("**Parameter counts**") == 1
    assert "every parameter except the input embeddings, which CLIP4Clip and CenterCLIP keep " \
           "frozen" in text
    assert "CenterCLIP's 'MeM' column is something else" in text
    row = next(line for line in text.splitlines() if line.startswith("| SYNTHETIC | tome r=2"))
    assert "| 3,205,633 |" in row
    assert "### SYNTHETIC benchmark, scale model: scale-B32, finetuned, 8 frames (the cost " \
           "section ran at 12 frames)" in text
    assert "Training run: full fine-tune 1 step" in text
