"""ECS alert documents, rendered column-wise into JSON lines.

:class:`AlertBatch` holds the alerts raised on one batch of flows as arrays (rows, scores,
categories, top features, flow fields); :meth:`AlertBatch.to_jsonl` renders them all at once with
pyarrow's string kernels: each variable field becomes a column of JSON fragments (numbers in their
shortest round-trip form, strings quoted, escaped by :func:`json.dumps` only where needed), the
per-category parts (rule, threat) are rendered once per category and gathered, and the columns
are joined element-wise into lines. No per-alert Python dictionary is built. The document is the
one ``phalanx detect`` has always written (``tests/services/test_alerts.py`` checks it, parsed,
against the former per-alert renderer):

``@timestamp``, ``event.*`` (kind ``alert``, created, ``risk_score`` for the classifier,
severity), ``source.ip``/``port``, ``destination.ip``/``port``, ``network.transport`` and
``iana_number``, ``rule.*``, ``threat.*`` (MITRE ATT&CK) and ``phalanx.*`` (category, score,
threshold, model, top features, input path and row).

A step between scoring and rendering (alert correlation) may replace :attr:`AlertBatch.category`
and add fields under ``phalanx`` through :attr:`AlertBatch.extra`.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Sequence
from dataclasses import dataclass
from itertools import repeat
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from phalanx.core.features.batch import FlowBatch

TIMESTAMP = "FLOW_START_MILLISECONDS"
TRANSPORTS = {"1": "icmp", "2": "igmp", "6": "tcp", "17": "udp", "47": "gre", "58": "ipv6-icmp"}
TACTICS: dict[str, tuple[str, str, str, str]] = {
    "dos": ("TA0040", "Impact", "T1499", "Endpoint Denial of Service"),
    "ddos": ("TA0040", "Impact", "T1498", "Network Denial of Service"),
    "recon": ("TA0043", "Reconnaissance", "T1595", "Active Scanning"),
    "brute-force": ("TA0006", "Credential Access", "T1110", "Brute Force"),
    "web-attack": ("TA0001", "Initial Access", "T1190", "Exploit Public-Facing Application"),
    "botnet-c2": ("TA0011", "Command and Control", "T1071", "Application Layer Protocol"),
    "exploit": ("TA0001", "Initial Access", "T1190", "Exploit Public-Facing Application"),
    "backdoor": ("TA0003", "Persistence", "T1133", "External Remote Services"),
    "infiltration": ("TA0010", "Exfiltration", "T1041", "Exfiltration Over C2 Channel"),
}
"""Taxonomy category -> MITRE ATT&CK (tactic id, tactic, technique id, technique)."""

_MS_MIN, _MS_MAX = -62_135_596_800_000, 253_402_300_799_999
"""Epoch milliseconds of 0001-01-01 and 9999-12-31T23:59:59.999 (datetime's range)."""
_NEEDS_ESCAPE = r'[^ -~]|["\\]'
"""Characters :func:`json.dumps` escapes (with ``ensure_ascii``): all but printable ASCII,
and the quote and backslash."""


def threat(category: str) -> dict[str, Any]:
    """The ECS ``threat`` object of a category (MITRE ATT&CK tactic and technique when known)."""
    doc: dict[str, Any] = {"framework": "MITRE ATT&CK"}
    tactic = TACTICS.get(category)
    if tactic is not None:
        doc["tactic"] = {"id": [tactic[0]], "name": [tactic[1]]}
        doc["technique"] = {"id": [tactic[2]], "name": [tactic[3]]}
    return doc


@dataclass(frozen=True)
class FlowFields:
    """Alert-relevant identifiers of the alerting flows, as nullable arrow arrays.

    Attributes
    ----------
    src_ip, dst_ip:
        Addresses as text (``uint32`` columns are formatted as dotted IPv4).
    src_port, dst_port:
        ``int64`` ports (null when absent or not a number).
    proto:
        IANA protocol number as text (``"6"``); ``transport`` its name (``"tcp"``).
    start_ms:
        Flow start, epoch milliseconds (null when unknown).
    """

    src_ip: pa.Array
    dst_ip: pa.Array
    src_port: pa.Array
    dst_port: pa.Array
    proto: pa.Array
    transport: pa.Array
    start_ms: pa.Array

    @classmethod
    def of(cls, batch: FlowBatch, rows: NDArray[np.intp]) -> FlowFields:
        """The fields of ``rows`` of ``batch``; columns the input lacks are all null."""
        ids = batch.identifiers
        n = len(rows)
        cat = {name: batch.categorical[rows, j] for j, name in enumerate(batch.schema.categorical)}

        def ident(name: str) -> NDArray[Any] | None:
            return ids[name][rows] if name in ids else None

        nulls = pa.nulls(n, pa.string())
        src, dst = ident("IPV4_SRC_ADDR"), ident("IPV4_DST_ADDR")
        dport = ident("L4_DST_PORT")
        proto = cat.get("PROTOCOL")
        proto_text = nulls
        if proto is not None:
            proto_text = pc.replace_substring_regex(_texts(proto), r"(?s)\..*", "")
        return cls(
            src_ip=nulls if src is None else _addresses(src),
            dst_ip=nulls if dst is None else _addresses(dst),
            src_port=_ports(ident("L4_SRC_PORT"), n),
            dst_port=_ports(dport if dport is not None else cat.get("L4_DST_PORT"), n),
            proto=proto_text,
            transport=_lookup(proto_text, TRANSPORTS),
            start_ms=_start_ms(ident(TIMESTAMP), n),
        )


@dataclass
class AlertBatch:
    """The alerts raised on one batch of flows, column-wise, before rendering.

    Attributes
    ----------
    rows:
        ``(n,)`` each alert's flow index in the batch (``offset + rows`` in its input).
    offset:
        Index of the batch's first flow in its input.
    score:
        ``(n,)`` attack scores.
    category:
        ``(n,)`` object array of category names; may be replaced before rendering.
    top_columns, top_values:
        ``(n, k)``: the schema columns contributing most to each score, largest first, and
        their contributions (rounded to 6 decimals); only positive ones are written.
    names:
        Schema column names indexed by ``top_columns``.
    fields:
        The flows' identifiers.
    extra:
        Optional ``(n,)`` string array of JSON members added under ``phalanx`` (each ``""`` or
        starting with a comma, e.g. ``',"model_category":"recon"'``).
    """

    rows: NDArray[np.intp]
    offset: int
    score: NDArray[np.float32]
    category: NDArray[np.object_]
    top_columns: NDArray[np.intp]
    top_values: NDArray[np.float32]
    names: Sequence[str]
    fields: FlowFields
    source: str
    created: str
    threshold: float
    kind: str
    model_id: str
    model_version: str
    extra: pa.Array | None = None

    def __len__(self) -> int:
        return int(self.rows.shape[0])

    def slice(self, start: int, stop: int) -> AlertBatch:
        """The alerts ``start:stop`` (views, no copies)."""
        f = self.fields
        return dataclasses.replace(
            self,
            rows=self.rows[start:stop],
            score=self.score[start:stop],
            category=self.category[start:stop],
            top_columns=self.top_columns[start:stop],
            top_values=self.top_values[start:stop],
            fields=FlowFields(
                *(getattr(f, k.name)[start:stop] for k in dataclasses.fields(FlowFields))
            ),
            extra=None if self.extra is None else self.extra[start:stop],
        )

    def to_jsonl(self) -> bytes:
        """The ECS documents as UTF-8 JSON lines (one per alert, each ending in a newline)."""
        return bytes(self.render())

    def render(self) -> memoryview:
        """:meth:`to_jsonl` without the copy: a view of the rendered buffer, to write out."""
        n = len(self)
        if n == 0:
            return memoryview(b"")
        f = self.fields
        s64 = self.score.astype(np.float64)
        # Score-derived text is formatted once per distinct score (alerts share scores near 1).
        distinct, at = np.unique(self.score, return_inverse=True)
        scores, each = distinct.astype(np.float64), pa.array(at.astype(np.int32))
        encoded = pc.dictionary_encode(_texts(np.asarray(self.category, dtype=object)))
        cats, index = encoded.dictionary.to_numpy(zero_copy_only=False), encoded.indices
        const = json.dumps
        ver, thr = const(self.model_version), self.threshold
        rule = pa.array(
            [
                f'}},"rule":{{"name":{const("phalanx-" + c)},"category":{const(c)},'
                f'"ruleset":"phalanx","version":{ver},"description":"{self.kind} attack score '
                for c in cats.tolist()
            ]
        ).take(index)
        middle = pa.array(
            [
                f' above {thr:.4g}"}},"threat":{const(threat(c), separators=(",", ":"))},'
                f'"phalanx":{{"category":{const(c)},"score":'
                for c in cats.tolist()
            ]
        ).take(index)
        model = {"id": self.model_id, "version": self.model_version, "kind": self.kind}
        event = (
            ',"event":{"kind":"alert","category":["network","intrusion_detection"],'
            '"type":["info"],"module":"phalanx","dataset":"phalanx.alerts","created":'
            + const(self.created)
        )
        pieces: list[Any] = ['{"@timestamp":', _timestamps(f.start_ms, self.created), event]
        if self.kind == "mlp":
            risk = list(map(round, (scores * 100.0).tolist(), repeat(3)))
            pieces += [',"risk_score":', json_floats(np.array(risk, np.float64)).take(each)]
        pieces += [',"severity":', _json_ints(_severity(s64, thr))]
        pieces += ['},"source":{"ip":', json_strings(f.src_ip), ',"port":']
        pieces += [_json_ints(f.src_port), '},"destination":{"ip":', json_strings(f.dst_ip)]
        pieces += [',"port":', _json_ints(f.dst_port), '},"network":{"transport":']
        pieces += [json_strings(f.transport), ',"iana_number":', json_strings(f.proto)]
        description = pa.array(list(map(format, scores.tolist(), repeat(".4g"))), pa.string())
        pieces += [rule, description.take(each), middle, json_floats(scores).take(each)]
        pieces += [
            f',"threshold":{json_floats(np.array([thr]))[0].as_py()},'
            f'"model":{const(model, separators=(",", ":"))},"top_features":[',
            self._top_features(),
            "]" if self.extra is None else pc.binary_join_element_wise("]", self.extra, ""),
            f',"input":{{"path":{const(self.source)},"row":',
            _json_ints(pa.array(self.rows.astype(np.int64) + self.offset)),
            "}}}\n",
        ]
        lines = pc.binary_join_element_wise(*pieces, "")
        return _joined(lines)

    def _top_features(self) -> pa.Array | str:
        if self.top_columns.shape[1] == 0:
            return ""
        prefix = pa.array([f'{{"feature":{json.dumps(n)},"contribution":' for n in self.names])
        items = []
        for j in range(self.top_columns.shape[1]):
            values = self.top_values[:, j].astype(np.float64)
            item = pc.binary_join_element_wise(
                prefix.take(pa.array(self.top_columns[:, j].astype(np.int64))),
                json_floats(values),
                "},",
                "",
            )
            items.append(pc.if_else(pa.array(values > 0), item, ""))
        # Each kept item ends in a comma; the last one is dropped (an item ends in "}").
        return pc.utf8_rtrim(pc.binary_join_element_wise(*items, ""), characters=",")

    def documents(self) -> list[dict[str, Any]]:
        """The documents as dictionaries (parsed back from :meth:`to_jsonl`)."""
        return [json.loads(line) for line in self.to_jsonl().splitlines()]


def json_strings(values: pa.Array) -> pa.Array:
    """JSON literals of the strings ``values`` (``null`` for nulls), as :func:`json.dumps`
    writes them."""
    quoted = pc.binary_join_element_wise('"', values, '"', "")
    needs = pc.match_substring_regex(values, _NEEDS_ESCAPE)
    if pc.any(needs).as_py():
        text, escape = values.to_pylist(), needs.to_numpy(zero_copy_only=False)
        out = quoted.to_pylist()
        for i in np.flatnonzero(escape == True).tolist():  # noqa: E712 (nulls are None)
            out[i] = json.dumps(text[i])
        quoted = pa.array(out, pa.string())
    return pc.fill_null(quoted, "null")


def json_floats(values: NDArray[np.float64]) -> pa.Array:
    """JSON numbers of float64 ``values`` that :func:`json.loads` reads back as the same floats.

    The shortest round-trip digits (arrow's float formatting), with ``.0`` added to integral
    values so that they stay floats; non-finite values as :func:`json.dumps` writes them.
    """
    text = pc.cast(pa.array(values, pa.float64()), pa.string())
    integral = pc.match_substring_regex(text, r"^-?[0-9]+$")
    text = pc.if_else(integral, pc.binary_join_element_wise(text, ".0", ""), text)
    bad = ~np.isfinite(values)
    if bad.any():
        out = text.to_pylist()
        for i in np.flatnonzero(bad).tolist():
            out[i] = json.dumps(float(values[i]))
        text = pa.array(out, pa.string())
    return text


def _json_ints(values: pa.Array | NDArray[np.int64]) -> pa.Array:
    arr = values if isinstance(values, pa.Array) else pa.array(values)
    return pc.fill_null(pc.cast(arr, pa.string()), "null")


def _severity(score: NDArray[np.float64], threshold: float) -> NDArray[np.int64]:
    """ECS ``event.severity`` 1-100 from how far the score is above the threshold."""
    if threshold <= 0:
        return np.full(len(score), 100, dtype=np.int64)
    with np.errstate(invalid="ignore", over="ignore"):
        ratio = np.nan_to_num(np.rint(50 * score / threshold), nan=1.0, posinf=100.0)
    severity: NDArray[np.int64] = np.clip(ratio, 1, 100).astype(np.int64)
    return severity


def _texts(values: NDArray[Any]) -> pa.Array:
    """``str(v)`` of every value, as an arrow string array."""
    if values.dtype.kind == "U":
        return pa.array(values, pa.string())
    try:
        arr = pa.array(values, pa.string())
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([str(v) for v in values.tolist()], pa.string())
    return pc.fill_null(arr, "None")


def _addresses(values: NDArray[Any]) -> pa.Array:
    """Text addresses; integer columns are IPv4 addresses as numbers."""
    if not np.issubdtype(values.dtype, np.integer):
        return _texts(values)
    a = values.astype(np.uint64)
    octets = [
        pc.cast(pa.array((a >> np.uint64(s)) & np.uint64(255)), pa.string()) for s in (24, 16, 8, 0)
    ]
    return pc.binary_join_element_wise(*octets, ".")


def _ports(values: NDArray[Any] | None, n: int) -> pa.Array:
    """``int(float(v))`` of every value; null where that fails or the input lacks the column."""
    if values is None:
        return pa.nulls(n, pa.int64())
    if values.dtype.kind in "biuf":
        number = values.astype(np.float64)
    else:
        try:
            number = pc.cast(_texts(values), pa.float64()).to_numpy(zero_copy_only=False)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
            return pa.array([_port(v) for v in values.tolist()], pa.int64())
    number = np.asarray(number, dtype=np.float64)
    ok = np.isfinite(number)
    if (np.abs(number[ok]) >= 2.0**63).any():
        return pa.array([_port(v) for v in values.tolist()], pa.int64())
    return pa.array(np.where(ok, number, 0).astype(np.int64), mask=~ok)


def _port(value: object) -> int | None:
    try:
        return int(float(value))  # type: ignore[arg-type]
    except (TypeError, ValueError, OverflowError):
        return None


def _lookup(values: pa.Array, table: dict[str, str]) -> pa.Array:
    """``table.get(v, v)`` for every value (nulls stay null)."""
    encoded = pc.dictionary_encode(values)
    mapped = [table.get(v, v) for v in encoded.dictionary.to_pylist()]
    return pa.array(mapped, pa.string()).take(encoded.indices)


def _start_ms(values: NDArray[Any] | None, n: int) -> pa.Array:
    """Whole epoch milliseconds; null when absent, not a number or outside datetime's range."""
    if values is None:
        return pa.nulls(n, pa.int64())
    try:
        ms = np.asarray(values, dtype=np.float64)
    except (TypeError, ValueError):
        return pa.nulls(n, pa.int64())
    with np.errstate(invalid="ignore"):
        ok = np.isfinite(ms) & (ms > _MS_MIN - 1) & (ms < _MS_MAX + 1)
    return pa.array(np.where(ok, np.trunc(np.where(ok, ms, 0)), 0).astype(np.int64), mask=~ok)


def _timestamps(start_ms: pa.Array, now: str) -> pa.Array:
    """ISO 8601 UTC times with milliseconds (``2024-01-02T03:04:05.678+00:00``), quoted."""
    if start_ms.null_count == len(start_ms):
        return pa.array(np.full(len(start_ms), json.dumps(now), dtype=object), pa.string())
    ms = start_ms.to_numpy(zero_copy_only=False)
    ok = ~np.asarray(pc.is_null(start_ms).to_numpy(zero_copy_only=False), dtype=bool)
    text = np.datetime_as_string(np.where(ok, ms, 0).astype(np.int64).astype("datetime64[ms]"))
    iso = pc.binary_join_element_wise('"', pa.array(text), '+00:00"', "")
    return pc.if_else(pa.array(ok), iso, json.dumps(now))


def _joined(lines: pa.Array) -> memoryview:
    """The concatenated bytes of a string array without nulls (its data buffer, sliced)."""
    kind = np.int64 if lines.type == pa.large_string() else np.int32
    _, offsets, data = lines.buffers()
    ends = np.frombuffer(offsets, dtype=kind)[lines.offset : lines.offset + len(lines) + 1]
    return memoryview(data)[int(ends[0]) : int(ends[-1])]


__all__ = [
    "TACTICS",
    "TIMESTAMP",
    "TRANSPORTS",
    "AlertBatch",
    "FlowFields",
    "json_floats",
    "json_strings",
    "threat",
]
