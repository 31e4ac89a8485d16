"""Mergeable feature statistics: what a transform is fit from, without pooling any flow.

Each participant computes :class:`FeatureStats` over its own flows; the coordinator merges them
and fits one :class:`~phalanx.core.features.transform.FeatureTransform` that every participant then
applies, so all inputs share one scale and one width.

Numeric columns are summarized on the *transformed* scale: heavy-tailed columns go through the
signed log ``sign(x) * log1p(|x|)`` first (some sources carry negative values, e.g. CIC-IDS2017's
``-1`` window sizes). Per column: non-missing count, sum, sum of squares, minimum, maximum, missing
count and infinite count. Missing means NaN or infinite (an infinite value is also counted as
infinite, as are the infinities a reader already replaced by NaN, from ``FlowBatch.n_infinite``).
Categorical columns keep the count of rows in each hashed bucket. The labelled rows are counted
per taxonomy category too: rare-class oversampling (``min_class_rows``, ADR 0019) repeats a
class's rows by the federation's count of it, which only these sums give.

Merging is addition for everything but min and max (Chan, Golub & LeVeque 1983 give the pairwise
form of the same idea for means and variances). :meth:`FeatureStats.to_vector` exposes exactly the
additive part as one float64 vector, because secure aggregation (Bonawitz et al., CCS 2017) can only
reveal the *sum* of such vectors: under secure aggregation min and max are **not available**
(:meth:`FeatureStats.from_vector` leaves them NaN), and nothing downstream needs them.

References
----------
Chan, Golub, LeVeque, "Algorithms for computing the sample variance: analysis and
recommendations", The American Statistician 37(3), 1983.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from phalanx.core.errors import ConfigError, SchemaMismatchError
from phalanx.core.features.batch import FlowBatch, NumericMatrix
from phalanx.core.features.hashing import hash_buckets
from phalanx.core.features.schema import FeatureSchema
from phalanx.core.taxonomy import CATEGORIES, CATEGORY_INDEX

F64 = NDArray[np.float64]
I64 = NDArray[np.int64]
_CHUNK = 1 << 16
"""Rows per chunk of :func:`compute_stats`. It fixes the order of the float64 sums, so changing it
changes the statistics (and every model trained after them) in the last bits: keep it."""


def signed_log1p(x: NDArray[np.floating]) -> F64:
    """``sign(x) * log1p(|x|)``: a log that keeps the sign and maps 0 to 0 (NaN stays NaN).

    Computed in float64 whatever the input's floating dtype.
    """
    x64 = np.asarray(x, dtype=np.float64)
    return np.sign(x64) * np.log1p(np.abs(x64))


def heavy_mask(schema: FeatureSchema) -> NDArray[np.bool_]:
    """Which numeric columns of ``schema`` are heavy-tailed (signed log before standardizing)."""
    return np.array([schema.column(n).heavy_tailed for n in schema.numeric], dtype=bool)


def prescale(numeric: NumericMatrix, heavy: NDArray[np.bool_]) -> F64:
    """A float64 copy of the numeric matrix, signed log applied to the heavy-tailed columns.

    A float32 matrix is widened to float64 (exactly) in the same copy, so statistics and the
    transform are computed in float64 whatever the batch's dtype; only the heavy-tailed columns
    go through the log, so the temporaries are as wide as they are.
    """
    x = np.array(numeric, dtype=np.float64)  # always a fresh copy: callers write into it
    if heavy.any():
        cols = np.flatnonzero(heavy)
        x[:, cols] = signed_log1p(x[:, cols])
    return x


@dataclass(frozen=True, eq=False)
class FeatureStats:
    """Summary statistics of flows in one schema; merge by addition.

    Attributes
    ----------
    schema:
        The schema the statistics describe.
    n_rows:
        Flows summarized.
    count, total, total_sq:
        Per numeric column, on the transformed scale: finite values, their sum, sum of squares.
    minimum, maximum:
        Per numeric column, transformed scale; NaN when unknown (no finite value, or statistics
        rebuilt from an aggregated vector).
    missing, infinite:
        Per numeric column: non-finite values (NaN or inf), and how many of them were infinite.
    buckets:
        Per categorical column, rows falling in each hashed bucket (length ``Column.buckets``).
    classes:
        Rows per taxonomy category (``CATEGORIES`` order); unlabelled rows are not counted.
    """

    schema: FeatureSchema
    n_rows: int
    count: I64
    total: F64
    total_sq: F64
    minimum: F64
    maximum: F64
    missing: I64
    infinite: I64
    buckets: tuple[I64, ...]
    classes: I64

    @property
    def schema_hash(self) -> str:
        """Hash of :attr:`schema`."""
        return self.schema.hash()

    @property
    def mean(self) -> F64:
        """Per numeric column mean on the transformed scale (0 where no finite value)."""
        return np.divide(
            self.total, self.count, out=np.zeros_like(self.total), where=self.count > 0
        )

    @property
    def variance(self) -> F64:
        """Per numeric column population variance on the transformed scale (0 when unknown)."""
        sq = np.divide(
            self.total_sq, self.count, out=np.zeros_like(self.total), where=self.count > 0
        )
        return np.maximum(sq - self.mean**2, 0.0)

    def to_vector(self) -> F64:
        """The additive part as one float64 vector: what secure aggregation sums.

        Layout: ``[n_rows, count, total, total_sq, missing, infinite, buckets..., classes]`` with
        one entry per numeric column in each block, the categorical bucket counts concatenated,
        then one count per taxonomy category.
        """
        parts: list[NDArray[Any]] = [
            np.array([self.n_rows], dtype=np.float64),
            self.count,
            self.total,
            self.total_sq,
            self.missing,
            self.infinite,
            *self.buckets,
            self.classes,
        ]
        return np.concatenate([p.astype(np.float64) for p in parts])

    @classmethod
    def from_vector(cls, schema: FeatureSchema, vector: NDArray[np.floating]) -> FeatureStats:
        """Statistics from an (aggregated) additive vector; min and max come back NaN."""
        vec = np.asarray(vector, dtype=np.float64)
        expected = vector_length(schema)
        if vec.shape != (expected,):
            raise SchemaMismatchError(
                f"a statistics vector for schema {schema.source!r} v{schema.version} has"
                f" {expected} entries, found shape {vec.shape}",
                hint="the vector was built for another schema, or by a Phalanx version with"
                " another statistics layout (run one version across the federation)",
            )
        k = len(schema.numeric)
        blocks = [vec[1 + i * k : 1 + (i + 1) * k] for i in range(5)]
        pos = 1 + 5 * k
        buckets = []
        for name in schema.categorical:
            b = schema.column(name).buckets
            buckets.append(_to_int(vec[pos : pos + b]))
            pos += b
        nan = np.full(k, np.nan)
        return cls(
            schema=schema,
            n_rows=round(float(vec[0])),
            count=_to_int(blocks[0]),
            total=blocks[1].copy(),
            total_sq=blocks[2].copy(),
            minimum=nan,
            maximum=nan.copy(),
            missing=_to_int(blocks[3]),
            infinite=_to_int(blocks[4]),
            buckets=tuple(buckets),
            classes=_to_int(vec[pos : pos + len(CATEGORIES)]),
        )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form (NaN minima and maxima become ``null``)."""
        return {
            "schema": self.schema.to_dict(),
            "schema_hash": self.schema_hash,
            "n_rows": self.n_rows,
            "count": self.count.tolist(),
            "total": self.total.tolist(),
            "total_sq": self.total_sq.tolist(),
            "minimum": [None if np.isnan(v) else float(v) for v in self.minimum],
            "maximum": [None if np.isnan(v) else float(v) for v in self.maximum],
            "missing": self.missing.tolist(),
            "infinite": self.infinite.tolist(),
            "buckets": [b.tolist() for b in self.buckets],
            "classes": self.classes.tolist(),
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureStats:
        """Inverse of :meth:`to_dict`; refuses a document whose schema hash does not match."""
        schema = FeatureSchema.from_dict(d["schema"])
        if d.get("schema_hash", schema.hash()) != schema.hash():
            raise SchemaMismatchError(
                "feature statistics: the recorded schema hash does not match the schema",
                hint="the document was edited or corrupted; recompute the statistics",
            )

        def floats(key: str) -> F64:
            return np.array([np.nan if v is None else v for v in d[key]], dtype=np.float64)

        stats = cls(
            schema=schema,
            n_rows=int(d["n_rows"]),
            count=np.array(d["count"], dtype=np.int64),
            total=floats("total"),
            total_sq=floats("total_sq"),
            minimum=floats("minimum"),
            maximum=floats("maximum"),
            missing=np.array(d["missing"], dtype=np.int64),
            infinite=np.array(d["infinite"], dtype=np.int64),
            buckets=tuple(np.array(b, dtype=np.int64) for b in d["buckets"]),
            # documents written before the class counts existed have none
            classes=np.array(d.get("classes", [0] * len(CATEGORIES)), dtype=np.int64),
        )
        _check_shapes(stats)
        return stats


def vector_length(schema: FeatureSchema) -> int:
    """Length of :meth:`FeatureStats.to_vector` for ``schema``."""
    buckets = sum(schema.column(c).buckets for c in schema.categorical)
    return 1 + 5 * len(schema.numeric) + buckets + len(CATEGORIES)


def empty_stats(schema: FeatureSchema) -> FeatureStats:
    """Statistics of zero flows (the identity of :func:`merge_stats`)."""
    k = len(schema.numeric)
    zi = np.zeros(k, dtype=np.int64)
    return FeatureStats(
        schema=schema,
        n_rows=0,
        count=zi,
        total=np.zeros(k),
        total_sq=np.zeros(k),
        minimum=np.full(k, np.nan),
        maximum=np.full(k, np.nan),
        missing=zi.copy(),
        infinite=zi.copy(),
        buckets=tuple(
            np.zeros(schema.column(c).buckets, dtype=np.int64) for c in schema.categorical
        ),
        classes=np.zeros(len(CATEGORIES), dtype=np.int64),
    )


def compute_stats(batch: FlowBatch, *, classes: bool = False) -> FeatureStats:
    """Statistics of one batch of flows (numeric columns processed in chunks of 65,536 rows).

    The sums are accumulated in float64 whether the batch's numeric matrix is float64 or float32.
    The per-category counts are left at zero unless ``classes`` is true: the transform does not
    need them, and a participant sends its label histogram only when the federation asks.
    """
    schema = batch.schema
    k = len(schema.numeric)
    n = len(batch)
    if batch.numeric.shape != (n, k):
        raise SchemaMismatchError(
            f"batch numeric matrix has shape {batch.numeric.shape}, schema {schema.source!r}"
            f" expects ({n}, {k})"
        )
    heavy = heavy_mask(schema)
    count = np.zeros(k, dtype=np.int64)
    infinite = np.zeros(k, dtype=np.int64)
    total = np.zeros(k)
    total_sq = np.zeros(k)
    lo = np.full(k, np.inf)
    hi = np.full(k, -np.inf)
    for start in range(0, n, _CHUNK):
        x = prescale(batch.numeric[start : start + _CHUNK], heavy)
        finite = np.isfinite(x)
        infinite += np.isinf(x).sum(axis=0)
        count += finite.sum(axis=0)
        lo = np.minimum(lo, np.where(finite, x, np.inf).min(axis=0))
        hi = np.maximum(hi, np.where(finite, x, -np.inf).max(axis=0))
        x[~finite] = 0.0
        with np.errstate(over="ignore", invalid="ignore"):
            total += x.sum(axis=0)
            total_sq += np.einsum("ij,ij->j", x, x)
    if batch.n_infinite is not None:
        infinite += np.asarray(batch.n_infinite, dtype=np.int64)
    seen = count > 0
    buckets = tuple(
        np.bincount(
            hash_buckets(batch.categorical[:, j], schema.column(name).buckets),
            minlength=schema.column(name).buckets,
        ).astype(np.int64)
        for j, name in enumerate(schema.categorical)
    )
    return FeatureStats(
        schema=schema,
        n_rows=n,
        count=count,
        total=total,
        total_sq=total_sq,
        minimum=np.where(seen, lo, np.nan),
        maximum=np.where(seen, hi, np.nan),
        missing=n - count,
        infinite=infinite,
        buckets=buckets,
        classes=class_counts(batch.category) if classes else np.zeros(len(CATEGORIES), np.int64),
    )


def class_counts(category: NDArray[np.object_]) -> I64:
    """Rows per taxonomy category (``CATEGORIES`` order); other values (unlabelled) are skipped."""
    counts = np.zeros(len(CATEGORIES), dtype=np.int64)
    for value, count in Counter(category.tolist()).items():  # a handful of distinct values
        index = CATEGORY_INDEX.get(value) if isinstance(value, str) else None
        if index is not None:
            counts[index] += count
    return counts


def merge_stats(a: FeatureStats, b: FeatureStats) -> FeatureStats:
    """Statistics of the union of the flows behind ``a`` and ``b``."""
    if a.schema_hash != b.schema_hash:
        raise SchemaMismatchError(
            f"cannot merge statistics of schema {b.schema.source!r} v{b.schema.version}"
            f" into {a.schema.source!r} v{a.schema.version}: the feature layouts differ",
            hint="every participant must compute statistics over the same schema",
        )
    return FeatureStats(
        schema=a.schema,
        n_rows=a.n_rows + b.n_rows,
        count=a.count + b.count,
        total=a.total + b.total,
        total_sq=a.total_sq + b.total_sq,
        minimum=np.fmin(a.minimum, b.minimum),
        maximum=np.fmax(a.maximum, b.maximum),
        missing=a.missing + b.missing,
        infinite=a.infinite + b.infinite,
        buckets=tuple(x + y for x, y in zip(a.buckets, b.buckets, strict=True)),
        classes=a.classes + b.classes,
    )


def merge_all(items: Iterable[FeatureStats]) -> FeatureStats:
    """Merge any number of statistics (at least one)."""
    stats = list(items)
    if not stats:
        raise ConfigError("merge_all needs at least one FeatureStats, found none")
    out = stats[0]
    for s in stats[1:]:
        out = merge_stats(out, s)
    return out


def _to_int(x: F64) -> I64:
    return np.rint(x).astype(np.int64)


def _check_shapes(stats: FeatureStats) -> None:
    k = len(stats.schema.numeric)
    for name in ("count", "total", "total_sq", "minimum", "maximum", "missing", "infinite"):
        shape = getattr(stats, name).shape
        if shape != (k,):
            raise SchemaMismatchError(
                f"feature statistics field {name!r} has shape {shape}, the schema has {k}"
                " numeric columns"
            )
    if stats.classes.shape != (len(CATEGORIES),):
        raise SchemaMismatchError(
            f"feature statistics class counts have shape {stats.classes.shape}, the taxonomy"
            f" has {len(CATEGORIES)} categories"
        )
    sizes = [stats.schema.column(c).buckets for c in stats.schema.categorical]
    found = [b.shape[0] for b in stats.buckets]
    if found != sizes:
        raise SchemaMismatchError(
            f"feature statistics bucket counts have lengths {found}, the schema expects {sizes}"
        )
