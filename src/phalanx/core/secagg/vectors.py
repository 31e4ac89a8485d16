"""What a participant contributes to a secure sum, and what the coordinator makes of the sum.

Model updates (``kind = "fit"``): participant ``i`` with new local weights ``w_local``, global
weights ``w_global`` and ``n_i`` training examples contributes

    ``[ w_i * clip(w_local - w_global, C), w_i ]``  with  ``w_i = min(n_i / weight_cap, 1)``

flattened, fixed-point encoded in ``Z_{2^32}``. The delta is clipped to L2 norm ``C`` (as in
DP-FedAvg, McMahan et al., ICLR 2018), so every word is within ``max(C, 1)`` and the ring cannot
overflow. A bucket sum gives ``sum_i w_i delta_i`` and ``sum_i w_i``; their quotient is the
weighted mean delta, and ``w_global + mean`` is the bucket's pseudo-update, weighted by
``sum_i w_i * weight_cap`` examples. Individual example counts are never revealed.

Feature statistics (``kind = "stats"``): the additive vector of
:meth:`~phalanx.core.features.stats.FeatureStats.to_vector` in the wide 128-bit fixed point of
:func:`~phalanx.core.secagg.encoding.encode_wide` (``2^-24`` steps: counts stay exact, sums and
sums of squares are exact to ``2^-24`` per participant).
"""

from __future__ import annotations

import numpy as np
from numpy.typing import NDArray

from phalanx.core.errors import SecAggError
from phalanx.core.secagg.encoding import FixedPoint, decode_wide_sum, encode_wide
from phalanx.core.secagg.params import InstanceParams
from phalanx.core.types import Weights


def fit_length(weights: Weights) -> int:
    """Ring words of a model-update contribution: every parameter plus the weight."""
    return int(sum(int(np.size(w)) for w in weights)) + 1


def stats_length(vector_length: int) -> int:
    """Ring words of a statistics contribution of ``vector_length`` values."""
    return 4 * vector_length


def fixed_point(params: InstanceParams) -> FixedPoint:
    """The fixed-point encoding of a ``fit`` instance."""
    return FixedPoint(scale=params.scale, bound=max(params.bound, 1.0), bits=params.bits)


def encode_fit(
    params: InstanceParams,
    local: Weights,
    global_weights: Weights,
    num_examples: int,
    rng: np.random.Generator | None,
) -> NDArray[np.unsignedinteger]:
    """The ring words a participant contributes for a trained model (see the module docstring).

    ``rng`` drives stochastic rounding (``None``: nearest).
    """
    if [np.shape(a) for a in local] != [np.shape(g) for g in global_weights]:
        raise SecAggError("the trained weights do not have the global model's layer shapes")
    delta = np.concatenate(
        [
            (np.asarray(a, np.float64) - np.asarray(g, np.float64)).ravel()
            for a, g in zip(local, global_weights, strict=True)
        ]
        or [np.zeros(0)]
    )
    if not np.all(np.isfinite(delta)):
        raise SecAggError("the trained weights hold NaN or infinite values")
    norm = float(np.linalg.norm(delta))
    if norm > params.bound:
        delta *= params.bound / norm
    weight = min(max(num_examples, 0) / params.weight_cap, 1.0)
    values = np.append(weight * delta, weight)
    if values.size != params.length:
        raise SecAggError(
            f"the model update has {values.size} words, instance {params.instance} expects"
            f" {params.length}"
        )
    enc = fixed_point(params)
    return enc.to_ring(enc.encode(values, rng))


def decode_fit(
    params: InstanceParams, total: NDArray[np.unsignedinteger], global_weights: Weights
) -> tuple[Weights, float] | None:
    """The bucket pseudo-update ``(w_global + mean delta, total weight)``; None if weightless."""
    values = fixed_point(params).decode_sum(total)
    weight = float(values[-1])
    if weight <= 0:
        return None
    mean = values[:-1] / weight
    out: Weights = []
    offset = 0
    for g in global_weights:
        size = int(np.size(g))
        step = mean[offset : offset + size].reshape(np.shape(g))
        out.append((np.asarray(g, np.float64) + step).astype(np.float32))
        offset += size
    return out, weight


def encode_stats(
    params: InstanceParams, vector: NDArray[np.floating]
) -> NDArray[np.unsignedinteger]:
    """The ring words a participant contributes for its statistics vector."""
    words = encode_wide(vector, max(len(b) for b in params.buckets))
    if words.size != params.length:
        raise SecAggError(
            f"the statistics have {words.size} words, instance {params.instance} expects"
            f" {params.length}"
        )
    return words


def decode_stats(params: InstanceParams, total: NDArray[np.unsignedinteger]) -> NDArray[np.float64]:
    """The summed statistics vector behind a bucket sum."""
    return decode_wide_sum(np.asarray(total, dtype=np.uint64), params.length // 4)
