"""Zeek conn.log (TSV and JSON lines) into the NetFlow v2 schema: mapping, labels, termination."""

from __future__ import annotations

import contextlib
import gzip
import json
import tempfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from phalanx.core.errors import FormatError, IngestError
from phalanx.core.features.batch import FlowBatch
from phalanx.data.readers import detect_format, inspect_file, open_flows, read_flows
from phalanx.data.schemas import NETFLOW_V2

HEADER = (
    "#separator \\x09\n#set_separator\t,\n#empty_field\t(empty)\n#unset_field\t-\n#path\tconn\n"
    "#open\t2024-01-01-00-00-00\n"
    "#fields\tts\tuid\tid.orig_h\tid.orig_p\tid.resp_h\tid.resp_p\tproto\tservice\tduration"
    "\torig_bytes\tresp_bytes\tconn_state\thistory\torig_pkts\torig_ip_bytes\tresp_pkts"
    "\tresp_ip_bytes\n"
    "#types\ttime\tstring\taddr\tport\taddr\tport\tenum\tstring\tinterval\tcount\tcount\tstring"
    "\tstring\tcount\tcount\tcount\tcount\n"
)
ROWS = (
    "1700000000.250000\tC1\t10.0.0.1\t51000\t10.0.0.2\t22\ttcp\tssh\t1.5\t100\t200\tSF"
    "\tShAdDaFf\t10\t620\t8\t520\n"
    "1700000001.000000\tC2\t10.0.0.1\t53000\t8.8.8.8\t53\tudp\tdns\t0.01\t40\t80\tSF\tDd"
    "\t1\t68\t1\t108\n"
    "1700000002.000000\tC3\t10.0.0.9\t8\t10.0.0.2\t0\ticmp\t-\t-\t-\t-\tOTH\t-\t1\t84\t0\t0\n"
    "#close\t2024-01-01-00-00-10\n"
)


def _write(tmp_path: Path, name: str, text: str | bytes) -> Path:
    path = tmp_path / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return path


def _col(batch: FlowBatch, name: str) -> np.ndarray:
    column: np.ndarray = batch.numeric[:, batch.schema.numeric.index(name)]
    return column


def test_tsv_maps_fields_onto_netflow_v2(tmp_path: Path) -> None:
    path = _write(tmp_path, "conn.log", HEADER + ROWS)
    assert detect_format(path) == "zeek-conn"
    batch, report = read_flows(path)
    assert len(batch) == report.rows == 3
    assert batch.schema.hash() == NETFLOW_V2.hash()
    assert _col(batch, "IN_BYTES").tolist() == [620, 68, 84]
    assert _col(batch, "OUT_PKTS").tolist() == [8, 1, 0]
    assert _col(batch, "FLOW_DURATION_MILLISECONDS").tolist() == [1500, 10, 0]
    # ShAdDaFf: client SYN|ACK|PSH|FIN = 27, server SYN|ACK|PSH|FIN = 27; UDP/ICMP 0
    assert _col(batch, "CLIENT_TCP_FLAGS").tolist() == [27, 0, 0]
    assert _col(batch, "SERVER_TCP_FLAGS").tolist() == [27, 0, 0]
    assert _col(batch, "ICMP_TYPE").tolist() == [0, 0, 8 * 256]
    assert _col(batch, "ICMP_IPV4_TYPE").tolist() == [0, 0, 8]
    assert np.isnan(_col(batch, "MIN_TTL")).all()  # Zeek has no TTLs: missing, not zero
    dns = _col(batch, "DNS_QUERY_TYPE")
    assert np.isnan(dns[1]) and dns[0] == 0 and dns[2] == 0  # unknown only where it applies
    cats = {n: batch.categorical[:, j].tolist() for j, n in enumerate(NETFLOW_V2.categorical)}
    assert cats["PROTOCOL"] == ["6", "17", "1"]
    assert cats["L7_PROTO"] == ["92.0", "5.0", "0.0"]
    assert cats["L4_DST_PORT"] == ["22", "53", "0"]
    assert batch.identifiers["IPV4_SRC_ADDR"].tolist() == ["10.0.0.1", "10.0.0.1", "10.0.0.9"]
    assert batch.identifiers["FLOW_START_MILLISECONDS"].tolist() == [
        1_700_000_000_250,
        1_700_000_001_000,
        1_700_000_002_000,
    ]
    assert report.n_missing["MIN_TTL"] == 3


def test_json_lines_give_the_same_flows_as_tsv(tmp_path: Path) -> None:
    tsv, _ = read_flows(_write(tmp_path, "conn.log", HEADER + ROWS))
    fields = HEADER.splitlines()[6].split("\t")[1:]
    lines = []
    for row in ROWS.splitlines()[:-1]:
        doc: dict[str, str | int] = {}
        for name, value in zip(fields, row.split("\t"), strict=True):
            if value != "-":
                doc[name] = value
        for k in ("id.orig_p", "id.resp_p", "orig_pkts", "orig_ip_bytes", "resp_pkts"):
            doc[k] = int(doc[k])
        lines.append(json.dumps(doc))
    path = _write(tmp_path, "conn.json", "\n".join(lines) + "\n")
    assert detect_format(path) == "zeek-conn"
    js, _ = read_flows(path)
    np.testing.assert_array_equal(np.isnan(js.numeric), np.isnan(tsv.numeric))
    np.testing.assert_allclose(np.nan_to_num(js.numeric), np.nan_to_num(tsv.numeric))
    assert js.categorical.tolist() == tsv.categorical.tolist()


