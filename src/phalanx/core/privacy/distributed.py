"""Distributed DP under secure aggregation: integer noise shares and what they cost.

Kairouz, Liu and Steinke, "The Distributed Discrete Gaussian Mechanism for Federated Learning with
Secure Aggregation", ICML 2021 (DDGauss). Each of ``m`` participants clips its update to L2 norm
``C``, encodes it as integers at ``scale`` units per 1.0 (secure aggregation's fixed-point
encoding), and adds discrete Gaussian noise ``N_Z(0, sigma_i^2)`` before masking; the masked sum
then carries ``m`` noise shares and the coordinator never sees an un-noised sum.

The sum of discrete Gaussians is not itself a discrete Gaussian; Proposition 14 of the paper
bounds its Rényi DP by ``alpha/2 * (l2^2 + 2 l1 tau + tau^2 d)`` with
``l2 = Delta_2 / (sqrt(m) sigma_i)``, ``l1 = Delta_1 / (sqrt(m) sigma_i)`` and
``tau = 10 sum_{k=1}^{m-1} exp(-2 pi^2 sigma_i^2 k / (k + 1))``, i.e. a ``rho``-zCDP mechanism
(Bun and Steinke, TCC 2016) with ``rho`` half the bracket; :func:`distributed_event` returns it.
Rounding to integers can grow the norm by at most ``sqrt(d) / 2`` per coordinate set, so the
integer-domain sensitivity is ``Delta_2 = C * scale + sqrt(d)`` (a deterministic bound) and
``Delta_1 <= min(Delta_2^2, sqrt(d) Delta_2)`` for integer vectors.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
from numpy.typing import NDArray

from phalanx.core.errors import PrivacyError
from phalanx.core.privacy.noise import discrete_gaussian, noise_generator, secure_generator
from phalanx.core.privacy.spec import DPTaskSpec, PrivacyEvent
from phalanx.core.secagg.params import InstanceParams
from phalanx.core.types import Weights

DEFAULT_MIN_SCALE = 2.0**16
"""The coarsest fixed-point scale a participant accepts for distributed noise (``dp.min_scale``)."""

MAX_PARAMETERS = 10**6
"""Model size the calibration headroom of :func:`rounding_headroom` is computed for."""


def rounding_headroom(scale: float = DEFAULT_MIN_SCALE) -> float:
    """Factor to raise a Gaussian-calibrated noise multiplier by for the discrete mechanism.

    Rounding to integers grows the sensitivity from ``C s`` to ``C s + sqrt(d)``: relative
    ``1 + sqrt(d) / (C s)``, at most ``1 + 1000 / s`` for ``C >= 1`` (the secure-aggregation
    sensitivity ``sqrt(C^2 + 1)`` is) and ``d <= 10^6``; the ``tau`` terms of Kairouz et al.
    are negligible at these scales.
    """
    return 1.0 + math.sqrt(MAX_PARAMETERS) / scale


def integer_sensitivity(clip: float, scale: float, dim: int) -> tuple[float, float]:
    """``(Delta_2, Delta_1)`` of one participant's rounded, clipped update in integer units."""
    if dim < 1 or not (math.isfinite(scale) and scale > 0):
        raise PrivacyError(f"encoding needs dim >= 1 and scale > 0; found {dim}, {scale}")
    l2 = clip * scale + math.sqrt(dim)
    return l2, min(l2 * l2, math.sqrt(dim) * l2)


def local_sigma(noise_multiplier: float, clip: float, scale: float, participants: int) -> float:
    """Each participant's discrete Gaussian scale (integer units).

    The ``participants`` shares add up to a total std of ``noise_multiplier * clip * scale``:
    ``sigma_i = noise_multiplier * clip * scale / sqrt(participants)``.
    """
    if participants < 1:
        raise PrivacyError(f"distributed DP needs >= 1 participant; found {participants}")
    return noise_multiplier * clip * scale / math.sqrt(participants)


def ddgauss_rho(sigma: float, participants: int, l2: float, l1: float, dim: int) -> float:
    """``rho`` of a sum of ``participants`` ``N_Z(0, sigma^2)`` shares (Kairouz et al., Prop. 14)

    ``l2``, ``l1``: the integer-domain sensitivities; ``dim``: the vector length.
    """
    if sigma <= 0:
        raise PrivacyError(f"discrete Gaussian scale must be > 0; found {sigma}")
    tau = 10.0 * sum(
        math.exp(-2.0 * math.pi**2 * sigma**2 * k / (k + 1)) for k in range(1, participants)
    )
    denom = math.sqrt(participants) * sigma
    l2s, l1s = l2 / denom, l1 / denom
    return 0.5 * (l2s * l2s + 2.0 * l1s * tau + tau * tau * dim)


