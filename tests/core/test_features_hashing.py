"""Stable bucket hashing: same bucket everywhere, canonical numeric spellings."""

from __future__ import annotations

import subprocess
import sys
import zlib

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from phalanx.core.errors import ConfigError
from phalanx.core.features.hashing import bucket_of, canonical, hash_buckets


def test_bucket_is_crc32_of_utf8() -> None:
    assert bucket_of("443", 128) == zlib.crc32(b"443") % 128


def test_canonical_forms() -> None:
    assert canonical("443.0") == "443"
    assert canonical(" 6 ") == "6"
    assert canonical("7.178") == "7.178"
    assert canonical(None) == ""
    assert canonical("-1.0") == "-1"
    assert canonical("a.0") == "a.0"


def test_same_bucket_in_another_process() -> None:
    code = "from phalanx.core.features.hashing import bucket_of; print(bucket_of('TLS', 64))"
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout
    assert int(out) == bucket_of("TLS", 64)


@given(st.lists(st.text(max_size=8), max_size=50), st.integers(1, 300))
def test_vectorized_matches_scalar(values: list[str], buckets: int) -> None:
    expected = [bucket_of(v, buckets) for v in values]
    as_obj = np.array(values, dtype=object)
    assert hash_buckets(as_obj, buckets).tolist() == expected
    if values:
        assert hash_buckets(np.array(values, dtype=str), buckets).tolist() == expected


def test_object_array_with_none_and_2d_shape() -> None:
    vals = np.array([["6", None], ["6.0", "17"]], dtype=object)
    out = hash_buckets(vals, 16)
    assert out.shape == (2, 2)
    assert out[0, 0] == out[1, 0]
    assert out[0, 1] == bucket_of("", 16)


def test_bad_bucket_count() -> None:
    with pytest.raises(ConfigError):
        hash_buckets(np.array(["a"]), 0)