def test_gzip_and_chunks(tmp_path: Path) -> None:
    path = _write(tmp_path, "conn.log.gz", gzip.compress((HEADER + ROWS).encode()))
    sizes = [len(b) for b in open_flows(path, chunk_rows=2)]
    assert sizes == [2, 1]


def test_rows_before_fields_are_a_format_error_not_a_hang(tmp_path: Path) -> None:
    text = "#separator \\x09\n#path\tconn\n" + ROWS
    path = _write(tmp_path, "conn.log", text)
    with pytest.raises(FormatError, match="before the #fields line") as info:
        read_flows(path, "zeek-conn")
    assert info.value.line == 3


def test_a_log_that_is_not_conn_is_refused(tmp_path: Path) -> None:
    text = "#separator \\x09\n#fields\tts\tuid\tquery\n1.0\tC1\texample.org\n"
    with pytest.raises(FormatError, match=r"not a conn\.log"):
        read_flows(_write(tmp_path, "dns.log", text))


def test_bad_rows_strict_and_collect(tmp_path: Path) -> None:
    bad = ROWS.replace("\t620\t", "\tlots\t").replace("10.0.0.9\t8", "10.0.0.9")
    path = _write(tmp_path, "conn.log", HEADER + bad)
    with pytest.raises(IngestError, match="orig_ip_bytes") as info:
        read_flows(path)
    assert info.value.line == 9
    batch, report = read_flows(path, errors="collect")
    assert len(batch) == 1 and report.quarantined == 2
    assert [line for line, _ in report.quarantine_samples] == [9, 11]


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    data=st.binary(max_size=2048),
    prefix=st.sampled_from([b"", b"#separator \\x09\n", HEADER.encode(), b'{"id.orig_h":"a",']),
    errors=st.sampled_from(["strict", "collect"]),
)
def test_arbitrary_bytes_raise_only_ingest_errors(data: bytes, prefix: bytes, errors: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "conn.log"
        path.write_bytes(prefix + data)
        for mode in ("auto", "zeek-conn"):
            with contextlib.suppress(IngestError):
                for _ in open_flows(path, mode, errors=errors, chunk_rows=3):  # type: ignore[arg-type]
                    pass


@pytest.mark.datasets
@pytest.mark.parametrize(
    ("name", "rows", "dated"),
    [
        ("zat-sample/conn.log", 360, True),
        ("zat-sample/conn.json.log", 50, True),
        ("stratosphere-slips/portscan-vertical.conn.log", 50, True),
        # this log's ts are seconds since the start of its capture (~930 s), as written
        ("stratosphere-slips/portscan-horizontal.conn.log", 41, False),
        ("stratosphere-slips/test9-mixed.conn.log", 576, False),
        ("trickbot-2018-11-09/conn.log.gz", 13_001, True),
    ],
)
def test_real_conn_logs(datasets: Path, name: str, rows: int, dated: bool) -> None:
    path = datasets / "zeek-logs" / name
    assert detect_format(path) == "zeek-conn"
    batch, report = read_flows(path)
    assert len(batch) == report.rows == rows
    assert report.quarantined == 0
    assert np.isfinite(_col(batch, "IN_PKTS")).all()
    ts = batch.identifiers["FLOW_START_MILLISECONDS"].astype(np.int64)
    low = 1_300_000_000_000 if dated else 0  # 2011 UTC
    assert (ts > low).all() and (ts < 1_800_000_000_000).all()


@pytest.mark.datasets
def test_vertical_port_scan_is_one_scanner_many_ports(datasets: Path) -> None:
    batch, _ = read_flows(datasets / "zeek-logs/stratosphere-slips/portscan-vertical.conn.log")
    ports = batch.categorical[:, NETFLOW_V2.categorical.index("L4_DST_PORT")]
    assert len(set(batch.identifiers["IPV4_SRC_ADDR"].tolist())) == 1
    assert len(set(ports.tolist())) >= 40


@pytest.mark.datasets
def test_iot23_labels_map_onto_the_taxonomy(datasets: Path) -> None:
    root = datasets / "zeek-logs" / "iot-23"
    malware, report = read_flows(root / "CTU-IoT-Malware-Capture-42-1_conn.log.labeled.gz")
    assert len(malware) == 4426
    assert report.categories == {"benign": 4420, "botnet-c2": 6}
    assert report.labels == {"Benign": 4420, "FileDownload": 3, "C&C-FileDownload": 3}
    _, report = read_flows(root / "CTU-Honeypot-Capture-4-1_conn.log.labeled")
    assert report.categories == {"benign": 452}
    info = inspect_file(root / "CTU-Honeypot-Capture-4-1_conn.log.labeled")
    assert info["format"] == "zeek-conn" and info["label_columns"] == ["detailed-label"]
    assert info["rows"] == 452 and info["n_missing"]["MIN_TTL"] == 452
