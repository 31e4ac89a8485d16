"""FlowBatch's numeric dtype rule: float64 and float32 kept, the rest converted or refused."""

from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

from phalanx.core.errors import SchemaMismatchError
from phalanx.core.features.batch import FlowBatch, as_numeric
from phalanx.core.features.schema import Column, ColumnKind, FeatureSchema

SCHEMA = FeatureSchema(
    source="test",
    version=1,
    columns=(
        Column("bytes", ColumnKind.NUMERIC, heavy_tailed=True),
        Column("ttl", ColumnKind.NUMERIC),
        Column("proto", ColumnKind.CATEGORICAL, buckets=4),
    ),
)
FLOATS = st.sampled_from([np.float32, np.float64])


def make(numeric: np.ndarray) -> FlowBatch:
    n = numeric.shape[0]
    labels = np.array([f"l{i}" for i in range(n)], dtype=object)
    cats = np.array([str(i % 3) for i in range(n)], dtype=object).reshape(n, 1)
    return FlowBatch(
        SCHEMA, numeric, cats, labels, labels.copy(), identifiers={"src": np.arange(n)}
    )


def numeric_matrices(dtype: type[np.floating], max_rows: int = 30) -> st.SearchStrategy[np.ndarray]:
    return st.integers(0, max_rows).flatmap(
        lambda n: hnp.arrays(
            dtype,
            (n, 2),
            elements=st.one_of(
                st.floats(-(2.0**100), 2.0**100, width=32 if dtype is np.float32 else 64),
                st.just(np.nan),
            ),
        )
    )


@settings(max_examples=60, deadline=None)
@given(data=st.data(), dtype=FLOATS)
def test_take_keeps_dtype_and_rows(data: st.DataObject, dtype: type[np.floating]) -> None:
    numeric = data.draw(numeric_matrices(dtype))
    b = make(numeric)
    assert b.numeric.dtype == dtype
    assert b.numeric is numeric  # kept as given: no copy
    n = len(b)
    picks = st.lists(st.integers(0, n - 1), max_size=10) if n else st.just([])
    index = np.array(data.draw(picks), dtype=np.int64)
    taken = b.take(index)
    assert taken.numeric.dtype == dtype
    np.testing.assert_array_equal(taken.numeric, numeric[index])
    np.testing.assert_array_equal(taken.identifiers["src"], index)
    mask = data.draw(hnp.arrays(np.bool_, n))
    assert b.take(mask).numeric.dtype == dtype
    assert len(b.take(mask)) == int(mask.sum())


@settings(max_examples=60, deadline=None)
@given(data=st.data(), first=FLOATS, second=FLOATS)
def test_concat_keeps_a_common_dtype_and_widens_a_mix(
    data: st.DataObject, first: type[np.floating], second: type[np.floating]
) -> None:
    a = make(data.draw(numeric_matrices(first)))
    b = make(data.draw(numeric_matrices(second)))
    both = FlowBatch.concat([a, b])
    expected = first if first is second else np.float64
    assert both.numeric.dtype == expected
    assert len(both) == len(a) + len(b)
    # Widening float32 to float64 is exact: every value comes back bit for bit.
    np.testing.assert_array_equal(both.numeric[: len(a)], a.numeric.astype(expected))
    np.testing.assert_array_equal(both.numeric[len(a) :], b.numeric.astype(expected))


def test_float16_is_widened_to_float32_exactly() -> None:
    half = np.array([[1.5, np.nan], [-65504.0, 0.000061035]], dtype=np.float16)
    b = make(half)
    assert b.numeric.dtype == np.float32
    np.testing.assert_array_equal(b.numeric, half.astype(np.float32))


@pytest.mark.parametrize("dtype", [np.int8, np.int64, np.uint32, np.bool_])
def test_integers_and_booleans_become_float64(dtype: type[np.generic]) -> None:
    raw = np.array([[1, 0], [0, 1], [1, 1]], dtype=dtype)
    b = make(raw)
    assert b.numeric.dtype == np.float64
    np.testing.assert_array_equal(b.numeric, raw.astype(np.float64))
    big = np.array([[2**53, -(2**53)]], dtype=np.int64)  # exact up to 2**53
    assert as_numeric(big)[0, 0] == 2.0**53


@pytest.mark.parametrize(
    "matrix",
    [
        np.ones((2, 2), dtype=np.complex128),
        np.array([["1", "2"]], dtype=object),
        np.array([["1", "2"]]),
        np.zeros((2, 2), dtype="datetime64[s]"),
    ],
)
def test_non_real_matrices_are_refused_naming_the_dtype(matrix: np.ndarray) -> None:
    with pytest.raises(
        SchemaMismatchError, match=rf"'test'.*found dtype {re.escape(str(matrix.dtype))}"
    ) as err:
        make(matrix)
    assert "astype" in str(err.value)  # what to do


def test_a_matrix_that_is_not_two_dimensional_is_refused() -> None:
    with pytest.raises(SchemaMismatchError, match=r"two-dimensional.*found shape \(4,\)"):
        as_numeric(np.zeros(4), source="flows.csv")
