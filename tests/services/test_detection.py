"""The detector: the same alerts as the former dense, per-alert pipeline, on every path."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import pytest
import torch
from ecs_reference import documents as reference_documents

from phalanx.core.errors import ConfigError
from phalanx.core.features.batch import FlowBatch
from phalanx.core.features.stats import compute_stats
from phalanx.core.features.transform import FeatureTransform
from phalanx.core.taxonomy import CATEGORIES, FALLBACK
from phalanx.data.synthetic import generate_federation
from phalanx.models import AutoencoderDetector, MLPClassifier
from phalanx.models.explain import Model, attributions, column_groups, top_features
from phalanx.services.detection import Detector, Summary
from phalanx.services.participant import category_indices

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def setup() -> tuple[FeatureTransform, MLPClassifier, AutoencoderDetector, FlowBatch]:
    data = FlowBatch.concat(generate_federation(3, 2000, seed=21))
    transform = FeatureTransform.fit(compute_stats(data))
    x, y = transform.transform(data), category_indices(data)
    mlp = MLPClassifier(transform.n_features, hidden=(64, 32), epochs=2, seed=4).fit(x, y)
    ae = AutoencoderDetector(transform.n_features, hidden=(16, 4), epochs=2, seed=4).fit(x, y)
    day = FlowBatch.concat(generate_federation(3, 3000, seed=22))
    return transform, mlp, ae, day


def _former(
    model: Model, transform: FeatureTransform, batch: FlowBatch, threshold: float, offset: int
) -> list[dict[str, Any]]:
    """What ``Detector.detect`` wrote before: dense scoring, dense explanation, dict renderer."""
    x = transform.transform(batch)
    if isinstance(model, MLPClassifier):
        proba = model.predict_proba(x)
        score = 1.0 - proba[:, model.benign_index]
        proba[:, model.benign_index] = -1.0
        cats = np.array(CATEGORIES, dtype=object)[proba.argmax(axis=1)]
        kind = "mlp"
    else:
        score = model.score(x)
        cats = np.full(len(score), FALLBACK, dtype=object)
        kind = "autoencoder"
    hit = np.flatnonzero(score > threshold)
    names, groups = column_groups(transform.schema)
    why = top_features(attributions(model, x[hit], groups), names, 3)
    return reference_documents(
        batch, hit, score[hit].astype(np.float64).tolist(), [str(c) for c in cats[hit]], why,
        kind=kind, threshold=threshold, model_id="m", model_version="v", now="now",
        source="day.csv", offset=offset,
    )  # fmt: skip


def _close(a: Any, b: Any, path: str = "") -> list[str]:
    """Differences beyond float rounding (scores to 2e-6, risk to 3 decimals +- 1)."""
    if isinstance(a, dict) and isinstance(b, dict):
        if list(a) != list(b):
            return [f"{path}: keys {list(a)} != {list(b)}"]
        return [d for k in a for d in _close(a[k], b[k], f"{path}.{k}")]
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return [f"{path}: {a} != {b}"]
        return [
            d
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for d in _close(x, y, f"{path}[{i}]")
        ]
    if isinstance(a, float) and isinstance(b, float):
        tol = 1.1e-3 if path.endswith("risk_score") else 2e-6 * max(1.0, abs(b))
        return [] if math.isclose(a, b, abs_tol=tol) else [f"{path}: {a} != {b}"]
    if path.endswith("description"):
        return [] if a.split()[:3] == b.split()[:3] and a.split()[4:] == b.split()[4:] else [path]
    return [] if type(a) is type(b) and a == b else [f"{path}: {a!r} != {b!r}"]


def _detected(det: Detector, batch: FlowBatch, offset: int) -> list[dict[str, Any]]:
    docs = det.detect(batch, source="day.csv", offset=offset).documents()
    for d in docs:
        d["event"]["created"] = "now"
    return docs


@pytest.mark.parametrize("kind", ["mlp", "autoencoder"])
def test_alerts_are_the_former_documents(
    kind: str, setup: tuple[FeatureTransform, MLPClassifier, AutoencoderDetector, FlowBatch]
) -> None:
    transform, mlp, ae, day = setup
    model: Model = mlp if kind == "mlp" else ae
    probe = Detector(model, transform, threshold=0, model_id="m", model_version="v")
    threshold = float(np.quantile(probe.score_batch(day)[0], 0.7))
    det = Detector(model, transform, threshold=threshold, model_id="m", model_version="v")
    got = _detected(det, day, offset=5000)
    want = _former(model, transform, day, threshold, offset=5000)
    assert 0.2 * len(day) < len(got) == len(want)
    problems = [p for g, w in zip(got, want, strict=True) for p in _close(g, w)]
    assert problems == []
    assert det.summary.flows == len(day) and det.summary.alerts == len(got)
    assert sum(det.summary.by_category.values()) == len(got)
    if kind == "autoencoder":
        assert {d["phalanx"]["category"] for d in got} == {FALLBACK}
        assert all("risk_score" not in d["event"] for d in got)
    else:
        assert len({d["phalanx"]["category"] for d in got}) > 1


def test_threads_score_row_slices_to_the_same_bits(
    setup: tuple[FeatureTransform, MLPClassifier, AutoencoderDetector, FlowBatch],
) -> None:
    transform, mlp, _, day = setup
    one = Detector(mlp, transform, threshold=0.5, model_id="m", model_version="v")
    with Detector(mlp, transform, threshold=0.5, model_id="m", model_version="v", threads=2) as two:
        s1, c1 = one.score_batch(day)
        s2, c2 = two.score_batch(day)
        a1 = one.detect(day, offset=0)
        a2 = two.detect(day, offset=0)
    assert np.array_equal(s1, s2) and np.array_equal(c1, c2)
    assert np.array_equal(a1.top_values, a2.top_values)
    assert np.array_equal(a1.top_columns, a2.top_columns)
    with Detector(mlp, transform, threshold=-1, model_id="m", model_version="v", threads=2) as two:
        every = two.detect(day, source="day.csv", offset=7)
        parts = two.render(every)
    assert len(every) == len(day) and len(parts) == 2  # rendered in two slices, in order
    assert b"".join(parts) == every.to_jsonl()
    assert every.slice(10, 20).to_jsonl() == b"".join(every.to_jsonl().splitlines(True)[10:20])


def test_dense_and_compact_scoring_agree(
    setup: tuple[FeatureTransform, MLPClassifier, AutoencoderDetector, FlowBatch],
) -> None:
    transform, mlp, ae, day = setup
    for model in (mlp, ae):
        det = Detector(model, transform, threshold=0.5, model_id="m", model_version="v")
        dense, _ = det.score(transform.transform(day))
        fast, _ = det.score_batch(day)
        np.testing.assert_allclose(fast, dense, atol=2e-6, rtol=1e-6)


def test_bad_settings_are_refused(
    setup: tuple[FeatureTransform, MLPClassifier, AutoencoderDetector, FlowBatch],
) -> None:
    transform, mlp, _, _ = setup
    with pytest.raises(ConfigError, match="--threads"):
        Detector(mlp, transform, threshold=0.5, model_id="m", model_version="v", threads=0)
    with pytest.raises(ConfigError, match="--top-k"):
        Detector(mlp, transform, threshold=0.5, model_id="m", model_version="v", top_k=-1)


def test_summary_counts_categories() -> None:
    s = Summary()
    s.add(10, np.array(["dos", "recon", "dos"], dtype=object))
    s.add(5, np.array([], dtype=object))
    assert (s.flows, s.alerts, s.by_category) == (15, 3, {"dos": 2, "recon": 1})
