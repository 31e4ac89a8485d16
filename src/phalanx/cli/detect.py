"""``phalanx detect`` (score flows, write ECS alerts) and ``phalanx export --onnx``.

Composition root: picks the readers, the PKI trust root and the model bundle, and hands flow
batches to :class:`~phalanx.services.detection.Detector`. Input is streamed batch by batch
(``--chunk-rows`` flows at a time), so memory stays bounded whatever the input size.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from phalanx.cli.common import setup_runtime, user_errors
from phalanx.cli.model import CrlOption, ModelOption, TrustOption, open_model, trust_root
from phalanx.core.errors import ConfigError
from phalanx.data.readers import ALL_FORMATS, open_flows
from phalanx.services.detection import Detector, choose_threshold

console = Console(stderr=True)


def input_files(path: Path) -> list[Path]:
    """``path`` itself, or the regular files below a folder (sorted, hidden ones skipped)."""
    if path.is_file():
        return [path]
    if path.is_dir():
        files = sorted(
            p
            for p in path.rglob("*")
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts)
        )
        if not files:
            raise ConfigError(f"{path}: the folder holds no files to score")
        return files
    raise ConfigError(f"{path}: no such file or folder", hint="check the --input path")


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
        files = input_files(input)
        roots = trust_root(trust, crl)
        with open_model(model, roots, allow_unsigned=allow_unsigned) as loaded:
            value, source = choose_threshold(loaded.thresholds, fpr=fpr, threshold=threshold)
            detector = Detector(
                loaded.model,
                loaded.transform,
                threshold=value,
                model_id=loaded.model_id,
                model_version=loaded.version,
                top_k=top_k,
            )
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
