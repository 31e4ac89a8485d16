"""Throughput of the dataset readers on the real files (a script, not a test).

Usage::

    .venv/bin/python bench/bench_readers.py [--repeat 5] [--datasets PATH]

Each file is streamed through ``open_flows`` (all batches built, nothing concatenated) ``repeat``
times; the table shows the median. The last rows time the exact pass (single-threaded, with row
numbers), which a file with a malformed row falls back to: a copy of the NetFlow v2 file with one
bad row appended, read in collect mode.
"""

from __future__ import annotations

import argparse
import gzip
import os
import statistics
import tempfile
import time
from pathlib import Path

from phalanx.data.readers import open_flows

FILES: list[tuple[str, str, float | None]] = [
    ("nsl-kdd", "nsl-kdd/KDDTrain+_20Percent.txt", None),
    ("nsl-kdd", "nsl-kdd/KDDTest+.txt", None),
    ("nsl-kdd", "nsl-kdd/KDDTest+.arff.gz", None),
    ("unsw-nb15", "format-samples/unsw-nb15-sample300.csv", None),
    ("cic-ids2017", "format-samples/cic-ids2017-improved-sample.csv", None),
    ("cic-ids2017", "cic-ids2017/CICIDS2017_kmeans_grouped_sample.csv.gz", None),
    ("cic-ids2017", "cic-ids2017/cic_0.01km.csv.gz", None),
    ("netflow-v2", "netflow-v2/NF-BoT-IoT-v2_reduced.csv.gz", 500_000.0),
]


def _root(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    env = os.environ.get("PHALANX_DATASETS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "datasets"


def _time(path: Path, fmt: str, repeat: int, errors: str = "strict") -> tuple[int, float]:
    rows = 0
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        reader = open_flows(path, fmt, errors=errors)  # type: ignore[arg-type]
        rows = sum(len(b) for b in reader)
        times.append(time.perf_counter() - start)
    return rows, statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--datasets", default=None)
    args = parser.parse_args()
    root = _root(args.datasets)
    rows_out: list[tuple[str, str, int, float, str]] = []
    for fmt, rel, target in FILES:
        path = root / rel
        if not path.exists():
            print(f"skip {rel}: not found under {root}")
            continue
        _time(path, fmt, 1)  # warm the page cache and imports
        rows, secs = _time(path, fmt, args.repeat)
        rows_out.append((fmt, rel, rows, secs, f">= {target:,.0f}" if target else "-"))
    nf = root / "netflow-v2/NF-BoT-IoT-v2_reduced.csv.gz"
    if nf.exists():
        with tempfile.TemporaryDirectory() as tmp:
            bad = Path(tmp) / "nf-one-bad-row.csv.gz"
            bad.write_bytes(gzip.compress(gzip.decompress(nf.read_bytes()) + b"1,2,3\n", 1))
            rows, secs = _time(bad, "netflow-v2", args.repeat, "collect")
            rows_out.append(
                ("netflow-v2 (exact pass)", "NF-BoT-IoT-v2 + 1 bad row", rows, secs, "-")
            )
    print(f"median of {args.repeat} runs, {os.cpu_count()} CPUs")
    head = (
        f"| {'reader':<24} | {'file':<52} | {'rows':>8} | {'seconds':>8} | {'rows/s':>10} | goal |"
    )
    print(head)
    print("|" + "|".join("-" * (len(c)) for c in head.split("|")[1:-1]) + "|")
    for fmt, rel, rows, secs, goal in rows_out:
        rate = rows / secs if secs else float("inf")
        print(f"| {fmt:<24} | {rel:<52} | {rows:>8,} | {secs:>8.3f} | {rate:>10,.0f} | {goal} |")


if __name__ == "__main__":
    main()
