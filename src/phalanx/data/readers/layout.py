"""Matching a file's columns to a documented schema, table-driven.

A :class:`Layout` says what one format's columns are called (schema columns, aliases, label
columns, known columns to drop). :func:`plan_columns` matches a file's column names against it
(tolerantly: spaces and case do not matter), drops duplicates and unknown columns with a reason,
restricts the schema to the feature columns present, and applies user overrides.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from pathlib import Path

from phalanx.core.errors import FormatError, SchemaError
from phalanx.core.features.schema import ColumnKind, FeatureSchema
from phalanx.data.readers.base import Plan, column_key

_PANDAS_DUP = re.compile(r"^(.*)\.(\d+)$")


@dataclass(frozen=True)
class Layout:
    """The column vocabulary of one format (or one variant of it).

    Attributes
    ----------
    format:
        Format name.
    schema:
        The full documented schema.
    aliases:
        Other spellings (as :func:`column_key` keys) -> schema column name.
    label:
        Keys of multi-class label columns, in order of preference.
    binary:
        Keys of binary label columns.
    drop:
        Keys of known non-feature columns -> reason they are not read.
    min_known:
        Fewest schema columns a file must name to be taken as this format.
    """

    format: str
    schema: FeatureSchema
    aliases: dict[str, str] = field(default_factory=dict)
    label: tuple[str, ...] = ()
    binary: tuple[str, ...] = ()
    drop: dict[str, str] = field(default_factory=dict)
    min_known: int = 5

    def lookup(self) -> dict[str, str]:
        """Column key -> schema column name (schema names and aliases)."""
        table = {column_key(c.name): c.name for c in self.schema.columns}
        table.update(self.aliases)
        return table

    def known(self, names: list[str]) -> int:
        """How many of ``names`` are columns of this layout (schema, label or known drops)."""
        table = self.lookup()
        vocab = set(table) | set(self.label) | set(self.binary) | set(self.drop)
        return sum(1 for n in names if column_key(n) in vocab)


def split_header(text: str) -> list[str]:
    """The fields of one CSV header line (quotes respected when they parse)."""
    try:
        return next(csv.reader([text]), [])
    except csv.Error:
        return text.split(",")


def plan_columns(
    layout: Layout,
    path: Path,
    raw_names: list[str],
    *,
    header_bytes: int,
    header_lines: int,
    overrides: dict[str, ColumnKind] | None,
    label_is_binary: bool = False,
) -> Plan:
    """Match ``raw_names`` (file order) to ``layout`` and decide how to read the file.

    Raises
    ------
    FormatError
        When the file names fewer than ``layout.min_known`` of the layout's columns.
    SchemaError
        When an override names a column the file does not have.
    """
    lookup = layout.lookup()
    seen: dict[str, str] = {}  # schema name -> key
    keys: list[str] = []
    dropped: dict[str, str] = {}
    duplicates: list[str] = []
    label_key: str | None = None
    binary_key: str | None = None
    for i, raw in enumerate(raw_names):
        key = f"c{i}"
        keys.append(key)
        ck = column_key(raw)
        name = lookup.get(ck)
        dup = _PANDAS_DUP.match(ck)
        if name is not None and name in seen:
            duplicates.append(raw)
            dropped[raw] = f"duplicate of column {name!r} (same name twice in the header)"
        elif name is None and dup is not None and lookup.get(dup.group(1)) in seen:
            duplicates.append(raw)
            dropped[raw] = (
                f"duplicate of column {lookup[dup.group(1)]!r} (CICFlowMeter writes it twice;"
                " the copy was renamed with a numeric suffix)"
            )
        elif name is not None:
            seen[name] = key
        elif ck in layout.label and label_key is None:
            label_key = key
        elif ck in layout.binary and binary_key is None:
            binary_key = key
        elif ck in layout.drop:
            dropped[raw] = layout.drop[ck]
        else:
            dropped[raw] = f"not a column of the {layout.schema.source} schema"
    if label_is_binary and label_key is not None:
        label_key, binary_key = None, label_key
    if len(seen) < layout.min_known:
        raise FormatError(
            str(path),
            f"this is not a {layout.format} file",
            line=header_lines or None,
            expected=f"at least {layout.min_known} of the {layout.format} columns"
            f" ({', '.join(c.name for c in layout.schema.columns[:4])}, ...)",
            found=f"{len(seen)} of them among {len(raw_names)} columns: " + ",".join(raw_names[:8]),
            hint="pass the right --format, or --format auto",
        )
    schema, notes = _restrict(layout.schema, set(seen))
    if overrides:
        schema = schema.with_kinds(overrides)
        absent = sorted(n for n in overrides if n not in seen)
        if absent:
            raise SchemaError(
                str(path),
                f"cannot override columns {absent}: the file does not have them",
                expected="columns present in the file",
                found=", ".join(raw_names[:10]),
            )
        notes.append(
            "column kinds overridden: "
            + ", ".join(f"{k}={v.value}" for k, v in sorted(overrides.items()))
        )
    return Plan(
        format=layout.format,
        schema=schema,
        keys=tuple(keys),
        raw_names=tuple(raw_names),
        column_of=seen,
        header_bytes=header_bytes,
        header_lines=header_lines,
        label_key=label_key,
        binary_key=binary_key,
        dropped=dropped,
        duplicates=tuple(duplicates),
        notes=tuple(notes),
    )


def _restrict(schema: FeatureSchema, present: set[str]) -> tuple[FeatureSchema, list[str]]:
    """``schema`` without the feature columns absent from the file.

    Identifier columns stay even when absent: they are never model inputs, so a file that lacks
    one (e.g. NSL-KDD's ``difficulty`` in the ARFF copies) keeps the schema hash of the source.
    """
    missing = [
        c.name
        for c in schema.columns
        if c.name not in present and c.kind is not ColumnKind.IDENTIFIER
    ]
    if not missing:
        return schema, []
    kept = tuple(c for c in schema.columns if c.name in present or c.kind is ColumnKind.IDENTIFIER)
    note = (
        f"schema restricted to the {len(kept)} of {len(schema.columns)} known columns present"
        f" ({len(missing)} feature columns absent, e.g. {', '.join(missing[:3])}):"
        " its hash differs from the full schema's"
    )
    return FeatureSchema(source=schema.source, version=schema.version, columns=kept), [note]
