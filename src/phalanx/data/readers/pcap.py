"""Packet captures (pcap, pcapng) to NetFlow v2 flows with nfstream.

Flows are metered by nfstream (Aouini & Pekar, "NFStream: A flexible network data analysis
framework", Computer Networks 2022) over nDPI (Deri et al., "nDPI: Open-source high-speed deep
packet inspection", IWCMC 2014), offline, with one meter process (the machine has two cores),
bidirectional flows, idle timeout 120 s and active timeout 1800 s, byte counts at the IP layer
(``accounting_mode=1``) as nProbe counts them for NetFlow v2. A small per-packet plugin adds what
nfstream does not report itself: TTLs, TCP flag unions and windows per direction, ICMP type and
code, and the NetFlow v2 packet-size histogram. Timestamps are epoch milliseconds, UTC.

What nfstream cannot give (retransmissions, DNS query type and answer TTL, FTP return code) is
NaN for the flows where it applies (TCP; DNS; FTP) and 0 elsewhere, as NetFlow v2 writes it;
the model's transform imputes NaN at the training mean. The mapping is in ``docs/data.md``.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from phalanx.core.errors import FormatError
from phalanx.core.features.batch import FlowBatch
from phalanx.data.readers.base import ErrorMode, ReadReport
from phalanx.data.readers.flowbuild import (
    HIST_COLUMNS,
    HIST_EDGES,
    TIMESTAMP,
    RecordReader,
    add_rates,
    build_batch,
    l7_proto,
    nan_where,
    raw_plan,
)
from phalanx.data.readers.inputs import Head, compression_of

FORMAT = "pcap"
MAGICS: tuple[bytes, ...] = (
    b"\xd4\xc3\xb2\xa1",  # pcap, little-endian, microseconds
    b"\xa1\xb2\xc3\xd4",  # pcap, big-endian
    b"\x4d\x3c\xb2\xa1",  # pcap, little-endian, nanoseconds
    b"\xa1\xb2\x3c\x4d",  # pcap, big-endian, nanoseconds
    b"\x0a\x0d\x0d\x0a",  # pcapng section header block
)
IDLE_TIMEOUT_S = 120
ACTIVE_TIMEOUT_S = 1800
COLUMN_OF = {
    "IPV4_SRC_ADDR": "src_ip",
    "L4_SRC_PORT": "src_port",
    "IPV4_DST_ADDR": "dst_ip",
    "L4_DST_PORT": "dst_port",
    "PROTOCOL": "protocol",
    "L7_PROTO": "application_name",
    "IN_BYTES": "src2dst_bytes",
    "IN_PKTS": "src2dst_packets",
    "OUT_BYTES": "dst2src_bytes",
    "OUT_PKTS": "dst2src_packets",
    "FLOW_DURATION_MILLISECONDS": "bidirectional_duration_ms",
    "DURATION_IN": "src2dst_duration_ms",
    "DURATION_OUT": "dst2src_duration_ms",
    "LONGEST_FLOW_PKT": "bidirectional_max_ps",
    "SHORTEST_FLOW_PKT": "bidirectional_min_ps",
    "MIN_IP_PKT_LEN": "bidirectional_min_ps",
    "MAX_IP_PKT_LEN": "bidirectional_max_ps",
}
"""NetFlow v2 column -> nfstream flow attribute (plugin-computed columns: ``docs/data.md``)."""


def score(head: Head) -> float:
    """1 for a pcap or pcapng file (by its magic number), else 0."""
    return 1.0 if head.data[:4] in MAGICS else 0.0


def _plugin() -> Any:
    """The nfstream plugin computing the per-packet NetFlow v2 fields (imported lazily)."""
    from nfstream import NFPlugin

    class NetFlowV2Fields(NFPlugin):  # type: ignore[misc]
        """TTL range, flags and windows per direction, ICMP type, packet-size histogram."""

        def on_init(self, packet: Any, flow: Any) -> None:
            u = flow.udps
            u.ttl_min, u.ttl_max = 255, 0
            u.flags_in = u.flags_out = 0
            u.win_in = u.win_out = 0
            u.icmp = 0
            u.hist = [0, 0, 0, 0, 0]
            self.on_update(packet, flow)

        def on_update(self, packet: Any, flow: Any) -> None:
            u = flow.udps
            ip: bytes = packet.ip_packet
            size = int(packet.ip_size)
            k = 0
            while k < 4 and size > HIST_EDGES[k]:
                k += 1
            u.hist[k] += 1
            if not ip:
                return
            if ip[0] >> 4 == 4 and len(ip) >= 20:
                ttl, offset = ip[8], (ip[0] & 0x0F) * 4
            elif ip[0] >> 4 == 6 and len(ip) >= 40:
                ttl, offset = ip[7], 40
            else:
                return
            u.ttl_min, u.ttl_max = min(u.ttl_min, ttl), max(u.ttl_max, ttl)
            out = packet.direction == 1
            if packet.protocol == 6 and len(ip) >= offset + 16:
                flags = ip[offset + 13]
                window = (ip[offset + 14] << 8) | ip[offset + 15]
                if out:
                    u.flags_out |= flags
                    u.win_out = max(u.win_out, window)
                else:
                    u.flags_in |= flags
                    u.win_in = max(u.win_in, window)
            elif packet.protocol in (1, 58) and not out and u.icmp == 0 and len(ip) > offset + 1:
                u.icmp = ip[offset] * 256 + ip[offset + 1]

    return NetFlowV2Fields()


def _columns(flows: list[Any], report: ReadReport) -> FlowBatch:
    n = len(flows)

    def num(attr: str) -> NDArray[np.float64]:
        return np.array([getattr(f, attr) for f in flows], dtype=np.float64)

    def udp(attr: str) -> NDArray[np.float64]:
        return np.array([getattr(f.udps, attr) for f in flows], dtype=np.float64)

    proto = np.array([f.protocol for f in flows], dtype=np.int64)
    tcp, icmp = proto == 6, (proto == 1) | (proto == 58)
    apps = [str(f.application_name) for f in flows]
    dport = np.array([f.dst_port for f in flows], dtype=np.int64)
    dns = np.array([a.split(".")[0] in ("DNS", "MDNS", "LLMNR") for a in apps]) | (dport == 53)
    ftp = np.array([a.split(".")[0] == "FTP_CONTROL" for a in apps]) | (dport == 21)
    flags_in, flags_out = udp("flags_in"), udp("flags_out")
    ttl_min, ttl_max = udp("ttl_min"), udp("ttl_max")
    unset_ttl = ttl_max < ttl_min
    cols: dict[str, NDArray[np.float64]] = {
        name: num(attr)
        for name, attr in COLUMN_OF.items()
        if name not in ("IPV4_SRC_ADDR", "L4_SRC_PORT", "IPV4_DST_ADDR", "L4_DST_PORT")
        and name not in ("PROTOCOL", "L7_PROTO")
    }
    icmp_code = udp("icmp")
    cols.update(
        {
            "TCP_FLAGS": np.where(tcp, flags_in.astype(np.int64) | flags_out.astype(np.int64), 0),
            "CLIENT_TCP_FLAGS": np.where(tcp, flags_in, 0.0),
            "SERVER_TCP_FLAGS": np.where(tcp, flags_out, 0.0),
            "MIN_TTL": np.where(unset_ttl, np.nan, ttl_min),
            "MAX_TTL": np.where(unset_ttl, np.nan, ttl_max),
            "TCP_WIN_MAX_IN": np.where(tcp, udp("win_in"), 0.0),
            "TCP_WIN_MAX_OUT": np.where(tcp, udp("win_out"), 0.0),
            "ICMP_TYPE": np.where(icmp, icmp_code, 0.0),
            "ICMP_IPV4_TYPE": np.where(proto == 1, icmp_code // 256, 0.0),
            "DNS_QUERY_TYPE": nan_where(dns),
            "DNS_TTL_ANSWER": nan_where(dns),
            "FTP_COMMAND_RET_CODE": nan_where(ftp),
        }
    )
    cols["TCP_FLAGS"] = cols["TCP_FLAGS"].astype(np.float64)
    for name in ("BYTES", "PKTS"):
        cols[f"RETRANSMITTED_IN_{name}"] = nan_where(tcp)
        cols[f"RETRANSMITTED_OUT_{name}"] = nan_where(tcp)
    hist = np.array([f.udps.hist for f in flows], dtype=np.float64).reshape(n, 5)
    for j, name in enumerate(HIST_COLUMNS):
        cols[name] = hist[:, j]
    add_rates(cols)
    ports = np.where(icmp, 0, dport)
    categorical = {
        "L4_DST_PORT": np.array([str(p) for p in ports], dtype=object),
        "PROTOCOL": np.array([str(p) for p in proto], dtype=object),
        "L7_PROTO": np.array([l7_proto(a) for a in apps], dtype=object),
    }
    identifiers: dict[str, NDArray[Any]] = {
        "IPV4_SRC_ADDR": np.array([str(f.src_ip) for f in flows], dtype=object),
        "L4_SRC_PORT": np.array([f.src_port for f in flows], dtype=np.int64),
        "IPV4_DST_ADDR": np.array([str(f.dst_ip) for f in flows], dtype=object),
        "L4_DST_PORT": ports,
        TIMESTAMP: np.array([f.bidirectional_first_seen_ms for f in flows], dtype=np.int64),
        "PACKETS": np.array([f.bidirectional_packets for f in flows], dtype=np.int64),
    }
    empty = np.full(n, "", dtype=object)
    return build_batch(cols, categorical, identifiers, empty, empty.copy(), report)


def open_pcap(path: Path, head: Head, *, chunk_rows: int, errors: ErrorMode) -> RecordReader:
    """A reader of the flows in the capture at ``path``.

    Raises
    ------
    FormatError
        When the file is not an uncompressed pcap/pcapng or libpcap refuses it.
    """
    if compression_of(path) != "none":
        raise FormatError(
            str(path),
            "compressed packet captures are not read directly",
            expected="an uncompressed .pcap or .pcapng",
            hint="decompress it first (e.g. gunzip)",
        )
    if score(head) == 0.0:
        raise FormatError(
            str(path),
            "this is not a packet capture",
            line=None,
            expected="the pcap or pcapng magic number",
            found=head.data[:4].hex(),
            hint="pass the right --format, or --format auto",
        )
    plan = raw_plan(FORMAT, sorted(set(COLUMN_OF.values())), dict(COLUMN_OF))

    def run(report: ReadReport) -> Iterator[FlowBatch]:
        from nfstream import NFStreamer

        try:
            streamer = NFStreamer(
                source=str(path),
                statistical_analysis=True,
                n_meters=1,
                accounting_mode=1,
                idle_timeout=IDLE_TIMEOUT_S,
                active_timeout=ACTIVE_TIMEOUT_S,
                udps=_plugin(),
            )
        except (ValueError, OSError) as e:
            raise FormatError(
                str(path),
                "libpcap cannot read this capture",
                found=str(e),
                hint="check the file with tcpdump -r or capinfos",
            ) from e
        flows: list[Any] = []
        try:
            for flow in streamer:
                flows.append(flow)
                if len(flows) >= chunk_rows:
                    yield _columns(flows, report)
                    flows = []
        except (ValueError, OSError, RuntimeError) as e:
            raise FormatError(
                str(path),
                "libpcap cannot read this capture",
                found=str(e),
                hint="check the file with tcpdump -r or capinfos",
            ) from e
        if flows:
            yield _columns(flows, report)

    return RecordReader(path, plan, run, chunk_rows=chunk_rows, errors=errors)
