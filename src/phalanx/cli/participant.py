"""``phalanx participant join`` and ``phalanx model pull``: an organization's side."""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import typer
from rich.console import Console

from phalanx.adapters.accounting import RdpAccountant
from phalanx.adapters.crypto import CertificateSigner, CertificateVerifier, CryptographyBackend
from phalanx.adapters.grpc.client import CoordinatorClient
from phalanx.adapters.pki import TrustRoot, identity_from_pem, load_identity
from phalanx.adapters.store.ledger import SqliteLedger
from phalanx.cli.common import connect, setup_runtime, user_errors
from phalanx.core.errors import ConfigError
from phalanx.core.features.batch import FlowBatch
from phalanx.core.privacy import Budget, DistributedNoise
from phalanx.core.types import ParticipantId
from phalanx.data.readers import read_flows
from phalanx.data.synthetic import PROFILES, generate
from phalanx.models.bundle import unpack_bundle
from phalanx.services.agent import run_agent
from phalanx.services.participant import Middleware, Participant, log_sent
from phalanx.services.privacy import PrivacyGuard
from phalanx.services.secure import SecureAggregation

app = typer.Typer(no_args_is_help=True)
console = Console()
log = logging.getLogger("phalanx.participant")


def load_local_data(spec: str, fmt: str) -> FlowBatch:
    """Flows from a file, or ``synthetic:PROFILE[:FLOWS[:SEED]]`` generated on the spot."""
    if spec.startswith("synthetic:"):
        parts = spec.split(":")
        profile = parts[1] if len(parts) > 1 else ""
        if profile not in PROFILES or len(parts) > 4:
            raise ConfigError(
                f"--data {spec!r}: expected synthetic:PROFILE[:FLOWS[:SEED]] with PROFILE one of"
                f" {', '.join(PROFILES)}"
            )
        try:
            flows = int(parts[2]) if len(parts) > 2 else 20_000
            seed = int(parts[3]) if len(parts) > 3 else 0
        except ValueError:
            raise ConfigError(f"--data {spec!r}: FLOWS and SEED must be integers") from None
        return generate(profile, flows, np.random.default_rng(seed))
    batch, _ = read_flows(spec, fmt)
    return batch


def secure_middleware(
    identity: Path, name: str, key: bytes, cert: bytes, crl: Path | None
) -> SecureAggregation:
    """The secure-aggregation middleware, signing with this organization's mTLS identity key.

    Neighbours' keys are verified against the federation CA in the identity folder and, when a
    copy is at hand, its revocation list (the coordinator already refuses revoked certificates at
    every connection; the local check guards against a coordinator relaying revoked keys).
    """
    if crl is None and (identity / "crl.pem").is_file():
        crl = identity / "crl.pem"
    if crl is None:
        log.warning(
            "no revocation list in %s: neighbours' secure-aggregation keys are checked against"
            " the CA only (pass --crl to check revocations too)",
            identity,
        )
    trust = TrustRoot(identity / "ca.crt", crl)  # an explicit --crl must exist (fail closed)
    return SecureAggregation(
        ParticipantId(name),
        CryptographyBackend(),
        CertificateSigner(key, cert),
        CertificateVerifier(trust),
    )


@app.command("join")
def join(
    coordinator: str = typer.Option(..., "--coordinator", help="HOST:PORT of the coordinator."),
    identity: Path = typer.Option(..., "--identity", help="This organization's identity folder."),
    data: str = typer.Option(
        ..., "--data", help="Local flows: a file in any reader format, or synthetic:PROFILE."
    ),
    fmt: str = typer.Option("auto", "--format"),
    crl: Path | None = typer.Option(
        None,
        "--crl",
        help="Federation revocation list to check neighbours' secure-aggregation keys against"
        " (default: crl.pem in the identity folder, if present).",
    ),
    privacy_epsilon: float | None = typer.Option(
        None,
        "--privacy-epsilon",
        help="This organization's own differential-privacy budget: tasks without DP, or that"
        " would take it past (epsilon, --privacy-delta), are refused. See docs/privacy.md.",
    ),
    privacy_delta: float = typer.Option(1e-5, "--privacy-delta", help="Delta of the budget."),
    ledger: Path | None = typer.Option(
        None,
        "--ledger",
        help="Privacy ledger file (default: privacy-ledger.sqlite in the identity folder).",
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Join a federation: connect outbound, pull tasks, train locally, send only updates."""
    setup_runtime(verbose)
    logging.getLogger("phalanx.participant").setLevel(logging.INFO)
    with user_errors():
        files = load_identity(identity)
        key, cert, ca = files.read()
        name = identity_from_pem(cert).name
        batch = load_local_data(data, fmt)
        secure = secure_middleware(identity, name, key, cert, crl)
        middleware: list[Middleware] = [log_sent, secure]
        if privacy_epsilon is not None:
            noise = DistributedNoise()
            secure.integer_noise = noise
            guard = PrivacyGuard(
                ParticipantId(name),
                ledger=SqliteLedger(ledger or identity / "privacy-ledger.sqlite"),
                accountant=RdpAccountant(),
                budget=Budget(privacy_epsilon, privacy_delta),
                num_examples=len(batch),
                distributed=noise,
            )
            middleware.append(guard)  # innermost: secure aggregation gets the clipped update
        participant = Participant(ParticipantId(name), batch, middleware=middleware)
        console.print(
            f"{name}: {len(batch):,} local flows in schema {batch.schema.source}"
            f" ({batch.schema.hash()[:12]}); connecting to {coordinator}"
        )

        def connect() -> CoordinatorClient:
            return CoordinatorClient(coordinator, ca_cert=ca, cert=cert, key=key)

        report = run_agent(connect, participant)
        console.print(f"{name}: federation finished ({report})")


def pull(
    coordinator: str = typer.Option(..., "--coordinator", help="HOST:PORT of the coordinator."),
    identity: Path = typer.Option(..., "--identity", help="A participant or admin identity."),
    out: Path = typer.Option(Path("model"), "--out", help="Folder to write the bundle into."),
) -> None:
    """Download the current global model bundle."""
    with user_errors():
        client = connect(coordinator, identity)
        try:
            blob = client.pull_model()
        finally:
            client.close()
        unpack_bundle(blob, out)
    console.print(f"model written to {out} ({len(blob):,} bytes)")
