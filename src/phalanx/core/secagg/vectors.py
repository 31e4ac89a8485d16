"""What a participant contributes to a secure sum, and what the coordinator makes of the sum.

Model updates (``kind = "fit"``): participant ``i`` with new local weights ``w_local``, global
weights ``w_global`` and ``n_i`` training examples contributes

    ``[ w_i * clip(w_local - w_global, C), w_i ]``  with  ``w_i = min(n_i / weight_cap, 1)``

flattened, fixed-point encoded in ``Z_{2^32}``. The delta is clipped to L2 norm ``C`` (as in
DP-FedAvg, McMahan et al., ICLR 2018), so every word is within ``max(C, 1)`` and the ring cannot
overflow. A bucket sum gives ``sum_i w_i delta_i`` and ``sum_i w_i``; their quotient is the
weighted mean delta, and ``w_global + mean`` is the bucket's pseudo-update, weighted by
``sum_i w_i * weight_cap`` examples. Individual example counts are never revealed. With
``weight_cap = 1`` (distributed DP) every member weighs 1 and the coordinator divides by the
bucket's member count, which it knows, rather than by the noisy weight word.

With class-wise averaging of the output layer (ADR 0018, ``classwise_layer >= 0``) the vector
goes on with the output layer's clipped delta once more, row ``c`` (its weights and its bias)
scaled by ``v_ic = w_i * n_ic / n_i``, and then the ``v_ic``: a bucket sum gives
``sum_i v_ic delta_ic`` and ``sum_i v_ic`` per class, so row ``c`` of the pseudo-update is the
mean over the class's holders (the plain weighted mean where the bucket holds none). The
coordinator learns each bucket's rows per class (``sum_i v_ic * weight_cap``), never a
participant's.

Feature statistics (``kind = "stats"``): the additive vector of
:meth:`~phalanx.core.features.stats.FeatureStats.to_vector` in the wide 128-bit fixed point of
:func:`~phalanx.core.secagg.encoding.encode_wide` (``2^-24`` steps: counts stay exact, sums and
sums of squares are exact to ``2^-24`` per participant).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from phalanx.core.aggregation.classwise import output_shape
from phalanx.core.errors import AggregationError, SecAggError
from phalanx.core.secagg.encoding import FixedPoint, decode_wide_sum, encode_wide
from phalanx.core.secagg.params import InstanceParams
from phalanx.core.types import Weights


def fit_length(weights: Weights, classwise_layer: int = -1) -> int:
    """Ring words of a model-update contribution: every parameter plus the weight, and with
    ``classwise_layer >= 0`` the output layer's rows and one weight per class again."""
    n = int(sum(int(np.size(w)) for w in weights)) + 1
    if classwise_layer >= 0:
        classes, n_in = _output_shape(weights, classwise_layer)
        n += classes * (n_in + 1) + classes
    return n


def _output_shape(weights: Weights, layer: int) -> tuple[int, int]:
    """``(n_classes, n_in)`` of the output layer at ``layer`` (its bias at ``layer + 1``), as
    :func:`~phalanx.core.aggregation.classwise.output_shape` checks it, failing as a
    :class:`SecAggError`."""
    try:
        return output_shape(weights, layer)
    except AggregationError as exc:
        raise SecAggError(exc.message, hint=exc.hint) from None


def _output_rows(delta: NDArray[np.float64], weights: Weights, layer: int) -> NDArray[np.float64]:
    """The output layer's slice of the flat ``delta`` as rows ``[W[c], b[c]]``."""
    classes, n_in = _output_shape(weights, layer)
    start = int(sum(int(np.size(w)) for w in weights[:layer]))
    w = delta[start : start + classes * n_in].reshape(classes, n_in)
    b = delta[start + classes * n_in : start + classes * (n_in + 1)].reshape(classes, 1)
    return np.concatenate([w, b], axis=1)


