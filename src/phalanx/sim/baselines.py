"""Honest baselines for ``phalanx simulate``: a centralized and per-participant local models.

The centralized model trains on the pooled training data and each local-only model on one
participant's data with its own feature transform, for as many epochs as the federation ran
(``rounds x local_epochs``), and both are scored as the federated model is.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from numpy.typing import NDArray

from phalanx.core.features.batch import FlowBatch
from phalanx.core.features.stats import compute_stats
from phalanx.core.features.transform import FeatureTransform
from phalanx.core.metrics import evaluate
from phalanx.core.taxonomy import BENIGN, CATEGORIES
from phalanx.models.federated import Model
from phalanx.services.participant import category_indices
from phalanx.sim.config import SimConfig
from phalanx.sim.data import SimData
from phalanx.sim.scoring import (
    calibrate,
    calibrated_binary,
    class_probabilities,
    make_model,
    part_metrics,
    scored_labels,
)


def centralized_baseline(
    cfg: SimConfig, data: SimData, transform: FeatureTransform, test_cache: dict[str, Any]
) -> dict[str, Any]:
    """One model on the pooled training data, ``rounds x local_epochs`` epochs."""
    pooled = FlowBatch.concat(data.parts)
    x = transform.transform(pooled)
    y = category_indices(pooled)
    model = _fit(cfg, x, y, seed=cfg.seed)
    proba = class_probabilities(model, test_cache["x"], test_cache["benign"], cfg.target_fpr)
    result = evaluate(test_cache["y"], proba, CATEGORIES)
    thresholds = calibrate(model, transform, data.validation, cfg.target_fpr)
    result["binary_calibrated"] = calibrated_binary(cfg, model, test_cache, thresholds)
    result.update(part_metrics(model, test_cache))
    return result


def local_only_baseline(cfg: SimConfig, data: SimData) -> dict[str, Any]:
    """One model per participant on its own data and its own feature transform."""
    results = []
    for i, part in enumerate(data.parts):
        transform = FeatureTransform.fit(compute_stats(part))
        model = _fit(cfg, transform.transform(part), category_indices(part), seed=cfg.seed + i + 1)
        x_test = transform.transform(data.test)
        benign = transform.transform(data.validation.take(data.validation.category == BENIGN))
        proba = class_probabilities(model, x_test, benign, cfg.target_fpr)
        y_test = scored_labels(cfg.model.kind, category_indices(data.test))
        results.append(evaluate(y_test, proba, CATEGORIES))
        arrays = {"x": x_test, "y": y_test, "benign": benign}
        thresholds = calibrate(model, transform, data.validation, cfg.target_fpr)
        results[-1]["binary_calibrated"] = calibrated_binary(cfg, model, arrays, thresholds)
        results[-1].update(part_metrics(model, arrays))
    return {
        "mean": reduce_nested(results, np.mean),
        "min": reduce_nested(results, np.min),
        "participants": results,
    }


def _fit(cfg: SimConfig, x: NDArray[np.float32], y: NDArray[np.int64], seed: int) -> Model:
    spec = cfg.model.model_dump(mode="json")
    model = make_model(spec, x.shape[1], seed)
    epochs = cfg.rounds * cfg.local_epochs
    model.partial_fit(x, y, epochs=epochs)  # the autoencoder keeps only the benign rows
    return model


def reduce_nested(items: list[dict[str, Any]], fn: Callable[[Any], Any]) -> dict[str, Any]:
    """Element-wise reduction of equally shaped nested metric dicts (None/NaN skipped)."""
    out: dict[str, Any] = {}
    for key, value in items[0].items():
        if isinstance(value, dict):
            out[key] = reduce_nested([it[key] for it in items], fn)
        elif isinstance(value, int | float) or value is None:
            vals = [it[key] for it in items if it[key] is not None and np.isfinite(it[key])]
            out[key] = float(fn(vals)) if vals else None
    return out
