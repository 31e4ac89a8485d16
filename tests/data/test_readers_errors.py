"""Readers on small hand-made files: quirks, malformed rows, wrong formats, collect mode."""

from __future__ import annotations

import gzip
import zipfile
from pathlib import Path

import numpy as np
import pytest

from phalanx.core.errors import ConfigError, FormatError, IngestError, SchemaError
from phalanx.core.features.schema import ColumnKind
from phalanx.data.readers import inspect_file, open_flows, read_flows
from phalanx.data.readers.unsw import RAW_NAMES
from phalanx.data.schemas import CIC_IDS2017, NETFLOW_V2, NSL_KDD

NF_HEADER = ",".join(c.name for c in NETFLOW_V2.columns) + ",Label,Attack,Dataset"


def nf_row(i: int, attack: str = "DoS", label: str = "1") -> str:
    values = ["10.0.0.1", str(40000 + i), "10.0.0.2", "80", "6", "7.0"]
    values += [str(i + k) for k in range(6, 43)]
    values[39] = "1234"  # DNS_QUERY_ID
    return ",".join([*values, label, attack, "NF-test"])


def write(path: Path, lines: list[str], *, newline: str = "\n", bom: bool = False) -> Path:
    data = newline.join(lines) + newline
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + data.encode())
    return path


def nsl_row(attack: str = "neptune") -> str:
    feats = ["0", "tcp", "private", "S0"] + ["0"] * 37
    return ",".join([*feats, attack, "21"])


@pytest.fixture
def netflow(tmp_path: Path) -> Path:
    lines = [NF_HEADER] + [nf_row(i) for i in range(10)]
    lines[3] = lines[3] + ",extra"  # line 4: 47 fields
    fields = lines[8].split(",")
    fields[8] = "lots"  # line 9: OUT_BYTES is not a number
    lines[8] = ",".join(fields)
    return write(tmp_path / "nf.csv", lines)


def test_wrong_field_count_names_path_and_line(netflow: Path) -> None:
    with pytest.raises(IngestError) as info:
        read_flows(netflow)
    err = info.value
    assert err.line == 4
    assert f"{netflow}:4" in str(err)
    assert err.expected is not None
    assert "46" in err.expected
    assert err.found is not None
    assert "47 fields" in err.found


def test_non_number_names_path_line_and_column(tmp_path: Path) -> None:
    lines = [NF_HEADER] + [nf_row(i) for i in range(10)]
    fields = lines[8].split(",")
    fields[8] = "lots"
    lines[8] = ",".join(fields)
    path = write(tmp_path / "nf.csv", lines, newline="\r\n")
    with pytest.raises(IngestError) as info:
        read_flows(path)
    assert info.value.line == 9
    assert "OUT_BYTES" in str(info.value)
    assert "'lots'" in str(info.value)


def test_collect_mode_quarantines_and_keeps_the_rest(netflow: Path) -> None:
    batch, report = read_flows(netflow, errors="collect")
    assert len(batch) == report.rows == 8
    assert report.quarantined == 2
    lines = sorted(line for line, _ in report.quarantine_samples if line is not None)
    assert lines == [4, 9]
    assert report.categories == {"dos": 8}


def test_line_numbers_stay_exact_across_blank_lines_and_chunks(tmp_path: Path) -> None:
    lines = [NF_HEADER] + [nf_row(i) for i in range(3000)]
    lines[10:10] = ["", ""]  # two blank lines at 11 and 12
    fields = lines[2500].split(",")
    fields[12] = "x"  # physical line 2501
    lines[2500] = ",".join(fields)
    path = write(tmp_path / "nf.csv", lines)
    reader = open_flows(path, chunk_rows=700, errors="collect")
    assert sum(len(b) for b in reader) == 2999
    assert reader.report.quarantine_samples == [
        (2501, "not a number in column 'SERVER_TCP_FLAGS': 'x'")
    ]


def test_strict_mode_delivers_nothing_past_the_error(tmp_path: Path) -> None:
    lines = [NF_HEADER] + [nf_row(i) for i in range(5000)] + ["1,2,3"]
    path = write(tmp_path / "nf.csv", lines)
    sizes: list[int] = []

    def consume() -> None:
        sizes.extend(len(b) for b in open_flows(path, chunk_rows=1000))

    with pytest.raises(IngestError) as info:
        consume()
    assert info.value.line == 5002
    assert sum(sizes) <= 5000


