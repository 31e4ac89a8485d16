"""The compact (embedding-bag) scorer equals the dense classifier, on real transforms."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from phalanx.core.errors import ModelError, SchemaMismatchError
from phalanx.core.features.batch import FlowBatch
from phalanx.core.features.stats import compute_stats
from phalanx.core.features.transform import FeatureTransform
from phalanx.data.schemas import NSL_KDD
from phalanx.data.synthetic import generate_federation
from phalanx.models import MLPClassifier
from phalanx.models.compact import CompactInput, CompactScorer, compact_features
from phalanx.models.explain import attributions, column_groups
from phalanx.services.participant import category_indices

torch.set_num_threads(1)


@pytest.fixture(scope="module")
def trained() -> tuple[FeatureTransform, MLPClassifier, FlowBatch]:
    data = FlowBatch.concat(generate_federation(2, 2000, seed=5))
    transform = FeatureTransform.fit(compute_stats(data))
    model = MLPClassifier(transform.n_features, hidden=(48, 24), epochs=2, seed=1)
    model.fit(transform.transform(data), category_indices(data))
    day = FlowBatch.concat(generate_federation(2, 1500, seed=6))
    numeric = day.numeric.copy()
    numeric[::7, 3] = np.nan  # missing values, imputed
    numeric[::11, 5] = 1e300  # absurd values, clipped
    return transform, model, dataclasses.replace(day, numeric=numeric)


def test_compact_features_are_the_transform_bit_for_bit(
    trained: tuple[FeatureTransform, MLPClassifier, FlowBatch],
) -> None:
    transform, _, day = trained
    dense = transform.transform(day)
    compact = compact_features(transform, day)
    k = len(transform.schema.numeric)
    assert compact.numeric.dtype == np.float32 and compact.hot.shape == (len(day), 3)
    assert np.array_equal(compact.numeric, dense[:, :k])
    assert np.array_equal(compact.dense(transform.n_features), dense)


def test_scores_categories_and_probabilities_equal_the_classifier(
    trained: tuple[FeatureTransform, MLPClassifier, FlowBatch],
) -> None:
    transform, model, day = trained
    dense = transform.transform(day)
    scorer = CompactScorer(model, len(transform.schema.numeric))
    compact = compact_features(transform, day)
    proba = model.predict_proba(dense)
    np.testing.assert_allclose(scorer.predict_proba(compact), proba, atol=2e-6)
    scored = scorer.score(compact, chunk=333)
    score, best = scored.score, scored.best
    assert scored.explained.size == 0 and scored.attributions.shape == (0, 39)
    np.testing.assert_allclose(score, model.attack_score(dense), atol=2e-6)
    attack = proba.copy()
    attack[:, model.benign_index] = -1.0
    top2 = np.sort(attack, axis=1)[:, -2:]
    clear = top2[:, 1] - top2[:, 0] > 1e-5  # rows where float rounding cannot swap the argmax
    assert clear.mean() > 0.9
    assert np.array_equal(best[clear], attack.argmax(axis=1)[clear])


def test_attributions_equal_gradient_times_input_on_the_dense_matrix(
    trained: tuple[FeatureTransform, MLPClassifier, FlowBatch],
) -> None:
    transform, model, day = trained
    _, groups = column_groups(transform.schema)
    dense = transform.transform(day)
    expected = attributions(model, dense, groups)
    got = CompactScorer(model, len(transform.schema.numeric)).attributions(
        compact_features(transform, day), chunk=500
    )
    assert got.shape == expected.shape == (len(day), len(groups))
    np.testing.assert_allclose(got, expected, atol=1e-5 * max(1.0, np.abs(expected).max()))


@settings(max_examples=40, deadline=None)
@given(
    hidden=st.lists(st.integers(1, 12), min_size=1, max_size=3),
    rows=st.integers(0, 40),
    chunk=st.integers(1, 64),
    seed=st.integers(0, 2**31),
)
def test_any_architecture_and_chunking_matches_the_dense_network(
    hidden: list[int], rows: int, chunk: int, seed: int
) -> None:
    rng = np.random.default_rng(seed)
    widths, k = [5, 3, 4], 6
    model = MLPClassifier(k + sum(widths), hidden=tuple(hidden), seed=seed % 1000).initialize()
    numeric = rng.normal(size=(rows, k)).astype(np.float32)
    hot = np.stack([rng.integers(0, w, rows) + sum(widths[:j]) for j, w in enumerate(widths)], 1)
    compact = CompactInput(numeric, hot.reshape(rows, 3).astype(np.int64))
    scorer = CompactScorer(model, k)
    dense = compact.dense(model.n_features)
    np.testing.assert_allclose(
        scorer.predict_proba(compact, chunk), model.predict_proba(dense), atol=1e-6
    )
    scored = scorer.score(compact, chunk, explain_above=0.5)
    np.testing.assert_allclose(scored.score, model.attack_score(dense), atol=1e-6)
    assert np.array_equal(scored.explained, np.flatnonzero(scored.score > 0.5))
    groups = [np.array([j]) for j in range(k)]
    start = k
    for w in widths:
        groups.append(np.arange(start, start + w))
        start += w
    expected = attributions(model, dense, groups)
    np.testing.assert_allclose(scorer.attributions(compact, chunk), expected, atol=1e-5)
    np.testing.assert_allclose(scored.attributions, expected[scored.explained], atol=1e-5)


def test_mismatched_inputs_are_refused(
    trained: tuple[FeatureTransform, MLPClassifier, FlowBatch],
) -> None:
    transform, model, day = trained
    scorer = CompactScorer(model, len(transform.schema.numeric))
    compact = compact_features(transform, day.take(np.arange(4)))
    with pytest.raises(ModelError, match="numeric columns"):
        scorer.score(CompactInput(compact.numeric[:, :-1], compact.hot))
    with pytest.raises(ModelError, match="numeric inputs"):
        CompactScorer(model, model.n_features + 1)
    empty = np.zeros(0, dtype=object)
    other = FlowBatch(
        schema=NSL_KDD,
        numeric=np.zeros((0, len(NSL_KDD.numeric))),
        categorical=np.zeros((0, len(NSL_KDD.categorical)), dtype=object),
        label=empty,
        category=empty,
    )
    with pytest.raises(SchemaMismatchError, match="nsl-kdd"):
        compact_features(transform, other)