def _set_output_rows(
    mean: NDArray[np.float64], rows: NDArray[np.float64], weights: Weights, layer: int
) -> None:
    """Write rows ``[W[c], b[c]]`` back into the flat ``mean`` (inverse of _output_rows)."""
    classes, n_in = _output_shape(weights, layer)
    start = int(sum(int(np.size(w)) for w in weights[:layer]))
    mean[start : start + classes * n_in] = rows[:, :n_in].ravel()
    mean[start + classes * n_in : start + classes * (n_in + 1)] = rows[:, n_in]


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
    class_counts: NDArray[np.floating] | None = None,
) -> NDArray[np.unsignedinteger]:
    """The ring words a participant contributes for a trained model (see the module docstring).

    ``rng`` drives stochastic rounding (``None``: nearest). ``class_counts`` (the training rows
    per class) is required when the instance averages the output layer class by class.
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
    if params.classwise_layer >= 0:
        classes, _ = _output_shape(global_weights, params.classwise_layer)
        counts = None if class_counts is None else np.asarray(class_counts, np.float64)
        if counts is None or counts.shape != (classes,):
            raise SecAggError(
                f"instance {params.instance} averages the output layer class by class but local"
                f" training returned {'no' if counts is None else f'{counts.shape}-shaped'} class"
                f" counts; expected {classes}",
                hint="the task config must carry class_counts (the algorithm asks for it)",
            )
        if not np.all(np.isfinite(counts)) or np.any(counts < 0):
            raise SecAggError("the class counts hold negative or non-finite values")
        v = weight * counts / counts.sum() if counts.sum() > 0 else np.zeros(classes)
        rows = v[:, None] * _output_rows(delta, global_weights, params.classwise_layer)
        values = np.concatenate([values, rows.ravel(), v])
    if values.size != params.length:
        raise SecAggError(
            f"the model update has {values.size} words, instance {params.instance} expects"
            f" {params.length}"
        )
    enc = fixed_point(params)
    return enc.to_ring(enc.encode(values, rng))


@dataclass(frozen=True)
class FitSum:
    """A bucket's decoded sum: its pseudo-update ``w_global + mean delta``, its total weight
    ``sum_i w_i`` and, under class-wise averaging, its weight per class ``sum_i v_ic``."""

    weights: Weights
    weight: float
    class_weights: NDArray[np.float64] | None = None


def decode_fit(
    params: InstanceParams,
    total: NDArray[np.unsignedinteger],
    global_weights: Weights,
    members: int | None = None,
) -> FitSum | None:
    """The bucket's pseudo-update and weights (:class:`FitSum`); None if weightless.

    ``members``: how many participants' inputs the sum holds. With ``weight_cap == 1`` every
    member weighs 1, so the bucket's weight is that public count, not the decoded weight word:
    under distributed DP the word carries the noise shares too (``m + N(0, sigma^2)``), and
    dividing by it would scale the mean by a random factor, or fail when the noise drives it to
    zero or below.
    """
    values = fixed_point(params).decode_sum(total)
    n_params = int(sum(int(np.size(g)) for g in global_weights))
    if params.weight_cap == 1 and members is not None:
        weight = float(members)
    else:
        weight = float(values[n_params])
    if weight <= 0:
        return None
    mean = values[:n_params] / weight
    class_weights = None
    if params.classwise_layer >= 0:
        classes, n_in = _output_shape(global_weights, params.classwise_layer)
        tail = values[n_params + 1 :]
        rows = tail[: classes * (n_in + 1)].reshape(classes, n_in + 1)
        class_weights = np.clip(tail[classes * (n_in + 1) :], 0.0, None)
        held = class_weights * params.weight_cap >= 0.5  # at least half a row: a holder
        merged = _output_rows(mean, global_weights, params.classwise_layer)
        merged[held] = rows[held] / class_weights[held, None]
        _set_output_rows(mean, merged, global_weights, params.classwise_layer)
    out: Weights = []
    offset = 0
    for g in global_weights:
        size = int(np.size(g))
        step = mean[offset : offset + size].reshape(np.shape(g))
        out.append((np.asarray(g, np.float64) + step).astype(np.float32))
        offset += size
    return FitSum(out, weight, class_weights)


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
