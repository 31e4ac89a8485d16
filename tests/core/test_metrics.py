"""Metrics against hand-computed values."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phalanx.core.errors import ConfigError
from phalanx.core.metrics import (
    accuracy,
    binary_rates,
    confusion_matrix,
    evaluate,
    macro_f1,
    per_class_report,
    pr_auc,
    roc_auc,
    threshold_at_fpr,
)
from phalanx.core.taxonomy import CATEGORIES

Y_TRUE = [0, 0, 1, 1, 2, 2]
Y_PRED = [0, 1, 1, 1, 2, 0]


def test_confusion_matrix_and_accuracy() -> None:
    cm = confusion_matrix(Y_TRUE, Y_PRED, 3)
    np.testing.assert_array_equal(cm, [[1, 1, 0], [0, 2, 0], [1, 0, 1]])
    assert accuracy(Y_TRUE, Y_PRED) == pytest.approx(4 / 6)
    assert math.isnan(accuracy([], []))


def test_per_class_report_hand_computed() -> None:
    report = per_class_report(Y_TRUE, Y_PRED, ["a", "b", "c", "d"])
    assert report["a"] == pytest.approx({"precision": 0.5, "recall": 0.5, "f1": 0.5, "support": 2})
    assert report["b"] == pytest.approx(
        {"precision": 2 / 3, "recall": 1.0, "f1": 0.8, "support": 2}
    )
    assert report["c"] == pytest.approx(
        {"precision": 1.0, "recall": 0.5, "f1": 2 / 3, "support": 2}
    )
    # a class that never occurs: zeros, not NaN
    assert report["d"] == {"precision": 0.0, "recall": 0.0, "f1": 0.0, "support": 0}


def test_macro_f1_averages_over_classes_in_true_or_pred() -> None:
    assert macro_f1(Y_TRUE, Y_PRED, 4) == pytest.approx((0.5 + 0.8 + 2 / 3) / 3)
    # class 3 predicted but never true: it counts, with F1 = 0
    assert macro_f1([0, 0], [0, 3], 4) == pytest.approx((2 / 3 + 0.0) / 2)
    assert math.isnan(macro_f1([], [], 3))


def test_label_errors() -> None:
    with pytest.raises(ConfigError, match=r"expected 0\.\.2"):
        confusion_matrix([0, 3], [0, 0], 3)
    with pytest.raises(ConfigError, match="2 labels but y_pred has 1"):
        accuracy([0, 1], [0])
    with pytest.raises(ConfigError, match="integer class indices"):
        accuracy([0.5], [0])


def test_roc_auc_hand_computed_with_ties() -> None:
    assert roc_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.75)
    assert roc_auc([0, 0, 1, 1], [0.2, 0.5, 0.5, 0.9]) == pytest.approx(0.875)
    assert roc_auc([0, 1], [0.5, 0.5]) == pytest.approx(0.5)
    assert roc_auc([1, 1, 0], [0.9, 0.8, 0.1]) == pytest.approx(1.0)
    assert math.isnan(roc_auc([1, 1], [0.2, 0.3]))


@settings(max_examples=40, deadline=None)
@given(st.lists(st.tuples(st.booleans(), st.integers(0, 5)), min_size=2, max_size=30))
def test_roc_auc_equals_pairwise_definition(pairs: list[tuple[bool, int]]) -> None:
    y = np.array([p[0] for p in pairs])
    s = np.array([p[1] for p in pairs], dtype=float)
    pos, neg = s[y], s[~y]
    if pos.size == 0 or neg.size == 0:
        assert math.isnan(roc_auc(y, s))
        return
    expected = np.mean((pos[:, None] > neg[None, :]) + 0.5 * (pos[:, None] == neg[None, :]))
    assert roc_auc(y, s) == pytest.approx(expected)


def test_pr_auc_hand_computed() -> None:
    # sklearn's documented example of average_precision_score
    assert pr_auc([0, 0, 1, 1], [0.1, 0.4, 0.35, 0.8]) == pytest.approx(0.8333333)
    # ties enter together: thresholds 0.5 (P=1/2, R=1/2) then 0.2 (P=2/3, R=1)
    assert pr_auc([1, 0, 1], [0.5, 0.5, 0.2]) == pytest.approx(0.5 * 0.5 + 0.5 * 2 / 3)
    assert pr_auc([1, 1], [0.1, 0.9]) == pytest.approx(1.0)
    assert math.isnan(pr_auc([0, 0], [0.1, 0.9]))


def test_binary_rates_use_strictly_greater() -> None:
    rates = binary_rates([0, 0, 1, 1], [0.5, 0.7, 0.5, 0.9], threshold=0.5)
    assert rates == pytest.approx({"accuracy": 0.5, "detection_rate": 0.5, "fpr": 0.5})
    assert math.isnan(binary_rates([1], [0.9], 0.5)["fpr"])


def test_threshold_at_fpr_hand_computed() -> None:
    scores = np.arange(100, dtype=float)
    assert threshold_at_fpr(scores, 0.05) == 94.0  # 95..99 exceed: exactly 5%
    assert threshold_at_fpr(scores, 0.0) == 99.0
    assert threshold_at_fpr(scores, 0.055) == 94.0
    assert threshold_at_fpr([3.0, 3.0, 3.0], 0.5) == 3.0  # ties are never flagged
    with pytest.raises(ConfigError, match=r"\[0, 1\)"):
        threshold_at_fpr(scores, 1.0)
    with pytest.raises(ConfigError, match="at least one"):
        threshold_at_fpr([], 0.1)


@settings(max_examples=60, deadline=None)
@given(
    st.lists(st.integers(-20, 20), min_size=1, max_size=60),
    st.floats(0.0, 0.99),
)
def test_threshold_at_fpr_never_overshoots_and_is_tight(values: list[int], fpr: float) -> None:
    s = np.array(values, dtype=float)
    t = threshold_at_fpr(s, fpr)
    assert np.mean(s > t) <= fpr + 1e-12
    lower = s[s < t]
    if lower.size:  # the next lower observed score would overshoot: the threshold is tight
        assert np.mean(s > lower.max()) > fpr - 1e-9


def test_evaluate_shape_and_values() -> None:
    cats = ["benign", "dos", "recon"]
    proba = np.array(
        [[0.9, 0.05, 0.05], [0.6, 0.3, 0.1], [0.2, 0.7, 0.1], [0.1, 0.1, 0.8], [0.4, 0.5, 0.1]]
    )
    y = [0, 0, 1, 2, 2]
    report = evaluate(y, proba, cats)
    assert set(report) == {"accuracy", "macro_f1", "per_class", "binary"}
    assert list(report["per_class"]) == cats
    assert set(report["per_class"]["dos"]) == {"precision", "recall", "f1", "support"}
    assert set(report["binary"]) == {"accuracy", "detection_rate", "fpr", "roc_auc", "pr_auc"}
    assert report["accuracy"] == pytest.approx(0.8)  # pred = 0, 0, 1, 2, 1
    # attack score 1 - P(benign) = .1 .4 .8 .9 .6; flagged > 0.5: rows 2, 3, 4 -> all correct
    assert report["binary"]["accuracy"] == pytest.approx(1.0)
    assert report["binary"]["detection_rate"] == pytest.approx(1.0)
    assert report["binary"]["fpr"] == pytest.approx(0.0)
    assert report["binary"]["roc_auc"] == pytest.approx(1.0)
    json.dumps(report, allow_nan=False)


def test_evaluate_degenerate_single_class_gives_none() -> None:
    proba = np.full((3, len(CATEGORIES)), 1 / len(CATEGORIES))
    report = evaluate([0, 0, 0], proba, CATEGORIES)
    assert report["binary"]["roc_auc"] is None
    assert report["binary"]["pr_auc"] is None
    assert report["binary"]["detection_rate"] is None
    json.dumps(report, allow_nan=False)


def test_evaluate_errors() -> None:
    with pytest.raises(ConfigError, match=r"shape \(2, 2\)"):
        evaluate([0, 1], np.zeros((2, 3)), ["benign", "dos"])
    with pytest.raises(ConfigError, match="no 'benign' class"):
        evaluate([0], np.zeros((1, 1)), ["dos"])
