"""``phalanx detect`` (score flows, write ECS alerts) and ``phalanx export --onnx``.

Composition root: picks the readers, the PKI trust root and the model bundle, and hands flow
batches to :class:`~phalanx.services.detection.Detector`. Input is streamed batch by batch
(``--chunk-rows`` flows at a time), so memory stays bounded whatever the input size.
"""

from __future__ import annotations

import math
import os
import queue
import threading
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO, Annotated, TypeVar, cast

import numpy as np
import typer
from numpy.typing import NDArray
from rich.console import Console
from rich.table import Table

from phalanx.cli.common import setup_runtime, user_errors
from phalanx.cli.model import CrlOption, ModelOption, TrustOption, open_model, trust_root
from phalanx.core.errors import ConfigError, FormatError
from phalanx.core.metrics import threshold_at_fpr
from phalanx.core.taxonomy import BENIGN, CATEGORIES
from phalanx.data.readers import ALL_FORMATS, detect_format, open_flows
from phalanx.models.hybrid import HybridDetector
from phalanx.services.correlation import AlertCorrelator, CorrelationRules
from phalanx.services.detection import Detector, choose_threshold

console = Console(stderr=True)
T = TypeVar("T")


def prefetched(items: Iterable[T], depth: int = 2) -> Iterator[T]:
    """``items``, produced by a background thread at most ``depth`` ahead of the consumer.

    Reading and parsing the next chunk (pyarrow, nfstream: they release the GIL) then overlaps
    scoring and rendering the current one; memory stays bounded by ``depth`` chunks. An error
    in the producer is raised in the consumer; when the consumer stops early, the producer stops
    at its next chunk.
    """
    box: queue.Queue[tuple[str, object]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def produce() -> None:
        try:
            for item in items:
                while not stop.is_set():
                    try:
                        box.put(("item", item), timeout=0.1)
                        break
                    except queue.Full:
                        continue
                if stop.is_set():
                    return
            box.put(("end", None))
        except BaseException as err:  # noqa: BLE001 (handed to the consumer, which re-raises it)
            box.put(("error", err))

    worker = threading.Thread(target=produce, name="phalanx-detect-reader", daemon=True)
    worker.start()
    try:
        while True:
            kind, value = box.get()
            if kind == "end":
                return
            if kind == "error":
                raise cast(BaseException, value)
            yield cast(T, value)
    finally:
        stop.set()
        while worker.is_alive():
            try:
                box.get(timeout=0.1)
            except queue.Empty:
                continue
        worker.join()


def detect_files(
    detector: Detector, files: Iterable[Path], fmt: str, chunk_rows: int, out: IO[bytes]
) -> int:
    """Score every flow of ``files`` and write the alerts to ``out``; the number of packets
    behind the flows (captures only: their flows carry ``PACKETS``) is returned."""
    packets = 0
    for f in files:
        offset = 0
        for batch in prefetched(open_flows(f, fmt, chunk_rows=chunk_rows)):
            alerts = detector.detect(batch, source=str(f), offset=offset)
            out.writelines(detector.render(alerts))
            offset += len(batch)
            if "PACKETS" in batch.identifiers:
                packets += int(batch.identifiers["PACKETS"].sum())
    return packets


def input_files(path: Path, fmt: str = "auto") -> tuple[list[Path], list[Path]]:
    """The files to score and the files skipped.

    ``path`` itself, or the regular files below a folder (sorted, hidden ones skipped). In a
    folder read with ``--format auto``, files in no format Phalanx recognises (a README, a
    licence, a checksum list) are skipped and named, not fatal; a folder with nothing to score
    is an error.
    """
    if path.is_file():
        return [path], []
    if path.is_dir():
        files = sorted(
            p
            for p in path.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
        skipped: list[Path] = []
        if fmt == "auto":
            kept = []
            for f in files:
                try:
                    detect_format(f)
                except FormatError:
                    skipped.append(f)
                else:
                    kept.append(f)
            files = kept
        if not files:
            raise ConfigError(
                f"{path}: the folder holds no flow files to score"
                + (f" ({len(skipped)} files in no known format)" if skipped else ""),
                hint="point --input at CSV flows, Zeek conn.log or pcap/pcapng files",
            )
        return files, skipped
    raise ConfigError(f"{path}: no such file or folder", hint="check the --input path")


def calibrate_locally(
    detector: Detector, path: Path, fmt: str, fpr: float, chunk_rows: int
) -> tuple[float, str]:
    """The threshold at false-positive rate ``fpr`` on a member's own benign flows.

    A coordinator holds no benign traffic, so a published model carries only its default
    threshold; each member calibrates on its own traffic here, without changing (and so without
    invalidating the signature of) the model. Labelled inputs contribute their benign rows only;
    unlabelled inputs are taken as benign, as the option promises.
    """
    if not 0.0 < fpr < 1.0:
        raise ConfigError(f"--fpr must be in (0, 1), found {fpr}")
    files, _ = input_files(path, fmt)
    scores: list[NDArray[np.float32]] = []
    for f in files:
        for batch in open_flows(f, fmt, chunk_rows=chunk_rows):
            cats = batch.category.astype(str)
            keep = cats == BENIGN if np.isin(cats, CATEGORIES).any() else np.ones(len(cats), bool)
            if keep.any():
                if isinstance(detector.model, HybridDetector):  # its anomaly part's scores
                    x = detector.transform.transform(batch.take(keep))
                    scores.append(detector.model.anomaly_score(x))
                else:
                    score, _ = detector.score_batch(batch.take(keep))
                    scores.append(score)
    n = sum(len(s) for s in scores)
    if n < math.ceil(1.0 / fpr):
        raise ConfigError(
            f"{path}: {n} benign flows cannot calibrate a false-positive rate of {fpr:g}"
            f" (at least {math.ceil(1.0 / fpr)} needed)",
            hint="give more benign traffic, or a larger --fpr",
        )
    value = threshold_at_fpr(np.concatenate(scores), fpr)
    if isinstance(detector.model, HybridDetector):
        # The hybrid alerts above 1 on its combined score; what a member calibrates is the
        # anomaly part's threshold (the classifier keeps its own cut): FPR <= classifier + fpr.
        detector.model.set_anomaly_threshold(value)
        return 1.0, f"anomaly part calibrated at FPR {fpr:g} on {n:,} local benign flows"
    return value, f"calibrated at FPR {fpr:g} on {n:,} local benign flows"


def detect(
    model: ModelOption,
    input: Annotated[
        Path, typer.Option("--input", "-i", help="Flow file (CSV, Zeek conn.log, pcap) or folder.")
    ],
    out: Annotated[Path, typer.Option("--out", "-o", help="Alerts file (JSON lines, ECS).")],
    format: Annotated[
        str, typer.Option("--format", "-f", help=f"auto or one of {', '.join(ALL_FORMATS)}.")
    ] = "auto",
    fpr: Annotated[
        float | None, typer.Option("--fpr", help="Use the threshold stored for this FPR.")
    ] = None,
    threshold: Annotated[
        float | None, typer.Option("--threshold", help="Alert above this attack score.")
    ] = None,
    calibrate_on: Annotated[
        Path | None,
        typer.Option(
            "--calibrate-on",
            help="With --fpr: choose the threshold on this file or folder of your own benign"
            " traffic (labelled rows: only the benign ones count) instead of the stored one.",
        ),
    ] = None,
    trust: TrustOption = None,
    crl: CrlOption = None,
    allow_unsigned: Annotated[
        bool,
        typer.Option(
            "--allow-unsigned", help="Score with an unsigned or unverified model (unsafe)."
        ),
    ] = False,
    top_k: Annotated[int, typer.Option("--top-k", help="Features named per alert.")] = 3,
    chunk_rows: Annotated[
        int, typer.Option("--chunk-rows", help="Flows scored per batch (bounds memory).")
    ] = 65536,
    threads: Annotated[
        int | None,
        typer.Option("--threads", help="Threads scoring flows (default: the cores available)."),
    ] = None,
    correlate: Annotated[
        bool,
        typer.Option(
            "--correlate/--no-correlate",
            help="Relabel scan/flood alerts by their shape across flows (ADR 0011).",
        ),
    ] = True,
    flood_sources: Annotated[
        int, typer.Option("--flood-sources", help="Distinct sources on one target: ddos.")
    ] = CorrelationRules.fan_in_sources,
    flood_flows: Annotated[
        int, typer.Option("--flood-flows", help="Alerts from one source on one port: dos.")
    ] = CorrelationRules.flood_flows,
    scan_targets: Annotated[
        int, typer.Option("--scan-targets", help="Targets one source reaches when scanning.")
    ] = CorrelationRules.scan_targets,
    window: Annotated[
        float, typer.Option("--window", help="Correlation window, seconds of flow start time.")
    ] = CorrelationRules.window_s,
) -> None:
    """Score every flow of INPUT with MODEL and write alerts above the threshold as ECS JSON."""
    setup_runtime()
    import torch

    with user_errors():
        if threads is None:
            threads = available_cores()
        if threads < 1:
            raise ConfigError(f"--threads must be at least 1, found {threads}")
        # Detection is not training: it uses every core, as row slices scored on separate
        # threads (Detector), each running torch on one thread.
        torch.set_num_threads(1)
        correlator = None
        if correlate:
            correlator = AlertCorrelator(
                CorrelationRules(
                    window_s=window,
                    fan_in_sources=flood_sources,
                    flood_flows=flood_flows,
                    scan_targets=scan_targets,
                )
            )
        files, skipped = input_files(input, format)
        for f in skipped:
            console.print(f"[yellow]skipped[/] {f}: not a flow file in a known format")
        roots = trust_root(trust, crl)
        with open_model(model, roots, allow_unsigned=allow_unsigned) as loaded:
            hybrid = loaded.model
            if (
                isinstance(hybrid, HybridDetector)
                and not hybrid.is_calibrated()
                and calibrate_on is None
            ):
                raise ConfigError(
                    f"{loaded.folder}: this hybrid model has no anomaly threshold (a"
                    " coordinator publishes none: it holds no benign traffic)",
                    hint="pass --fpr 0.01 --calibrate-on FILE_OR_FOLDER of your own benign flows",
                )
            if calibrate_on is None:
                value, source = choose_threshold(loaded.thresholds, fpr=fpr, threshold=threshold)
            elif fpr is None or threshold is not None:
                raise ConfigError("--calibrate-on needs --fpr (and no --threshold)")
            else:
                value, source = 0.5, ""  # replaced below, once the detector can score
            detector = Detector(
                loaded.model,
                loaded.transform,
                threshold=value,
                model_id=loaded.model_id,
                model_version=loaded.version,
                top_k=top_k,
                threads=threads,
                correlator=correlator,
            )
            if calibrate_on is not None and fpr is not None:
                value, source = calibrate_locally(detector, calibrate_on, format, fpr, chunk_rows)
                detector.threshold = value
            t0 = time.perf_counter()
            out.parent.mkdir(parents=True, exist_ok=True)
            try:
                fh = out.open("wb")
            except OSError as err:
                raise ConfigError(f"{out}: cannot write the alerts ({err.strerror})") from err
            with fh, detector:
                detect_files(detector, files, format, chunk_rows, fh)
            seconds = time.perf_counter() - t0
    summary = detector.summary
    table = Table(title=f"phalanx detect: {len(files)} input file(s)", show_header=False)
    table.add_row("model", f"{loaded.model_id} ({loaded.version}, {detector.kind})")
    sig = loaded.signature
    table.add_row("signature", f"{sig.state}: {sig.reason}")
    if sig.state == "valid" and not sig.revocation_checked:
        table.add_row("revocation", "not checked (no CRL beside ca.crt; pass --crl)")
    table.add_row("threshold", f"{value:.6g} ({source})")
    table.add_row("flows", f"{summary.flows:,}")
    table.add_row("alerts", f"{summary.alerts:,}")
    for cat, n in sorted(summary.by_category.items(), key=lambda kv: -kv[1]):
        table.add_row(f"  {cat}", f"{n:,}")
    rate = summary.flows / seconds if seconds > 0 else float("inf")
    if correlator is not None:
        moved = correlator.summary.relabelled
        table.add_row("correlation", f"{correlator.summary.total():,} alerts relabelled")
        for (rule, before, after), n in sorted(moved.items(), key=lambda kv: -kv[1]):
            table.add_row(f"  {rule}", f"{before} -> {after}: {n:,}")
    table.add_row("throughput", f"{rate:,.0f} flows/s ({seconds:.2f} s)")
    table.add_row("alerts file", str(out))
    console.print(table)


def available_cores() -> int:
    """CPU cores this process may run on (its affinity mask where the OS has one)."""
    if hasattr(os, "sched_getaffinity"):
        return max(1, len(os.sched_getaffinity(0)))
    return max(1, os.cpu_count() or 1)


def export(
    model: ModelOption,
    onnx: Annotated[Path, typer.Option("--onnx", help="Write the scoring graph to this file.")],
    trust: TrustOption = None,
    crl: CrlOption = None,
) -> None:
    """Export MODEL's scoring graph (transformed features -> attack score) as ONNX."""
    setup_runtime()
    from phalanx.models.onnx import export_onnx

    with (
        user_errors(),
        open_model(model, trust_root(trust, crl), allow_unsigned=True, require=False) as loaded,
    ):
        meta = {
            "phalanx.model_id": loaded.model_id,
            "phalanx.version": loaded.version,
            "phalanx.schema_hash": loaded.transform.schema_hash,
            "phalanx.feature_names": list(loaded.transform.feature_names),
            "phalanx.thresholds": loaded.thresholds,
            "phalanx.taxonomy": loaded.metadata.get("taxonomy", []),
            "phalanx.transform": loaded.transform.to_dict(),
            "phalanx.signature": loaded.signature.to_dict(),
        }
        path = export_onnx(loaded.model, onnx, meta)
    console.print(f"wrote {path} (input 'features', {loaded.model.n_features} columns)")
