"""Zeek ``conn.log`` (TSV with ``#fields`` or JSON lines) to NetFlow v2 flows.

Paxson, "Bro: A System for Detecting Network Intruders in Real-Time", Computer Networks 1999
(Zeek was called Bro until 2018). The TSV parser is table-driven: each line is a directive
(``#separator``, ``#set_separator``, ``#empty_field``, ``#unset_field``, ``#path``, ``#open``,
``#fields``, ``#types``, ``#close``), a data row, or blank, and a row seen before ``#fields`` is a
:class:`~phalanx.core.errors.FormatError`. Every line is looked at once, so the reader terminates
on any input (zat's reader loops forever on a log without ``#fields``).

Labelled Stratosphere / IoT-23 logs (``conn.log.labeled``) add ``label`` and ``detailed-label``
columns, in the originals separated from ``tunnel_parents`` by three spaces instead of a tab; both
spellings are read. ``Malicious`` rows take the category of their detailed label (see
:data:`phalanx.data.taxonomy.IOT_23`). The field mapping is documented in ``docs/data.md``.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from phalanx.core.errors import FormatError, IngestError
from phalanx.core.features.batch import FlowBatch
from phalanx.data.readers.base import HINT_COLLECT, ErrorMode, ReadReport
from phalanx.data.readers.flowbuild import (
    ACK,
    FIN,
    PROTOCOL_NUMBERS,
    PSH,
    RST,
    SYN,
    TIMESTAMP,
    RecordReader,
    add_rates,
    build_batch,
    l7_proto,
    nan_where,
    raw_plan,
    single_packet_sizes,
)
from phalanx.data.readers.inputs import READ_ERRORS, Head, open_input, translate
from phalanx.data.taxonomy import categorize

FORMAT = "zeek-conn"
REQUIRED = ("ts", "id.orig_h", "id.orig_p", "id.resp_h", "id.resp_p", "proto")
OPTIONAL = (
    "service",
    "duration",
    "orig_ip_bytes",
    "orig_pkts",
    "resp_ip_bytes",
    "resp_pkts",
    "history",
    "label",
    "detailed-label",
)
_NUMBERS = frozenset(
    {"ts", "id.orig_p", "id.resp_p", "duration", "orig_ip_bytes", "orig_pkts", "resp_ip_bytes",
     "resp_pkts"}
)  # fmt: skip
_BLOCK = 1 << 20
_MAX_LINE = 1 << 20
_QUIRK = "   "
# Zeek history letters (upper case: originator, lower case: responder) -> TCP flag bits.
_HISTORY = {"s": SYN, "h": SYN | ACK, "a": ACK, "d": PSH | ACK, "f": FIN | ACK, "r": RST,
            "q": SYN | FIN}  # fmt: skip
COLUMN_OF = {
    "IPV4_SRC_ADDR": "id.orig_h",
    "L4_SRC_PORT": "id.orig_p",
    "IPV4_DST_ADDR": "id.resp_h",
    "L4_DST_PORT": "id.resp_p",
    "PROTOCOL": "proto",
    "L7_PROTO": "service",
    "IN_BYTES": "orig_ip_bytes",
    "IN_PKTS": "orig_pkts",
    "OUT_BYTES": "resp_ip_bytes",
    "OUT_PKTS": "resp_pkts",
    "FLOW_DURATION_MILLISECONDS": "duration",
    "TCP_FLAGS": "history",
    "CLIENT_TCP_FLAGS": "history",
    "SERVER_TCP_FLAGS": "history",
}
"""NetFlow v2 column -> the conn.log field it comes from (the rest: see ``docs/data.md``)."""


def score(head: Head) -> float:
    """1 for a Zeek TSV log (``#separator`` first) or a JSON conn log, else 0."""
    data = head.data[head.bom :]
    if data.startswith(b"#separator"):
        return 1.0
    if data.startswith(b"{"):
        first = head.lines(1)
        if first:
            try:
                doc = json.loads(first[0][0])
            except ValueError:
                return 0.0
            if isinstance(doc, dict) and "id.orig_h" in doc and "id.resp_h" in doc:
                return 1.0
    return 0.0


@dataclass
class _Header:
    separator: str = "\t"
    unset: str = "-"
    empty: str = "(empty)"
    fields: list[str] | None = None
    quirk: bool = False
    closed: bool = False


def _unescape(value: str) -> str:
    r"""``\x09`` -> tab (Zeek writes the separator escaped)."""
    try:
        return value.encode("latin-1", errors="strict").decode("unicode_escape")
    except (UnicodeError, ValueError):
        return value


def _lines(path: Path) -> Iterator[tuple[int, str]]:
    """``(line number, text)`` of the decompressed file, CR/LF removed; bounded line length."""
    stream = open_input(path)
    try:
        rest = b""
        number = 0
        while True:
            try:
                block = bytes(stream.read(_BLOCK))
            except READ_ERRORS as e:
                raise translate(path, e, line=number + 1) from e
            if not block:
                break
            parts = (rest + block).split(b"\n")
            rest = parts.pop()
            if len(rest) > _MAX_LINE:
                raise FormatError(
                    str(path),
                    f"a line is longer than {_MAX_LINE} bytes",
                    line=number + len(parts) + 1,
                    expected="one connection per line",
                    hint="the file is probably not a Zeek log",
                )
            for raw in parts:
                number += 1
                yield number, raw.rstrip(b"\r").decode("utf-8", errors="replace")
        if rest:
            yield number + 1, rest.rstrip(b"\r").decode("utf-8", errors="replace")
    finally:
        stream.close()


def _directive(path: Path, line: int, text: str, h: _Header) -> None:
    name, _, value = text.partition(h.separator if not text.startswith("#separator") else " ")
    key = name.strip()
    if key == "#separator":
        sep = _unescape(value.strip())
        if not sep:
            raise FormatError(str(path), "empty #separator", line=line, expected="e.g. \\x09")
        h.separator = sep
    elif key == "#unset_field":
        h.unset = value
    elif key == "#empty_field":
        h.empty = value
    elif key == "#fields":
        fields = value.split(h.separator)
        h.quirk = any(_QUIRK in f for f in fields)
        fields = [p.strip() for f in fields for p in f.split(_QUIRK)]
        missing = [f for f in REQUIRED if f not in fields]
        if missing:
            raise FormatError(
                str(path),
                "this Zeek log is not a conn.log",
                line=line,
                expected=f"fields {', '.join(REQUIRED)}",
                found=f"#fields without {', '.join(missing)}",
                hint="read the conn.log of the Zeek output folder",
            )
        h.fields = fields
        h.closed = False
    elif key == "#close":
        h.closed = True
    # #set_separator, #path, #open, #types and unknown directives carry nothing we need.


def _tsv_rows(path: Path, report: ReadReport, errors: ErrorMode) -> Iterator[dict[str, Any]]:
    h = _Header()
    for line, text in _lines(path):
        if not text.strip():
            continue
        if text.startswith("#"):
            _directive(path, line, text, h)
            continue
        if h.fields is None:
            raise FormatError(
                str(path),
                "a data row comes before the #fields line",
                line=line,
                expected="the Zeek header (#separator ... #fields ... #types)",
                found=text[:80],
                hint="this is not a Zeek TSV log, or its header was cut off",
            )
        parts = text.split(h.separator)
        if h.quirk and len(parts) != len(h.fields):
            parts = [p for part in parts for p in part.split(_QUIRK)]
        if len(parts) != len(h.fields):
            _bad(path, line, f"{len(parts)} fields, the #fields line names {len(h.fields)}",
                 report, errors)  # fmt: skip
            continue
        row: dict[str, Any] = {}
        for name, value in zip(h.fields, parts, strict=True):
            row[name] = None if value in (h.unset, h.empty) else value
        row["_line"] = line
        yield row


def _json_rows(path: Path, report: ReadReport, errors: ErrorMode) -> Iterator[dict[str, Any]]:
    for line, text in _lines(path):
        if not text.strip():
            continue
        try:
            doc = json.loads(text)
        except ValueError as e:
            _bad(path, line, f"not a JSON object ({e})", report, errors)
            continue
        if not isinstance(doc, dict):
            _bad(path, line, f"a JSON {type(doc).__name__}, not an object", report, errors)
            continue
        missing = [f for f in REQUIRED if f not in doc]
        if missing:
            _bad(path, line, f"no {', '.join(missing)}: not a conn.log record", report, errors)
            continue
        doc["_line"] = line
        yield doc


def _bad(path: Path, line: int, reason: str, report: ReadReport, errors: ErrorMode) -> None:
    if errors == "strict":
        raise IngestError(str(path), reason, line=line, hint=HINT_COLLECT)
    report.quarantine(line, reason)


def _number(value: Any) -> float:
    if value is None or value == "":
        return math.nan
    if isinstance(value, bool):
        raise ValueError(f"{value!r} is not a number")
    return float(value)


def _record(row: dict[str, Any]) -> tuple[Any, ...]:
    """One validated record; ValueError naming the field when a number does not parse."""
    nums: dict[str, float] = {}
    for f in _NUMBERS:
        try:
            nums[f] = _number(row.get(f))
        except (TypeError, ValueError):
            raise ValueError(f"field {f}: {row.get(f)!r} is not a number") from None
    if math.isnan(nums["ts"]):
        raise ValueError("field ts is unset")

    def text(f: str) -> str:
        v = row.get(f)
        return "" if v is None else str(v)

    return (nums, text("id.orig_h"), text("id.resp_h"), text("proto").lower(),
            text("service"), text("history"), text("label"), text("detailed-label"))  # fmt: skip


def _flags(history: str) -> tuple[int, int]:
    client = server = 0
    for ch in history:
        bit = _HISTORY.get(ch.lower(), 0)
        if ch.isupper():
            client |= bit
        else:
            server |= bit
    return client, server


def _label(label: str, detailed: str) -> tuple[str, str]:
    if not label or label.strip() in ("", "-"):
        return "", ""
    if label.strip().lower() == "benign":
        return label.strip(), "benign"
    name = detailed.strip() if detailed.strip() not in ("", "-") else label.strip()
    return name, categorize(name)[0]


def _batch(records: list[tuple[Any, ...]], report: ReadReport) -> FlowBatch:
    n = len(records)
    nums = {f: np.array([r[0][f] for r in records], dtype=np.float64) for f in _NUMBERS}
    proto = np.array([r[3] for r in records], dtype=object)
    v6 = np.array([":" in r[1] for r in records], dtype=bool)
    number = np.array([PROTOCOL_NUMBERS.get(p, 0) for p in proto], dtype=np.int64)
    number = np.where((number == 1) & v6, 58, number)
    tcp = number == 6
    icmp = (number == 1) | (number == 58)
    flags = np.array([_flags(r[5]) for r in records], dtype=np.float64).reshape(n, 2)
    flags[~tcp] = 0.0
    services = [r[4] for r in records]
    l7 = np.array([l7_proto(s) if s else "0.0" for s in services], dtype=object)
    dport = nums["id.resp_p"]
    dns = np.array(["dns" in s for s in services], dtype=bool) | (dport == 53)
    ftp = np.array(["ftp" in s for s in services], dtype=bool) | (dport == 21)
    nan = np.full(n, np.nan)
    dur = np.nan_to_num(nums["duration"], nan=0.0) * 1000.0
    icmp_type = np.where(icmp, nums["id.orig_p"] * 256 + dport, 0.0)
    cols: dict[str, NDArray[np.float64]] = {
        "IN_BYTES": nums["orig_ip_bytes"],
        "IN_PKTS": nums["orig_pkts"],
        "OUT_BYTES": nums["resp_ip_bytes"],
        "OUT_PKTS": nums["resp_pkts"],
        "TCP_FLAGS": (flags[:, 0].astype(np.int64) | flags[:, 1].astype(np.int64)).astype(
            np.float64
        ),
        "CLIENT_TCP_FLAGS": flags[:, 0],
        "SERVER_TCP_FLAGS": flags[:, 1],
        "FLOW_DURATION_MILLISECONDS": dur,
        "DURATION_IN": np.where(nums["orig_pkts"] <= 1, 0.0, nan),
        "DURATION_OUT": np.where(nums["resp_pkts"] <= 1, 0.0, nan),
        "TCP_WIN_MAX_IN": nan_where(tcp),
        "TCP_WIN_MAX_OUT": nan_where(tcp),
        "ICMP_TYPE": icmp_type,
        "ICMP_IPV4_TYPE": np.where(number == 1, nums["id.orig_p"], 0.0),
        "DNS_QUERY_TYPE": nan_where(dns),
        "DNS_TTL_ANSWER": nan_where(dns),
        "FTP_COMMAND_RET_CODE": nan_where(ftp),
    }
    for name in ("BYTES", "PKTS"):
        cols[f"RETRANSMITTED_IN_{name}"] = nan_where(tcp)
        cols[f"RETRANSMITTED_OUT_{name}"] = nan_where(tcp)
    cols.update(single_packet_sizes(nums))
    add_rates(cols)
    ports = np.where(icmp, 0, np.nan_to_num(dport, nan=0.0)).astype(np.int64)
    categorical = {
        "L4_DST_PORT": np.array([str(p) for p in ports], dtype=object),
        "PROTOCOL": np.array([str(p) for p in number], dtype=object),
        "L7_PROTO": l7,
    }
    identifiers: dict[str, NDArray[Any]] = {
        "IPV4_SRC_ADDR": np.array([r[1] for r in records], dtype=object),
        "L4_SRC_PORT": np.nan_to_num(nums["id.orig_p"], nan=0.0).astype(np.int64),
        "IPV4_DST_ADDR": np.array([r[2] for r in records], dtype=object),
        "L4_DST_PORT": ports,
        TIMESTAMP: np.rint(nums["ts"] * 1000.0).astype(np.int64),
    }
    labels = [_label(r[6], r[7]) for r in records]
    label = np.array([a for a, _ in labels], dtype=object)
    category = np.array([b for _, b in labels], dtype=object)
    for name, cat in labels:
        if name and cat != "benign" and not categorize(name)[1]:
            report.unknown_labels[name] = report.unknown_labels.get(name, 0) + 1
    return build_batch(cols, categorical, identifiers, label, category, report)


def _chunks(
    path: Path, json_lines: bool, chunk_rows: int, errors: ErrorMode
) -> Callable[[ReadReport], Iterator[FlowBatch]]:
    def run(report: ReadReport) -> Iterator[FlowBatch]:
        rows = (_json_rows if json_lines else _tsv_rows)(path, report, errors)
        records: list[tuple[Any, ...]] = []
        for row in rows:
            try:
                records.append(_record(row))
            except ValueError as e:
                _bad(path, int(row["_line"]), str(e), report, errors)
                continue
            if len(records) >= chunk_rows:
                yield _batch(records, report)
                records = []
        if records:
            yield _batch(records, report)

    return run


def open_zeek(path: Path, head: Head, *, chunk_rows: int, errors: ErrorMode) -> RecordReader:
    """A reader of the conn.log at ``path`` (TSV or JSON lines, by its head).

    Raises
    ------
    FormatError
        When the head is neither a Zeek TSV header nor a JSON conn record.
    """
    data = head.data[head.bom :]
    if data.startswith(b"#"):
        json_lines = False
    elif score(head) > 0:
        json_lines = True
    else:
        first = head.lines(1)
        raise FormatError(
            str(path),
            "this is not a Zeek conn.log",
            line=1,
            expected="a TSV log starting with #separator, or JSON lines with id.orig_h",
            found=first[0][0][:80] if first else data[:80].decode("utf-8", errors="replace"),
            hint="pass the right --format, or --format auto",
        )
    labelled = b"detailed-label" in data or b'"label"' in data
    plan = raw_plan(
        FORMAT,
        [*REQUIRED, *OPTIONAL],
        dict(COLUMN_OF),
        label="detailed-label" if labelled else None,
    )
    return RecordReader(
        path, plan, _chunks(path, json_lines, chunk_rows, errors), chunk_rows=chunk_rows,
        errors=errors,
    )  # fmt: skip
