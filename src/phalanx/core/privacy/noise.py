"""Noise for differential privacy: where the randomness comes from, and how it is drawn.

Production noise comes from :func:`secure_generator`: a fresh ``numpy.random.Generator`` over a
Philox bit generator keyed with 128 bits from the operating system's CSPRNG (:mod:`secrets`) on
every call, so no noise stream is ever reused or predictable from an earlier one. A seeded
generator (tests, reproducible benchmarks) is allowed but announced with a
:class:`SeededNoiseWarning`, after Opacus' ``_generate_noise`` (Yousefpour et al., "Opacus:
User-Friendly Differential Privacy Library in PyTorch", 2021): seeded noise gives no privacy.

Mechanisms
----------
* :func:`gaussian_noise`: the Gaussian mechanism of DP-SGD (Abadi et al., CCS 2016) and
  DP-FedAvg (McMahan et al., "Learning Differentially Private Recurrent Language Models",
  ICLR 2018).
* :func:`discrete_gaussian`: integer noise for distributed DP under secure aggregation; exact
  rejection sampler of Canonne, Kamath and Steinke, "The Discrete Gaussian for Differential
  Privacy", NeurIPS 2020 (Algorithm 3, discrete Laplace proposals), vectorized over numpy
  arrays. Integer noise avoids the floating-point attacks on continuous samplers (Mironov,
  "On Significance of the Least Significant Bits for Differential Privacy", CCS 2012).
"""

from __future__ import annotations

import math
import secrets
import warnings

import numpy as np
from numpy.typing import NDArray

from phalanx.core.errors import PrivacyError


class SeededNoiseWarning(UserWarning):
    """Privacy noise is drawn from a seeded (predictable) generator: for tests only."""


def secure_generator() -> np.random.Generator:
    """A generator keyed from the OS CSPRNG, fresh on every call (production noise)."""
    return np.random.Generator(np.random.Philox(key=secrets.randbits(128)))


def noise_generator(seed: int | None) -> np.random.Generator:
    """The noise generator for ``seed``: secure when ``None``, else seeded with a loud warning.

    Parameters
    ----------
    seed:
        ``None`` in production. An integer makes the noise reproducible, which removes the
        privacy guarantee; a :class:`SeededNoiseWarning` says so every time.
    """
    if seed is None:
        return secure_generator()
    warnings.warn(
        f"differential-privacy noise is drawn from a generator seeded with {seed}: the noise"
        " is predictable and the run has NO privacy guarantee; use a seed only in tests",
        SeededNoiseWarning,
        stacklevel=2,
    )
    return np.random.Generator(np.random.Philox(key=int(seed) % (1 << 128)))


def _check_std(std: float, what: str) -> float:
    value = float(std)
    if not (math.isfinite(value) and value >= 0):
        raise PrivacyError(
            f"{what} must be a finite number >= 0; found {std!r}",
            hint="check the noise multiplier and clipping norm of the DP configuration",
        )
    return value


def gaussian_noise(
    shape: tuple[int, ...], std: float, rng: np.random.Generator
) -> NDArray[np.float64]:
    """Gaussian noise ``N(0, std^2)`` of ``shape`` in float64.

    For the Gaussian mechanism ``std = noise_multiplier * l2_sensitivity`` (McMahan et al.,
    ICLR 2018; Abadi et al., CCS 2016).
    """
    std = _check_std(std, "Gaussian noise standard deviation")
    if std == 0.0:
        return np.zeros(shape, dtype=np.float64)
    return rng.normal(0.0, std, size=shape)


def _discrete_laplace(t: int, size: int, rng: np.random.Generator) -> NDArray[np.int64]:
    """Discrete Laplace with scale ``t``: ``P(y) ∝ exp(-|y| / t)`` (difference of geometrics)."""
    p = -math.expm1(-1.0 / t)  # success probability 1 - exp(-1/t)
    g1 = rng.geometric(p, size=size) - 1
    g2 = rng.geometric(p, size=size) - 1
    return (g1 - g2).astype(np.int64)


def discrete_gaussian(size: int, sigma: float, rng: np.random.Generator) -> NDArray[np.int64]:
    """``size`` independent draws of the discrete Gaussian ``N_Z(0, sigma^2)``.

    ``P(x) ∝ exp(-x^2 / (2 sigma^2))`` on the integers. Canonne, Kamath and Steinke (NeurIPS
    2020), Algorithm 3: propose ``Y`` from the discrete Laplace of scale ``t = floor(sigma) + 1``
    and accept with probability ``exp(-(|Y| - sigma^2/t)^2 / (2 sigma^2))``; the expected number
    of proposals per draw is below 2 for every ``sigma``. The acceptance test uses floating point
    (as the TensorFlow Federated implementation does), so the law is exact up to float64
    rounding of that probability.

    Parameters
    ----------
    size:
        Number of draws (>= 0).
    sigma:
        The scale (>= 0; 0 gives zeros).
    rng:
        Noise source: :func:`secure_generator` in production.

    Returns
    -------
    numpy.ndarray
        int64 draws.
    """
    sigma = _check_std(sigma, "discrete Gaussian scale sigma")
    if size < 0:
        raise PrivacyError(f"discrete Gaussian sample size must be >= 0; found {size}")
    out = np.zeros(size, dtype=np.int64)
    if sigma == 0.0 or size == 0:
        return out
    t = math.floor(sigma) + 1
    todo = np.arange(size)
    while todo.size:
        y = _discrete_laplace(t, todo.size, rng)
        log_accept = -((np.abs(y) - sigma * sigma / t) ** 2) / (2.0 * sigma * sigma)
        accept = rng.random(todo.size) < np.exp(log_accept)
        out[todo[accept]] = y[accept]
        todo = todo[~accept]
    return out
