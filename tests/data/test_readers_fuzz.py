"""Property tests: on arbitrary bytes every reader terminates and raises only IngestError."""

from __future__ import annotations

import contextlib
import gzip
import tempfile
from pathlib import Path

import pytest
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from phalanx.core.errors import IngestError
from phalanx.data.readers import FORMATS, detect_format, open_flows
from phalanx.data.schemas import NETFLOW_V2

MODES = ["auto", *FORMATS]
FUZZ = settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)

NF_HEADER = ",".join(c.name for c in NETFLOW_V2.columns) + ",Label,Attack"
SEEDS: dict[str, bytes] = {
    "netflow": (NF_HEADER + "\n" + ",".join(["1"] * 44) + ",DoS\n").encode(),
    "nsl": b"0,tcp,ftp_data,SF,491,0" + b",0" * 35 + b",normal,20\r\n",
    "arff": b"@relation 'KDD'\n@attribute 'duration' real\n@attribute 'class' {'normal',"
    b" 'anomaly'}\n@data\n0,normal\n",
    "unsw": b"\xef\xbb\xbfid,dur,proto,service,state,spkts,dpkts,sbytes,dbytes,rate,sttl,dttl,"
    b"sload,attack_cat,label\r\n1,0.1,tcp,-,FIN,2,2,10,10,1.5,254,0,3,Normal,0\r\n",
    "cic": b" Flow Duration, Total Fwd Packets,Flow Bytes/s, Flow Packets/s, Fwd Header Length,"
    b" Fwd Header Length, Label\n5,2,Infinity,NaN,32,32,BENIGN\n",
}


def _read_all(data: bytes, mode: str, errors: str) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "input.csv"
        path.write_bytes(data)
        with contextlib.suppress(IngestError):
            detect_format(path)
        try:
            for _ in open_flows(path, mode, errors=errors, chunk_rows=7):  # type: ignore[arg-type]
                pass
        except IngestError:
            pass


@FUZZ
@given(data=st.binary(max_size=4096), mode=st.sampled_from(MODES))
@example(data=b"\r\x00", mode="auto")  # once broke the header splitter
def test_random_bytes_raise_only_ingest_errors(data: bytes, mode: str) -> None:
    _read_all(data, mode, "strict")


@FUZZ
@given(
    seed=st.sampled_from(sorted(SEEDS)),
    cut=st.integers(min_value=0, max_value=400),
    noise=st.binary(max_size=64),
    at=st.integers(min_value=0, max_value=400),
    mode=st.sampled_from(MODES),
    errors=st.sampled_from(["strict", "collect"]),
)
def test_garbled_real_headers(
    seed: str, cut: int, noise: bytes, at: int, mode: str, errors: str
) -> None:
    base = SEEDS[seed]
    garbled = base[:at] + noise + base[at:]
    _read_all(garbled[: max(cut, 1)] if cut < len(garbled) else garbled, mode, errors)


@FUZZ
@given(data=st.binary(max_size=2048), mode=st.sampled_from(MODES))
def test_random_compressed_bytes(data: bytes, mode: str) -> None:
    packed = gzip.compress(data)
    _read_all(packed[: len(packed) // 2 + 1], mode, "collect")


@pytest.mark.datasets
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    name=st.sampled_from(
        [
            "nsl-kdd/KDDTest-21.txt",
            "format-samples/unsw-nb15-sample300.csv",
            "format-samples/cic-ids2017-improved-sample.csv",
        ]
    ),
    cut=st.integers(min_value=1, max_value=20_000),
    flip=st.integers(min_value=0, max_value=20_000),
    byte=st.integers(min_value=0, max_value=255),
    errors=st.sampled_from(["strict", "collect"]),
)
def test_truncated_and_flipped_real_files(
    datasets: Path, name: str, cut: int, flip: int, byte: int, errors: str
) -> None:
    path = datasets / name
    data = bytearray(path.read_bytes()[:cut])
    if flip < len(data):
        data[flip] = byte
    _read_all(bytes(data), "auto", errors)
