"""Packet captures into NetFlow v2 flows with nfstream: counts, fields, refusal of bad files."""

from __future__ import annotations

import contextlib
import gzip
import struct
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from phalanx.core.errors import FormatError, IngestError
from phalanx.core.features.batch import FlowBatch
from phalanx.data.readers import detect_format, inspect_file, open_flows, read_flows
from phalanx.data.readers.pcap import MAGICS
from phalanx.data.schemas import NETFLOW_V2


def _col(batch: FlowBatch, name: str) -> np.ndarray:
    return batch.numeric[:, batch.schema.numeric.index(name)]


def _cat(batch: FlowBatch, name: str) -> list[str]:
    return [str(v) for v in batch.categorical[:, batch.schema.categorical.index(name)].tolist()]


def _pcap(packets: list[tuple[float, bytes]]) -> bytes:
    """A little-endian pcap of raw IPv4 packets (link type 228, LINKTYPE_IPV4)."""
    out = struct.pack("<IHHiIII", 0xA1B2C3D4, 2, 4, 0, 0, 65535, 228)
    for ts, pkt in packets:
        sec = int(ts)
        out += struct.pack("<IIII", sec, int((ts - sec) * 1e6), len(pkt), len(pkt)) + pkt
    return out


def _ipv4_tcp(src: str, dst: str, sport: int, dport: int, flags: int, ttl: int, win: int) -> bytes:
    tcp = struct.pack("!HHIIBBHHH", sport, dport, 1, 0, 5 << 4, flags, win, 0, 0)
    total = 20 + len(tcp)
    ip = struct.pack(
        "!BBHHHBBH4s4s",
        0x45,
        0,
        total,
        1,
        0,
        ttl,
        6,
        0,
        bytes(int(o) for o in src.split(".")),
        bytes(int(o) for o in dst.split(".")),
    )
    return ip + tcp


def test_handmade_capture_gives_the_exact_fields(tmp_path: Path) -> None:
    syn = _ipv4_tcp("10.0.0.1", "10.0.0.2", 40000, 22, 0x02, 64, 29200)
    synack = _ipv4_tcp("10.0.0.2", "10.0.0.1", 22, 40000, 0x12, 61, 65160)
    rst = _ipv4_tcp("10.0.0.1", "10.0.0.2", 40000, 22, 0x04, 64, 0)
    path = tmp_path / "handshake.pcap"
    path.write_bytes(
        _pcap([(1_700_000_000.0, syn), (1_700_000_000.1, synack), (1_700_000_000.2, rst)])
    )
    assert detect_format(path) == "pcap"
    batch, report = read_flows(path)
    assert len(batch) == report.rows == 1
    assert batch.schema.hash() == NETFLOW_V2.hash()
    assert _col(batch, "IN_PKTS").tolist() == [2] and _col(batch, "OUT_PKTS").tolist() == [1]
    assert _col(batch, "IN_BYTES").tolist() == [80] and _col(batch, "OUT_BYTES").tolist() == [40]
    assert _col(batch, "CLIENT_TCP_FLAGS").tolist() == [0x02 | 0x04]
    assert _col(batch, "SERVER_TCP_FLAGS").tolist() == [0x12]
    assert _col(batch, "TCP_FLAGS").tolist() == [0x16]
    assert (_col(batch, "MIN_TTL")[0], _col(batch, "MAX_TTL")[0]) == (61, 64)
    assert _col(batch, "TCP_WIN_MAX_IN").tolist() == [29200]
    assert _col(batch, "TCP_WIN_MAX_OUT").tolist() == [65160]
    assert _col(batch, "FLOW_DURATION_MILLISECONDS").tolist() == [200]
    assert _col(batch, "NUM_PKTS_UP_TO_128_BYTES").tolist() == [3]
    assert np.isnan(_col(batch, "RETRANSMITTED_IN_PKTS")[0])  # TCP, but not measured
    assert _col(batch, "DNS_QUERY_TYPE").tolist() == [0]  # not DNS: zero, as NetFlow v2 writes
    assert _cat(batch, "L4_DST_PORT") == ["22"] and _cat(batch, "PROTOCOL") == ["6"]
    assert batch.identifiers["IPV4_SRC_ADDR"].tolist() == ["10.0.0.1"]
    assert batch.identifiers["L4_SRC_PORT"].tolist() == [40000]
    assert batch.identifiers["FLOW_START_MILLISECONDS"].tolist() == [1_700_000_000_000]


