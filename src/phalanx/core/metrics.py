"""Evaluation metrics for multi-class detectors and binary attack scores, in plain numpy.

Conventions (they match scikit-learn's defaults unless said otherwise):

* Undefined precision, recall or F1 (a zero denominator) count as 0.0 (``zero_division=0``).
* :func:`macro_f1` averages over the classes present in ``y_true`` **or** ``y_pred``; classes
  absent from both are left out (they would otherwise drag the mean to 0 with nothing to learn
  from).
* Binary metrics call *attack* the positive class. A flow is flagged when its attack score is
  strictly greater than the threshold (``score > threshold``), the same rule
  :func:`threshold_at_fpr` calibrates for.
* :func:`roc_auc` is NaN when only one class is present; :func:`pr_auc` is NaN when there is no
  attack. :func:`evaluate` reports those NaNs as ``None`` so that its result is valid JSON.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
from numpy.typing import ArrayLike, NDArray

from phalanx.core.errors import ConfigError

IntArray = NDArray[np.int64]
FloatArray = NDArray[np.float64]


def _labels(y: ArrayLike, name: str) -> IntArray:
    arr = np.asarray(y)
    if arr.ndim != 1:
        raise ConfigError(f"{name} must be a 1-D array of labels; found shape {arr.shape}")
    integral = arr.dtype == np.bool_ or np.issubdtype(arr.dtype, np.integer)
    integral = integral or bool(np.all(np.mod(arr, 1) == 0))
    if arr.size and not integral:
        raise ConfigError(f"{name} must hold integer class indices; found dtype {arr.dtype}")
    return arr.astype(np.int64)


def _pair(y_true: ArrayLike, y_pred: ArrayLike) -> tuple[IntArray, IntArray]:
    t, p = _labels(y_true, "y_true"), _labels(y_pred, "y_pred")
    if t.shape != p.shape:
        raise ConfigError(f"y_true has {t.size} labels but y_pred has {p.size}")
    return t, p


def confusion_matrix(y_true: ArrayLike, y_pred: ArrayLike, n_classes: int) -> IntArray:
    """Counts ``C[i, j]`` of flows of true class ``i`` predicted as ``j``.

    Raises
    ------
    ConfigError
        When a label lies outside ``[0, n_classes)`` or the arrays differ in length.
    """
    t, p = _pair(y_true, y_pred)
    for name, arr in (("y_true", t), ("y_pred", p)):
        if arr.size and (arr.min() < 0 or arr.max() >= n_classes):
            raise ConfigError(
                f"{name} holds class index {int(arr.min() if arr.min() < 0 else arr.max())}; "
                f"expected 0..{n_classes - 1}"
            )
    flat = np.bincount(t * n_classes + p, minlength=n_classes * n_classes)
    return flat.reshape(n_classes, n_classes).astype(np.int64)


def accuracy(y_true: ArrayLike, y_pred: ArrayLike) -> float:
    """Fraction of labels predicted exactly (NaN on empty input)."""
    t, p = _pair(y_true, y_pred)
    return float(np.mean(t == p)) if t.size else math.nan


def _div(num: FloatArray, den: FloatArray) -> FloatArray:
    out = np.zeros_like(num, dtype=np.float64)
    np.divide(num, den, out=out, where=den > 0)
    return out


def precision_recall_f1(cm: IntArray) -> tuple[FloatArray, FloatArray, FloatArray, IntArray]:
    """Per-class precision, recall, F1 and support from a confusion matrix (0 where undefined)."""
    tp = np.diag(cm).astype(np.float64)
    predicted = cm.sum(axis=0).astype(np.float64)
    support = cm.sum(axis=1)
    precision = _div(tp, predicted)
    recall = _div(tp, support.astype(np.float64))
    f1 = _div(2.0 * tp, predicted + support)
    return precision, recall, f1, support.astype(np.int64)


def macro_f1(y_true: ArrayLike, y_pred: ArrayLike, n_classes: int) -> float:
    """Unweighted mean F1 over classes present in ``y_true`` or ``y_pred`` (NaN if none)."""
    cm = confusion_matrix(y_true, y_pred, n_classes)
    _, _, f1, support = precision_recall_f1(cm)
    present = (support > 0) | (cm.sum(axis=0) > 0)
    return float(f1[present].mean()) if present.any() else math.nan


def per_class_report(
    y_true: ArrayLike, y_pred: ArrayLike, categories: Sequence[str]
) -> dict[str, dict[str, float]]:
    """``{category: {"precision", "recall", "f1", "support"}}`` for every category, in order."""
    cm = confusion_matrix(y_true, y_pred, len(categories))
    precision, recall, f1, support = precision_recall_f1(cm)
    return {
        cat: {
            "precision": float(precision[i]),
            "recall": float(recall[i]),
            "f1": float(f1[i]),
            "support": int(support[i]),
        }
        for i, cat in enumerate(categories)
    }


def _binary(y_true: ArrayLike, scores: ArrayLike) -> tuple[NDArray[np.bool_], FloatArray]:
    t = np.asarray(y_true).astype(bool).ravel()
    s = np.asarray(scores, dtype=np.float64).ravel()
    if t.shape != s.shape:
        raise ConfigError(f"y_true has {t.size} labels but scores has {s.size}")
    if not np.all(np.isfinite(s)):
        raise ConfigError("scores contain NaN or infinite values")
    return t, s


def binary_rates(y_true: ArrayLike, scores: ArrayLike, threshold: float) -> dict[str, float]:
    """Accuracy, detection rate (TPR) and FPR of the rule ``score > threshold``.

    ``y_true`` is 1 (or True) for attacks. A rate whose denominator is empty is NaN.
    """
    t, s = _binary(y_true, scores)
    flagged = s > threshold
    n_pos, n_neg = int(t.sum()), int((~t).sum())
    tp, fp = int((flagged & t).sum()), int((flagged & ~t).sum())
    return {
        "accuracy": float(np.mean(flagged == t)) if t.size else math.nan,
        "detection_rate": tp / n_pos if n_pos else math.nan,
        "fpr": fp / n_neg if n_neg else math.nan,
    }


def _average_ranks(values: FloatArray) -> FloatArray:
    """1-based ranks with ties given the mean of the ranks they span."""
    order = np.argsort(values, kind="mergesort")
    sorted_vals = values[order]
    boundaries = np.flatnonzero(np.diff(sorted_vals)) + 1
    starts = np.concatenate(([0], boundaries))
    ends = np.concatenate((boundaries, [values.size]))
    mean_rank = (starts + ends + 1) / 2.0  # mean of ranks start+1 .. end
    ranks = np.empty(values.size, dtype=np.float64)
    ranks[order] = np.repeat(mean_rank, ends - starts)
    return ranks


def roc_auc(y_true: ArrayLike, scores: ArrayLike) -> float:
    """Area under the ROC curve by the Mann-Whitney rank statistic; ties count one half.

    Returns NaN when only one class is present.
    """
    t, s = _binary(y_true, scores)
    n_pos, n_neg = int(t.sum()), int((~t).sum())
    if n_pos == 0 or n_neg == 0:
        return math.nan
    ranks = _average_ranks(s)
    u = ranks[t].sum() - n_pos * (n_pos + 1) / 2.0
    return float(u / (n_pos * n_neg))


def pr_auc(y_true: ArrayLike, scores: ArrayLike) -> float:
    """Average precision, ``sum_n (R_n - R_{n-1}) P_n`` over distinct score thresholds.

    The step definition of scikit-learn's ``average_precision_score`` (no interpolation).
    Returns NaN when there is no positive.
    """
    t, s = _binary(y_true, scores)
    n_pos = int(t.sum())
    if n_pos == 0:
        return math.nan
    order = np.argsort(-s, kind="mergesort")
    s_sorted, t_sorted = s[order], t[order]
    tp = np.cumsum(t_sorted)
    # keep the last index of each group of tied scores: a threshold admits all ties at once
    last = np.concatenate((np.flatnonzero(np.diff(s_sorted)), [s.size - 1]))
    tp_at = tp[last].astype(np.float64)
    precision = tp_at / (last + 1)
    recall = tp_at / n_pos
    recall_prev = np.concatenate(([0.0], recall[:-1]))
    return float(np.sum((recall - recall_prev) * precision))


def threshold_at_fpr(benign_scores: ArrayLike, target_fpr: float) -> float:
    """The smallest observed score ``t`` with at most ``target_fpr`` of benign scores ``> t``.

    Flows are flagged when ``score > t``; on the given benign scores the false-positive rate is
    then at most ``target_fpr`` (ties at ``t`` are never flagged).

    Parameters
    ----------
    benign_scores:
        Anomaly or attack scores of benign validation flows (higher = more suspicious).
    target_fpr:
        Tolerated false-positive rate in [0, 1).

    Raises
    ------
    ConfigError
        On an empty score array, non-finite scores, or a target outside [0, 1).
    """
    s = np.asarray(benign_scores, dtype=np.float64).ravel()
    if s.size == 0:
        raise ConfigError("threshold_at_fpr needs at least one benign score; found none")
    if not np.all(np.isfinite(s)):
        raise ConfigError("benign scores contain NaN or infinite values")
    if not (0.0 <= float(target_fpr) < 1.0):
        raise ConfigError(f"target_fpr must be in [0, 1); found {target_fpr}")
    allowed = math.floor(float(target_fpr) * s.size + 1e-9)
    descending = np.sort(s)[::-1]
    return float(descending[allowed])


def evaluate(
    y_true_idx: ArrayLike,
    proba: ArrayLike,
    categories: Sequence[str],
    threshold: float = 0.5,
    *,
    benign: str = "benign",
) -> dict[str, Any]:
    """Multi-class and binary (attack vs benign) metrics of class probabilities.

    Parameters
    ----------
    y_true_idx:
        True class indices into ``categories``, shape (n,).
    proba:
        Predicted class probabilities, shape (n, len(categories)); the prediction is the argmax.
    categories:
        Class names, in the model's output order (normally ``taxonomy.CATEGORIES``).
    threshold:
        A flow is flagged as an attack when ``1 - P(benign) > threshold``.
    benign:
        Name of the benign category.

    Returns
    -------
    dict
        ``{"accuracy", "macro_f1", "per_class": {cat: {"precision", "recall", "f1",
        "support"}}, "binary": {"accuracy", "detection_rate", "fpr", "roc_auc", "pr_auc"}}``.
        Undefined values (e.g. ``roc_auc`` when only one class is present) are ``None``.
    """
    cats = list(categories)
    if benign not in cats:
        raise ConfigError(f"categories {cats} have no {benign!r} class")
    p = np.asarray(proba, dtype=np.float64)
    t = _labels(y_true_idx, "y_true_idx")
    if p.ndim != 2 or p.shape != (t.size, len(cats)):
        raise ConfigError(
            f"proba must have shape ({t.size}, {len(cats)}) for {t.size} labels and "
            f"{len(cats)} categories; found {p.shape}"
        )
    pred = p.argmax(axis=1) if t.size else np.zeros(0, dtype=np.int64)
    b = cats.index(benign)
    is_attack = t != b
    score = 1.0 - p[:, b]
    binary: dict[str, float | None] = dict(binary_rates(is_attack, score, threshold))
    binary["roc_auc"] = roc_auc(is_attack, score)
    binary["pr_auc"] = pr_auc(is_attack, score)
    return {
        "accuracy": _none_if_nan(accuracy(t, pred)),
        "macro_f1": _none_if_nan(macro_f1(t, pred, len(cats))),
        "per_class": per_class_report(t, pred, cats),
        "binary": {k: _none_if_nan(v) for k, v in binary.items()},
    }


def _none_if_nan(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else float(value)
