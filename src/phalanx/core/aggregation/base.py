"""Function-level aggregation and the server-side algorithm interface.

:func:`weighted_mean` is the FedAvg combination rule of McMahan et al. (2017) over plain numpy
weight lists, in the spirit of Flower's ``server/strategy/aggregate.py``. :class:`ServerAlgorithm`
is the small interface the round engine drives each round:

1. ``task_config()`` and ``task_extras()`` go out with the training task;
2. participants answer with :class:`~phalanx.core.types.Update` objects holding their new local
   weights (and, for SCAFFOLD, ``extras["control_delta"]``);
3. ``aggregate(global_weights, updates)`` returns the next global weights;
4. ``state()`` / ``load_state()`` checkpoint the server optimizer between rounds.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from typing import Protocol, runtime_checkable

import numpy as np
from numpy.typing import NDArray

from phalanx.core.errors import AggregationError
from phalanx.core.types import Update, Weights


@runtime_checkable
class ServerAlgorithm(Protocol):
    """A server-side federated optimization algorithm.

    Implementations keep their own optimizer state (momentum, Adam moments, control variates),
    which :meth:`state` exposes as named weight lists so a checkpoint store can persist it as
    safetensors next to the global model.
    """

    name: str

    def task_config(self) -> dict[str, float]:
        """Scalars sent to participants with each task (e.g. ``{"proximal_mu": 0.01}``)."""
        ...

    def task_extras(self) -> dict[str, Weights]:
        """Arrays sent with each task (SCAFFOLD's server control variate ``"control"``)."""
        ...

    def aggregate(self, global_weights: Weights, updates: Sequence[Update]) -> Weights:
        """Combine the participants' updates into the next global weights."""
        ...

    def state(self) -> dict[str, Weights]:
        """The server optimizer state, as named float32 weight lists (empty when stateless)."""
        ...

    def load_state(self, state: Mapping[str, Weights]) -> None:
        """Restore what :meth:`state` returned (e.g. when resuming from a checkpoint)."""
        ...


def check_compatible(
    weights_list: Sequence[Weights],
    names: Sequence[str] | None = None,
    *,
    reference: Weights | None = None,
    reference_name: str = "the global model",
) -> None:
    """Raise :class:`AggregationError` unless every weight list has the same layout.

    Parameters
    ----------
    weights_list:
        One weight list per participant.
    names:
        Participant names for the messages (defaults to ``participant #i``).
    reference:
        The layout every list must match; defaults to the first list.
    reference_name:
        What to call the reference in messages.
    """
    if len(weights_list) == 0:
        raise AggregationError(
            "nothing to aggregate: no updates were given",
            hint="a round needs at least one participant update",
        )
    labels = (
        list(names)
        if names is not None
        else [f"participant #{i}" for i in range(len(weights_list))]
    )
    if len(labels) != len(weights_list):
        raise AggregationError(
            f"{len(labels)} participant names for {len(weights_list)} weight lists"
        )
    if reference is None:
        reference, reference_name = weights_list[0], labels[0]
    ref_shapes = [np.shape(w) for w in reference]
    for label, weights in zip(labels, weights_list, strict=True):
        if len(weights) != len(ref_shapes):
            raise AggregationError(
                f"{label} sent {len(weights)} layers; expected {len(ref_shapes)} as in "
                f"{reference_name}",
                hint="every participant must train the same model architecture",
            )
        for layer, (w, shape) in enumerate(zip(weights, ref_shapes, strict=True)):
            if np.shape(w) != shape:
                raise AggregationError(
                    f"{label}: layer {layer} has shape {np.shape(w)}; expected {shape} as in "
                    f"{reference_name}",
                    hint="every participant must train the same model architecture",
                )
            arr = np.asarray(w)
            if not np.issubdtype(arr.dtype, np.floating):
                raise AggregationError(
                    f"{label}: layer {layer} has dtype {arr.dtype}; expected a float dtype"
                )
            if not np.all(np.isfinite(arr)):
                raise AggregationError(
                    f"{label}: layer {layer} contains NaN or infinite values",
                    hint="the participant's training diverged; lower its learning rate",
                )


def weighted_mean(
    weights_list: Sequence[Weights],
    sample_counts: Sequence[int],
    names: Sequence[str] | None = None,
) -> Weights:
    """Sample-weighted mean of weight lists (FedAvg; McMahan et al., AISTATS 2017).

    ``sum_k n_k * w_k / sum_k n_k`` layer by layer, accumulated in float64 and returned as
    float32. The result is bit-for-bit independent of the order of the participants: the lists
    are summed in a canonical order (by a digest of their contents), streaming, so memory stays
    at one float64 copy of the model whatever the number of participants.

    Parameters
    ----------
    weights_list:
        One weight list per participant, all with the same layer shapes.
    sample_counts:
        Training examples behind each list (non-negative, not all zero).
    names:
        Participant names for error messages.

    Returns
    -------
    Weights
        The weighted mean, one float32 array per layer.

    Raises
    ------
    AggregationError
        On an empty input, mismatched counts, layer counts or shapes, non-finite values, or
        counts that are negative or sum to zero.
    """
    check_compatible(weights_list, names)
    if len(sample_counts) != len(weights_list):
        raise AggregationError(
            f"{len(sample_counts)} sample counts for {len(weights_list)} weight lists"
        )
    counts = np.asarray(sample_counts, dtype=np.float64)
    if np.any(counts < 0) or not np.all(np.isfinite(counts)):
        raise AggregationError(
            f"sample counts must be finite and >= 0; found {list(sample_counts)}"
        )
    total = float(counts.sum())
    if total <= 0:
        raise AggregationError(
            "sample counts sum to zero: no participant trained on any example",
            hint="participants with no data should not answer a training task",
        )
    sums = _ordered_sum(weights_list, [float(c) for c in counts])
    return [(s / total).astype(np.float32) for s in sums]


def uniform_sum(weights_list: Sequence[Weights]) -> list[NDArray[np.float64]]:
    """Order-independent float64 sum of weight lists (layouts must already be checked)."""
    return _ordered_sum(weights_list, [1.0] * len(weights_list))


def _ordered_sum(
    weights_list: Sequence[Weights], factors: Sequence[float]
) -> list[NDArray[np.float64]]:
    """``sum_k factors[k] * weights_list[k]`` in float64, in an order fixed by the contents.

    Floating-point addition is not associative, so the order of the terms is made canonical:
    by a digest of each list's bytes and its factor. Identical terms tie, and swapping
    identical terms cannot change the sum.
    """
    keys = []
    for weights, factor in zip(weights_list, factors, strict=True):
        h = hashlib.blake2b(repr(factor).encode(), digest_size=16)
        for w in weights:
            arr = np.ascontiguousarray(w)
            h.update(arr.dtype.str.encode())
            h.update(arr.view(np.uint8).ravel().data)  # the raw bytes, no float64 copy
        keys.append(h.digest())
    order = sorted(range(len(weights_list)), key=keys.__getitem__)
    sums = [np.zeros(np.shape(w), dtype=np.float64) for w in weights_list[0]]
    for k in order:
        for acc, w in zip(sums, weights_list[k], strict=True):
            acc += factors[k] * np.asarray(w, dtype=np.float64)
    return sums


def to_float32(arrays: Sequence[NDArray[np.floating]]) -> Weights:
    """Copy arrays into a float32 :data:`Weights` list."""
    return [np.asarray(a, dtype=np.float32).copy() for a in arrays]
