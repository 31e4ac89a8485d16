"""Versioned, hashed feature schemas.

A schema says, for one data source, which columns are numeric features, which categorical
features, which identifiers (kept for alerts, never fed to a model) and which are excluded.
Its :meth:`FeatureSchema.hash` is a sha256 over a canonical JSON form; every federation update
echoes it and a mismatch is refused, so two organizations can never silently average models built
over different columns.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field, replace
from enum import StrEnum
from functools import cached_property
from typing import Any

from phalanx.core.errors import ConfigError


class ColumnKind(StrEnum):
    """What a column is for."""

    NUMERIC = "numeric"
    """A numeric feature, standardized (after log1p when ``heavy_tailed``)."""
    CATEGORICAL = "categorical"
    """A categorical feature, hashed into ``buckets`` one-hot slots."""
    IDENTIFIER = "identifier"
    """Kept alongside the flow (IPs, ports, timestamps, flow ids) but never a model input."""


@dataclass(frozen=True)
class Column:
    """One column of a source.

    Attributes
    ----------
    name:
        Column name as Phalanx uses it (for CSV sources: the header, stripped of spaces).
    kind:
        What the column is for.
    heavy_tailed:
        Numeric counts, bytes, durations and rates: log1p before standardizing.
    buckets:
        Categorical columns only: the number of hashed one-hot slots.
    reason:
        Why an identifier is excluded from the features (shown by ``phalanx data inspect``).
    """

    name: str
    kind: ColumnKind
    heavy_tailed: bool = False
    buckets: int = 0
    reason: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Canonical, JSON-ready form."""
        return {
            "name": self.name,
            "kind": self.kind.value,
            "heavy_tailed": self.heavy_tailed,
            "buckets": self.buckets,
            "reason": self.reason,
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Column:
        """Inverse of :meth:`to_dict`."""
        return cls(
            name=str(d["name"]),
            kind=ColumnKind(d["kind"]),
            heavy_tailed=bool(d.get("heavy_tailed", False)),
            buckets=int(d.get("buckets", 0)),
            reason=str(d.get("reason", "")),
        )


@dataclass(frozen=True)
class FeatureSchema:
    """The documented feature layout of one source.

    Attributes
    ----------
    source:
        Source format name (``nsl-kdd``, ``unsw-nb15``, ``cic-ids2017``, ``netflow-v2`` ...).
    version:
        Bumped whenever the meaning of a column changes.
    columns:
        Every column the source is read into, in order.
    """

    source: str
    version: int
    columns: tuple[Column, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        names = [c.name for c in self.columns]
        if len(set(names)) != len(names):
            dup = sorted({n for n in names if names.count(n) > 1})
            raise ConfigError(
                f"feature schema {self.source!r} v{self.version} names columns twice: {dup}"
            )
        for c in self.columns:
            if c.kind is ColumnKind.CATEGORICAL and c.buckets < 2:
                raise ConfigError(
                    f"categorical column {c.name!r} of schema {self.source!r} needs buckets >= 2,"
                    f" found {c.buckets}"
                )

    @property
    def numeric(self) -> tuple[str, ...]:
        """Names of the numeric feature columns, in order."""
        return tuple(c.name for c in self.columns if c.kind is ColumnKind.NUMERIC)

    @property
    def categorical(self) -> tuple[str, ...]:
        """Names of the categorical feature columns, in order."""
        return tuple(c.name for c in self.columns if c.kind is ColumnKind.CATEGORICAL)

    @property
    def identifiers(self) -> tuple[str, ...]:
        """Names of the identifier columns (never model inputs), in order."""
        return tuple(c.name for c in self.columns if c.kind is ColumnKind.IDENTIFIER)

    @property
    def features(self) -> tuple[str, ...]:
        """Numeric then categorical feature names: what a model sees, before encoding."""
        return self.numeric + self.categorical

    @cached_property
    def _by_name(self) -> dict[str, Column]:
        return {c.name: c for c in self.columns}

    def column(self, name: str) -> Column:
        """The column called ``name``."""
        found = self._by_name.get(name)
        if found is None:
            raise ConfigError(f"schema {self.source!r} has no column {name!r}")
        return found

    def with_kinds(self, changes: dict[str, ColumnKind]) -> FeatureSchema:
        """A copy with some columns' kinds overridden (e.g. to keep an identifier as a feature).

        The override changes the hash, so a federation can only agree on it explicitly.
        """
        unknown = sorted(set(changes) - {c.name for c in self.columns})
        if unknown:
            raise ConfigError(
                f"cannot override columns {unknown}: schema {self.source!r} has no such columns",
                hint="run 'phalanx data inspect FILE' to list the columns",
            )
        cols = []
        for c in self.columns:
            kind = changes.get(c.name)
            if kind is None:
                cols.append(c)
            elif kind is ColumnKind.CATEGORICAL:
                cols.append(replace(c, kind=kind, buckets=c.buckets or 64, reason=""))
            else:
                cols.append(
                    replace(
                        c,
                        kind=kind,
                        reason=""
                        if kind is not ColumnKind.IDENTIFIER
                        else (c.reason or "excluded by override"),
                    )
                )
        return replace(self, columns=tuple(cols))

    def to_dict(self) -> dict[str, Any]:
        """Canonical, JSON-ready form (what the hash covers)."""
        return {
            "source": self.source,
            "version": self.version,
            "columns": [c.to_dict() for c in self.columns],
        }

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> FeatureSchema:
        """Inverse of :meth:`to_dict`."""
        return cls(
            source=str(d["source"]),
            version=int(d["version"]),
            columns=tuple(Column.from_dict(c) for c in d["columns"]),
        )

    def hash(self) -> str:
        """sha256 hex digest of the canonical JSON form (computed once: the schema is frozen)."""
        return self._digest

    @cached_property
    def _digest(self) -> str:
        blob = json.dumps(self.to_dict(), sort_keys=True, separators=(",", ":")).encode()
        return hashlib.sha256(blob).hexdigest()
