"""Detection throughput (a script, not a test): scoring, CSV to alerts, pcap to alerts.

Usage::

    .venv/bin/python bench/bench_detect.py [--repeat 5] [--flows 1000000] [--datasets PATH]

Rows of the table (medians over ``repeat`` runs):

* ``score``: :meth:`Detector.score` on a prepared float32 matrix (the MLP of ``phalanx simulate``,
  hidden 256,128, trained one epoch on synthetic traffic), with 1 and 2 torch threads; and the
  feature transform alone.
* ``csv -> alerts``: the loop of ``phalanx detect`` (read, transform, score, explain, write ECS
  JSON lines) over a NetFlow v2 CSV of synthetic traffic (the generator's attack mix, a few
  percent of flows) and over the real NF-BoT-IoT-v2 file (99.5% attacks: every flow alerts).
* ``pcap -> alerts``: the same loop over every capture in ``pcaps/`` (nfstream metering included),
  in flows/s and packets/s.
"""

from __future__ import annotations

import argparse
import functools
import json
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

from phalanx.core.features.batch import FlowBatch
from phalanx.core.features.stats import compute_stats
from phalanx.core.features.transform import FeatureTransform
from phalanx.core.metrics import threshold_at_fpr
from phalanx.data.readers import open_flows
from phalanx.data.schemas import NETFLOW_V2
from phalanx.data.synthetic import format_ipv4, generate_federation
from phalanx.models import MLPClassifier
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
    flows = alerts = packets = 0
    with out.open("w", encoding="utf-8") as fh:
        for p in paths:
            offset = 0
            for batch in open_flows(p, chunk_rows=65_536):
                for doc in detector.detect(batch, source=str(p), offset=offset):
                    fh.write(json.dumps(doc, separators=(",", ":")) + "\n")
                    alerts += 1
                offset += len(batch)
                flows += len(batch)
                if "PACKETS" in batch.identifiers:
                    packets += int(batch.identifiers["PACKETS"].sum())
    return flows, alerts, packets


def _progress(row: tuple[str, str, str, str]) -> None:
    print("  ..", " | ".join(row), file=sys.stderr, flush=True)


def _collect(
    into: list[tuple[int, int, int]], detector: Detector, paths: list[Path], out: Path
) -> None:
    into.append(_pipeline(detector, paths, out))


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

    day = FlowBatch.concat(generate_federation(4, args.flows // 4, seed=7))
    x = transform.transform(day)
    for threads in (1, 2):
        torch.set_num_threads(threads)
        det = Detector(model, transform, threshold=threshold, model_id="bench", model_version="1")
        t = _median(functools.partial(det.score, x), args.repeat)
        rate = f"{len(x) / t:,.0f} flows/s"
        rows.append((f"score, {threads} thread(s)", f"{len(x):,}", rate, ""))
        _progress(rows[-1])
    torch.set_num_threads(1)
    t = _median(lambda: transform.transform(day), args.repeat)
    rows.append(("transform", f"{len(day):,}", f"{len(day) / t:,.0f} flows/s", ""))

    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "synthetic.csv"
        _csv(day, csv)
        out = Path(tmp) / "alerts.jsonl"
        inputs = [("csv -> alerts, synthetic", [csv])]
        nf = root / "netflow-v2" / "NF-BoT-IoT-v2_reduced.csv.gz"
        if nf.is_file():
            inputs.append(("csv -> alerts, NF-BoT-IoT-v2", [nf]))
        pcaps = sorted((root / "pcaps").glob("*/*.pcap*"))
        for threads in (1, 2):
            torch.set_num_threads(threads)
            for name, paths in inputs:
                det = Detector(
                    model, transform, threshold=threshold, model_id="b", model_version="1"
                )
                result: list[tuple[int, int, int]] = []
                run = functools.partial(_collect, result, det, paths, out)
                t = _median(run, args.repeat)
                flows, alerts, _ = result[-1]
                label = f"{name}, {threads} thread(s)"
                rows.append(
                    (label, f"{flows:,}", f"{flows / t:,.0f} flows/s", f"{alerts:,} alerts")
                )
        torch.set_num_threads(1)
        if pcaps:
            det = Detector(model, transform, threshold=threshold, model_id="b", model_version="1")
            runs: list[tuple[int, int, int]] = []
            t = _median(lambda: runs.append(_pipeline(det, pcaps, out)), max(1, args.repeat // 2))
            flows, alerts, packets = runs[-1]
            label = f"pcap -> alerts, {len(pcaps)} captures"
            rows.append(
                (label, f"{flows:,}", f"{flows / t:,.0f} flows/s", f"{packets / t:,.0f} pkt/s")
            )
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
