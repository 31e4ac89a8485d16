"""The columnar representation every reader streams into.

A :class:`FlowBatch` is a chunk of flows from one source, laid out by its
:class:`~phalanx.core.features.schema.FeatureSchema`: one floating-point matrix for the numeric
features (NaN where a value is missing or was infinite), one string matrix for the categorical
features, the original labels and their taxonomy categories, and the identifier columns kept for
alerts.

The numeric matrix is float64 (what the readers produce) or float32 (a participant whose data
already is float32 keeps it so, at half the memory). The dtype rule, applied when a batch is built:

* float64 and float32 are kept as given, without a copy;
* float16 is widened to float32 (exact);
* booleans and integers are converted to float64 (exact up to 2**53);
* anything else (complex, strings, objects, dates) is refused with a
  :class:`~phalanx.core.errors.SchemaMismatchError`.

Everything computed from the matrix (statistics, the transform) works in float64 whatever the
matrix's dtype, so a float32 batch gives the same results as the float64 batch of the same values.
:meth:`FlowBatch.take` keeps the dtype; :meth:`FlowBatch.concat` keeps a common dtype and widens a
mix of float32 and float64 to float64.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from phalanx.core.errors import SchemaMismatchError
from phalanx.core.features.schema import FeatureSchema

NUMERIC_DTYPES = (np.dtype(np.float64), np.dtype(np.float32))
"""The dtypes a :attr:`FlowBatch.numeric` matrix is kept in."""
NumericMatrix = NDArray[np.float64] | NDArray[np.float32]
"""A numeric feature matrix: float64 or float32 (see the module docstring)."""


def as_numeric(matrix: NDArray[np.generic], *, source: str = "") -> NumericMatrix:
    """``matrix`` in a dtype :class:`FlowBatch` keeps (the module docstring's rule).

    float64 and float32 come back as they are (no copy); float16 is widened to float32;
    booleans and integers become float64. ``source`` names the flows in the error message.

    Raises
    ------
    SchemaMismatchError
        For a matrix that is not two-dimensional, or of a non-real dtype (complex, strings,
        objects, dates).
    """
    arr = np.asarray(matrix)
    what = f"numeric feature matrix of {source!r}" if source else "numeric feature matrix"
    if arr.ndim != 2:
        raise SchemaMismatchError(
            f"the {what} must be two-dimensional (flows x numeric columns), found shape"
            f" {arr.shape}",
            hint="reshape it to (n_flows, n_numeric_columns)",
        )
    if arr.dtype in NUMERIC_DTYPES:
        return arr
    if arr.dtype == np.float16:
        return arr.astype(np.float32)
    if arr.dtype.kind in "biu":
        return arr.astype(np.float64)
    raise SchemaMismatchError(
        f"the {what} must hold real numbers (float64 or float32; float16, integers and booleans"
        f" are converted), found dtype {arr.dtype}",
        hint="convert it with .astype(numpy.float64), turning non-numbers into NaN first",
    )


@dataclass(frozen=True)
class FlowBatch:
    """A chunk of flows in one schema.

    Attributes
    ----------
    schema:
        The layout of the columns below.
    numeric:
        ``(n, len(schema.numeric))`` float64 or float32 (other dtypes are converted or refused
        when the batch is built: see the module docstring); NaN marks a missing value. Infinite
        values found in the input are turned into NaN by the reader and counted in
        ``n_infinite``.
    categorical:
        ``(n, len(schema.categorical))`` array of ``str`` (numpy dtype ``object`` or ``<U``).
    label:
        ``(n,)`` original label strings as the dataset spells them ("" when unlabelled).
    category:
        ``(n,)`` taxonomy category strings (see :mod:`phalanx.core.taxonomy`).
    identifiers:
        Identifier columns by name (``(n,)`` arrays), e.g. addresses and ports for alerts.
    n_infinite:
        Infinite numeric values replaced by NaN in this batch, per numeric column.
    """

    schema: FeatureSchema
    numeric: NumericMatrix
    categorical: NDArray[np.object_]
    label: NDArray[np.object_]
    category: NDArray[np.object_]
    identifiers: dict[str, NDArray[np.generic]] = field(default_factory=dict)
    n_infinite: NDArray[np.int64] | None = None

    def __post_init__(self) -> None:
        numeric = as_numeric(self.numeric, source=self.schema.source)
        if numeric is not self.numeric:  # frozen: the converted matrix replaces the given one
            object.__setattr__(self, "numeric", numeric)

    def __len__(self) -> int:
        return int(self.numeric.shape[0])

    def take(self, index: NDArray[np.integer] | NDArray[np.bool_]) -> FlowBatch:
        """The rows selected by an integer or boolean index, in that order (same dtypes)."""
        return FlowBatch(
            schema=self.schema,
            numeric=self.numeric[index],
            categorical=self.categorical[index],
            label=self.label[index],
            category=self.category[index],
            identifiers={k: v[index] for k, v in self.identifiers.items()},
            n_infinite=None,
        )

    @staticmethod
    def concat(batches: Iterable[FlowBatch]) -> FlowBatch:
        """One batch holding the rows of ``batches`` in order (all must share one schema).

        The numeric matrix keeps the batches' dtype when they share one; a mix of float32 and
        float64 gives float64 (exact).
        """
        items = list(batches)
        if not items:
            raise ValueError("FlowBatch.concat needs at least one batch")
        schema = items[0].schema
        for b in items[1:]:
            if b.schema.hash() != schema.hash():
                raise SchemaMismatchError(
                    f"cannot concatenate flows of schema {b.schema.source!r} onto"
                    f" {schema.source!r}: the feature layouts differ"
                )
        keys = list(items[0].identifiers)
        inf = [b.n_infinite for b in items if b.n_infinite is not None]
        return FlowBatch(
            schema=schema,
            numeric=np.concatenate([b.numeric for b in items]),
            categorical=np.concatenate([b.categorical for b in items]),
            label=np.concatenate([b.label for b in items]),
            category=np.concatenate([b.category for b in items]),
            identifiers={
                k: np.concatenate([b.identifiers[k] for b in items])
                for k in keys
                if all(k in b.identifiers for b in items)
            },
            n_infinite=np.sum(inf, axis=0) if inf else None,
        )
