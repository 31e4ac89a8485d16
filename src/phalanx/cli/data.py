"""``phalanx data ...``: look at dataset files before training on them.

Mounted by the main CLI as ``app.add_typer(data.app, name="data")``.
"""

from __future__ import annotations

import json
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table
from rich.text import Text

from phalanx.core.errors import PhalanxError
from phalanx.data.readers import inspect_file


class FormatChoice(StrEnum):
    """Values of ``--format``."""

    auto = "auto"
    nsl_kdd = "nsl-kdd"
    unsw_nb15 = "unsw-nb15"
    cic_ids2017 = "cic-ids2017"
    netflow_v2 = "netflow-v2"
    pcap = "pcap"
    zeek_conn = "zeek-conn"


data_app = typer.Typer(
    name="data",
    help="Inspect flow dataset files (NSL-KDD, UNSW-NB15, CIC-IDS2017, NetFlow v2).",
    no_args_is_help=True,
)
app = data_app

EXIT_ERROR = 2


@data_app.callback()
def _data() -> None:
    """Inspect flow dataset files (NSL-KDD, UNSW-NB15, CIC-IDS2017, NetFlow v2)."""


@data_app.command("inspect")
def inspect(
    path: Annotated[Path, typer.Argument(help="Dataset file (.csv, .txt, .arff, .gz, .zip).")],
    format: Annotated[
        FormatChoice, typer.Option("--format", "-f", help="File format; auto detects it.")
    ] = FormatChoice.auto,
    as_json: Annotated[bool, typer.Option("--json", help="Print one JSON object.")] = False,
    collect_errors: Annotated[
        bool,
        typer.Option("--collect-errors", help="Quarantine malformed rows instead of stopping."),
    ] = False,
) -> None:
    """Read PATH through and show its format, schema, columns, labels and problems."""
    try:
        info = inspect_file(path, format.value, "collect" if collect_errors else "strict")
    except PhalanxError as e:
        Console(stderr=True, soft_wrap=True).print(
            Text.assemble(("error: ", "bold red"), (str(e), "red"))
        )
        raise typer.Exit(EXIT_ERROR) from e
    if as_json:
        typer.echo(json.dumps(info, sort_keys=True))
        return
    _show(info, Console())


def _show(info: dict[str, Any], out: Console) -> None:
    schema = info["schema"]
    summary = Table(title=f"{info['path']}", show_header=False)
    summary.add_column("what", style="bold")
    summary.add_column("value", overflow="fold")
    summary.add_row("format", info["format"])
    summary.add_row("rows", f"{info['rows']:,}")
    summary.add_row("quarantined rows", f"{info['quarantined']:,}")
    summary.add_row("schema", f"{schema['source']} v{schema['version']}")
    summary.add_row("schema hash", schema["hash"])
    summary.add_row(
        "features",
        f"{len(info['features'])} ({len(info['numeric'])} numeric,"
        f" {len(info['categorical'])} categorical)",
    )
    summary.add_row("label columns", ", ".join(info["label_columns"]) or "(none: unlabelled)")
    summary.add_row("binary labels only", "yes" if info["binary_labels"] else "no")
    for note in info["notes"]:
        summary.add_row("note", note)
    out.print(summary)

    feats = Table(title="features used")
    feats.add_column("column")
    feats.add_column("kind")
    feats.add_column("missing", justify="right")
    feats.add_column("infinite", justify="right")
    for name in info["features"]:
        kind = "numeric" if name in info["numeric"] else "categorical"
        feats.add_row(
            name,
            kind,
            str(info["n_missing"].get(name, "")),
            str(info["n_infinite"].get(name, "")),
        )
    out.print(feats)

    dropped = Table(title="columns not used as features")
    dropped.add_column("column")
    dropped.add_column("reason")
    for name, reason in info["dropped"].items():
        dropped.add_row(name, reason)
    out.print(dropped)

    labels = Table(title="labels")
    labels.add_column("label")
    labels.add_column("rows", justify="right")
    for name, count in sorted(info["labels"].items(), key=lambda kv: -kv[1]):
        mark = " (unknown: mapped to other)" if name in info["unknown_labels"] else ""
        labels.add_row(f"{name!r}{mark}", f"{count:,}")
    out.print(labels)

    cats = Table(title="taxonomy categories")
    cats.add_column("category")
    cats.add_column("rows", justify="right")
    for name, count in sorted(info["categories"].items(), key=lambda kv: -kv[1]):
        cats.add_row(name, f"{count:,}")
    out.print(cats)

    if info["unknown_labels"]:
        out.print(
            "[yellow]unknown labels (mapped to 'other'):[/] "
            + ", ".join(f"{k!r}: {v}" for k, v in info["unknown_labels"].items())
        )
    if info["quarantined"]:
        q = Table(title=f"quarantined rows ({info['quarantined']:,}; first few)")
        q.add_column("line", justify="right")
        q.add_column("reason")
        for sample in info["quarantine_samples"]:
            q.add_row(str(sample["line"]), sample["reason"])
        out.print(q)
