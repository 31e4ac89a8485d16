"""The fitted transform: shapes, names, scaling, imputation, clipping, schema checks."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from phalanx.core.errors import ModelError, SchemaMismatchError
from phalanx.core.features.batch import FlowBatch
from phalanx.core.features.hashing import bucket_of
from phalanx.core.features.schema import Column, ColumnKind, FeatureSchema
from phalanx.core.features.stats import compute_stats
from phalanx.core.features.transform import FeatureTransform

SCHEMA = FeatureSchema(
    source="test",
    version=1,
    columns=(
        Column("bytes", ColumnKind.NUMERIC, heavy_tailed=True),
        Column("ttl", ColumnKind.NUMERIC),
        Column("flag", ColumnKind.NUMERIC),
        Column("proto", ColumnKind.CATEGORICAL, buckets=4),
    ),
)


def batch(numeric: np.ndarray, cats: list[str], schema: FeatureSchema = SCHEMA) -> FlowBatch:
    n = numeric.shape[0]
    e = np.array([""] * n, dtype=object)
    return FlowBatch(schema, numeric, np.array(cats, dtype=object).reshape(n, 1), e, e.copy())


@pytest.fixture
def fitted(rng: np.random.Generator) -> tuple[FeatureTransform, FlowBatch]:
    n = 500
    numeric = np.column_stack(
        [rng.lognormal(6, 2, n), rng.integers(30, 128, n).astype(float), np.full(n, 3.0)]
    )
    b = batch(numeric, rng.choice(["6", "17", "1"], n).tolist())
    return FeatureTransform.fit(compute_stats(b)), b


def test_shape_names_and_standardization(fitted: tuple[FeatureTransform, FlowBatch]) -> None:
    tr, b = fitted
    x = tr.transform(b)
    assert x.dtype == np.float32
    assert x.shape == (len(b), 3 + 4) == (len(b), tr.n_features)
    assert tr.feature_names == ("bytes", "ttl", "flag", "proto#0", "proto#1", "proto#2", "proto#3")
    np.testing.assert_allclose(x[:, :2].mean(axis=0), 0.0, atol=1e-4)
    np.testing.assert_allclose(x[:, :2].std(axis=0), 1.0, atol=1e-3)
    assert np.all(x[:, 2] == 0.0)  # constant column: no division by zero
    assert np.all(x[:, 3:].sum(axis=1) == 1.0)
    assert x[0, 3 + bucket_of(b.categorical[0, 0], 4)] == 1.0


def test_missing_infinite_and_clip(fitted: tuple[FeatureTransform, FlowBatch]) -> None:
    tr, _ = fitted
    x = tr.transform(batch(np.array([[np.nan, np.inf, 3.0], [1e300, -1e300, 3.0]]), ["6", "6"]))
    assert x[0, 0] == 0.0
    assert x[0, 1] == 0.0
    assert x[1, 0] == pytest.approx(tr.clip)
    assert x[1, 1] == -tr.clip
    assert np.isfinite(x).all()


def test_json_roundtrip(fitted: tuple[FeatureTransform, FlowBatch]) -> None:
    tr, b = fitted
    back = FeatureTransform.from_dict(json.loads(json.dumps(tr.to_dict())))
    np.testing.assert_array_equal(back.transform(b), tr.transform(b))
    assert back.schema_hash == tr.schema_hash


def test_refuses_other_schema(fitted: tuple[FeatureTransform, FlowBatch]) -> None:
    tr, b = fitted
    other = FeatureSchema("other", 2, SCHEMA.columns)
    with pytest.raises(SchemaMismatchError):
        tr.transform(batch(b.numeric, b.categorical[:, 0].tolist(), other))
    d = tr.to_dict()
    d["schema_hash"] = "f" * 64
    with pytest.raises(SchemaMismatchError):
        FeatureTransform.from_dict(d)
    d = tr.to_dict()
    d["mean"] = [0.0]
    with pytest.raises(ModelError):
        FeatureTransform.from_dict(d)


def test_negative_heavy_values_keep_sign() -> None:
    b = batch(np.array([[-1.0, 1.0, 1.0], [1.0, 2.0, 1.0], [-1.0, 3.0, 1.0]]), ["6"] * 3)
    x = FeatureTransform.fit(compute_stats(b)).transform(b)
    assert x[0, 0] < 0 < x[1, 0]


FLOAT32_VALUES = st.one_of(
    st.floats(-(2.0**100), 2.0**100, width=32),
    st.sampled_from([np.nan, np.inf, -np.inf, 0.0, -1.0]),
)


@settings(max_examples=80, deadline=None)
@given(
    numeric=st.integers(1, 300).flatmap(
        lambda n: hnp.arrays(np.float32, (n, 3), elements=FLOAT32_VALUES)
    ),
    seed=st.integers(0, 2**32 - 1),
)
def test_float32_batch_gives_the_float64_batch_results(numeric: np.ndarray, seed: int) -> None:
    """The same values in float32 or float64: the same statistics and the same transform, bit
    for bit (both are computed in float64; widening float32 is exact)."""
    cats = np.random.default_rng(seed).choice(["6", "17", "1"], len(numeric)).tolist()
    b32, b64 = batch(numeric, cats), batch(numeric.astype(np.float64), cats)
    assert b32.numeric.dtype == np.float32 and b64.numeric.dtype == np.float64
    s32, s64 = compute_stats(b32), compute_stats(b64)
    np.testing.assert_array_equal(s32.to_vector(), s64.to_vector())
    np.testing.assert_array_equal(s32.minimum, s64.minimum)
    tr = FeatureTransform.fit(s32)
    x32, x64 = tr.transform(b32), tr.transform(b64)
    assert x32.dtype == x64.dtype == np.float32
    np.testing.assert_array_equal(x32, x64)


@settings(max_examples=80, deadline=None)
@given(
    numeric=st.integers(2, 300).flatmap(
        lambda n: hnp.arrays(np.float64, (n, 3), elements=st.floats(-1e12, 1e12) | st.just(np.nan))
    )
)
def test_float64_data_rounded_to_float32_transforms_within_its_rounding(
    numeric: np.ndarray,
) -> None:
    """Storing float64 flows as float32 moves each standardized value by at most the input's
    rounding (relative 2**-24) carried through the transform, plus the output's own rounding."""
    cats = ["6"] * len(numeric)
    tr = FeatureTransform.fit(compute_stats(batch(numeric, cats)))
    x64 = tr.transform(batch(numeric, cats))[:, :3].astype(np.float64)
    x32 = tr.transform(batch(numeric.astype(np.float32), cats))[:, :3].astype(np.float64)
    size = np.nan_to_num(np.abs(numeric))
    heavy = np.array([True, False, False])
    # d/dx of the signed log is 1 / (1 + |x|): a relative input error stays below 2**-24 there.
    moved = np.where(heavy, 2.0**-24, size * 2.0**-24) / tr.scale
    bound = moved + 2.0**-22 * tr.clip
    assert np.all(np.abs(x32 - x64) <= bound)
