"""Fixed-point encoding: one-step error, exact modular sums, overflow refused at configuration."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from phalanx.core.errors import ConfigError, SecAggError
from phalanx.core.secagg.encoding import FixedPoint, decode_wide_sum, encode_wide

finite = st.floats(-10.0, 10.0, allow_nan=False, allow_infinity=False)


@settings(max_examples=60, deadline=None)
@given(values=arrays(np.float64, st.integers(0, 50), elements=finite), seed=st.integers(0, 99))
def test_dequantize_error_is_within_one_step(values: np.ndarray, seed: int) -> None:
    enc = FixedPoint.fitting(20, 10.0)
    for rng in (None, np.random.default_rng(seed)):
        back = enc.decode_sum(enc.to_ring(enc.encode(values, rng)))
        assert np.all(np.abs(back - values) <= enc.step * (1 + 1e-9))


@settings(max_examples=40, deadline=None)
@given(
    n=st.integers(1, 30),
    seed=st.integers(0, 2**16),
    bits=st.sampled_from([32, 64]),
)
def test_modular_sum_of_encodings_decodes_to_the_quantized_sum(
    n: int, seed: int, bits: int
) -> None:
    rng = np.random.default_rng(seed)
    enc = FixedPoint.fitting(n, 5.0, bits)
    values = rng.uniform(-5, 5, size=(n, 17))
    qs = [enc.encode(v, rng) for v in values]
    total = np.zeros(17, dtype=enc.to_ring(qs[0]).dtype)
    for q in qs:
        total += enc.to_ring(q)
    exact = np.sum(qs, axis=0)
    np.testing.assert_array_equal(total, enc.to_ring(exact))  # the modular sum is exact
    np.testing.assert_allclose(enc.decode_sum(total), exact / enc.scale, rtol=1e-12)
    err = np.abs(enc.decode_sum(total) - values.sum(axis=0))
    assert np.all(err <= n * enc.step + 1e-12 * np.abs(values).sum(axis=0))


def test_stochastic_rounding_is_unbiased() -> None:
    enc = FixedPoint(scale=1.0, bound=2.0)
    rng = np.random.default_rng(0)
    q = enc.encode(np.full(200_000, 0.25), rng)
    assert abs(q.mean() - 0.25) < 0.01


def test_overflow_is_refused_at_configuration_naming_the_numbers() -> None:
    enc = FixedPoint(scale=2.0**20, bound=100.0)
    enc.check_capacity(20)
    with pytest.raises(ConfigError, match=r"1000 participants x \(clip range 100.0") as err:
        enc.check_capacity(1000)
    assert "lower the scale" in str(err.value)
    with pytest.raises(ConfigError, match="no fixed-point scale"):
        FixedPoint.fitting(2**31, 100.0)


def test_values_beyond_the_bound_or_not_finite_are_refused() -> None:
    enc = FixedPoint(scale=10.0, bound=1.0)
    with pytest.raises(SecAggError, match="exceeds the encoding bound"):
        enc.encode(np.array([1.5]))
    with pytest.raises(SecAggError, match="NaN"):
        enc.encode(np.array([np.nan]))
    with pytest.raises(ConfigError, match="2\\^32 or 2\\^64"):
        FixedPoint(scale=1.0, bound=1.0, bits=16)


@settings(max_examples=30, deadline=None)
@given(
    parts=st.lists(
        arrays(np.float64, 6, elements=st.floats(-1e15, 1e15, allow_nan=False)),
        min_size=1,
        max_size=8,
    )
)
def test_wide_encoding_sums_large_statistics_exactly_to_a_fine_step(
    parts: list[np.ndarray],
) -> None:
    total = np.zeros(24, dtype=np.uint64)
    for p in parts:
        total += encode_wide(p, 8)
    got = decode_wide_sum(total, 6)
    expected = np.sum(parts, axis=0)
    assert np.all(np.abs(got - expected) <= len(parts) * 2.0**-24 + 1e-12 * np.abs(expected))


def test_wide_encoding_refuses_values_that_could_wrap() -> None:
    with pytest.raises(SecAggError, match="too large"):
        encode_wide(np.array([1e32]), 10)
    with pytest.raises(SecAggError, match="expected 8 for 2"):
        decode_wide_sum(np.zeros(4, dtype=np.uint64), 2)
