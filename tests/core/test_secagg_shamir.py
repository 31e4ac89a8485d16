"""Shamir sharing: any t shares reconstruct, t-1 do not, corrupted shares are detected."""

from __future__ import annotations

import itertools

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phalanx.core.errors import SecAggError
from phalanx.core.secagg import shamir


def _rng(seed: int) -> shamir.RandomBytes:
    return np.random.default_rng(seed).bytes


@settings(max_examples=40, deadline=None)
@given(
    secret=st.binary(min_size=32, max_size=32),
    n=st.integers(2, 9),
    data=st.data(),
)
def test_any_t_shares_reconstruct_and_t_minus_1_do_not(
    secret: bytes, n: int, data: st.DataObject
) -> None:
    t = data.draw(st.integers(1, n))
    xs = data.draw(st.lists(st.integers(1, 10_000), min_size=n, max_size=n, unique=True))
    shares = shamir.split(secret, xs, t, _rng(data.draw(st.integers(0, 2**32))))
    subset = data.draw(st.permutations(xs)).copy()[:t]
    assert shamir.reconstruct({x: shares[x] for x in subset}, t, 32) == secret
    if t > 1:
        fewer = {x: shares[x] for x in subset[:-1]}
        with pytest.raises(SecAggError, match="cannot reconstruct"):
            shamir.reconstruct(fewer, t, 32)
        # interpolating t-1 shares as if they were enough gives a value unrelated to the secret
        try:
            wrong = shamir.reconstruct(fewer, t - 1, 32)
        except SecAggError:
            wrong = None
        assert wrong != secret


def test_t_minus_1_shares_are_consistent_with_every_secret() -> None:
    """Information-theoretic hiding: t-1 shares fit a polynomial through any candidate secret."""
    t, xs = 3, [1, 2, 3, 4]
    shares = shamir.split(b"\x01" * 32, xs, t, _rng(1))
    seen = {(1, shares[1]), (2, shares[2])}
    for candidate in (0, 5, 2**200):
        # the unique degree-2 polynomial through (0, candidate) and the two shares exists
        pts = [(0, candidate), *seen]
        value_at_3 = shamir._interpolate(pts, 3)
        assert shamir._interpolate([*seen, (3, value_at_3)], 0) == candidate


def test_a_corrupted_share_is_detected_when_more_than_t_arrive() -> None:
    xs = list(range(1, 7))
    shares = shamir.split(b"k" * 32, xs, 3, _rng(2))
    shares[5] = (shares[5] + 1) % shamir.PRIME
    with pytest.raises(SecAggError, match="inconsistent"):
        shamir.reconstruct(shares, 3, 32)


@pytest.mark.parametrize(
    ("secret", "xs", "t", "match"),
    [
        (b"x" * 65, [1, 2], 1, "at most 64"),
        (b"x", [1, 2], 3, "out of range"),
        (b"x", [1, 1], 1, "distinct"),
        (b"x", [0, 1], 1, "distinct"),
    ],
)
def test_bad_sharing_requests_are_refused(secret: bytes, xs: list[int], t: int, match: str) -> None:
    with pytest.raises(SecAggError, match=match):
        shamir.split(secret, xs, t, _rng(0))


def test_share_bytes_round_trip_and_reject_bad_lengths() -> None:
    shares = shamir.split(b"s" * 32, [1, 2, 3], 2, _rng(3))
    for v in shares.values():
        assert shamir.share_from_bytes(shamir.share_to_bytes(v)) == v
    with pytest.raises(SecAggError, match="66"):
        shamir.share_from_bytes(b"\x00" * 10)
    with pytest.raises(SecAggError, match="field element"):
        shamir.share_from_bytes(b"\xff" * 66)


def test_every_subset_of_size_t_gives_the_same_secret() -> None:
    xs = [3, 9, 11, 20, 21]
    shares = shamir.split(b"\x07" * 32, xs, 3, _rng(4))
    for subset in itertools.combinations(xs, 3):
        assert shamir.reconstruct({x: shares[x] for x in subset}, 3, 32) == b"\x07" * 32
