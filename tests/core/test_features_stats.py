"""Mergeable statistics: merged per-participant statistics equal the pooled ones."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from phalanx.core.errors import ConfigError, SchemaMismatchError
from phalanx.core.features.batch import FlowBatch
from phalanx.core.features.schema import Column, ColumnKind, FeatureSchema
from phalanx.core.features.stats import (
    FeatureStats,
    class_counts,
    compute_stats,
    empty_stats,
    merge_all,
    merge_stats,
    signed_log1p,
    vector_length,
)
from phalanx.core.features.transform import FeatureTransform
from phalanx.core.taxonomy import CATEGORIES, CATEGORY_INDEX

SCHEMA = FeatureSchema(
    source="test",
    version=1,
    columns=(
        Column("bytes", ColumnKind.NUMERIC, heavy_tailed=True),
        Column("ttl", ColumnKind.NUMERIC),
        Column("win", ColumnKind.NUMERIC, heavy_tailed=True),
        Column("proto", ColumnKind.CATEGORICAL, buckets=8),
        Column("port", ColumnKind.CATEGORICAL, buckets=16),
        Column("src", ColumnKind.IDENTIFIER, reason="address"),
    ),
)
VALUES = st.one_of(
    st.floats(-1e6, 1e9, allow_nan=False, allow_infinity=False),
    st.sampled_from([np.nan, np.inf, -np.inf, 0.0, -1.0]),
)


def make_batch(numeric: np.ndarray, cats: np.ndarray) -> FlowBatch:
    n = numeric.shape[0]
    empty = np.array([""] * n, dtype=object)
    return FlowBatch(SCHEMA, numeric, cats, empty, empty.copy())


@st.composite
def batches_and_splits(draw: st.DrawFn) -> tuple[FlowBatch, list[np.ndarray]]:
    n = draw(st.integers(1, 40))
    numeric = draw(hnp.arrays(np.float64, (n, 3), elements=VALUES))
    cats = np.array(
        draw(
            st.lists(
                st.sampled_from(["6", "17", "1", "443", "53.0", ""]), min_size=2 * n, max_size=2 * n
            )
        ),
        dtype=object,
    ).reshape(n, 2)
    cuts = sorted(draw(st.lists(st.integers(0, n), max_size=4)))
    order = np.random.default_rng(draw(st.integers(0, 2**32 - 1))).permutation(n)
    return make_batch(numeric, cats), np.split(order, cuts)


def assert_stats_close(a: FeatureStats, b: FeatureStats) -> None:
    assert a.n_rows == b.n_rows
    for name in ("count", "missing", "infinite"):
        np.testing.assert_array_equal(getattr(a, name), getattr(b, name))
    for name in ("total", "total_sq"):
        np.testing.assert_allclose(getattr(a, name), getattr(b, name), rtol=1e-9, atol=1e-9)
    np.testing.assert_array_equal(a.minimum, b.minimum)
    np.testing.assert_array_equal(a.maximum, b.maximum)
    for x, y in zip(a.buckets, b.buckets, strict=True):
        np.testing.assert_array_equal(x, y)
    np.testing.assert_array_equal(a.classes, b.classes)


@settings(max_examples=150, deadline=None)
@given(batches_and_splits())
def test_merged_equals_pooled_and_transforms_agree(
    case: tuple[FlowBatch, list[np.ndarray]],
) -> None:
    batch, splits = case
    pooled = compute_stats(batch)
    merged = merge_all([compute_stats(batch.take(s)) for s in splits])
    assert_stats_close(pooled, merged)
    t_pooled = FeatureTransform.fit(pooled).transform(batch)
    t_merged = FeatureTransform.fit(merged).transform(batch)
    np.testing.assert_allclose(t_pooled, t_merged, rtol=1e-5, atol=1e-5)
    # the additive vector alone (secure aggregation) gives the same transform
    summed = sum(compute_stats(batch.take(s)).to_vector() for s in splits)
    from_vec = FeatureStats.from_vector(SCHEMA, np.asarray(summed))
    t_vec = FeatureTransform.fit(from_vec).transform(batch)
    np.testing.assert_allclose(t_pooled, t_vec, rtol=1e-5, atol=1e-5)


def test_counts_missing_and_infinite() -> None:
    numeric = np.array([[1.0, np.nan, np.inf], [-3.0, 64.0, -1.0], [np.nan, 64.0, 2.0]])
    cats = np.array([["6", "443"], ["6", "80"], ["17", "443.0"]], dtype=object)
    batch = FlowBatch(
        SCHEMA,
        numeric,
        cats,
        np.array(["", "", ""], dtype=object),
        np.array(["", "", ""], dtype=object),
        n_infinite=np.array([2, 0, 0]),
    )
    s = compute_stats(batch)
    assert s.count.tolist() == [2, 2, 2]
    assert s.missing.tolist() == [1, 1, 1]
    assert s.infinite.tolist() == [2, 0, 1]
    np.testing.assert_allclose(s.total[0], signed_log1p(np.array([1.0, -3.0])).sum())
    assert s.minimum[0] == pytest.approx(-np.log1p(3.0))
    assert [int(b.sum()) for b in s.buckets] == [3, 3]
    assert s.buckets[1].max() == 2  # "443" and "443.0" share a bucket


def test_vector_roundtrip_and_length() -> None:
    rng = np.random.default_rng(1)
    batch = make_batch(rng.normal(size=(20, 3)), np.full((20, 2), "6", dtype=object))
    s = compute_stats(batch)
    v = s.to_vector()
    assert v.shape == (vector_length(SCHEMA),)
    back = FeatureStats.from_vector(SCHEMA, v)
    np.testing.assert_array_equal(back.count, s.count)
    np.testing.assert_array_equal(back.total, s.total)
    assert np.isnan(back.minimum).all()  # not available through the additive form
    with pytest.raises(SchemaMismatchError):
        FeatureStats.from_vector(SCHEMA, v[:-1])


def test_labelled_rows_are_counted_per_category_and_summed() -> None:
    """The class counts travel in the additive vector (what secure aggregation sums) and the
    JSON form; unlabelled or unknown categories are not counted."""
    n = 6
    category = np.array(["benign", "dos", "dos", "", "no-such-class", "web-attack"], dtype=object)
    batch = FlowBatch(SCHEMA, np.ones((n, 3)), np.full((n, 2), "6", dtype=object),
                      category.copy(), category)  # fmt: skip
    s = compute_stats(batch, classes=True)
    assert compute_stats(batch).classes.tolist() == [0] * len(CATEGORIES)  # only when asked
    expected = np.zeros(len(CATEGORIES), dtype=np.int64)
    for name, count in (("benign", 1), ("dos", 2), ("web-attack", 1)):
        expected[CATEGORY_INDEX[name]] = count
    np.testing.assert_array_equal(s.classes, expected)
    np.testing.assert_array_equal(class_counts(category), expected)
    twice = FeatureStats.from_vector(SCHEMA, s.to_vector() + s.to_vector())
    np.testing.assert_array_equal(twice.classes, 2 * expected)
    np.testing.assert_array_equal(merge_stats(s, s).classes, 2 * expected)
    np.testing.assert_array_equal(FeatureStats.from_dict(s.to_dict()).classes, expected)
    older = {k: v for k, v in s.to_dict().items() if k != "classes"}  # written before them
    assert FeatureStats.from_dict(older).classes.tolist() == [0] * len(CATEGORIES)
    assert empty_stats(SCHEMA).classes.tolist() == [0] * len(CATEGORIES)


def test_json_roundtrip() -> None:
    batch = make_batch(np.array([[1.0, np.nan, 3.0]]), np.array([["6", "80"]], dtype=object))
    s = compute_stats(batch)
    back = FeatureStats.from_dict(json.loads(json.dumps(s.to_dict())))
    assert_stats_close(s, back)
    assert np.isnan(back.minimum[1])


def test_refuses_other_schema() -> None:
    other = FeatureSchema("other", 1, SCHEMA.columns)
    with pytest.raises(SchemaMismatchError):
        merge_stats(empty_stats(SCHEMA), empty_stats(other))
    with pytest.raises(ConfigError):
        merge_all([])
    d = empty_stats(SCHEMA).to_dict()
    d["schema_hash"] = "0" * 64
    with pytest.raises(SchemaMismatchError):
        FeatureStats.from_dict(d)


def test_empty_is_identity() -> None:
    batch = make_batch(np.array([[5.0, 1.0, 2.0]]), np.array([["6", "80"]], dtype=object))
    s = compute_stats(batch)
    assert_stats_close(merge_stats(empty_stats(SCHEMA), s), s)
