"""Detection throughput (a script, not a test): scoring, CSV to alerts, pcap to alerts.

Usage::

    .venv/bin/python bench/bench_detect.py [--repeat 5] [--flows 1000000] [--datasets PATH]

Rows of the table (medians over ``repeat`` runs):

* ``score``: the attack score and category of every flow from prepared arrays (the MLP of
  ``phalanx simulate``, 244-256-128-11, trained one epoch on synthetic traffic): the dense
  ``MLPClassifier.predict_proba`` on the transformed float32 matrix (the former path), and the
  detector's compact scorer (numeric block plus gathered one-hot rows, 2,048-row chunks) on the
  same features in compact form, with 1 thread, 2 row-slice threads (what ``phalanx detect
  --threads 2`` does) and 2 torch intra-op threads; then the feature transform and its compact
  form alone.
* ``csv -> alerts``: the loop of ``phalanx detect`` itself (:func:`phalanx.cli.detect.detect_files`:
  read, transform, score, explain every alert, correlate them as ``phalanx detect`` does by
  default, write ECS JSON lines to a file) over a NetFlow v2
  CSV of synthetic traffic (the generator's attack mix: about 20 % of flows alert) and over the
  real NF-BoT-IoT-v2 file (about 80 % of flows alert), with 1 and 2 threads.
* ``pcap -> alerts``: the same loop over every capture in ``pcaps/`` (nfstream metering included),
  in flows/s and packets/s.
"""

from __future__ import annotations

import argparse
import functools
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pacsv
import torch

from phalanx.cli.detect import detect_files
from phalanx.core.features.batch import FlowBatch
from phalanx.core.features.stats import compute_stats
from phalanx.core.features.transform import FeatureTransform
from phalanx.core.metrics import threshold_at_fpr
from phalanx.data.schemas import NETFLOW_V2
from phalanx.data.synthetic import format_ipv4, generate_federation
from phalanx.models import MLPClassifier
from phalanx.models.compact import compact_features
from phalanx.services.correlation import AlertCorrelator
from phalanx.services.detection import Detector
from phalanx.services.participant import category_indices


