"""Scoring of simulated models: class probabilities, test arrays, calibrated thresholds.

Shared by the federation run and its baselines so every model is scored the same way.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from phalanx.core.features.batch import FlowBatch
from phalanx.core.features.transform import FeatureTransform
from phalanx.core.metrics import (
    binary_rates,
    confusion_matrix,
    evaluate,
    roc_auc,
    threshold_at_fpr,
)
from phalanx.core.taxonomy import BENIGN, CATEGORIES, CATEGORY_INDEX, FALLBACK
from phalanx.models.autoencoder import AutoencoderDetector
from phalanx.models.federated import Model, build_model
from phalanx.models.hybrid import HybridDetector
from phalanx.models.mlp import MLPClassifier
from phalanx.services.participant import category_indices
from phalanx.sim.config import SimConfig
from phalanx.sim.data import SimData


def make_model(spec: dict[str, Any], n_features: int, seed: int) -> Model:
    """The model of ``spec`` (MLP classifier or autoencoder detector), initialized from ``seed``."""
    return build_model(spec, n_features, {"seed": seed})


def class_probabilities(
    model: Model, x: NDArray[np.float32], benign_x: NDArray[np.float32], target_fpr: float
) -> NDArray[np.float64]:
    """Class probabilities over the taxonomy for scoring.

    An autoencoder is a two-class detector: its anomaly score ``s`` and the threshold ``t``
    calibrated at ``target_fpr`` on benign validation flows give P(attack) = s / (s + t), put on
    the fallback category ``other``; so P(attack) > 0.5 exactly when the score exceeds ``t``.

    A hybrid detector is scored by its decisions (:func:`decision_proba`:
    P(attack) > 0.5 exactly on an alert of the OR rule, ranked by the combined score), after
    calibrating its anomaly threshold on ``benign_x`` at its own ``anomaly_fpr`` when it has
    none; ``target_fpr`` is the stored-threshold rate and does not apply to it.
    """
    if isinstance(model, MLPClassifier):
        return np.asarray(model.predict_proba(x), dtype=np.float64)
    if isinstance(model, HybridDetector):
        if not model.is_calibrated():
            model.calibrate(benign_x)
        return decision_proba(model, x)
    threshold = max(float(threshold_at_fpr(model.score(benign_x), target_fpr)), 1e-12)
    s = np.asarray(model.score(x), dtype=np.float64)
    p_attack = s / (s + threshold)
    proba = np.zeros((len(x), len(CATEGORIES)))
    proba[:, CATEGORY_INDEX[BENIGN]] = 1.0 - p_attack
    proba[:, CATEGORY_INDEX[FALLBACK]] = p_attack
    return proba


def decision_proba(model: HybridDetector, x: NDArray[np.float32]) -> NDArray[np.float64]:
    """Class probabilities consistent with a (calibrated) hybrid detector's decisions.

    With the combined score ``s``: ``P(benign) = 1 / (1 + s)`` (so ``1 - P(benign) > 0.5``
    exactly when ``s > 1``, and it ranks flows as ``s`` does). The attack mass ``s / (1 + s)``
    goes to the :meth:`~HybridDetector.predict` category on an alert, else to the classifier's
    most probable attack category (at most 0.5, so the argmax stays benign): the argmax is
    the hybrid's prediction.
    """
    proba, c, a = model.part_scores(x)
    s = np.maximum(c, a)
    kinds = model.kinds(proba, c, a)
    top_attack = model.kinds(proba, np.full_like(c, 2.0), a)  # as if the classifier alerted
    column = np.where(s > 1.0, kinds, top_attack)
    out = np.zeros_like(proba)
    out[np.arange(len(s)), column] = s / (1.0 + s)
    out[:, CATEGORY_INDEX[BENIGN]] = 1.0 / (1.0 + s)
    return out


def scored_labels(model_kind: str, y: NDArray[np.int64]) -> NDArray[np.int64]:
    """True classes as a model of ``model_kind`` is scored: attacks become ``other`` for the
    two-class autoencoder."""
    if model_kind != "autoencoder":
        return y
    return np.where(y == CATEGORY_INDEX[BENIGN], y, CATEGORY_INDEX[FALLBACK])


def scoring_arrays(cfg: SimConfig, transform: FeatureTransform, data: SimData) -> dict[str, Any]:
    """Test features ``x``, scored classes ``y`` and benign validation features ``benign``."""
    return {
        "x": transform.transform(data.test),
        "y": scored_labels(cfg.model.kind, category_indices(data.test)),
        "benign": transform.transform(data.validation.take(data.validation.category == BENIGN)),
    }


def score(
    cfg: SimConfig, model: Model, arrays: dict[str, Any], *, confusion: bool = False
) -> dict[str, Any]:
    """The summary metrics of ``model`` on the test arrays of :func:`scoring_arrays`."""
    proba = class_probabilities(model, arrays["x"], arrays["benign"], cfg.target_fpr)
    result = evaluate(arrays["y"], proba, CATEGORIES)
    if confusion:
        result["confusion"] = confusion_matrix(
            arrays["y"], proba.argmax(axis=1), len(CATEGORIES)
        ).tolist()
    return result


def calibrate(
    model: Model, transform: FeatureTransform, validation: FlowBatch, target_fpr: float
) -> dict[str, float]:
    """Attack-score thresholds at the target false-positive rates on benign validation flows.

    For the MLP the attack score is 1 - P(benign) and ``default`` is 0.5; for the autoencoder
    it is the reconstruction error and ``default`` is the threshold at ``target_fpr``. For the
    hybrid detector it is the combined score (``HybridDetector.attack_score``) and ``default`` is
    1 (the OR rule); ``classifier`` (t_c) and ``anomaly`` (t_a, calibrated here at the model's
    ``anomaly_fpr`` when not yet set) are its parts' thresholds.
    """
    benign = validation.take(validation.category == BENIGN)
    if len(benign) == 0:
        return {"default": 0.5}
    x_benign = transform.transform(benign)
    out = {"default": 0.5}
    if isinstance(model, HybridDetector):
        if not model.is_calibrated():
            model.calibrate(x_benign)
        out = {
            "default": 1.0,
            "classifier": float(model.classifier_threshold),
            "anomaly": model.threshold_,
            "anomaly_fpr": float(model.anomaly_fpr),
        }
    scores = model.attack_score(x_benign)
    if isinstance(model, AutoencoderDetector):
        out["default"] = float(threshold_at_fpr(scores, target_fpr))
    for fpr in sorted({target_fpr, 0.01, 0.001}):
        out[f"fpr={fpr:g}"] = float(threshold_at_fpr(scores, fpr))
    return out


def calibrated_binary(
    cfg: SimConfig, model: Model, arrays: dict[str, Any], thresholds: dict[str, float]
) -> dict[str, Any]:
    """Binary metrics on the test arrays at the threshold calibrated at ``cfg.target_fpr``.

    The MLP's ``binary`` metrics use the fixed cut ``1 - P(benign) > 0.5``; this is the other
    operating point a deployment can choose (``phalanx detect --fpr``): the threshold that
    flags ``target_fpr`` of the benign validation flows (never the test flows). For the
    autoencoder the two coincide. For the hybrid the threshold is on the combined score ``s``
    (its probabilities hold ``1 - P(benign) = s / (1 + s)``).
    """
    key = f"fpr={cfg.target_fpr:g}"
    threshold = thresholds.get(key, 0.5) if not isinstance(model, AutoencoderDetector) else 0.5
    cut = threshold / (1.0 + threshold) if isinstance(model, HybridDetector) else threshold
    proba = class_probabilities(model, arrays["x"], arrays["benign"], cfg.target_fpr)
    rates = evaluate(arrays["y"], proba, CATEGORIES, cut)["binary"]
    return {
        "target_fpr": cfg.target_fpr,
        "threshold": threshold,
        **{k: rates[k] for k in ("accuracy", "detection_rate", "fpr")},
    }


def restore_thresholds(model: Model, thresholds: dict[str, float]) -> Model:
    """Give a model rebuilt from weights the fitted thresholds :func:`calibrate` found.

    Only the hybrid detector keeps one in its weights' bundle state (``anomaly``: t_a); other
    models are returned as they are.
    """
    if isinstance(model, HybridDetector) and "anomaly" in thresholds:
        model.set_anomaly_threshold(thresholds["anomaly"])
    return model


def part_metrics(model: Model, arrays: dict[str, Any]) -> dict[str, Any]:
    """A hybrid detector's parts scored alone, as a diagnostic beside its own metrics.

    ``{"parts": {"classifier": {accuracy, macro_f1, binary}, "anomaly": {binary}}}``: the
    classifier by its own argmax and ``1 - P(benign) > t_c``; the anomaly part by
    ``s_a > t_a`` (the model must be calibrated). Empty for the other model kinds.
    """
    if not isinstance(model, HybridDetector):
        return {}
    y = arrays["y"]
    attack = y != CATEGORY_INDEX[BENIGN]
    classifier = evaluate(
        y, model.predict_proba(arrays["x"]), CATEGORIES, float(model.classifier_threshold)
    )
    s_a = np.asarray(model.anomaly_score(arrays["x"]), dtype=np.float64)
    anomaly = dict(binary_rates(attack, s_a, model.threshold_))
    anomaly["roc_auc"] = roc_auc(attack, s_a)
    keep = ("accuracy", "macro_f1", "binary")
    return {
        "parts": {
            "classifier": {k: classifier[k] for k in keep},
            "anomaly": {"binary": anomaly},
        }
    }
