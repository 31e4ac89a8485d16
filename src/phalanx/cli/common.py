"""Helpers shared by the CLI commands: error reporting, logging, torch threads."""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

from phalanx.core.errors import PhalanxError

if TYPE_CHECKING:
    from phalanx.adapters.grpc.client import CoordinatorClient

T = TypeVar("T")
err_console = Console(stderr=True)


def setup_runtime(verbose: bool = False) -> None:
    """Logging to stderr and one torch thread per process (two collapse on a busy core)."""
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    import torch

    torch.set_num_threads(1)


@contextmanager
def user_errors() -> Iterator[None]:
    """Turn a :class:`PhalanxError` into a red message and exit code 2."""
    try:
        yield
    except PhalanxError as exc:
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False)
        raise typer.Exit(2) from None


def connect(coordinator: str, identity: Path, *, call_timeout_s: float = 60.0) -> CoordinatorClient:
    """A mutual-TLS client to ``coordinator`` with the identity folder ``identity``."""
    from phalanx.adapters.grpc.client import CoordinatorClient
    from phalanx.adapters.pki import load_identity

    key, cert, ca = load_identity(identity).read()
    return CoordinatorClient(
        coordinator, ca_cert=ca, cert=cert, key=key, call_timeout_s=call_timeout_s
    )


def round_progress(console: Console) -> Progress:
    """The progress bar of a federation's rounds, with a free-text ``status`` field."""
    return Progress(
        TextColumn("[bold]federation"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[status]}"),
        TimeElapsedColumn(),
        console=console,
    )
