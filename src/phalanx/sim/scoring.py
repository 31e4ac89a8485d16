"""Scoring of simulated models: class probabilities, test arrays, calibrated thresholds.

Shared by the federation run and its baselines so every model is scored the same way.
"""

from __future__ import annotations

from typing import Any

import numpy as np
from numpy.typing import NDArray

from phalanx.core.features.batch import FlowBatch
from phalanx.core.features.transform import FeatureTransform
from phalanx.core.metrics import confusion_matrix, evaluate, threshold_at_fpr
from phalanx.core.taxonomy import BENIGN, CATEGORIES, CATEGORY_INDEX, FALLBACK
from phalanx.models.federated import Model, build_model
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
    """
    if isinstance(model, MLPClassifier):
        return np.asarray(model.predict_proba(x), dtype=np.float64)
    threshold = max(float(threshold_at_fpr(model.score(benign_x), target_fpr)), 1e-12)
    s = np.asarray(model.score(x), dtype=np.float64)
    p_attack = s / (s + threshold)
    proba = np.zeros((len(x), len(CATEGORIES)))
    proba[:, CATEGORY_INDEX[BENIGN]] = 1.0 - p_attack
    proba[:, CATEGORY_INDEX[FALLBACK]] = p_attack
    return proba


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
    it is the reconstruction error and ``default`` is the threshold at ``target_fpr``.
    """
    benign = validation.take(validation.category == BENIGN)
    if len(benign) == 0:
        return {"default": 0.5}
    scores = model.attack_score(transform.transform(benign))
    out = {"default": 0.5}
    if not isinstance(model, MLPClassifier):
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
    autoencoder the two coincide.
    """
    key = f"fpr={cfg.target_fpr:g}"
    threshold = thresholds.get(key, 0.5) if isinstance(model, MLPClassifier) else 0.5
    proba = class_probabilities(model, arrays["x"], arrays["benign"], cfg.target_fpr)
    rates = evaluate(arrays["y"], proba, CATEGORIES, threshold)["binary"]
    return {
        "target_fpr": cfg.target_fpr,
        "threshold": threshold,
        **{k: rates[k] for k in ("accuracy", "detection_rate", "fpr")},
    }
