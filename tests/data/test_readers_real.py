"""Readers on the real dataset files (skipped when ../shared/datasets is absent)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from phalanx.core.features.schema import ColumnKind
from phalanx.data.readers import FORMATS, detect_format, inspect_file, open_flows, read_flows
from phalanx.data.schemas import CIC_IDS2017, CIC_IDS2017_IMPROVED, NETFLOW_V2, NSL_KDD

pytestmark = pytest.mark.datasets

NSL_ROWS = {"KDDTrain+_20Percent": 25_192, "KDDTest+": 22_544, "KDDTest-21": 11_850}


@pytest.mark.parametrize("name", list(NSL_ROWS))
@pytest.mark.parametrize("suffix", [".txt", ".arff.gz"])
def test_nsl_kdd_row_counts(datasets: Path, name: str, suffix: str) -> None:
    path = datasets / "nsl-kdd" / f"{name}{suffix}"
    assert detect_format(path) == "nsl-kdd"
    batch, report = read_flows(path)
    assert len(batch) == report.rows == NSL_ROWS[name]
    assert report.quarantined == 0
    assert batch.schema.hash() == NSL_KDD.hash()  # difficulty absent from ARFF: same hash
    assert batch.numeric.shape == (NSL_ROWS[name], 38)
    assert batch.categorical.shape == (NSL_ROWS[name], 3)
    assert report.binary_labels is (suffix == ".arff.gz")


def test_nsl_kdd_train_categories(datasets: Path) -> None:
    batch, report = read_flows(datasets / "nsl-kdd" / "KDDTrain+_20Percent.txt")
    assert report.categories == {
        "benign": 13_449,
        "dos": 9_234,
        "recon": 2_289,
        "exploit": 207,
        "brute-force": 10,
        "web-attack": 2,
        "infiltration": 1,
    }
    assert report.labels["neptune"] == 8_282
    assert report.unknown_labels == {}
    assert set(batch.identifiers) == {"difficulty"}
    assert batch.identifiers["difficulty"][0] == "20"
    assert batch.categorical[0].tolist() == ["tcp", "ftp_data", "SF"]
    assert batch.numeric[0, 1] == 491.0  # src_bytes of the first record


def test_nsl_kdd_test_has_unseen_attacks_all_mapped(datasets: Path) -> None:
    _, report = read_flows(datasets / "nsl-kdd" / "KDDTest+.txt")
    assert report.unknown_labels == {}
    assert len(report.labels) == 38
    assert report.categories["benign"] == 9_711


def test_nsl_kdd_txt_and_arff_hold_the_same_flows(datasets: Path) -> None:
    a, _ = read_flows(datasets / "nsl-kdd" / "KDDTest-21.txt")
    b, rb = read_flows(datasets / "nsl-kdd" / "KDDTest-21.arff.gz")
    assert np.array_equal(a.numeric, b.numeric)
    assert (a.categorical == b.categorical).all()
    assert ((a.category == "benign") == (b.category == "benign")).all()
    assert rb.labels == {"normal": 2_152, "anomaly": 9_698}
    assert rb.categories == {"benign": 2_152, "other": 9_698}


def test_netflow_v2_bot_iot(datasets: Path) -> None:
    path = datasets / "netflow-v2" / "NF-BoT-IoT-v2_reduced.csv.gz"
    assert detect_format(path) == "netflow-v2"
    reader = open_flows(path, chunk_rows=100_000)
    sizes = [len(b) for b in reader]
    assert sizes == [100_000, 100_000, 78_781]
    report = reader.report
    assert report.rows == 278_781
    assert report.labels == {
        "DoS": 167_004,
        "DDoS": 84_552,
        "Reconnaissance": 25_907,
        "Benign": 1_285,
        "Theft": 33,
    }
    assert report.categories == {
        "dos": 167_004,
        "ddos": 84_552,
        "recon": 25_907,
        "benign": 1_285,
        "infiltration": 33,
    }
    assert reader.schema.hash() == NETFLOW_V2.hash()
    assert "Dataset" in report.dropped_columns


def test_netflow_v2_batch_contents(datasets: Path) -> None:
    reader = open_flows(datasets / "netflow-v2" / "NF-BoT-IoT-v2_reduced.csv.gz", chunk_rows=10)
    batch = next(iter(reader))
    assert len(batch) == 10
    assert batch.numeric.dtype == np.float64
    assert batch.numeric.shape == (10, 36)
    assert batch.categorical[0].tolist() == ["80", "6", "7.0"]
    assert batch.identifiers["IPV4_SRC_ADDR"][0] == "192.168.100.149"
    assert batch.label[0] == "DoS"
    assert batch.category[0] == "dos"


def test_unsw_nb15_sample(datasets: Path) -> None:
    path = datasets / "format-samples" / "unsw-nb15-sample300.csv"
    assert detect_format(path) == "unsw-nb15"
    batch, report = read_flows(path)
    assert report.rows == 300
    assert report.labels == {
        "Normal": 123,
        "Generic": 74,
        "Exploits": 52,
        "Fuzzers": 22,
        "DoS": 18,
        "Reconnaissance": 8,
        "Shellcode": 1,
        "Worms": 1,
        "Backdoor": 1,
    }
    assert report.categories == {
        "benign": 123,
        "other": 96,
        "exploit": 54,
        "dos": 18,
        "recon": 8,
        "backdoor": 1,
    }
    assert batch.schema.categorical == ("proto", "service", "state")
    for ttl in ("sttl", "dttl", "ct_state_ttl"):
        assert ttl not in batch.schema.features
        assert ttl in batch.identifiers
    assert "rate" in batch.schema.numeric
    assert batch.identifiers["id"][0] == "31"


def test_cic_ids2017_improved_sample(datasets: Path) -> None:
    path = datasets / "format-samples" / "cic-ids2017-improved-sample.csv"
    assert detect_format(path) == "cic-ids2017"
    batch, report = read_flows(path)
    assert report.rows == 128
    assert batch.schema.hash() == CIC_IDS2017_IMPROVED.hash()
    assert len(report.labels) == 16
    assert set(report.labels.values()) == {8}
    assert report.unknown_labels == {}
    assert report.categories == {
        "benign": 8,
        "botnet-c2": 8,
        "ddos": 8,
        "dos": 32,
        "brute-force": 24,
        "exploit": 8,
        "infiltration": 16,
        "recon": 8,
        "web-attack": 16,
    }
    assert "Attempted Category" in report.dropped_columns
    assert batch.identifiers["Src IP"][0] == "192.168.10.14"


def test_cic_ids2017_grouped_sample(datasets: Path) -> None:
    path = datasets / "cic-ids2017" / "CICIDS2017_kmeans_grouped_sample.csv.gz"
    info = inspect_file(path)
    assert info["format"] == "cic-ids2017"
    assert info["rows"] == 6_311
    assert info["labels"] == {
        "WebAttack": 2_180,
        "Bot": 1_966,
        "DoS": 952,
        "BruteForce": 553,
        "PortScan": 397,
        "BENIGN": 227,
        "Infiltration": 36,
    }
    assert info["categories"]["botnet-c2"] == 1_966
    assert info["duplicate_columns"] == ["Fwd Header Length.1"]
    assert "Fwd Header Length.1" in info["dropped"]
    assert info["n_infinite"] == {"Flow Bytes/s": 10, "Flow Packets/s": 10}
    assert len(info["features"]) == 76
    # Destination Port and Protocol are absent: restricted schema, different hash.
    assert info["schema"]["hash"] != CIC_IDS2017.hash()
    batch, _ = read_flows(path)
    j = batch.schema.numeric.index("Flow Bytes/s")
    assert int(np.isnan(batch.numeric[:, j]).sum()) == 10
    assert batch.n_infinite is not None
    assert int(batch.n_infinite[j]) == 10


def test_cic_ids2017_feature_subset_with_binary_label(datasets: Path) -> None:
    path = datasets / "cic-ids2017" / "cic_0.01km.csv.gz"
    batch, report = read_flows(path)
    assert report.rows == 28_303
    assert report.binary_labels
    assert report.labels == {"0": 22_662, "1": 5_641}
    assert report.categories == {"benign": 22_662, "other": 5_641}
    assert batch.numeric.shape == (28_303, 19)
    assert "Init_Win_bytes_forward" in batch.schema.numeric


def test_detect_covers_every_format(datasets: Path) -> None:
    found = {
        detect_format(datasets / p)
        for p in (
            "nsl-kdd/KDDTest+.txt",
            "format-samples/unsw-nb15-sample300.csv",
            "format-samples/cic-ids2017-improved-sample.csv",
            "netflow-v2/NF-BoT-IoT-v2_reduced.csv.gz",
        )
    }
    assert found == set(FORMATS)


def test_override_keeps_an_identifier_as_feature(datasets: Path) -> None:
    path = datasets / "format-samples" / "unsw-nb15-sample300.csv"
    plain = open_flows(path)
    kept = open_flows(path, overrides={"sttl": ColumnKind.NUMERIC})
    assert "sttl" in kept.schema.numeric
    assert kept.schema.hash() != plain.schema.hash()
    batch = next(iter(kept))
    assert batch.numeric[0, kept.schema.numeric.index("sttl")] == 254.0
    assert any("overridden" in n for n in kept.report.notes)


def test_reader_can_be_iterated_twice(datasets: Path) -> None:
    reader = open_flows(datasets / "nsl-kdd" / "KDDTest-21.txt", chunk_rows=5_000)
    first = sum(len(b) for b in reader)
    second = sum(len(b) for b in reader)
    assert first == second == reader.report.rows == 11_850
