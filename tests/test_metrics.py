"""Metrics against ../shared/BENCHMARKS.md, on cases small enough to compute by hand."""

from __future__ import annotations

import math

import numpy as np
import pytest

from training.benchmarks.demand import pinball, point_metrics, quantile_metrics
from training.benchmarks.recommend import ranking_metrics, user_ndcg
from training.metrics import classification_metrics, lift_at, ndcg_at_k

L2, L3, L4 = 1.0, 1 / math.log2(3), 1 / math.log2(4)  # discounts of ranks 1, 2, 3


def test_ndcg_ideal_over_min_relevant_k_and_empty_lists_score_zero() -> None:
    recs = [["a", "b", "c"], [], [f"i{j}" for j in range(12)], ["z"]]
    truth = [{"b", "x"}, {"y"}, {f"i{j}" for j in range(15)}, {"q"}]
    # user 1: a hit at rank 2, ideal DCG over 2 relevant items; user 2 has no list: 0 (kept);
    # user 3: 10 hits of 15 relevant: ideal over min(15, 10) = 10 -> 1; user 4: a miss
    u1 = L3 / (L2 + L3)
    expected = (u1 + 0 + 1 + 0) / 4
    assert ndcg_at_k(recs, truth, 10) == pytest.approx(expected, abs=1e-12)
    np.testing.assert_allclose(user_ndcg(recs, truth, 10), [u1, 0, 1, 0], atol=1e-12)
    m = ranking_metrics(recs, truth, n_train_items=40, k=10)
    assert m["ndcg@10"] == round(expected, 4)
    assert m["recall@10"] == round((1 / 2 + 0 + 10 / 15 + 0) / 4, 4)
    assert m["precision@10"] == round((1 / 10 + 0 + 1 + 0) / 4, 4)
    assert m["hitrate@10"] == 0.5
    # MAP@10: user 1 precision 1/2 at its hit over min(2, 10); user 3 all hits over 10
    assert m["map@10"] == round((0.5 / 2 + 0 + 1 + 0) / 4, 4)
    # catalog coverage: distinct items recommended (a, b, c, i0..i9, z = 14) / train items
    assert m["coverage"] == round(14 / 40, 4)


def test_ndcg_hit_order_matters() -> None:
    truth = [{"a", "b"}]
    assert ndcg_at_k([["a", "b", "c"]], truth) == pytest.approx(1.0)
    assert ndcg_at_k([["c", "a", "b"]], truth) == pytest.approx((L3 + L4) / (L2 + L3))


def test_mase_wape_bias_known_answer() -> None:
    history = np.array([[0.0, 2.0, 4.0, 2.0], [5.0, 5.0, 5.0, 5.0]])  # scales 2 and 0
    y = np.array([[3.0, 3.0], [5.0, 5.0]])
    f = np.array([[1.0, 6.0], [4.0, 4.0]])
    m = point_metrics(history, y, f)
    # item 1: naive one-step errors |2|, |2|, |-2| -> scale 2; MAE (2 + 3) / 2 = 2.5 -> 1.25;
    # item 2 has scale 0: left out of MASE and RMSSE, kept in WAPE and bias
    assert m["mase"] == pytest.approx(1.25)
    assert m["rmsse"] == pytest.approx(math.sqrt((4 + 9) / 2 / 4))
    assert m["wape"] == pytest.approx((2 + 3 + 1 + 1) / 16)
    assert m["bias"] == pytest.approx((-2 + 3 - 1 - 1) / 16)  # negative: under-forecast


def test_pinball_and_coverage_known_answer() -> None:
    y = np.array([[10.0, 0.0]])
    # q = 0.9, forecast 4 under 10: 0.9 x 6; forecast 2 over 0: 0.1 x 2 -> mean 2.8
    assert pinball(y, np.array([[4.0, 2.0]]), 0.9) == pytest.approx((5.4 + 0.2) / 2)
    assert pinball(y, np.array([[4.0, 2.0]]), 0.1) == pytest.approx((0.6 + 1.8) / 2)
    q = np.array([[[10.0, 1.0]], [[12.0, 2.0]], [[10.0, 3.0]]])  # P10, P50, P90
    out = quantile_metrics(y, q)
    assert out["coverage80"] == 0.5  # 10 in [10, 10] (bounds included), 0 not in [1, 3]


def test_lift_and_brier_known_answer() -> None:
    y = np.r_[1.0, 1.0, np.zeros(18)]  # base rate 0.1
    score = np.r_[1.0, 0.9, np.zeros(18)]
    assert lift_at(y, score, 0.1) == pytest.approx(1.0 / 0.1)  # top 2 of 20 both positive
    assert lift_at(y, -score, 0.1) == 0.0
    proba = np.full(20, 0.1)
    m = classification_metrics(y, proba)
    assert m["brier"] == pytest.approx((2 * 0.81 + 18 * 0.01) / 20)
    assert m["roc_auc"] == 0.5
    single = classification_metrics(np.zeros(4), np.array([0.5, 0.5, 0.0, 1.0]))
    assert math.isnan(single["roc_auc"]) and single["brier"] == pytest.approx(1.5 / 4)
