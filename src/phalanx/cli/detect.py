"""``phalanx detect`` (score flows, write ECS alerts) and ``phalanx export --onnx``.

Composition root: picks the readers, the PKI trust root and the model bundle, and hands flow
batches to :class:`~phalanx.services.detection.Detector`. Input is streamed batch by batch
(``--chunk-rows`` flows at a time), so memory stays bounded whatever the input size.
"""

from __future__ import annotations

import json
import math
import time
from pathlib import Path
from typing import Annotated

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
from phalanx.services.detection import Detector, choose_threshold

console = Console(stderr=True)


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
                score, _ = detector.score(detector.transform.transform(batch.take(keep)))
                scores.append(score)
    n = sum(len(s) for s in scores)
    if n < math.ceil(1.0 / fpr):
        raise ConfigError(
            f"{path}: {n} benign flows cannot calibrate a false-positive rate of {fpr:g}"
            f" (at least {math.ceil(1.0 / fpr)} needed)",
            hint="give more benign traffic, or a larger --fpr",
        )
    value = threshold_at_fpr(np.concatenate(scores), fpr)
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
    threads: Annotated[int, typer.Option("--threads", help="Torch threads for scoring.")] = 1,
) -> None:
    """Score every flow of INPUT with MODEL and write alerts above the threshold as ECS JSON."""
    setup_runtime()
    import torch

    with user_errors():
        if threads < 1:
            raise ConfigError(f"--threads must be at least 1, found {threads}")
        torch.set_num_threads(threads)
        files, skipped = input_files(input, format)
        for f in skipped:
            console.print(f"[yellow]skipped[/] {f}: not a flow file in a known format")
        roots = trust_root(trust, crl)
        with open_model(model, roots, allow_unsigned=allow_unsigned) as loaded:
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
            )
            if calibrate_on is not None and fpr is not None:
                value, source = calibrate_locally(detector, calibrate_on, format, fpr, chunk_rows)
                detector.threshold = value
            t0 = time.perf_counter()
            out.parent.mkdir(parents=True, exist_ok=True)
            try:
                fh = out.open("w", encoding="utf-8")
            except OSError as err:
                raise ConfigError(f"{out}: cannot write the alerts ({err.strerror})") from err
            with fh:
                for f in files:
                    offset = 0
                    for batch in open_flows(f, format, chunk_rows=chunk_rows):
                        for doc in detector.detect(batch, source=str(f), offset=offset):
                            fh.write(json.dumps(doc, separators=(",", ":")) + "\n")
                        offset += len(batch)
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
    table.add_row("throughput", f"{rate:,.0f} flows/s ({seconds:.2f} s)")
    table.add_row("alerts file", str(out))
    console.print(table)


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