def test_wrong_format_is_named(tmp_path: Path, netflow: Path) -> None:
    nsl = write(tmp_path / "kdd.txt", [nsl_row()] * 3, newline="\r\n")
    with pytest.raises(FormatError) as info:
        open_flows(nsl, format="netflow-v2")
    assert "not a netflow-v2 file" in str(info.value)
    assert "looks like nsl-kdd" in str(info.value)
    with pytest.raises(FormatError, match="not a nsl-kdd file: it looks like netflow-v2"):
        open_flows(netflow, format="nsl-kdd")
    with pytest.raises(FormatError, match="not a unsw-nb15 file"):
        open_flows(netflow, format="unsw-nb15")


def test_unrecognised_and_empty_files(tmp_path: Path) -> None:
    with pytest.raises(FormatError, match="not a flow format"):
        open_flows(write(tmp_path / "x.csv", ["a,b,c", "1,2,3"]))
    empty = tmp_path / "empty.csv"
    empty.write_bytes(b"")
    with pytest.raises(FormatError, match="empty"):
        open_flows(empty)
    with pytest.raises(IngestError, match="no such file"):
        open_flows(tmp_path / "missing.csv")


def test_header_only_file_has_no_rows(tmp_path: Path) -> None:
    batch, report = read_flows(write(tmp_path / "h.csv", [NF_HEADER]))
    assert len(batch) == 0
    assert report.rows == 0
    assert batch.numeric.shape == (0, len(NETFLOW_V2.numeric))


def test_bad_arguments_are_config_errors(netflow: Path) -> None:
    with pytest.raises(ConfigError):
        open_flows(netflow, format="pcapx")
    with pytest.raises(ConfigError):
        open_flows(netflow, errors="ignore")  # type: ignore[arg-type]
    with pytest.raises(ConfigError):
        open_flows(netflow, chunk_rows=0)
    with pytest.raises(ConfigError, match="no such columns"):
        open_flows(netflow, overrides={"nope": ColumnKind.NUMERIC})


