"""Building NetFlow v2 batches from flow records of raw sources (packet captures, Zeek logs).

Readers of raw sources (:mod:`.pcap`, :mod:`.zeek`) produce column arrays named after
:data:`~phalanx.data.schemas.NETFLOW_V2` columns; :func:`build_batch` lays them out as a
:class:`FlowBatch` of the **full** NetFlow v2 schema, so a model trained on NetFlow v2 data (or on
the synthetic generator) scores them unchanged. A column the source cannot give is NaN (numeric)
and counted in the report's ``n_missing``; the feature transform imputes it at the training mean.
:class:`RecordReader` is the iterable the readers return, with the same surface as the CSV
engine's :class:`~phalanx.data.readers.csvio.FlowReader`.

The rates follow the conventions of the synthetic generator (``docs/data.md``): bytes per second
of a direction over its own duration (the byte count when that duration is 0) and average
throughput in bits per second over the flow duration (floored at 1 ms).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from numpy.typing import NDArray

from phalanx.core.features.batch import FlowBatch
from phalanx.core.features.schema import FeatureSchema
from phalanx.data.readers.base import ErrorMode, Plan, ReadReport
from phalanx.data.readers.convert import mark_missing
from phalanx.data.schemas import NETFLOW_V2

TIMESTAMP = "FLOW_START_MILLISECONDS"
"""Identifier column holding each flow's start time, epoch milliseconds UTC (NetFlow v3 name)."""

NDPI_IDS: dict[str, int] = {
    "unknown": 0,
    "ftp_control": 1,
    "pop3": 2,
    "smtp": 3,
    "imap": 4,
    "dns": 5,
    "ipp": 6,
    "http": 7,
    "mdns": 8,
    "ntp": 9,
    "netbios": 10,
    "nfs": 11,
    "ssdp": 12,
    "bgp": 13,
    "snmp": 14,
    "xdmcp": 15,
    "smbv1": 16,
    "syslog": 17,
    "dhcp": 18,
    "postgresql": 19,
    "mysql": 20,
    "smbv23": 41,
    "telnet": 77,
    "ipsec": 79,
    "icmp": 81,
    "igmp": 82,
    "rdp": 88,
    "tls": 91,
    "ssh": 92,
    "icmpv6": 102,
    "llmnr": 154,
    "ftp_data": 175,
    "quic": 188,
}
"""nDPI protocol ids (``ndpi_protocol_ids.h``) of the protocols common in our sources: NetFlow
v2's ``L7_PROTO`` is the nDPI id written as a float (``"7.0"`` for HTTP). Names are nDPI's,
lower case; :func:`l7_proto` maps Zeek service names and nfstream application names here."""

_L7_ALIASES: dict[str, str] = {
    "ssl": "tls",
    "ftp": "ftp_control",
    "ftp-data": "ftp_data",
    "smb": "smbv23",
    "krb": "unknown",
    "dhcpv6": "dhcp",
    "dtls": "tls",
    "pop": "pop3",
}

PROTOCOL_NUMBERS: dict[str, int] = {"icmp": 1, "igmp": 2, "tcp": 6, "udp": 17, "icmpv6": 58}
"""IANA protocol numbers of the transport names Zeek writes."""

HIST_EDGES = (128, 256, 512, 1024)
"""Upper bounds (IP bytes) of the first four NetFlow v2 packet-size bins; the fifth is the rest."""
HIST_COLUMNS = (
    "NUM_PKTS_UP_TO_128_BYTES",
    "NUM_PKTS_128_TO_256_BYTES",
    "NUM_PKTS_256_TO_512_BYTES",
    "NUM_PKTS_512_TO_1024_BYTES",
    "NUM_PKTS_1024_TO_1514_BYTES",
)

FIN, SYN, RST, PSH, ACK, URG, ECE, CWR = 1, 2, 4, 8, 16, 32, 64, 128
"""TCP flag bits as NetFlow's ``TCP_FLAGS`` ORs them."""


def l7_proto(name: str) -> str:
    """The NetFlow v2 ``L7_PROTO`` string of a protocol name (``"HTTP.Google"`` -> ``"7.0"``).

    Only the master protocol is kept (the part before the first ``.``; for a Zeek service list
    such as ``"ssl,http"`` the first entry). Unknown names give ``"0.0"`` (nDPI's Unknown).
    """
    first = name.split(",", 1)[0].split(".", 1)[0].strip().lower()
    key = _L7_ALIASES.get(first, first)
    return f"{NDPI_IDS.get(key, 0)}.0"


def nan_where(mask: NDArray[np.bool_]) -> NDArray[np.float64]:
    """NaN where ``mask`` (the field applies but the source cannot give it), 0 elsewhere."""
    return np.where(mask, np.nan, 0.0)


def add_rates(cols: dict[str, NDArray[np.float64]]) -> None:
    """Fill the per-second and throughput columns from bytes and durations (in place)."""
    b_in, b_out = cols["IN_BYTES"], cols["OUT_BYTES"]
    d_in, d_out = cols["DURATION_IN"], cols["DURATION_OUT"]
    ms = np.maximum(cols["FLOW_DURATION_MILLISECONDS"], 1.0)
    with np.errstate(invalid="ignore", divide="ignore"):
        cols["SRC_TO_DST_SECOND_BYTES"] = np.where(
            d_in > 0, np.rint(b_in * 1000 / np.maximum(d_in, 1)), b_in
        )
        cols["DST_TO_SRC_SECOND_BYTES"] = np.where(
            d_out > 0, np.rint(b_out * 1000 / np.maximum(d_out, 1)), b_out
        )
        cols["SRC_TO_DST_AVG_THROUGHPUT"] = np.rint(b_in * 8000 / ms)
        cols["DST_TO_SRC_AVG_THROUGHPUT"] = np.rint(b_out * 8000 / ms)


