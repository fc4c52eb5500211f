"""Retrieval metrics on hand-made similarity matrices."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tokred.retrieval.metrics import (
    dual_softmax,
    load_similarity,
    retrieval_metrics,
    save_similarity,
    t2v_ranks,
    v2t_ranks,
)


def test_perfect_diagonal() -> None:
    m = retrieval_metrics(np.eye(20), np.arange(20))
    assert m["rsum"] == pytest.approx(600.0)
    for d in ("t2v", "v2t"):
        assert m[f"{d}_MdR"] == 1 and m[f"{d}_MnR"] == 1


def test_known_permutation() -> None:
    # caption i's true video is i; the permutation puts it at rank (i % 4) + 1
    n = 12
    true_rank = np.arange(n) % 4 + 1
    sim = np.zeros((n, n))
    for i in range(n):
        others = [j for j in range(n) if j != i]
        order = others[: true_rank[i] - 1] + [i] + others[true_rank[i] - 1 :]
        sim[i, order] = np.linspace(1.0, 0.0, n)  # strictly decreasing scores
    np.testing.assert_array_equal(t2v_ranks(sim, np.arange(n)), true_rank)
    m = retrieval_metrics(torch.tensor(sim), np.arange(n))
    assert m["t2v_R@1"] == pytest.approx(100 * 3 / 12)
    assert m["t2v_R@5"] == pytest.approx(100.0)
    assert m["t2v_MdR"] == pytest.approx(2.5)
    assert m["t2v_MnR"] == pytest.approx(2.5)


def test_v2t_on_transposed_permutation() -> None:
    rng = np.random.default_rng(0)
    n = 30
    sim = rng.normal(size=(n, n))
    # with one caption per video, v2t is t2v of the transposed matrix
    np.testing.assert_array_equal(v2t_ranks(sim, np.arange(n)), t2v_ranks(sim.T, np.arange(n)))


@pytest.mark.parametrize("n", [1, 5, 100])
def test_all_equal_is_pessimistic(n: int) -> None:
    m = retrieval_metrics(np.ones((n, n)), np.arange(n))
    assert m["t2v_MdR"] == n and m["v2t_MnR"] == n
    assert m["t2v_R@1"] == (100.0 if n == 1 else 0.0)


def test_identical_videos_are_not_hits() -> None:
    sim = np.array([[0.9, 0.9, 0.1], [0.9, 0.9, 0.1], [0.0, 0.0, 1.0]])
    np.testing.assert_array_equal(t2v_ranks(sim, np.arange(3)), [2, 2, 1])


def test_multi_caption_v2t() -> None:
    # 3 videos; video 0 has captions 0,1; video 1 has captions 2,3,4; video 2 has caption 5
    cv = np.array([0, 0, 1, 1, 1, 2])
    sim = np.array(
        [
            [0.2, 0.1, 0.0],
            [0.9, 0.3, 0.0],  # video 0's second caption is its best
            [0.5, 0.1, 0.0],
            [0.0, 0.4, 0.0],
            [0.0, 0.8, 0.0],
            [0.0, 0.9, 0.5],  # caption 5 prefers video 1: a t2v miss
        ]
    )
    np.testing.assert_array_equal(t2v_ranks(sim, cv), [1, 1, 2, 1, 1, 2])
    # video 1: best own caption 0.8 is beaten by caption 5 (0.9) -> rank 2
    # video 0: best own 0.9 is top; its other caption (0.2) never counts against it
    np.testing.assert_array_equal(v2t_ranks(sim, cv), [1, 2, 1])
    m = retrieval_metrics(sim, cv)
    assert m["v2t_R@1"] == pytest.approx(200 / 3)


def test_own_captions_tied_do_not_hurt() -> None:
    cv = np.array([0, 0, 1])
    sim = np.array([[1.0, 0.0], [1.0, 0.0], [0.0, 1.0]])
    np.testing.assert_array_equal(v2t_ranks(sim, cv), [1, 1])


def test_chunked_equals_unchunked() -> None:
    rng = np.random.default_rng(1)
    sim = rng.integers(0, 5, size=(300, 70)).astype(np.float32)  # many ties
    cv = rng.integers(0, 70, size=300)
    a = retrieval_metrics(sim, cv, chunk=7)
    b = retrieval_metrics(sim, cv, chunk=10_000)
    assert a == b


def test_large_matrix_runs_in_chunks() -> None:
    sim = torch.randn(20_000, 1_000)
    cv = torch.arange(20_000) % 1_000
    m = retrieval_metrics(sim, cv, chunk=512)
    assert 0.0 <= m["t2v_R@1"] <= 100.0


def test_bad_caption_video_names_the_fix() -> None:
    with pytest.raises(ValueError, match="caption_video"):
        retrieval_metrics(np.eye(3), np.arange(4))


def test_save_load_roundtrip(tmp_path) -> None:
    sim = np.random.default_rng(2).normal(size=(6, 3)).astype(np.float32)
    cv = np.array([0, 0, 1, 1, 2, 2])
    path = save_similarity(tmp_path / "sims" / "run1.npz", sim, cv, {"reducer": "tome"})
    s, c, meta = load_similarity(path)
    np.testing.assert_array_equal(s, sim)
    np.testing.assert_array_equal(c, cv)
    assert meta == {"reducer": "tome"}


def test_dual_softmax_keeps_perfect_and_shape() -> None:
    out = dual_softmax(np.eye(4) + 0.01)
    assert out.shape == (4, 4)
    assert retrieval_metrics(out, np.arange(4))["rsum"] == pytest.approx(600.0)
