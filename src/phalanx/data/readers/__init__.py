"""Readers of flow datasets: stream a file in chunks into :class:`FlowBatch` objects.

Public API::

    FORMATS        # CSV datasets: ("nsl-kdd", "unsw-nb15", "cic-ids2017", "netflow-v2")
    RAW_FORMATS    # raw sources read into NetFlow v2: ("pcap", "zeek-conn")
    ALL_FORMATS    # FORMATS + RAW_FORMATS
    detect_format(path) -> str
    open_flows(path, format="auto", *, chunk_rows=65536, errors="strict", overrides=None)
        -> FlowReader | RecordReader          # iterable of FlowBatch; .format .schema .path .report
    read_flows(path, format="auto", **kw) -> (FlowBatch, ReadReport)
    inspect_file(path, format="auto", errors="strict") -> dict

Formats, quirks and the label taxonomy are documented in ``docs/data.md``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from phalanx.core.errors import ConfigError, FormatError
from phalanx.core.features.batch import FlowBatch
from phalanx.core.features.schema import ColumnKind
from phalanx.data.readers import pcap, zeek
from phalanx.data.readers.base import (
    ALL_FORMATS,
    FORMATS,
    RAW_FORMATS,
    ErrorMode,
    Plan,
    ReadReport,
    check_mode,
)
from phalanx.data.readers.csvio import FlowReader
from phalanx.data.readers.detect import PLANNERS, detect_format, detect_head, guess
from phalanx.data.readers.flowbuild import RecordReader
from phalanx.data.readers.inputs import Head, read_head

__all__ = [
    "ALL_FORMATS",
    "FORMATS",
    "RAW_FORMATS",
    "FlowReader",
    "ReadReport",
    "RecordReader",
    "detect_format",
    "inspect_file",
    "open_flows",
    "read_flows",
]


def _plan(path: Path, head: Head, format: str, overrides: dict[str, ColumnKind] | None) -> Plan:
    if format == "auto":
        return PLANNERS[detect_head(path, head)](path, head, overrides)
    try:
        return PLANNERS[format](path, head, overrides)
    except FormatError as e:
        other = guess(head)
        if other is None or other == format:
            raise
        raise FormatError(
            str(path),
            f"this is not a {format} file: it looks like {other}",
            line=e.line,
            expected=e.expected,
            found=e.found,
            hint=f"pass --format {other} or --format auto",
        ) from e


def open_flows(
    path: str | Path,
    format: str = "auto",
    *,
    chunk_rows: int = 65536,
    errors: ErrorMode = "strict",
    overrides: dict[str, ColumnKind] | None = None,
) -> FlowReader | RecordReader:
    """Open a flow dataset file for streaming.

    Parameters
    ----------
    path:
        A ``.csv``/``.txt``/``.arff`` file, optionally gzip/bz2/zstd-compressed or a ``.zip``
        holding one file; a Zeek ``conn.log`` (TSV or JSON lines, optionally compressed); or an
        uncompressed pcap/pcapng capture.
    format:
        ``"auto"`` (detect from the header, magic number and content) or one of
        :data:`ALL_FORMATS`.
    chunk_rows:
        Rows per :class:`FlowBatch` (the last one may hold fewer).
    errors:
        ``"strict"``: the first malformed row raises an :class:`IngestError` naming
        ``path:line``. ``"collect"``: malformed rows are quarantined and counted in the report.
    overrides:
        Column kinds to change (e.g. keep an identifier as a feature); recorded in the report
        and changing the schema hash.

    Returns
    -------
    FlowReader
        Iterable of :class:`FlowBatch`; ``.report`` is complete once it is exhausted.
    """
    check_mode(format, errors)
    if chunk_rows < 1:
        raise ConfigError(f"chunk_rows must be at least 1, found {chunk_rows}")
    p = Path(path)
    head = read_head(p)
    kind = detect_head(p, head) if format == "auto" else format
    if kind in RAW_FORMATS:
        if overrides:
            raise ConfigError(
                f"column overrides do not apply to {kind} input: it is read into the full"
                " NetFlow v2 schema",
                hint="drop the overrides, or convert the flows to a NetFlow v2 CSV first",
            )
        opener = pcap.open_pcap if kind == "pcap" else zeek.open_zeek
        return opener(p, head, chunk_rows=chunk_rows, errors=errors)
    return FlowReader(p, _plan(p, head, kind, overrides), chunk_rows=chunk_rows, errors=errors)


def read_flows(path: str | Path, format: str = "auto", **kw: Any) -> tuple[FlowBatch, ReadReport]:
    """Read a whole file: all chunks concatenated, and the report."""
    reader = open_flows(path, format, **kw)
    batches = list(reader)
    if batches:
        return FlowBatch.concat(batches), reader.report
    return _empty(reader), reader.report


def _empty(reader: FlowReader | RecordReader) -> FlowBatch:
    schema = reader.schema
    return FlowBatch(
        schema=schema,
        numeric=np.empty((0, len(schema.numeric)), dtype=np.float64),
        categorical=np.empty((0, len(schema.categorical)), dtype=object),
        label=np.empty(0, dtype=object),
        category=np.empty(0, dtype=object),
        identifiers={},
        n_infinite=np.zeros(len(schema.numeric), dtype=np.int64),
    )


def inspect_file(
    path: str | Path,
    format: str = "auto",
    errors: ErrorMode = "strict",
    *,
    overrides: dict[str, ColumnKind] | None = None,
) -> dict[str, Any]:
    """Read a file through and describe it (what ``phalanx data inspect`` shows).

    Returns
    -------
    dict
        ``format``, ``rows``, ``features`` (feature columns used), ``numeric``,
        ``categorical``, ``identifiers``, ``dropped`` (column -> reason: identifiers, excluded
        and unread columns), ``label_columns``, ``labels`` and ``categories`` (counts),
        ``unknown_labels``, ``binary_labels``, ``quarantined``, ``quarantine_samples``,
        ``n_missing`` / ``n_infinite`` (numeric columns with any), ``schema`` (source, version,
        hash), ``duplicate_columns`` and ``notes``.
    """
    reader = open_flows(path, format, errors=errors, overrides=overrides)
    for _ in reader:
        pass
    plan, report, schema = reader.plan, reader.report, reader.schema
    dropped = {
        c.name: c.reason
        for c in schema.columns
        if c.kind is ColumnKind.IDENTIFIER and c.name in plan.column_of
    }
    dropped.update(report.dropped_columns)
    by_key = dict(zip(plan.keys, plan.raw_names, strict=True))
    info = report.to_dict()
    info.update(
        features=list(schema.features),
        numeric=list(schema.numeric),
        categorical=list(schema.categorical),
        identifiers=[n for n in schema.identifiers if n in plan.column_of],
        dropped=dropped,
        label_columns=[by_key[k] for k in (plan.label_key, plan.binary_key) if k is not None],
        n_missing={k: v for k, v in report.n_missing.items() if v},
        n_infinite={k: v for k, v in report.n_infinite.items() if v},
    )
    return info
