"""The ``phalanx`` command.

Exit codes: 0 success, 1 the command ran but found a problem (e.g. a failed check),
2 bad input or configuration (a :class:`~phalanx.core.errors.PhalanxError`), 130 interrupted.
"""

from __future__ import annotations

import typer

from phalanx import __version__
from phalanx.cli import coordinator, data, demo, participant, pki, simulate
from phalanx.cli import detect as detect_cli
from phalanx.cli import model as model_cli
from phalanx.cli import privacy as privacy_cli

app = typer.Typer(
    name="phalanx",
    help="Federated learning for cyber threat detection: train one detector across organizations"
    " without pooling their traffic.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
app.add_typer(data.app, name="data", help="Read and inspect security datasets.")
app.command("simulate")(simulate.simulate)
app.command("demo")(demo.demo)
app.add_typer(pki.app, name="pki", help="The federation's certificate authority and identities.")
app.add_typer(coordinator.app, name="coordinator", help="Run a federation's coordinator.")
app.add_typer(participant.app, name="participant", help="Take part in a federation.")
app.add_typer(privacy_cli.app, name="privacy", help="A participant's differential-privacy ledger.")
app.command("status")(coordinator.status_command)
model_app = typer.Typer(no_args_is_help=True)
model_app.command("pull")(participant.pull)
model_app.command("inspect")(model_cli.inspect)
app.command("detect")(detect_cli.detect)
app.command("export")(detect_cli.export)
app.add_typer(model_app, name="model", help="Global model bundles.")


def _version(value: bool) -> None:
    if value:
        typer.echo(f"phalanx {__version__}")
        raise typer.Exit()


@app.callback()
def _root(
    version: bool = typer.Option(
        False, "--version", callback=_version, is_eager=True, help="Print the version and exit."
    ),
) -> None:
    """Phalanx command line."""


def main() -> None:
    """Console-script entry point."""
    app()
