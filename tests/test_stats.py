"""Bootstrap intervals and paired comparisons on hand-made ranks with known answers."""

from __future__ import annotations

import math

import numpy as np
import pytest

from tokred.retrieval.metrics import rank_summary
from tokred.retrieval.stats import METRICS, bootstrap, paired, point


def test_point_estimates_equal_the_metrics_module():
    rng = np.random.default_rng(0)
    t2v, v2t = rng.integers(1, 30, 300), rng.integers(1, 30, 100)
    p = point(t2v, v2t)
    ref = {**rank_summary(t2v, "t2v"), **rank_summary(v2t, "v2t")}
    for m in METRICS[:-1]:
        assert p[m] == pytest.approx(ref[m])
    assert p["R-Sum"] == pytest.approx(sum(p[m] for m in METRICS[:-1]))


def test_perfect_ranks_have_degenerate_intervals():
    ci = bootstrap(np.ones(50, int), np.ones(20, int), n_boot=200)
    assert ci["t2v_R@1"].value == ci["t2v_R@1"].low == ci["t2v_R@1"].high == 100.0
    assert (ci["R-Sum"].low, ci["R-Sum"].high) == (600.0, 600.0)


def test_interval_width_matches_the_binomial_standard_error():
    n = 10_000
    t2v = np.where(np.arange(n) % 2 == 0, 1, 20)  # R@1 = 50 %, R@5 = 50 %, R@10 = 50 %
    ci = bootstrap(t2v, np.ones(10, int), n_boot=2000)["t2v_R@1"]
    expected = 1.96 * math.sqrt(0.25 / n) * 100  # 0.98 points
    assert ci.value == 50.0
    assert ci.half_width == pytest.approx(expected, rel=0.1)
    assert ci.low < 50.0 < ci.high


def test_bootstrap_is_reproducible_by_seed():
    rng = np.random.default_rng(1)
    t2v, v2t = rng.integers(1, 40, 500), rng.integers(1, 40, 500)
    assert bootstrap(t2v, v2t, seed=3) == bootstrap(t2v, v2t, seed=3)
    assert bootstrap(t2v, v2t, seed=3) != bootstrap(t2v, v2t, seed=4)


def test_identical_models_do_not_differ():
    rng = np.random.default_rng(2)
    a = (rng.integers(1, 50, 400), rng.integers(1, 50, 400))
    c = paired(a, a)
    assert (c.diff.value, c.diff.low, c.diff.high, c.p) == (0.0, 0.0, 0.0, 1.0)
    assert not c.significant


def test_a_model_better_on_every_query_is_significant():
    a = (np.ones(100, int), np.ones(100, int))
    b = (np.full(100, 2), np.ones(100, int))  # second on every caption: R@1 0 %, R@5 100 %
    c = paired(a, b, "t2v_R@1")
    assert c.diff.value == 100.0 and c.significant and c.p == 0.0
    assert paired(a, b, "R-Sum").diff.value == 100.0
    assert not paired(a, b, "t2v_R@5").significant  # both hit at 5


def test_pairing_sees_a_small_consistent_gain_that_unpaired_intervals_hide():
    n = 2000
    b_t2v = np.where(np.arange(n) % 4 == 0, 1, 30)  # R@1 25 %
    a_t2v = b_t2v.copy()
    a_t2v[1:61:2] = 1  # a also gets 30 captions right that b misses: +1.5 points
    v2t = np.full(200, 3)
    ci_a, ci_b = bootstrap(a_t2v, v2t)["t2v_R@1"], bootstrap(b_t2v, v2t)["t2v_R@1"]
    assert ci_a.low < ci_b.high  # the two intervals overlap ...
    c = paired((a_t2v, v2t), (b_t2v, v2t), "t2v_R@1")
    assert c.diff.value == pytest.approx(1.5)
    assert c.significant and c.diff.low > 0.8 and c.p < 0.01  # ... the paired test does not


def test_mixed_gains_and_losses_give_the_expected_interval():
    # a beats b on 240 of 400 captions at R@1 and loses on 160: difference +20 points, per-query
    # differences of +-100 with sd 97.98, so the 95 % half-width is about 1.96 * 97.98 / 20
    a_t2v = np.where(np.arange(400) < 240, 1, 7)
    b_t2v = np.where(np.arange(400) < 240, 7, 1)
    v2t = np.ones(50, int)
    c = paired((a_t2v, v2t), (b_t2v, v2t), "t2v_R@1", n_boot=4000)
    assert c.diff.value == pytest.approx(20.0)
    assert c.diff.half_width == pytest.approx(1.96 * 97.98 / 20, rel=0.12)
    assert c.significant


@pytest.mark.parametrize("args, match", [
    (((np.ones(3, int), np.ones(2, int)), (np.ones(4, int), np.ones(2, int))), "same queries"),
    (((np.ones(3, int), np.ones(2, int)), (np.ones(3, int), np.ones(2, int)), "R@3"), "metric"),
])
def test_paired_errors(args, match):
    with pytest.raises(ValueError, match=match):
        paired(*args)


def test_ranks_must_be_one_based():
    with pytest.raises(ValueError, match="1-based"):
        bootstrap(np.array([0, 1]), np.ones(2, int))