def test_compressed_and_zipped_inputs(tmp_path: Path) -> None:
    lines = [NF_HEADER] + [nf_row(i) for i in range(50)]
    text = "\n".join(lines) + "\n"
    gz = tmp_path / "nf.csv.gz"
    gz.write_bytes(gzip.compress(text.encode()))
    zipped = tmp_path / "nf.zip"
    with zipfile.ZipFile(zipped, "w", compression=zipfile.ZIP_DEFLATED) as z:
        z.writestr("nf.csv", text)
    assert read_flows(gz)[1].rows == read_flows(zipped)[1].rows == 50
    two = tmp_path / "two.zip"
    with zipfile.ZipFile(two, "w") as z:
        z.writestr("a.csv", text)
        z.writestr("b.csv", text)
    with pytest.raises(FormatError, match="exactly one"):
        open_flows(two)
    truncated = tmp_path / "cut.csv.gz"
    big = gzip.compress((NF_HEADER + "\n" + "\n".join(nf_row(i) for i in range(20000))).encode())
    truncated.write_bytes(big[: len(big) // 2])
    with pytest.raises(FormatError, match="corrupt or truncated"):
        read_flows(truncated)


def test_unknown_labels_are_counted_not_dropped(tmp_path: Path) -> None:
    lines = [NF_HEADER, nf_row(0, "zero-day"), nf_row(1, "Benign", "0"), nf_row(2, "zero-day")]
    batch, report = read_flows(write(tmp_path / "nf.csv", lines))
    assert len(batch) == 3
    assert report.unknown_labels == {"zero-day": 2}
    assert batch.category.tolist() == ["other", "benign", "other"]


def unsw_partition_lines(n: int) -> list[str]:
    from phalanx.data.schemas import UNSW_NB15

    names = [c.name for c in UNSW_NB15.columns if c.name not in RAW_ONLY]
    out = [",".join([*names, "attack_cat", "label"])]
    for i in range(n):
        row = []
        for name in names:
            row.append({"proto": "tcp", "service": "-", "state": "FIN"}.get(name, str(i)))
        out.append(",".join([*row, " Fuzzers " if i % 2 else "Normal", str(i % 2)]))
    return out


RAW_ONLY = {"srcip", "sport", "dstip", "dsport", "stime", "ltime"}


def test_unsw_bom_crlf_and_zip(tmp_path: Path) -> None:
    lines = unsw_partition_lines(20)
    plain = write(tmp_path / "p.csv", lines)
    bom = write(tmp_path / "b.csv", lines, newline="\r\n", bom=True)
    a, _ra = read_flows(plain)
    b, rb = read_flows(bom)
    assert np.array_equal(a.numeric, b.numeric)
    assert (a.categorical == b.categorical).all()
    assert rb.labels == {"Normal": 10, "Fuzzers": 10}
    assert a.schema.hash() == b.schema.hash()
    zipped = tmp_path / "p.zip"
    with zipfile.ZipFile(zipped, "w") as z:
        z.write(bom, "UNSW_NB15_training-set.csv")
    assert read_flows(zipped)[1].rows == 20


def test_unsw_raw_headerless_file(tmp_path: Path) -> None:
    rows = []
    for i, cat in enumerate(["", " Fuzzers ", "Backdoors", "", " Reconnaissance "]):
        values = {n: str(i) for n in RAW_NAMES}
        values.update(srcip="59.166.0.0", sport="1390", dstip="149.171.126.6", dsport="0x000b")
        values.update(proto="udp", state="CON", service="dns", attack_cat=cat)
        values.update(Label="0" if cat == "" else "1", ct_ftp_cmd=" ")
        rows.append(",".join(values[n] for n in RAW_NAMES))
    batch, report = read_flows(write(tmp_path / "UNSW-NB15_1.csv", rows), format="unsw-nb15")
    assert report.rows == 5
    assert report.labels == {"0": 2, "Fuzzers": 1, "Backdoors": 1, "Reconnaissance": 1}
    assert batch.category.tolist() == ["benign", "other", "backdoor", "benign", "recon"]
    assert batch.identifiers["dsport"][0] == "0x000b"
    assert "rate" not in batch.schema.numeric
    assert report.n_missing["ct_ftp_cmd"] == 5


def cic_original_lines() -> list[str]:
    names = [c.name for c in CIC_IDS2017.columns if c.kind is not ColumnKind.IDENTIFIER]
    at = names.index("Avg Bwd Segment Size") + 1
    header_names = [*names[:at], "Fwd Header Length", *names[at:], "Label"]
    header = ",".join(" " + n if i % 2 else n for i, n in enumerate(header_names))
    rows = []
    labels = ["BENIGN", "DDoS", "Web Attack \x96 Brute Force", "Mystery"]
    for i, label in enumerate(labels):
        vals = [str(80 + i), "6"] + [str(i + k) for k in range(len(header_names) - 3)]
        vals[header_names.index("Flow Bytes/s")] = "Infinity" if i == 0 else "NaN"
        vals[header_names.index("Flow Packets/s")] = "inf"
        rows.append(",".join([*vals, label]))
    return [header, *rows]


def test_cic_original_quirks(tmp_path: Path) -> None:
    lines = cic_original_lines()
    path = tmp_path / "Thursday-WorkingHours.pcap_ISCX.csv"
    path.write_bytes(("\r\n".join(lines) + "\r\n").encode("latin-1"))
    info = inspect_file(path)
    assert info["format"] == "cic-ids2017"
    assert info["schema"]["hash"] == CIC_IDS2017.hash()
    assert [c.strip() for c in info["duplicate_columns"]] == ["Fwd Header Length"]
    assert info["n_infinite"] == {"Flow Bytes/s": 1, "Flow Packets/s": 4}
    assert info["n_missing"] == {"Flow Bytes/s": 3}
    assert info["categories"] == {"benign": 1, "ddos": 1, "brute-force": 1, "other": 1}
    assert info["unknown_labels"] == {"Mystery": 1}
    assert "Web Attack \ufffd Brute Force" in info["labels"]


def test_nsl_kdd_quarantine_and_difficulty(tmp_path: Path) -> None:
    lines = [nsl_row(), nsl_row("smurf"), "0,tcp,http", nsl_row("mystery")]
    path = write(tmp_path / "KDD.txt", lines, newline="\r\n")
    with pytest.raises(IngestError) as info:
        read_flows(path)
    assert info.value.line == 3
    batch, report = read_flows(path, errors="collect")
    assert report.rows == 3
    assert report.quarantined == 1
    assert report.unknown_labels == {"mystery": 1}
    assert batch.schema.hash() == NSL_KDD.hash()


def test_override_of_absent_column_is_refused(tmp_path: Path) -> None:
    lines = [",".join([*(c.name for c in NETFLOW_V2.columns if c.name != "DNS_QUERY_ID")])]
    path = write(tmp_path / "nf.csv", [*lines, ",".join(["1"] * 42)])
    with pytest.raises(SchemaError, match="does not have"):
        open_flows(path, overrides={"DNS_QUERY_ID": ColumnKind.NUMERIC})


def test_rows_of_only_commas_are_skipped_and_counted(tmp_path: Path) -> None:
    empty = "," * (len(NF_HEADER.split(",")) - 1)
    lines = [NF_HEADER, nf_row(0), empty, empty, nf_row(1), "", nf_row(2)]
    _, report = read_flows(write(tmp_path / "nf.csv", lines))
    assert report.rows == 3
    assert report.empty_rows == 2
    lines.append("1,2")  # forces the exact pass: counts must not change
    _, report = read_flows(write(tmp_path / "nf2.csv", lines), errors="collect")
    assert report.rows == 3
    assert report.quarantined == 1
    assert report.quarantine_samples[0][0] == 8