def test_compressed_and_garbled_captures_are_refused(tmp_path: Path) -> None:
    packet = _ipv4_tcp("10.0.0.1", "10.0.0.2", 1, 2, 2, 64, 0)
    gz = tmp_path / "c.pcap.gz"
    gz.write_bytes(gzip.compress(_pcap([(1.0, packet)])))
    with pytest.raises(FormatError, match="decompress"):
        read_flows(gz, "pcap")
    bad = tmp_path / "bad.pcap"
    bad.write_bytes(MAGICS[0] + b"\x99" * 40)
    with pytest.raises(FormatError, match="libpcap"):
        read_flows(bad)
    text = tmp_path / "text.pcap"
    text.write_bytes(b"hello,world\n1,2\n")
    with pytest.raises(FormatError, match="not a packet capture"):
        read_flows(text, "pcap")


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(magic=st.sampled_from(MAGICS), data=st.binary(max_size=512))
def test_arbitrary_bytes_after_a_magic_raise_only_ingest_errors(magic: bytes, data: bytes) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "x.pcap"
        path.write_bytes(magic + data)
        with contextlib.suppress(IngestError):
            for _ in open_flows(path, chunk_rows=5):
                pass


PCAP_FLOWS = {
    "zeek/sshguess.pcap": 11,
    "zeek/ssh.pcap": 25,
    "zeek/ftp-bruteforce.pcap": 30,
    "zeek/nmap-vsn.pcap": 18,
    "zeek/wikipedia.pcap": 34,
    "zeek/smtp.pcap": 9,
    "zeek/dhcp_flood.pcap": 250,
    "zeek/merlinc2_Zeek_example.pcapng": 1,
    "stratosphere-slips/test12-icmp-portscan.pcap": 18,
    "stratosphere-slips/malicious-ssh-bruteforce.pcap": 67,
    "stopddos/amp.TCP.syn.optionallyACK.optionallysamePort.pcapng": 336,
}


@pytest.mark.datasets
@pytest.mark.parametrize(("name", "flows"), sorted(PCAP_FLOWS.items()))
def test_real_captures_have_stable_flow_counts(datasets: Path, name: str, flows: int) -> None:
    path = datasets / "pcaps" / name
    assert detect_format(path) == "pcap"
    batch, report = read_flows(path)
    assert len(batch) == report.rows == flows
    assert (batch.identifiers["PACKETS"].astype(np.int64) >= 1).all()
    assert np.isfinite(_col(batch, "IN_BYTES")).all()
    # every packet lands in one histogram bin
    hist = sum(_col(batch, c) for c in NETFLOW_V2.numeric if c.startswith("NUM_PKTS_"))
    np.testing.assert_array_equal(hist, _col(batch, "IN_PKTS") + _col(batch, "OUT_PKTS"))


@pytest.mark.datasets
def test_ssh_guessing_is_many_short_connections_to_port_22(datasets: Path) -> None:
    batch, _ = read_flows(datasets / "pcaps/zeek/sshguess.pcap")
    assert set(_cat(batch, "L4_DST_PORT")) == {"22"}
    assert set(_cat(batch, "L7_PROTO")) == {"92.0"}  # nDPI: SSH
    assert len(set(batch.identifiers["IPV4_SRC_ADDR"].tolist())) == 1


@pytest.mark.datasets
def test_icmp_scan_carries_echo_requests(datasets: Path) -> None:
    batch, _ = read_flows(datasets / "pcaps/stratosphere-slips/test12-icmp-portscan.pcap")
    assert set(_cat(batch, "PROTOCOL")) == {"1"}
    assert (_col(batch, "ICMP_IPV4_TYPE") >= 0).all()
    info = inspect_file(datasets / "pcaps/stratosphere-slips/test12-icmp-portscan.pcap")
    assert info["format"] == "pcap" and info["rows"] == 18 and info["labels"] == {}


@pytest.mark.slow
@pytest.mark.datasets
def test_spoofed_syn_flood_capture(datasets: Path) -> None:
    sizes = [
        len(b)
        for b in open_flows(
            datasets / "pcaps/stopddos/pkt.TCP.synflood.spoofed.pcap", chunk_rows=10_000
        )
    ]
    assert sizes == [10_000, 10_000, 10_000, 7_669]