def single_packet_sizes(nums: dict[str, NDArray[np.float64]]) -> dict[str, NDArray[np.float64]]:
    """Packet-size columns where Zeek's counts pin them down exactly, NaN elsewhere.

    When each direction carried at most one packet, its IP bytes are that packet's size, so the
    longest and shortest packet and the NetFlow v2 size histogram are known.
    """
    p_in, p_out = nums["orig_pkts"], nums["resp_pkts"]
    b_in, b_out = nums["orig_ip_bytes"], nums["resp_ip_bytes"]
    exact = (p_in <= 1) & (p_out <= 1) & (p_in + p_out >= 1)
    with np.errstate(invalid="ignore"):
        s_in = np.where(p_in == 1, b_in, np.nan)
        s_out = np.where(p_out == 1, b_out, np.nan)
        longest = np.where(exact, np.fmax(s_in, s_out), np.nan)
        shortest = np.where(exact, np.fmin(s_in, s_out), np.nan)
    out = {
        "LONGEST_FLOW_PKT": longest,
        "MAX_IP_PKT_LEN": longest,
        "SHORTEST_FLOW_PKT": shortest,
        "MIN_IP_PKT_LEN": shortest,
    }
    edges = (0, *HIST_EDGES, np.inf)
    for name, lo, hi in zip(HIST_COLUMNS, edges[:-1], edges[1:], strict=True):
        count = ((s_in > lo) & (s_in <= hi)).astype(np.float64)
        count += ((s_out > lo) & (s_out <= hi)).astype(np.float64)
        out[name] = np.where(exact, count, np.nan)
    return out


def build_batch(
    numeric: dict[str, NDArray[np.float64]],
    categorical: dict[str, NDArray[np.object_]],
    identifiers: dict[str, NDArray[np.generic]],
    label: NDArray[np.object_],
    category: NDArray[np.object_],
    report: ReadReport,
    schema: FeatureSchema = NETFLOW_V2,
) -> FlowBatch:
    """A :class:`FlowBatch` of ``schema`` from named columns; absent numeric columns are NaN.

    Counts rows, missing and infinite values, labels and categories into ``report``.
    """
    n = len(label)
    matrix = np.full((n, len(schema.numeric)), np.nan, dtype=np.float64)
    for j, name in enumerate(schema.numeric):
        if name in numeric:
            matrix[:, j] = numeric[name]
    n_inf = mark_missing(matrix, schema.numeric, report)
    cats = np.empty((n, len(schema.categorical)), dtype=object)
    for j, name in enumerate(schema.categorical):
        cats[:, j] = categorical.get(name, np.full(n, "", dtype=object))
    report.rows += n
    if n:
        for value, count in zip(*np.unique(label.astype(str), return_counts=True), strict=True):
            if value:
                report.labels[str(value)] = report.labels.get(str(value), 0) + int(count)
        for value, count in zip(*np.unique(category.astype(str), return_counts=True), strict=True):
            if value:
                report.categories[str(value)] = report.categories.get(str(value), 0) + int(count)
    return FlowBatch(
        schema=schema,
        numeric=matrix,
        categorical=cats,
        label=label,
        category=category,
        identifiers=identifiers,
        n_infinite=n_inf,
    )


def raw_plan(
    format: str, fields: list[str], column_of: dict[str, str], *, label: str | None = None
) -> Plan:
    """The :class:`Plan` of a raw source: the full NetFlow v2 schema, fields as the keys."""
    return Plan(
        format=format,
        schema=NETFLOW_V2,
        keys=tuple(fields),
        raw_names=tuple(fields),
        column_of=column_of,
        header_bytes=0,
        header_lines=0,
        label_key=label,
    )


Chunks = Callable[[ReadReport], Iterator[FlowBatch]]


class RecordReader:
    """An iterable of :class:`FlowBatch` chunks of one raw source, with a report once exhausted.

    Same surface as :class:`~phalanx.data.readers.csvio.FlowReader`: ``path``, ``format``,
    ``schema``, ``plan``, ``chunk_rows``, ``errors`` and ``report``.
    """

    def __init__(
        self, path: Any, plan: Plan, chunks: Chunks, *, chunk_rows: int, errors: ErrorMode
    ) -> None:
        self.path = path
        self.plan = plan
        self.format: str = plan.format
        self.schema: FeatureSchema = plan.schema
        self.chunk_rows = chunk_rows
        self.errors: ErrorMode = errors
        self._chunks = chunks
        self.report = ReadReport.start(str(path), plan)

    def __repr__(self) -> str:
        return f"RecordReader({str(self.path)!r}, format={self.format!r})"

    def __iter__(self) -> Iterator[FlowBatch]:
        self.report = ReadReport.start(str(self.path), self.plan)
        yield from self._chunks(self.report)
