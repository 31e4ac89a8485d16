"""Class-wise averaging of a classifier's output layer (ADR 0018).

Under label skew a rare class lives at one or two participants. With the sample-weighted mean
(FedAvg) its row of the output layer is mostly the rows of participants that never see it, and
each of those pushes the class down on every row it trains on, so the class's few holders are
outvoted and the global model stops predicting it. Class-wise averaging gives row ``c`` of the
output weight matrix and entry ``c`` of its bias the mean weighted by each participant's count
of class ``c``::

    W[c] = sum_k n_kc * W_k[c] / sum_k n_kc

so the participants that hold the class set its row. The rest of the model keeps the
sample-weighted mean, and so does the row of a class no participant of the round holds (which
keeps the push-down that stops the model predicting classes nobody has).

Label-aware aggregation such as FedLA (Khalil et al., 2023) or FedPALS (Listo Zec et al., 2024)
weighs whole updates by their label distributions; here the weighting is per output row, and
only the output layer's.

Without secure aggregation each participant sends its label counts in the clear
(``extras["class_counts"]``). Under secure aggregation they go inside the masked vector
(:mod:`phalanx.core.secagg.vectors`), so the coordinator learns each bucket's rows per class,
never a participant's; each bucket's pseudo-update then arrives with those totals as its
counts. Differential privacy refuses it: the per-class weights would need noise of their own.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from phalanx.core.errors import AggregationError
from phalanx.core.types import Update, Weights

COUNTS_KEY = "class_counts"
"""``Update.extras`` key of a participant's per-class training row counts (one float array)."""


def output_shape(weights: Weights, layer: int) -> tuple[int, int]:
    """``(n_classes, n_in)`` of the output layer whose weight array is ``weights[layer]`` and
    whose bias is ``weights[layer + 1]``.

    Raises
    ------
    AggregationError
        When ``layer`` is outside the model or the two arrays are not shaped
        ``(n_classes, n_in)`` and ``(n_classes,)``.
    """
    if not 0 <= layer < len(weights) - 1:
        raise AggregationError(
            f"class-wise averaging names layer {layer} as the output weights but the"
            f" model has {len(weights)} arrays",
            hint="it must index the output layer's weight array, whose bias follows it",
        )
    w_shape = np.shape(weights[layer])
    b_shape = np.shape(weights[layer + 1])
    if len(w_shape) != 2 or b_shape != (w_shape[0],):
        raise AggregationError(
            f"class-wise averaging: arrays {layer} and {layer + 1} have shapes"
            f" {w_shape} and {b_shape}; expected (n_classes, n_in) and (n_classes,)"
        )
    return int(w_shape[0]), int(w_shape[1])


def class_counts(update: Update, n_classes: int) -> np.ndarray:
    """The validated per-class row counts ``update`` carries, as float64 of length ``n_classes``.

    Raises
    ------
    AggregationError
        When the counts are missing, not one array of ``n_classes`` finite non-negative values,
        or sum to more than the update's ``num_examples``.
    """
    arrays = update.extras.get(COUNTS_KEY)
    who = str(update.participant)
    if arrays is None:
        raise AggregationError(
            f"{who} sent no extras['{COUNTS_KEY}'] for class-wise averaging",
            hint="the participant must run local_train with the task config's class_counts key"
            " (a Phalanx release that knows class-wise averaging)",
        )
    if len(arrays) != 1:
        raise AggregationError(
            f"{who}: extras['{COUNTS_KEY}'] holds {len(arrays)} arrays; expected 1"
        )
    counts = np.asarray(arrays[0], dtype=np.float64)
    if counts.shape != (n_classes,):
        raise AggregationError(
            f"{who}: extras['{COUNTS_KEY}'] has shape {counts.shape}; expected ({n_classes},),"
            " one count per row of the output layer"
        )
    if not np.all(np.isfinite(counts)) or np.any(counts < 0):
        raise AggregationError(f"{who}: extras['{COUNTS_KEY}'] holds negative or non-finite counts")
    if counts.sum() > max(update.num_examples, 0) + 1.0:  # a secure sum's rounding
        raise AggregationError(
            f"{who}: extras['{COUNTS_KEY}'] sums to {counts.sum():g} rows but the update"
            f" reports {update.num_examples} training examples",
        )
    return counts


def classwise_output(mean: Weights, updates: Sequence[Update], weight_layer: int) -> Weights:
    """``mean`` with the output layer's rows averaged class by class (module docstring).

    Parameters
    ----------
    mean:
        The sample-weighted mean of the updates' weights (its other layers are kept).
    updates:
        The round's updates; each carries ``extras["class_counts"]``.
    weight_layer:
        Index of the output layer's weight array (shape ``(n_classes, n_in)``); its bias
        (shape ``(n_classes,)``) is the next array.

    Raises
    ------
    AggregationError
        When the layout does not hold an output layer at ``weight_layer`` or an update's
        counts are missing or malformed (:func:`class_counts`).
    """
    if not updates:
        return list(mean)
    n_classes, _ = output_shape(mean, weight_layer)
    counts = np.stack([class_counts(u, n_classes) for u in updates])  # (k, n_classes)
    total = counts.sum(axis=0)
    held = total > 0
    out = list(mean)
    for layer in (weight_layer, weight_layer + 1):
        acc = np.array(mean[layer], dtype=np.float64)
        rows = np.zeros_like(acc)
        for k, u in enumerate(updates):
            arr = np.asarray(u.weights[layer], dtype=np.float64)
            rows += counts[k].reshape((-1,) + (1,) * (arr.ndim - 1)) * arr
        scale = total[held].reshape((-1,) + (1,) * (acc.ndim - 1))
        acc[held] = rows[held] / scale
        out[layer] = acc.astype(np.float32)
    return out
