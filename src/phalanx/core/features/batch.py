"""The columnar representation every reader streams into.

A :class:`FlowBatch` is a chunk of flows from one source, laid out by its
:class:`~phalanx.core.features.schema.FeatureSchema`: one float64 matrix for the numeric features
(NaN where a value is missing or was infinite), one string matrix for the categorical features, the
original labels and their taxonomy categories, and the identifier columns kept for alerts.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from phalanx.core.errors import SchemaMismatchError
from phalanx.core.features.schema import FeatureSchema


@dataclass(frozen=True)
class FlowBatch:
    """A chunk of flows in one schema.

    Attributes
    ----------
    schema:
        The layout of the columns below.
    numeric:
        ``(n, len(schema.numeric))`` float64; NaN marks a missing value. Infinite values found in
        the input are turned into NaN by the reader and counted in ``n_infinite``.
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
    numeric: NDArray[np.float64]
    categorical: NDArray[np.object_]
    label: NDArray[np.object_]
    category: NDArray[np.object_]
    identifiers: dict[str, NDArray[np.generic]] = field(default_factory=dict)
    n_infinite: NDArray[np.int64] | None = None

    def __len__(self) -> int:
        return int(self.numeric.shape[0])

    def take(self, index: NDArray[np.integer] | NDArray[np.bool_]) -> FlowBatch:
        """The rows selected by an integer or boolean index, in that order."""
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
        """One batch holding the rows of ``batches`` in order (all must share one schema)."""
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
