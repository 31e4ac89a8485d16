"""``phalanx model inspect`` and the model loading every detection command shares.

A model is named by a bundle folder, a run directory holding ``model/``, or a ``.zip`` as
``phalanx model pull`` transfers it. Its signature is checked against the federation's trust root
(``--trust``: ``ca.crt``, a CA folder or an identity folder; the CRL beside it is used when there
is one, or the one given with ``--crl``).
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from phalanx.adapters.pki import SignatureStatus, TrustRoot, check_signature, require_signature
from phalanx.cli.common import err_console, user_errors
from phalanx.core.errors import ConfigError, ModelError
from phalanx.core.features.transform import FeatureTransform
from phalanx.models.bundle import bundle_digest, load_model, resolve_bundle, unpack_bundle
from phalanx.services.detection import Scoreable

console = Console()

ModelOption = Annotated[
    Path,
    typer.Option(
        "--model", "-m", help="Model bundle folder, run directory holding model/, or bundle .zip."
    ),
]
TrustOption = Annotated[
    Path | None,
    typer.Option(
        "--trust",
        help="Federation trust root: ca.crt, the CA folder, or an identity folder (ca.crt).",
    ),
]
CrlOption = Annotated[
    Path | None, typer.Option("--crl", help="Revocation list (default: crl.pem beside ca.crt).")
]


@dataclass
class LoadedModel:
    """A model bundle loaded for scoring, with what is known about where it came from."""

    folder: Path
    model: Scoreable
    metadata: dict[str, Any]
    transform: FeatureTransform
    signature: SignatureStatus
    model_id: str

    @property
    def version(self) -> str:
        """The federation round that produced it, or ``sim`` for a simulation run."""
        prov = self.metadata.get("provenance", {})
        if isinstance(prov, dict) and prov.get("round") is not None:
            return f"round-{prov['round']}"
        if isinstance(prov, dict) and prov.get("rounds") is not None:
            return f"{prov.get('federation', 'run')}-{prov['rounds']}-rounds"
        return "unknown"

    @property
    def thresholds(self) -> dict[str, float]:
        """Calibrated thresholds stored with the model."""
        raw = self.metadata.get("thresholds", {})
        return {str(k): float(v) for k, v in raw.items()} if isinstance(raw, dict) else {}


def trust_root(trust: Path | None, crl: Path | None) -> TrustRoot | None:
    """The :class:`TrustRoot` named by ``--trust`` / ``--crl``, or ``None`` when not given."""
    if trust is None:
        if crl is not None:
            raise ConfigError("--crl needs --trust (the CA certificate it belongs to)")
        return None
    ca = trust / "ca.crt" if trust.is_dir() else trust
    if not ca.is_file():
        raise ConfigError(
            f"{trust}: no CA certificate here",
            hint="pass the federation's ca.crt, its CA folder, or an identity folder",
        )
    if crl is None and (ca.parent / "crl.pem").is_file():
        crl = ca.parent / "crl.pem"
    return TrustRoot(ca, crl)


@contextmanager
def open_model(
    path: Path, trust: TrustRoot | None, *, allow_unsigned: bool, require: bool = True
) -> Iterator[LoadedModel]:
    """Load the model at ``path`` after checking its signature (see :func:`require_signature`).

    With ``require=False`` the signature is only reported (``model inspect``, ``export``).
    """
    with tempfile.TemporaryDirectory(prefix="phalanx-model-") as tmp:
        if path.is_file():
            try:
                blob = path.read_bytes()
            except OSError as err:
                raise ModelError(f"{path}: cannot read the bundle ({err.strerror})") from err
            folder = unpack_bundle(blob, Path(tmp) / "bundle")
        else:
            folder = resolve_bundle(path)
        if require:
            status = require_signature(folder, trust, allow_unsigned=allow_unsigned)
            if status.state != "valid":
                err_console.print(
                    f"[bold red]WARNING: scoring with a model whose signature is {status.state}"
                    f" ({status.reason}); --allow-unsigned was given. Alerts from it are only as"
                    " trustworthy as the file.[/]",
                    highlight=False,
                )
        else:
            status = check_signature(folder, trust)
        model, metadata = load_model(folder)
        if "transform" not in metadata:
            raise ModelError(
                f"{folder}: the bundle has no feature transform in its metadata",
                hint="use a bundle written by `phalanx simulate` or a coordinator",
            )
        transform = FeatureTransform.from_dict(metadata["transform"])
        yield LoadedModel(folder, model, metadata, transform, status, bundle_digest(folder)[:16])


def inspect(
    model: ModelOption,
    trust: TrustOption = None,
    crl: CrlOption = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Show a model bundle's metadata, provenance, thresholds and signature status."""
    with user_errors(), open_model(model, trust_root(trust, crl), allow_unsigned=True,
                                   require=False) as loaded:  # fmt: skip
        meta = loaded.metadata
        schema = meta.get("schema", {})
        info = {
            "bundle": str(loaded.folder),
            "model_id": loaded.model_id,
            "version": loaded.version,
            "class": type(loaded.model).__name__,
            "params": loaded.model.get_params(),
            "n_features": loaded.model.n_features,
            "schema": {
                "source": schema.get("source") if isinstance(schema, dict) else None,
                "version": schema.get("version") if isinstance(schema, dict) else None,
                "hash": meta.get("schema_hash"),
            },
            "taxonomy": meta.get("taxonomy"),
            "thresholds": loaded.thresholds,
            "provenance": meta.get("provenance", {}),
            "signature": loaded.signature.to_dict(),
        }
    if as_json:
        typer.echo(json.dumps(info, indent=2, default=str))
        return
    table = Table(title=f"model {info['model_id']}", show_header=False)
    for key in ("bundle", "version", "class", "n_features"):
        table.add_row(key, str(info[key]))
    s = info["schema"]
    table.add_row("schema", f"{s['source']} v{s['version']} {str(s['hash'])[:16]}")
    table.add_row("taxonomy", ", ".join(info["taxonomy"] or []))
    table.add_row("thresholds", ", ".join(f"{k}: {v:.6g}" for k, v in info["thresholds"].items()))
    for k, v in (info["provenance"] or {}).items():
        table.add_row(f"provenance.{k}", str(v))
    sig = loaded.signature
    colour = {"valid": "green", "unverified": "yellow"}.get(sig.state, "red")
    table.add_row("signature", f"[{colour}]{sig.state}[/]: {sig.reason}")
    if sig.state == "valid" and not sig.revocation_checked:
        table.add_row("revocation", "[yellow]not checked (no CRL; pass --crl)[/]")
    console.print(table)
