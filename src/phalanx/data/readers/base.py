"""What every reader shares: the read plan, the read report, and the error vocabulary.

A reader first looks at the head of a file and makes a :class:`Plan` (which column is which, how
many header bytes to skip, where the labels are); the CSV engine in :mod:`.csvio` then streams the
rest of the file by that plan and fills a :class:`ReadReport`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any, Literal

from phalanx.core.errors import ConfigError
from phalanx.core.features.schema import FeatureSchema

FORMATS: tuple[str, ...] = ("nsl-kdd", "unsw-nb15", "cic-ids2017", "netflow-v2")
"""Flow dataset (CSV) format names a user can pass (``--format``)."""
RAW_FORMATS: tuple[str, ...] = ("pcap", "zeek-conn")
"""Raw sources read into the NetFlow v2 schema: packet captures and Zeek conn logs."""
ALL_FORMATS: tuple[str, ...] = FORMATS + RAW_FORMATS
"""Every format name ``--format`` accepts; ``"auto"`` detects one of them."""

ErrorMode = Literal["strict", "collect"]

QUARANTINE_SAMPLES = 20
"""How many quarantined rows the report keeps as ``(line, reason)`` examples."""

HINT_COLLECT = (
    "fix or remove the row, or read with errors='collect' (phalanx data inspect --collect-errors)"
    " to quarantine bad rows and keep the rest"
)

_SPACES = re.compile(r"\s+")


def column_key(name: str) -> str:
    """Tolerant key of a column name: stripped, inner spaces collapsed, lower case."""
    return _SPACES.sub(" ", name.replace("\ufeff", "").strip()).lower()


def check_mode(format: str, errors: str) -> None:
    """Refuse an unknown format name or error mode with a :class:`ConfigError`."""
    if format != "auto" and format not in ALL_FORMATS:
        raise ConfigError(
            f"unknown data format {format!r}; expected 'auto' or one of {', '.join(ALL_FORMATS)}"
        )
    if errors not in ("strict", "collect"):
        raise ConfigError(f"unknown error mode {errors!r}; expected 'strict' or 'collect'")


@dataclass(frozen=True)
class Plan:
    """How to read one file, decided from its head.

    Attributes
    ----------
    format:
        Format name (one of :data:`FORMATS`).
    schema:
        The effective schema: the format's schema restricted to the feature columns present in
        the file, with any overrides applied.
    keys:
        One unique name per file column, in file order (what the CSV parser is given).
    raw_names:
        The column names as written in the file (or as documented, for headerless files).
    column_of:
        Schema column name -> key of the file column holding it (present columns only).
    header_bytes, header_lines:
        Bytes and physical lines before the first data row.
    label_key:
        Key of the multi-class label column, if any.
    binary_key:
        Key of a binary (attack / no attack) label column, if any.
    dropped:
        File columns not read, by raw name, with the reason.
    duplicates:
        Raw names of duplicated columns (dropped, reported).
    notes:
        Remarks for the report (e.g. schema restricted to a subset of columns).
    """

    format: str
    schema: FeatureSchema
    keys: tuple[str, ...]
    raw_names: tuple[str, ...]
    column_of: dict[str, str]
    header_bytes: int
    header_lines: int
    label_key: str | None = None
    binary_key: str | None = None
    dropped: dict[str, str] = field(default_factory=dict)
    duplicates: tuple[str, ...] = ()
    notes: tuple[str, ...] = ()

    @property
    def binary_labels(self) -> bool:
        """True when the source only says attack / no attack."""
        return self.label_key is None and self.binary_key is not None

    @property
    def labelled(self) -> bool:
        """True when the file has a label column."""
        return self.label_key is not None or self.binary_key is not None


@dataclass
class ReadReport:
    """What happened while reading one file (complete once the reader is exhausted).

    Attributes
    ----------
    path, format, schema_source, schema_version, schema_hash:
        What was read and with which schema.
    rows:
        Rows delivered in batches.
    empty_rows:
        Rows whose fields are all empty (the CIC-IDS2017 Thursday file has many), skipped.
    quarantined:
        Rows set aside in collect mode (wrong field count, non-numeric value in a numeric column).
    quarantine_samples:
        Up to :data:`QUARANTINE_SAMPLES` ``(line, reason)`` pairs.
    labels, categories:
        Counts of original labels and of taxonomy categories among delivered rows.
    unknown_labels:
        Labels no taxonomy table knows (mapped to ``other``), with counts.
    binary_labels:
        True when the source only has a binary label (attacks all map to ``other``).
    dropped_columns:
        File columns not read, with the reason; ``duplicate_columns`` lists the duplicated ones.
    n_missing, n_infinite:
        Per numeric column: missing values (NaN) and infinite values (turned into NaN).
    notes:
        Anything else worth telling the user.
    """

    path: str
    format: str
    schema_source: str
    schema_version: int
    schema_hash: str
    rows: int = 0
    empty_rows: int = 0
    quarantined: int = 0
    quarantine_samples: list[tuple[int | None, str]] = field(default_factory=list)
    labels: dict[str, int] = field(default_factory=dict)
    categories: dict[str, int] = field(default_factory=dict)
    unknown_labels: dict[str, int] = field(default_factory=dict)
    binary_labels: bool = False
    labelled: bool = True
    dropped_columns: dict[str, str] = field(default_factory=dict)
    duplicate_columns: list[str] = field(default_factory=list)
    n_missing: dict[str, int] = field(default_factory=dict)
    n_infinite: dict[str, int] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    @classmethod
    def start(cls, path: str, plan: Plan) -> ReadReport:
        """An empty report for reading ``path`` by ``plan``."""
        return cls(
            path=path,
            format=plan.format,
            schema_source=plan.schema.source,
            schema_version=plan.schema.version,
            schema_hash=plan.schema.hash(),
            binary_labels=plan.binary_labels,
            labelled=plan.labelled,
            dropped_columns=dict(plan.dropped),
            duplicate_columns=list(plan.duplicates),
            n_missing=dict.fromkeys(plan.schema.numeric, 0),
            n_infinite=dict.fromkeys(plan.schema.numeric, 0),
            notes=list(plan.notes),
        )

    def quarantine(self, line: int | None, reason: str) -> None:
        """Count one quarantined row, keeping the first few as examples."""
        self.quarantined += 1
        if len(self.quarantine_samples) < QUARANTINE_SAMPLES:
            self.quarantine_samples.append((line, reason))

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {
            "path": self.path,
            "format": self.format,
            "schema": {
                "source": self.schema_source,
                "version": self.schema_version,
                "hash": self.schema_hash,
            },
            "rows": self.rows,
            "empty_rows": self.empty_rows,
            "quarantined": self.quarantined,
            "quarantine_samples": [
                {"line": line, "reason": reason} for line, reason in self.quarantine_samples
            ],
            "labels": dict(self.labels),
            "categories": dict(self.categories),
            "unknown_labels": dict(self.unknown_labels),
            "binary_labels": self.binary_labels,
            "labelled": self.labelled,
            "dropped_columns": dict(self.dropped_columns),
            "duplicate_columns": list(self.duplicate_columns),
            "n_missing": dict(self.n_missing),
            "n_infinite": dict(self.n_infinite),
            "notes": list(self.notes),
        }
