"""Noise sources: secure by default, seeded only with a warning; the discrete Gaussian's law."""

from __future__ import annotations

import math

import numpy as np
import pytest

from phalanx.core.errors import PrivacyError
from phalanx.core.privacy import (
    SeededNoiseWarning,
    discrete_gaussian,
    gaussian_noise,
    noise_generator,
    secure_generator,
)


def test_secure_generators_are_fresh_each_call() -> None:
    a = secure_generator().integers(0, 2**63, size=4)
    b = secure_generator().integers(0, 2**63, size=4)
    assert not np.array_equal(a, b)


def test_seeded_noise_warns_loudly_and_is_reproducible() -> None:
    with pytest.warns(SeededNoiseWarning, match="NO privacy guarantee"):
        a = noise_generator(7).normal(size=3)
    with pytest.warns(SeededNoiseWarning):
        b = noise_generator(7).normal(size=3)
    np.testing.assert_array_equal(a, b)


def test_unseeded_noise_does_not_warn() -> None:
    noise_generator(None).normal(size=3)  # filterwarnings=error would fail on any warning


def test_gaussian_noise_has_the_requested_std(rng: np.random.Generator) -> None:
    x = gaussian_noise((200_000,), 2.5, rng)
    assert abs(x.mean()) < 0.03
    assert abs(x.std() - 2.5) < 0.02
    assert np.all(gaussian_noise((3,), 0.0, rng) == 0)
    with pytest.raises(PrivacyError, match="standard deviation"):
        gaussian_noise((3,), -1.0, rng)


def _pmf(sigma: float, support: np.ndarray) -> np.ndarray:
    ks = np.arange(-int(12 * sigma) - 20, int(12 * sigma) + 21)
    norm = np.exp(-(ks.astype(np.float64) ** 2) / (2 * sigma**2)).sum()
    out: np.ndarray = np.exp(-(support.astype(np.float64) ** 2) / (2 * sigma**2)) / norm
    return out


@pytest.mark.parametrize("sigma", [0.6, 1.0, 3.7, 20.0])
def test_discrete_gaussian_matches_its_pmf(sigma: float, rng: np.random.Generator) -> None:
    n = 200_000
    x = discrete_gaussian(n, sigma, rng)
    assert x.dtype == np.int64
    support = np.arange(-int(3 * sigma) - 1, int(3 * sigma) + 2)
    expected = _pmf(sigma, support) * n
    observed = np.array([(x == k).sum() for k in support])
    # every central cell within 5 standard deviations of its binomial count
    sd = np.sqrt(expected * (1 - expected / n))
    assert np.all(np.abs(observed - expected) < 5 * sd + 1)
    # variance: for sigma >= 1 it is within 1e-6 of sigma^2 (Canonne et al., Prop. 19)
    var = float(np.sum(_pmf(sigma, np.arange(-400, 401)) * np.arange(-400, 401) ** 2))
    assert abs(x.var() - var) < 6 * var * math.sqrt(2 / n) + 1e-3


def test_discrete_gaussian_edge_cases(rng: np.random.Generator) -> None:
    assert discrete_gaussian(0, 3.0, rng).shape == (0,)
    assert np.all(discrete_gaussian(5, 0.0, rng) == 0)
    with pytest.raises(PrivacyError, match="sigma"):
        discrete_gaussian(5, math.nan, rng)