def _root(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    env = os.environ.get("PHALANX_DATASETS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "datasets"


def _median(fn: Callable[[], object], repeat: int) -> float:
    times = []
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _model() -> tuple[MLPClassifier, FeatureTransform, float]:
    data = FlowBatch.concat(generate_federation(4, 25_000, seed=1))
    transform = FeatureTransform.fit(compute_stats(data))
    model = MLPClassifier(transform.n_features, hidden=(256, 128), epochs=1, seed=0)
    model.fit(transform.transform(data), category_indices(data))
    val = FlowBatch.concat(generate_federation(4, 5_000, seed=2))
    benign = transform.transform(val.take(val.category == "benign"))
    return model, transform, float(threshold_at_fpr(model.attack_score(benign), 0.01))


def _csv(batch: FlowBatch, path: Path) -> None:
    """Write ``batch`` as a NetFlow v2 CSV (the NF-v2 column order, Label and Attack last)."""
    cols: dict[str, pa.Array] = {}
    for c in NETFLOW_V2.columns:
        if c.name in batch.schema.numeric:
            cols[c.name] = pa.array(batch.numeric[:, batch.schema.numeric.index(c.name)])
        elif c.name in batch.schema.categorical:
            j = batch.schema.categorical.index(c.name)
            cols[c.name] = pa.array(batch.categorical[:, j].astype(str))
        elif c.name.startswith("IPV4_"):
            cols[c.name] = pa.array(format_ipv4(batch.identifiers[c.name]))
        else:
            cols[c.name] = pa.array(batch.identifiers[c.name])
    cols["Label"] = pa.array((batch.category != "benign").astype(np.int64))
    cols["Attack"] = pa.array(batch.label.astype(str))
    pacsv.write_csv(pa.table(cols), str(path))


def _pipeline(detector: Detector, paths: list[Path], out: Path) -> tuple[int, int, int]:
    """The loop of ``phalanx detect``: flows, alerts and packets (pcap only) processed."""
    with out.open("wb") as fh:
        packets = detect_files(detector, paths, "auto", 65_536, fh)
    return detector.summary.flows, detector.summary.alerts, packets


def _progress(row: tuple[str, str, str, str]) -> None:
    print("  ..", " | ".join(row), file=sys.stderr, flush=True)


def _detector(
    model: MLPClassifier,
    transform: FeatureTransform,
    threshold: float,
    threads: int,
    correlate: bool = False,
) -> Detector:
    """A detector as ``phalanx detect`` builds it (with alert correlation for end-to-end runs,
    its default)."""
    return Detector(
        model,
        transform,
        threshold=threshold,
        model_id="bench",
        model_version="1",
        threads=threads,
        correlator=AlertCorrelator() if correlate else None,
    )


def _end_to_end(
    name: str, detector: Callable[[], Detector], paths: list[Path], out: Path, repeat: int
) -> tuple[str, str, str, str]:
    """Median wall time of fresh detectors over ``paths``; the row of the table.

    The last column adds the process's CPU time (all threads) per run, median: on a machine
    shared with other jobs, wall time depends on what they take, CPU time much less.
    """
    times: list[float] = []
    cpu: list[float] = []
    counts = (0, 0, 0)
    for _ in range(repeat):
        with detector() as det:
            t0, c0 = time.perf_counter(), time.process_time()
            counts = _pipeline(det, paths, out)
            times.append(time.perf_counter() - t0)
            cpu.append(time.process_time() - c0)
    t, c = statistics.median(times), statistics.median(cpu)
    flows, alerts, packets = counts
    other = f"{packets / t:,.0f} pkt/s" if packets else f"{alerts:,} alerts"
    return (name, f"{flows:,}", f"{flows / t:,.0f} flows/s", f"{other}; {c:.2f} CPU-s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--flows", type=int, default=1_000_000)
    parser.add_argument("--datasets", default=None)
    args = parser.parse_args()
    root = _root(args.datasets)
    torch.set_num_threads(1)
    model, transform, threshold = _model()
    rows: list[tuple[str, str, str, str]] = []

    def add(row: tuple[str, str, str, str]) -> None:
        rows.append(row)
        _progress(row)

    day = FlowBatch.concat(generate_federation(4, args.flows // 4, seed=7))
    x = transform.transform(day)
    compact = compact_features(transform, day)
    n = f"{len(day):,}"
    t = _median(functools.partial(model.predict_proba, x), args.repeat)
    add(("score, dense matrix (predict_proba), 1 thread", n, f"{len(x) / t:,.0f} flows/s", ""))
    for threads, label in ((1, "1 thread"), (2, "2 threads (row slices)")):
        with _detector(model, transform, threshold, threads) as det:
            t = _median(functools.partial(det.score_compact, compact), args.repeat)
        add((f"score, compact, {label}", n, f"{len(x) / t:,.0f} flows/s", ""))
    torch.set_num_threads(2)
    with _detector(model, transform, threshold, 1) as det:
        t = _median(functools.partial(det.score_compact, compact), args.repeat)
    add(("score, compact, 2 torch intra-op threads", n, f"{len(x) / t:,.0f} flows/s", ""))
    torch.set_num_threads(1)
    t = _median(lambda: transform.transform(day), args.repeat)
    add(("transform (dense matrix)", n, f"{len(day) / t:,.0f} flows/s", ""))
    t = _median(lambda: compact_features(transform, day), args.repeat)
    add(("transform (compact form)", n, f"{len(day) / t:,.0f} flows/s", ""))

    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "synthetic.csv"
        _csv(day, csv)
        out = Path(tmp) / "alerts.jsonl"
        inputs = [("csv -> alerts, synthetic", [csv])]
        nf = root / "netflow-v2" / "NF-BoT-IoT-v2_reduced.csv.gz"
        if nf.is_file():
            inputs.append(("csv -> alerts, NF-BoT-IoT-v2", [nf]))
        for threads in (1, 2):
            for name, paths in inputs:
                make = functools.partial(_detector, model, transform, threshold, threads, True)
                add(_end_to_end(f"{name}, {threads} thread(s)", make, paths, out, args.repeat))
        pcaps = sorted((root / "pcaps").glob("*/*.pcap*"))
        if pcaps:
            make = functools.partial(_detector, model, transform, threshold, 2, True)
            label = f"pcap -> alerts, {len(pcaps)} captures, 2 threads"
            add(_end_to_end(label, make, pcaps, out, max(1, args.repeat // 2)))
    _table(rows)


def _table(rows: list[tuple[str, str, str, str]]) -> None:
    width = [max(len(r[i]) for r in rows) for i in range(4)]
    head = ("workload", "flows", "throughput", "other")
    print(" | ".join(h.ljust(w) for h, w in zip(head, width, strict=True)))
    print("-+-".join("-" * w for w in width))
    for r in rows:
        print(" | ".join(c.ljust(w) for c, w in zip(r, width, strict=True)))


if __name__ == "__main__":
    main()
