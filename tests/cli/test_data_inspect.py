"""``phalanx data inspect``: human tables, one JSON object, clean errors with exit code 2."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import typer
from typer.testing import CliRunner

from phalanx.cli import data

runner = CliRunner()


def _app() -> typer.Typer:
    root = typer.Typer()

    @root.callback()
    def _root() -> None:
        """Test root."""

    root.add_typer(data.app, name="data")
    return root


NF_HEADER = (
    "IPV4_SRC_ADDR,L4_SRC_PORT,IPV4_DST_ADDR,L4_DST_PORT,PROTOCOL,L7_PROTO,IN_BYTES,IN_PKTS,"
    "OUT_BYTES,OUT_PKTS,TCP_FLAGS,CLIENT_TCP_FLAGS,SERVER_TCP_FLAGS,FLOW_DURATION_MILLISECONDS,"
    "DURATION_IN,DURATION_OUT,MIN_TTL,MAX_TTL,LONGEST_FLOW_PKT,SHORTEST_FLOW_PKT,MIN_IP_PKT_LEN,"
    "MAX_IP_PKT_LEN,SRC_TO_DST_SECOND_BYTES,DST_TO_SRC_SECOND_BYTES,RETRANSMITTED_IN_BYTES,"
    "RETRANSMITTED_IN_PKTS,RETRANSMITTED_OUT_BYTES,RETRANSMITTED_OUT_PKTS,"
    "SRC_TO_DST_AVG_THROUGHPUT,DST_TO_SRC_AVG_THROUGHPUT,NUM_PKTS_UP_TO_128_BYTES,"
    "NUM_PKTS_128_TO_256_BYTES,NUM_PKTS_256_TO_512_BYTES,NUM_PKTS_512_TO_1024_BYTES,"
    "NUM_PKTS_1024_TO_1514_BYTES,TCP_WIN_MAX_IN,TCP_WIN_MAX_OUT,ICMP_TYPE,ICMP_IPV4_TYPE,"
    "DNS_QUERY_ID,DNS_QUERY_TYPE,DNS_TTL_ANSWER,FTP_COMMAND_RET_CODE,Label,Attack"
)


@pytest.fixture
def small(tmp_path: Path) -> Path:
    row = ",".join(["10.0.0.1", "5", "10.0.0.2", "80", "6", "7"] + ["1"] * 37 + ["1", "DoS"])
    bad = row + ",extra"
    path = tmp_path / "nf.csv"
    path.write_text("\n".join([NF_HEADER, row, bad, row, row.replace("DoS", "Weird")]) + "\n")
    return path


def test_json_is_one_object(small: Path) -> None:
    result = runner.invoke(_app(), ["data", "inspect", "--json", "--collect-errors", str(small)])
    assert result.exit_code == 0, result.output
    info = json.loads(result.stdout)
    assert info["format"] == "netflow-v2"
    assert info["rows"] == 3
    assert info["quarantined"] == 1
    assert info["quarantine_samples"][0]["line"] == 3
    assert info["unknown_labels"] == {"Weird": 1}
    assert info["categories"] == {"dos": 2, "other": 1}
    assert "IN_BYTES" in info["features"]
    assert "IPV4_SRC_ADDR" in info["dropped"]
    assert len(info["schema"]["hash"]) == 64


def test_human_output_has_the_tables(small: Path) -> None:
    result = runner.invoke(data.app, ["inspect", "--collect-errors", str(small)])
    assert result.exit_code == 0, result.output
    for text in (
        "netflow-v2",
        "schema hash",
        "features used",
        "IN_BYTES",
        "quarantined rows",
        "columns not used as features",
        "taxonomy categories",
        "Weird",
    ):
        assert text in result.stdout


def test_errors_exit_2_with_a_message(small: Path, tmp_path: Path) -> None:
    result = runner.invoke(data.app, ["inspect", str(small)])
    assert result.exit_code == 2
    assert f"{small}:3" in result.stderr
    assert "Traceback" not in result.output
    wrong = runner.invoke(data.app, ["inspect", "--format", "nsl-kdd", str(small)])
    assert wrong.exit_code == 2
    assert "not a nsl-kdd file" in wrong.stderr.replace("\n", " ")
    missing = runner.invoke(data.app, ["inspect", str(tmp_path / "nope.csv")])
    assert missing.exit_code == 2
    assert "no such file" in missing.stderr


@pytest.mark.datasets
def test_inspect_real_nsl_kdd(datasets: Path) -> None:
    path = datasets / "nsl-kdd" / "KDDTrain+_20Percent.txt"
    result = runner.invoke(data.app, ["inspect", "--json", str(path)])
    assert result.exit_code == 0
    info = json.loads(result.stdout)
    assert info["rows"] == 25_192
    assert info["categories"]["benign"] == 13_449
    assert "difficulty" in info["dropped"]