def distributed_event(spec: DPTaskSpec, scale: float, dim: int) -> PrivacyEvent:
    """One round of DDGauss as a zCDP event, assuming ``spec.min_participants`` honest shares."""
    if spec.noise_multiplier is None:
        raise PrivacyError("client-distributed DP needs dp.noise_multiplier")
    m = spec.min_participants
    sigma = local_sigma(spec.noise_multiplier, spec.clip, scale, m)
    l2, l1 = integer_sensitivity(spec.clip, scale, dim)
    return PrivacyEvent(
        "zcdp", spec.noise_multiplier, rho=ddgauss_rho(sigma, m, l2, l1, dim), steps=1
    )


def add_noise_share(
    encoded: NDArray[np.integer], sigma: float, rng: np.random.Generator
) -> NDArray[np.int64]:
    """``encoded + N_Z(0, sigma^2)`` element-wise, as int64 (before masking, by the caller)."""
    flat = np.asarray(encoded)
    if not np.issubdtype(flat.dtype, np.integer):
        raise PrivacyError(
            f"distributed noise goes on the integer-encoded vector; found dtype {flat.dtype}"
        )
    noise = discrete_gaussian(flat.size, sigma, rng).reshape(flat.shape)
    return flat.astype(np.int64) + noise


def secagg_spec(spec: DPTaskSpec) -> DPTaskSpec:
    """The spec with the L2 sensitivity of a secure-aggregation contribution.

    Secure aggregation sums ``[w_i * delta_i, w_i]`` with ``w_i <= 1``
    (:mod:`phalanx.core.secagg.vectors`), so one participant moves the sum by at most
    ``sqrt(C^2 + 1)``.
    """
    return dataclasses.replace(spec, clip=math.hypot(spec.clip, 1.0))


def min_scale(spec: DPTaskSpec) -> float:
    """The smallest fixed-point scale the charge assumes (``dp.min_scale``, default 2^16)."""
    try:
        scale = float(spec.extra.get("min_scale", DEFAULT_MIN_SCALE))
    except (TypeError, ValueError):
        raise PrivacyError(
            f"dp.min_scale must be a number; found {spec.extra['min_scale']!r}"
        ) from None
    if not (math.isfinite(scale) and scale >= 1.0):
        raise PrivacyError(f"dp.min_scale must be >= 1; found {scale}")
    return scale


class DistributedNoise:
    """Distributed DP's integer-noise hook for :class:`phalanx.services.secure.SecureAggregation`.

    Kairouz, Liu and Steinke, ICML 2021: each participant adds discrete Gaussian noise
    ``N_Z(0, sigma_i^2)`` with ``sigma_i = z * sqrt(C^2 + 1) * scale / sqrt(m)`` to its encoded
    contribution before masking, so ``m`` honest shares give the sum noise of std
    ``z * sqrt(C^2 + 1)`` in real units and the coordinator never sees an un-noised sum.

    :class:`PrivacyGuard` arms it once per charged round (after clipping the update); the hook
    draws the noise once and disarms. It refuses (secure aggregation then aborts the
    participant's round) when it was not armed, or when the encoding's scale is below the one
    the charge assumed, or the vector length differs: the noise would then not match the
    epsilon in the ledger.

    Parameters
    ----------
    noise_seed:
        ``None`` in production (OS CSPRNG); a seed for tests only (warns).
    """

    def __init__(self, noise_seed: int | None = None) -> None:
        self._rng = None if noise_seed is None else noise_generator(noise_seed)
        self._armed: tuple[DPTaskSpec, float, int] | None = None

    def arm(self, spec: DPTaskSpec, lowest_scale: float, weights: Weights) -> None:
        """Allow one noise draw for ``spec`` at encoding scale >= ``lowest_scale``, for an
        update of the shape of ``weights``."""
        dim = int(sum(int(np.size(w)) for w in weights)) + 1
        self._armed = (spec, float(lowest_scale), dim)

    def __call__(self, params: InstanceParams, n_words: int) -> NDArray[np.int64]:
        """The integer noise for one masked input (``IntegerNoise`` of the secure module)."""
        armed, self._armed = self._armed, None
        if armed is None:
            raise PrivacyError(
                "distributed DP noise requested for an update the privacy guard did not charge",
                hint="run PrivacyGuard inside SecureAggregation with the same DistributedNoise",
            )
        spec, lowest, dim = armed
        if params.scale < lowest:
            raise PrivacyError(
                f"secure aggregation encodes at scale {params.scale:g}, below the {lowest:g}"
                " the privacy charge assumed (coarser rounding raises the sensitivity)",
                hint="raise the federation's secagg scale or lower dp.min_scale",
            )
        if n_words != dim:
            raise PrivacyError(
                f"secure aggregation asks noise for {n_words} words; the charged update has {dim}"
            )
        if spec.noise_multiplier is None:
            raise PrivacyError("client-distributed DP needs dp.noise_multiplier")
        real = secagg_spec(spec)
        sigma = local_sigma(spec.noise_multiplier, real.clip, params.scale, spec.min_participants)
        rng = self._rng if self._rng is not None else secure_generator()
        return discrete_gaussian(n_words, sigma, rng)
