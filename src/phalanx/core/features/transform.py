"""The feature transform every participant applies: fit once from merged statistics.

Numeric column: signed log when heavy-tailed (see :mod:`phalanx.core.features.stats`), then
standardized ``(x - mean) / scale``; a missing or infinite value is imputed at the mean, i.e. 0
after standardizing; the result is clipped to ``[-clip, clip]`` so one absurd flow cannot dominate
a gradient. Categorical column: one-hot over its hashed buckets, whose width is fixed by the
schema, so every participant's model has the same input dimension whatever values it has seen.

The scale has a smooth floor, ``scale = sqrt(var + (1e-4 * rms)^2 + 1e-12)`` with ``rms`` the
root mean square of the column: a constant column maps to 0 instead of dividing by zero, and
statistics merged in any order give the same transform to floating-point tolerance (the floor
keeps the rounding of ``E[x^2] - E[x]^2`` from being amplified). Standardization of this kind is
what scikit-learn's ``StandardScaler`` does (Pedregosa et al., JMLR 12, 2011).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from phalanx.core.errors import ConfigError, ModelError, SchemaMismatchError
from phalanx.core.features.batch import FlowBatch
from phalanx.core.features.hashing import hash_buckets
from phalanx.core.features.schema import FeatureSchema
from phalanx.core.features.stats import FeatureStats, heavy_mask, prescale

REL_FLOOR = 1e-4
ABS_FLOOR = 1e-6
DEFAULT_CLIP = 10.0
_CHUNK = 1 << 12
"""Rows per chunk of :meth:`FeatureTransform.transform`: its float64 temporaries stay at about
4 MB at 122 columns (rows are independent, so the chunk does not change the output)."""


@dataclass(frozen=True, eq=False)
class FeatureTransform:
    """A fitted mapping from a :class:`FlowBatch` to a float32 model input matrix.

    Attributes
    ----------
    schema:
        The schema it was fit for; batches of any other schema are refused.
    mean, scale:
        Per numeric column, on the signed-log scale for heavy-tailed columns.
    clip:
        Standardized values are clipped to ``[-clip, clip]``.
    """

    schema: FeatureSchema
    mean: NDArray[np.float64]
    scale: NDArray[np.float64]
    clip: float = DEFAULT_CLIP

    def __post_init__(self) -> None:
        k = len(self.schema.numeric)
        if self.mean.shape != (k,) or self.scale.shape != (k,):
            raise ModelError(
                f"feature transform for schema {self.schema.source!r} needs {k} means and scales,"
                f" found {self.mean.shape} and {self.scale.shape}"
            )
        if not (np.all(np.isfinite(self.mean)) and np.all(self.scale > 0)):
            raise ModelError("feature transform has a non-finite mean or a non-positive scale")
        if not self.clip > 0:
            raise ConfigError(f"feature transform clip must be > 0, found {self.clip}")

    @classmethod
    def fit(cls, stats: FeatureStats, *, clip: float = DEFAULT_CLIP) -> FeatureTransform:
        """Fit from (merged) statistics; columns never observed get mean 0 and scale 1."""
        with np.errstate(over="ignore", invalid="ignore"):
            mean = stats.mean
            var = stats.variance
            mean_sq = np.divide(
                stats.total_sq, stats.count, out=np.zeros_like(stats.total), where=stats.count > 0
            )
            scale = np.sqrt(var + REL_FLOOR**2 * mean_sq + ABS_FLOOR**2)
        usable = (stats.count > 0) & np.isfinite(mean) & np.isfinite(scale)
        mean = np.where(usable, mean, 0.0)
        scale = np.where(usable, scale, 1.0)
        return cls(schema=stats.schema, mean=mean, scale=scale, clip=float(clip))

    @property
    def schema_hash(self) -> str:
        """Hash of the schema the transform was fit for."""
        return self.schema.hash()

    @property
    def feature_names(self) -> tuple[str, ...]:
        """Output column names: numeric names, then ``COLUMN#bucket`` for each one-hot slot."""
        names = list(self.schema.numeric)
        for c in self.schema.categorical:
            names.extend(f"{c}#{b}" for b in range(self.schema.column(c).buckets))
        return tuple(names)

    @property
    def n_features(self) -> int:
        """Width of the output matrix."""
        return len(self.schema.numeric) + sum(
            self.schema.column(c).buckets for c in self.schema.categorical
        )

    def require_schema(self, batch: FlowBatch) -> None:
        """Refuse a batch in another schema than the transform's (:class:`SchemaMismatchError`)."""
        if batch.schema.hash() != self.schema_hash:
            raise SchemaMismatchError(
                f"feature transform was fit for schema {self.schema.source!r}"
                f" v{self.schema.version} ({self.schema_hash[:12]}), the flows are in"
                f" {batch.schema.source!r} v{batch.schema.version} ({batch.schema.hash()[:12]})",
                hint="refit the transform or read the flows with the federation's schema",
            )

    def transform(self, batch: FlowBatch) -> NDArray[np.float32]:
        """The ``(n, n_features)`` float32 model input for ``batch``.

        Computed in float64 chunk by chunk and rounded to float32 once at the end, so a float32
        batch gives exactly the output of the float64 batch holding the same values.
        """
        self.require_schema(batch)
        n = len(batch)
        k = len(self.schema.numeric)
        out = np.zeros((n, self.n_features), dtype=np.float32)
        heavy = heavy_mask(self.schema)
        for start in range(0, n, _CHUNK):  # chunks keep the temporaries small
            x = prescale(batch.numeric[start : start + _CHUNK], heavy)
            with np.errstate(over="ignore", invalid="ignore"):
                x -= self.mean
                x /= self.scale
            x[~np.isfinite(x)] = 0.0
            np.clip(x, -self.clip, self.clip, out=x)
            out[start : start + _CHUNK, :k] = x
        offset = k
        rows = np.arange(n)
        for j, name in enumerate(self.schema.categorical):
            b = self.schema.column(name).buckets
            out[rows, offset + hash_buckets(batch.categorical[:, j], b)] = 1.0
            offset += b
        return out

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form, stored in model metadata."""
        return {
            "schema": self.schema.to_dict(),
            "schema_hash": self.schema_hash,
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "clip": self.clip,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureTransform:
        """Inverse of :meth:`to_dict`; refuses a document whose schema hash does not match."""
        try:
            schema = FeatureSchema.from_dict(d["schema"])
            mean = np.array(d["mean"], dtype=np.float64)
            scale = np.array(d["scale"], dtype=np.float64)
            clip = float(d.get("clip", DEFAULT_CLIP))
        except (KeyError, TypeError, ValueError) as exc:
            raise ModelError(f"malformed feature transform document: {exc}") from exc
        if d.get("schema_hash", schema.hash()) != schema.hash():
            raise SchemaMismatchError(
                "feature transform: the recorded schema hash does not match the schema",
                hint="the model metadata was edited or corrupted",
            )
        return cls(schema=schema, mean=mean, scale=scale, clip=clip)
