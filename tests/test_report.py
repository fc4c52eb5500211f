"""Reports from records alone: tables, published matching, Pareto front, figures, provenance."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from tokred_experiments.plots import pareto_front
from tokred_experiments.provenance import ProvenanceRecorder, destinations, provenance
from tokred_experiments.published import load_published
from tokred_experiments.records import append_record
from tokred_experiments.report import write_report
from tokred_experiments.report_cost import published_cost
from tokred_experiments.report_quality import QUALITY_COLS
from tokred_experiments.tables import PARAMS_TRAINED, cost_frame, quality_frame

from tokred import create_reducer
from tokred.cost.record import compare, speed_fields
from tokred.cost.timing import PairedTiming, Timing
from tokred.encoder import VideoEncoder
from tokred.toolkits.merge import bipartite_match, merge_wavg


def cost_rec(i: int, reducer: str, options: dict, gmacs: float, vps: float,
             backbone: str = "ViT-B-32", base: tuple[float, float] = (52.9, 2.0)) -> dict:
    """A cost trial's record as the sweep writes it: ``vps`` videos/s at batch 1 in 3 rounds
    paired with none at ``base`` = (GMACs, videos/s); none is its own baseline."""
    base = (gmacs, vps) if reducer == "none" else base
    paired = PairedTiming(Timing([1 / base[1]] * 3, 1, 1), Timing([1 / vps] * 3, 1, 1))
    m = {"gmacs": gmacs, "tokens_out": int(gmacs * 10), "activation_mb_per_video_full": gmacs * 2,
         "attn_tokens": [600] * 6 + [int(gmacs * 10)] * 6, **speed_fields({1: paired})}
    m.update(compare(m, {"gmacs": base[0]}))
    return {"id": f"c{i}", "kind": "cost", "status": "ok", "metrics": m,
            "settings": {"backbone": backbone, "frames": 12, "reducer": reducer,
                         "options": options, "weights": "random"}}


def quality_rec(i: int, reducer: str, options: dict, mode: str, rsum: float, gmacs: float) -> dict:
    m = {f"{d}_{k}": rsum / 6 for d in ("t2v", "v2t") for k in ("R@1", "R@5", "R@10")}
    m.update({"t2v_MdR": 3.0, "t2v_MnR": 5.0, "v2t_MdR": 3.0, "v2t_MnR": 5.0, "rsum": rsum,
              "gmacs": gmacs, "tokens_out": 100, "videos_per_s": 10 / gmacs,
              "ms_per_video": 100 * gmacs, "activation_mib": 5.0, "twin_accuracy": 0.5})
    return {"id": f"q{i}", "kind": "quality", "status": "ok", "metrics": m,
            "settings": {"model": "scale-B32", "mode": mode, "reducer": reducer,
                         "options": options, "data": {"kind": "synth"}}}


def test_pareto_front_matches_brute_force():
    rng = np.random.default_rng(0)
    for _ in range(20):
        x, y = rng.integers(0, 6, 12).astype(float), rng.integers(0, 6, 12).astype(float)
        front = set(pareto_front(x, y).tolist())
        for i in range(len(x)):
            dominated = any((x[j] <= x[i] and y[j] >= y[i]) and (x[j] < x[i] or y[j] > y[i])
                            for j in range(len(x)))
            duplicate_earlier = any(x[j] == x[i] and y[j] == y[i] for j in front if j != i)
            assert (i in front) == (not dominated and not duplicate_earlier)


def test_cost_ratios_against_none():
    df = cost_frame([cost_rec(0, "none", {}, 50.0, 2.0),
                     cost_rec(1, "tome", {"r": 2}, 40.0, 3.0, base=(50.0, 2.0)),
                     cost_rec(2, "none", {}, 200.0, 1.0, "ViT-B-16"),
                     cost_rec(3, "tome", {"r": 10}, 150.0, 1.5, "ViT-B-16", base=(200.0, 1.0))])
    got = {(r["backbone"], r["setting"]): (r["GMACs %"], r["speed-up"]) for _, r in df.iterrows()}
    assert got[("ViT-B-32", "tome r=2")] == pytest.approx((80.0, 1.5))
    assert got[("ViT-B-16", "tome r=10")] == pytest.approx((75.0, 1.5))
    assert got[("ViT-B-16", "none")] == pytest.approx((100.0, 1.0))


def test_suspect_and_unpaired_speedups_are_flagged_never_plain(tmp_path):
    """4.64x against a 1.92x GMACs ideal is drift or a broken measurement: the table says so;
    a record from before paired timing shows no speed-up at all."""
    old = {"id": "c9", "kind": "cost", "status": "ok",
           "settings": {"backbone": "ViT-B-32", "frames": 12, "reducer": "tome",
                        "options": {"r": 3}, "weights": "random"},
           "metrics": {"gmacs": 34.0, "tokens_out": 300, "videos_per_s": {"1": 3.0},
                       "videos_per_s_spread": {"1": 0.01}, "attn_tokens": [600] * 12}}
    recs = [cost_rec(0, "none", {}, 52.9, 2.0), cost_rec(1, "tome", {"r": 2}, 40.1, 2.6),
            cost_rec(2, "tome", {"r": 4}, 27.5, 9.28), old]
    text = report_of(tmp_path, recs)
    rows = {r.split(" | ")[0][2:]: r for r in section(text, "### ViT-B-32").splitlines()
            if r.startswith("| ")}
    assert "4.64x [4.64, 4.64] (suspect: above 1.1 x the 1.92x ideal)" in rows["tome r=4"]
    assert "1.30x [1.30, 1.30] |" in rows["tome r=2"] and "suspect" not in rows["tome r=2"]
    assert "| 1.00x [1.00, 1.00] | 3 (min-max) | 1.00x |" in rows["none"]
    assert "| not paired: rerun | - | - |" in rows["tome r=3"]
    assert "suspect" in text.split("### ViT-B-32")[0]  # the protocol is explained above


def test_published_numbers_match_by_setting_with_defaults():
    pubs = load_published()
    df = cost_frame([cost_rec(0, "none", {}, 52.9, 2.0),
                     cost_rec(1, "centerclip", {"segments": 4}, 35.7, 3.0),
                     cost_rec(2, "centerclip", {"segments": 4, "algorithm": "spectral"}, 36, 1.0),
                     cost_rec(3, "centerclip", {"segments": 6}, 40.0, 2.0)])
    got = {r["setting"]: published_cost(pubs, r) for _, r in df.iterrows()}
    assert got["centerclip segments=4"] == (f"{100 * 15.0 / 20.8:.0f} %", f"{24.4 / 22.9:.2f}x")
    assert got["centerclip algorithm=spectral segments=4"] == (
        f"{100 * 14.9 / 20.8:.0f} %", f"{24.4 / 40.8:.2f}x")
    assert got["centerclip segments=6"] == ("", "")  # not in the paper's table


def test_report_from_records_alone(tmp_path):
    path = tmp_path / "results.jsonl"
    recs = [cost_rec(0, "none", {}, 52.9, 2.0), cost_rec(1, "tome", {"r": 2}, 40.1, 2.5),
            cost_rec(2, "tome", {"r": 4}, 27.5, 3.0)]
    for i, (red, opts, g) in enumerate([("none", {}, 1.5), ("tome", {"r": 2}, 1.1),
                                        ("tome", {"r": 4}, 0.8)]):
        recs += [quality_rec(2 * i, red, opts, "training_free", 300 - 50 * i, g),
                 quality_rec(2 * i + 1, red, opts, "finetuned", 320 - 40 * i, g)]
    recs.append({"id": "e", "kind": "cost", "status": "error", "error": "ValueError: x",
                 "settings": {"reducer": "tome", "options": {"r": 9}}})
    for r in recs:
        append_record(path, r)
    index = write_report([tmp_path], tmp_path / "report")
    text = index.read_text()
    assert "random weights" in text and "ValueError: x" in text
    q = quality_frame(recs)
    assert len(q) == 6 and set(q["label"]) == {"SYNTHETIC"}
    table = text.split("training-free")[1].split("###")[0]
    assert table.count("| SYNTHETIC |") == 3
    for png in ("rsum_vs_gmacs.png", "rsum_vs_speed.png", "memory.png", "tokens_per_layer.png",
                "speed_vs_gmacs.png"):
        assert (tmp_path / "report" / png).stat().st_size > 5000
    assert "token_provenance.png" not in text  # no provenance records, no figure


def test_destinations_equal_tome_matching_reference():
    torch.manual_seed(0)
    x, keys = torch.randn(3, 11, 8), torch.randn(3, 11, 4)
    m = bipartite_match(keys, 3, prefix=1)
    x_in = x.clone().requires_grad_(True)
    out, _ = merge_wavg(m, x_in, torch.ones(3, 11, 1))
    got = destinations(out, x_in).reshape(3, 11)
    # reference: output [CLS, kept A ascending, all B]; A = 2,4,.. and B = 1,3,.. (ToMe: CLS=A[0])
    for row in range(3):
        n_unm = m.unm_idx.shape[1]
        want = {0: row * 8}
        a_pos, b_pos = list(range(2, 11, 2)), list(range(1, 11, 2))
        for k, a in enumerate(m.unm_idx[row].tolist()):
            want[a_pos[a]] = row * 8 + 1 + k
        for b in range(len(b_pos)):
            want[b_pos[b]] = row * 8 + 1 + n_unm + b
        for s, d in zip(m.src_idx[row].tolist(), m.dst_idx[row].tolist()):
            want[a_pos[s]] = row * 8 + 1 + n_unm + d
        assert got[row].tolist() == [want[i] for i in range(11)]


@pytest.fixture(scope="module")
def scale_backbone():
    from tokred.backbones import OpenCLIPVisual
    from tokred.models import create_clip

    torch.manual_seed(0)
    return OpenCLIPVisual(create_clip("scale-B32").eval().visual, "scale-B32")


@pytest.mark.parametrize("name, options", [("tome", {"r": 2}), ("tempme", {}), ("centerclip", {}),
                                           ("pooling", {}), ("sparse", {})])
def test_provenance_agrees_with_reducer_sizes(scale_backbone, name, options):
    res = provenance(lambda r: VideoEncoder(scale_backbone, r, 12), create_reducer(name, **options), 12)
    owner = np.asarray(res["owner"])
    assert res["size_check"]
    assert owner.shape == (12 * 49,)
    if name in ("centerclip", "sparse"):  # 4 segments keep 49 of their 3*49 patches
        assert res["dropped"] == 12 * 49 - 4 * 49
        assert len(set(owner[owner >= 0].tolist())) == 4 * 49
    if name == "pooling":  # token-wise mean of the 3 frames of a segment, same position
        own = owner.reshape(4, 3, 49)
        assert (own == own[:, :1]).all()
        assert len(set(own[:, 0].ravel().tolist())) == 4 * 49
    if name in ("tome", "tempme"):
        assert res["dropped"] == 0


def test_recorder_does_not_change_the_output(scale_backbone):
    torch.manual_seed(1)
    video = torch.randn(1, 12, 3, 56, 56)
    plain = VideoEncoder(scale_backbone, create_reducer("tempme"), 12)
    recorded = VideoEncoder(scale_backbone, ProvenanceRecorder(create_reducer("tempme")), 12)
    recorded.reducer.inner.load_state_dict(plain.reducer.state_dict())
    with torch.no_grad():
        assert torch.equal(plain(video), recorded(video))


def test_setting_labels():
    from tokred_experiments.tables import setting

    assert setting("none", {}) == "none"
    assert setting("tempme", {"merge_frames": [2, 2, 3], "cross": 0.3}) == \
        "tempme cross=0.3 merge_frames=2,2,3"


def test_published_rows_beside_matching_msrvtt_results(tmp_path):
    recs = []
    for i, (red, opts) in enumerate([("none", {}), ("centerclip", {"segments": 4}),
                                     ("centerclip", {"segments": 6})]):
        r = quality_rec(i, red, opts, "finetuned", 400.0, 40.0)
        r["settings"].update(model="ViT-B-32", data={"kind": "msrvtt", "root": "x"})
        recs.append(r)
        append_record(tmp_path / "results.jsonl", r)
    text = write_report([tmp_path], tmp_path / "report").read_text()
    rows = [line for line in text.splitlines() if line.startswith("| msrvtt")]
    settings = [row.split(" | ")[1] for row in rows]
    assert settings == ["none", "published: CLIP4Clip meanP (B/32)", "centerclip segments=4",
                        "published: k-medoids++ B6-4;49", "centerclip segments=6"]
    pub = rows[3].split(" | ")
    assert pub[2] == "MeM 15.0 GB (V100)" and pub[4] == "43.60"  # MeM and t2v R@1 of Table 3b
    assert "SYNTHETIC" not in "\n".join(rows)


def test_synthetic_per_caption_type_table_and_chance(tmp_path):
    recs = []
    for i, (red, r1) in enumerate([("none", 12.0), ("tome", 9.0)]):
        rec = quality_rec(i, red, {"r": 2} if red == "tome" else {}, "training_free", 240, 1.5)
        rec["metrics"].update({
            "t2v_R@1": r1, "t2v_R@5": 40.0, "chance_R@1": 0.2, "chance_R@5": 1.0,
            "chance_R@10": 2.0, "num_captions": 500, "eval_s": 9.0,
            "per_type": {"static": {"count": 150, "t2v_R@1": 20.0, "t2v_R@5": 60.0},
                         "small": {"count": 75, "t2v_R@1": 1.5, "t2v_R@5": 4.0}},
            "base_train": {"steps": 634, "wall_s": 426.0, "stopped": "time_budget=7min"},
            "ci": {"t2v_R@1": [r1 - 2, r1 + 2], "t2v_R@5": [38.0, 42.0], "t2v_R@10": [38.0, 42.0],
                   "R-Sum": [230.0, 250.0]}})
        recs.append(rec)
    q = quality_frame(recs)
    assert q.set_index("reducer")["x chance"].to_dict() == {"none": 60.0, "tome": 45.0}
    for r in recs:
        append_record(tmp_path / "results.jsonl", r)
    text = write_report([tmp_path], tmp_path / "report").read_text()
    detail = text.split("Per caption type, training-free (SYNTHETIC)")[1]
    assert "Chance on 500 test captions (static 150, small 75): R@1 0.20 %" in detail
    row = next(line for line in detail.splitlines() if line.startswith("| none |"))
    assert row.split("|")[1:-1] == [" none ", " 12.0 [10.0, 14.0] ", " 60.00 ",
                                    " 40.0 [38.0, 42.0] ", " 40.0 [38.0, 42.0] ",
                                    " 240.0 [230.0, 250.0] ", " 20.00 ", " 60.00 ", " 1.50 ",
                                    " 4.00 ", " 0.50 ", " 9.00 "]
    assert "634 steps in 426 s (stopped: time_budget=7min)" in detail


def msrvtt_rec(i: int, reducer: str, options: dict, mode: str, model: str = "ViT-B-32",
               **metrics) -> dict:
    """A quality record on MSR-VTT with the run facts a quality trial stores."""
    r = quality_rec(i, reducer, options, mode, 400.0, 40.0)
    r["settings"].update(model=model, weights="/w/ViT-B-32.pt", frames=12,
                         data={"kind": "msrvtt", "root": "x"})
    r["metrics"].update({"weights_kind": "file", "weights_file": "ViT-B-32.pt",
                         "weights_sha256": "40d365715913c9da98579312b702a82c18be219cc2a73407c4"
                                           "526f58eba950af",
                         "weights_release": "ViT-B-32/openai", "num_captions": 1000,
                         "num_videos": 1000, "chance_R@1": 0.1, "frames": 12})
    if mode == "finetuned":
        r["metrics"].update({"train_steps": 350, "train_videos": 9000, "train_epochs": 5.0,
                             "recipe_epochs": 5.0, "recipe_steps": None})
    r["metrics"].update(metrics)
    return r


def report_of(tmp_path, recs) -> str:
    for r in recs:
        append_record(tmp_path / "results.jsonl", r)
    return write_report([tmp_path], tmp_path / "report").read_text()


def section(text: str, heading: str) -> str:
    return text.split(heading)[1].split("\n### ")[0].split("\n## ")[0]


def test_quality_heading_names_weights_test_set_frames_and_training(tmp_path):
    recs = [msrvtt_rec(0, "none", {}, "training_free"), msrvtt_rec(1, "none", {}, "finetuned"),
            msrvtt_rec(2, "tempme", {"cross": 0.3}, "finetuned", train_steps=35,
                       train_epochs=0.5)]
    text = report_of(tmp_path, recs)
    free = section(text, "### msrvtt: ViT-B-32, training-free")
    assert ("Weights: ViT-B-32.pt (sha256 40d36571, the open_clip ViT-B-32/openai release file). "
            "Test set: 1,000 test captions, 1,000 test videos (chance t2v R@1 = 1/1,000 = 0.10 %)"
            ". Frames: 12. Training run: none: the reducer is inserted into the weights above."
            ) in free
    tuned = section(text, "### msrvtt: ViT-B-32, finetuned")
    assert ("Training run: fine-tune 350 steps (5.00 epochs of 9,000 videos), recipe 5 epochs "
            "[none]; fine-tune 35 steps (0.50 epochs of 9,000 videos), recipe 5 epochs "
            "[tempme cross=0.3].") in tuned
    rows = {r.split(" | ")[1]: r.split(" | ") for r in tuned.splitlines()
            if r.startswith("| msrvtt")}
    assert rows["none"][-1] == "as published |"
    assert rows["tempme cross=0.3"][-1] == "not comparable: fine-tuned 0.50 epochs, not 5 |"
    pub = rows["published: TempMe (LoRA; parameter count only)"]
    assert pub[QUALITY_COLS.index(PARAMS_TRAINED)] == "507,648"
    assert pub[-1] == "published (tempme-abstract) |"
    assert "**Random weights**" not in text and "**At chance level**" not in text


def test_zero_shot_row_has_the_published_zero_shot_beside_it(tmp_path):
    text = report_of(tmp_path, [msrvtt_rec(0, "none", {}, "training_free"),
                                msrvtt_rec(1, "tome", {"r": 2}, "training_free")])
    rows = [line.split(" | ") for line in text.splitlines() if line.startswith("| msrvtt")]
    assert [r[1] for r in rows] == ["none", "published: CLIP zero-shot", "tome r=2"]
    assert rows[1][QUALITY_COLS.index("t2v_R@1")] == "31.20"
    assert rows[1][-1] == "published (centerclip-t3b) |"


def test_rows_off_the_published_protocol_are_marked_not_comparable(tmp_path):
    recs = [msrvtt_rec(0, "none", {}, "finetuned", num_captions=200, num_videos=200,
                       train_videos=500, train_epochs=5.0, **{"chance_R@1": 0.5}),
            msrvtt_rec(1, "centerclip", {"segments": 4}, "finetuned", frames=8),
            msrvtt_rec(2, "centerclip", {"segments": 3}, "finetuned", weights_kind="scratch",
                       weights_file=None, weights_sha256=None, weights_release=None,
                       base_train={"steps": 40, "total_steps": 40}, base_epochs=0.6)]
    text = report_of(tmp_path, recs)
    rows = {r.split(" | ")[1]: r.split(" | ")[-1] for r in text.splitlines()
            if r.startswith("| msrvtt")}
    assert rows["none"] == ("not comparable: 200 test captions, not 1,000; 500 training videos, "
                            "not 9,000 |")
    assert rows["centerclip segments=4"] == "not comparable: 8 frames, not 12 |"
    assert rows["centerclip segments=3"] == ("not comparable: weights trained from scratch here, "
                                             "not CLIP |")
    assert rows["published: CLIP4Clip meanP (B/32)"] == "published (centerclip-t3b) |"
    assert "ViT-B-32 trained from scratch here (40 steps, 0.60 epochs of 9,000 videos) " \
           "[centerclip segments=3]" in text


def test_random_weights_and_chance_level_are_flagged(tmp_path):
    recs = [msrvtt_rec(0, "none", {}, "training_free", weights_kind="random",
                       weights_file=None, weights_sha256=None, weights_release=None),
            msrvtt_rec(1, "tome", {"r": 2}, "training_free", weights_kind="random",
                       weights_file=None, weights_sha256=None, weights_release=None)]
    text = report_of(tmp_path, recs)
    assert "Weights: random (untrained)." in text
    assert "**Random weights**" in text and "do not mean a reducer is lossless" in text
    assert "not comparable: random weights" in text
    chance = [quality_rec(0, "none", {}, "training_free", 60, 1.5),
              quality_rec(1, "tome", {"r": 2}, "training_free", 60, 1.0)]
    for r in chance:  # t2v R@1 = 10 %, chance 1/12 = 8.33 %
        r["metrics"].update({"chance_R@1": 100 / 12, "chance_R@5": 500 / 12,
                             "chance_R@10": 1000 / 12, "num_captions": 12, "num_videos": 12})
    text = report_of(tmp_path / "chance", chance)
    assert "**At chance level**: every row's t2v R@1 is under twice chance (8.33 %)" in text
    assert "**Random weights**" not in text


def test_spectral_rows_say_whether_the_graph_was_empty(tmp_path):
    spec = {"segments": 4, "algorithm": "spectral"}
    c_empty = cost_rec(1, "centerclip", spec, 36.0, 1.0)
    c_empty["metrics"].update({"spectral_segments": 4, "spectral_empty_graph": 4})
    c_full = cost_rec(2, "centerclip", {**spec, "k": 30}, 30.0, 1.0, "ViT-B-16")
    c_full["metrics"].update({"spectral_segments": 4, "spectral_empty_graph": 0})
    q_part = msrvtt_rec(3, "centerclip", spec, "training_free", spectral_segments=4000,
                        spectral_empty_graph=1000, spectral_svd_retried=513)
    q_old = msrvtt_rec(4, "centerclip", spec, "finetuned")  # recorded before the counters
    q_kmed = msrvtt_rec(5, "centerclip", {"segments": 4}, "finetuned")
    text = report_of(tmp_path, [cost_rec(0, "none", {}, 52.9, 2.0), c_empty, c_full, q_part,
                                q_old, q_kmed])
    cost_b32 = section(text, "### ViT-B-32, 12 frames, random weights")
    assert ("- centerclip algorithm=spectral segments=4: spectral graph empty in 4 of 4 segments: "
            "the selection is positional (the first 49 tokens of each segment)") in cost_b32
    assert "counted on one random video through this random-weight backbone" in cost_b32
    cost_b16 = section(text, "### ViT-B-16, 12 frames, random weights")
    assert ("- centerclip algorithm=spectral k=30 segments=4: spectral graph non-empty in all 4 "
            "segments") in cost_b16
    free = section(text, "### msrvtt: ViT-B-32, training-free")
    assert ("- centerclip algorithm=spectral segments=4: spectral graph empty in 1,000 of 4,000 "
            "segments: the selection is positional (the first 49 tokens of each segment); the "
            "batched SVD was redone segment by segment for 513 of them") in free
    tuned = section(text, "### msrvtt: ViT-B-32, finetuned")
    assert "- centerclip algorithm=spectral segments=4: spectral graph counts not recorded" in tuned
    assert "- centerclip segments=4:" not in tuned  # k-medoids: no graph, no note


def test_weights_facts_hash_and_release(tmp_path):
    import hashlib

    from tokred_experiments.facts import weights_facts

    f = tmp_path / "ViT-B-32.pt"
    f.write_bytes(b"abc" * 1000)
    got = weights_facts(str(f))
    assert got == {"weights_kind": "file", "weights_file": "ViT-B-32.pt",
                   "weights_sha256": hashlib.sha256(b"abc" * 1000).hexdigest()}
    assert weights_facts(None) == {"weights_kind": "scratch"}
    assert weights_facts("random") == {"weights_kind": "random"}
    assert weights_facts("openai")["weights_kind"] == "tag"


def test_cost_rows_name_their_mlp_activation(tmp_path):
    a, b = cost_rec(0, "none", {}, 52.9, 2.0), cost_rec(1, "tome", {"r": 2}, 40.1, 2.6)
    a["metrics"]["activation"], b["metrics"]["activation"] = "quick_gelu", "quick_gelu"
    for r in (a, b):
        append_record(tmp_path / "results.jsonl", r)
    text = write_report([tmp_path], tmp_path / "report").read_text()
    header = next(line for line in text.splitlines() if line.startswith("| setting | preset"))
    assert "| activation |" in header
    assert text.count("| quick_gelu |") == 2 and "QuickGELU for the" in text
