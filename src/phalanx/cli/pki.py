"""``phalanx pki ...``: create a federation CA, issue and revoke member certificates.

Mounted by the main CLI as ``app.add_typer(pki.app, name="pki")``. See ``docs/pki.md``.
"""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from phalanx.adapters.pki import REASONS, Role, init_ca, issue, issue_signer, revoke
from phalanx.adapters.pki.files import read_json
from phalanx.adapters.pki.signing import SIGNING_FOLDER
from phalanx.cli.common import user_errors
from phalanx.core.errors import ConfigError

app = typer.Typer(
    name="pki",
    help="Federation certificates: create the CA, issue identities, revoke them.",
    no_args_is_help=True,
)

DirOption = Annotated[Path, typer.Option("--dir", help="The federation CA folder.")]


@app.callback()
def _pki() -> None:
    """Federation certificates: create the CA, issue identities, revoke them."""


@app.command("init")
def init_cmd(
    federation: Annotated[
        str, typer.Option("--federation", help="Federation name (letters, digits, . _ -).")
    ],
    dir: DirOption,
    days: Annotated[int, typer.Option("--days", help="CA validity in days.")] = 3650,
) -> None:
    """Create the federation CA in DIR: ca.key (0600), ca.crt, crl.pem, federation.json."""
    with user_errors():
        init_ca(dir, federation, days=days)
    Console().print(
        f"Created the CA of federation [bold]{federation}[/] in {dir}\n"
        f"Keep {dir / 'ca.key'} offline; hand out ca.crt and crl.pem.",
        highlight=False,
    )


@app.command("issue")
def issue_cmd(
    dir: DirOption,
    participant: Annotated[
        str | None, typer.Option("--participant", help="Issue a participant identity (org).")
    ] = None,
    admin: Annotated[str | None, typer.Option("--admin", help="Issue an admin identity.")] = None,
    coordinator: Annotated[
        str | None, typer.Option("--coordinator", help="Issue a coordinator identity (host).")
    ] = None,
    out: Annotated[
        Path | None, typer.Option("--out", help="Output folder (default DIR/<role>s/<name>).")
    ] = None,
    days: Annotated[int, typer.Option("--days", help="Validity in days.")] = 365,
    host: Annotated[
        list[str] | None,
        typer.Option("--host", help="DNS name or IP for a coordinator (repeatable)."),
    ] = None,
    model_signer: Annotated[
        str | None,
        typer.Option(
            "--model-signer",
            help="Issue only a coordinator's Ed25519 model-signing identity (into --out, default"
            " DIR/coordinators/<name>/signing).",
        ),
    ] = None,
) -> None:
    """Issue a certificate and key for one participant, admin or coordinator.

    A coordinator also gets its Ed25519 model-signing identity in <out>/signing.
    """
    if model_signer is not None:
        with user_errors():
            if participant or admin or coordinator:
                raise ConfigError("--model-signer is issued on its own, without another role")
            signer = issue_signer(dir, model_signer, out=out, days=days)
        Console().print(
            f"Issued model-signing identity of coordinator [bold]{model_signer}[/] (serial"
            f" {signer.identity.serial:#x})\n  key  {signer.key}\n  cert {signer.cert}",
            highlight=False,
        )
        return
    with user_errors():
        options: list[tuple[Role, str | None]] = [
            ("participant", participant),
            ("admin", admin),
            ("coordinator", coordinator),
        ]
        chosen = [(role, name) for role, name in options if name is not None]
        if len(chosen) != 1:
            raise ConfigError(
                "give exactly one of --participant ORG, --admin NAME, --coordinator HOST"
            )
        role, name = chosen[0]
        hosts = tuple(host) if host else (name, "localhost", "127.0.0.1")
        if role != "coordinator" and host:
            raise ConfigError("--host applies to --coordinator only")
        files = issue(dir, role, name, out=out, hosts=hosts, days=days)
        if role == "coordinator":
            issue_signer(dir, name, out=files.directory / SIGNING_FOLDER, days=days)
    ident = files.identity
    Console().print(
        f"Issued {ident.role} [bold]{ident.name}[/] (serial {ident.serial:#x}, valid until"
        f" {ident.not_after:%Y-%m-%d})\n  key  {files.key}\n  cert {files.cert}\n"
        f"  ca   {files.ca}",
        highlight=False,
    )


@app.command("revoke")
def revoke_cmd(
    dir: DirOption,
    cert: Annotated[
        Path | None, typer.Option("--cert", help="The certificate file to revoke.")
    ] = None,
    serial: Annotated[
        str | None, typer.Option("--serial", help="Serial to revoke (decimal, or hex with 0x).")
    ] = None,
    reason: Annotated[
        str, typer.Option("--reason", help=f"One of: {', '.join(REASONS)}.")
    ] = "unspecified",
) -> None:
    """Revoke a certificate: re-sign crl.pem (picked up on the next connection)."""
    with user_errors():
        number = _serial(serial) if serial is not None else None
        entry = revoke(dir, cert=cert, serial=number, reason=reason)
    Console().print(
        f"Revoked {entry.role} [bold]{entry.name}[/] (serial {entry.serial:#x}) at"
        f" {entry.revoked_at:%Y-%m-%d %H:%M:%S} UTC, reason {entry.reason}.\n"
        f"Copy {dir / 'crl.pem'} to every coordinator that does not read it from {dir}.",
        highlight=False,
    )


@app.command("list")
def list_cmd(dir: DirOption) -> None:
    """Show the identities issued by the CA in DIR and their revocation state."""
    with user_errors():
        if not (dir / "ca.crt").is_file():
            raise ConfigError(
                f"{dir}: no federation CA here",
                hint="create one with `phalanx pki init --federation NAME --dir DIR`",
            )
        issued = read_json(dir / "issued.json", default=[])
        revoked = {e["serial"]: e for e in read_json(dir / "revoked.json", default=[])}
        fed = read_json(dir / "federation.json", default={})
    now = datetime.now(UTC)
    table = Table(title=f"federation {fed.get('name', '?')}: {len(issued)} issued")
    for col in ("role", "name", "serial", "not after", "status", "folder"):
        table.add_column(col, overflow="fold")
    for e in issued:
        rev = revoked.get(e["serial"])
        expired = datetime.fromisoformat(e["not_after"]) < now
        status = (
            f"[red]revoked {rev['revoked_at'][:19]} ({rev['reason']})[/]"
            if rev
            else "[yellow]expired[/]"
            if expired
            else "[green]valid[/]"
        )
        table.add_row(
            e["role"], e["name"], f"{e['serial']:#x}", e["not_after"][:10], status, e["folder"]
        )
    Console().print(table)


def _serial(text: str) -> int:
    try:
        return int(text, 16) if text.lower().startswith("0x") else int(text)
    except ValueError:
        raise ConfigError(
            f"invalid --serial {text!r}: expected a decimal number or hex with 0x",
            hint="`phalanx pki list` shows serials in hex",
        ) from None
