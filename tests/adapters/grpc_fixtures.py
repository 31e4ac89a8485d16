"""A throwaway CA and a running coordinator server for the gRPC tests (real sockets, 127.0.0.1)."""

from __future__ import annotations

import datetime as dt
import ipaddress
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from phalanx.adapters.grpc.client import CoordinatorClient
from phalanx.adapters.grpc.server import CoordinatorServer
from phalanx.core.errors import TrustError


@dataclass(frozen=True)
class Issued:
    cert: bytes
    key: bytes


class ThrowawayCa:
    """A CA in memory issuing EC P-256 certificates."""

    def __init__(self, name: str = "phalanx-test-ca") -> None:
        self.key = ec.generate_private_key(ec.SECP256R1())
        self.name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = dt.datetime.now(dt.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(self.name)
            .issuer_name(self.name)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(days=1))
            .not_valid_after(now + dt.timedelta(days=30))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(
                    digital_signature=True,
                    content_commitment=False,
                    key_encipherment=False,
                    data_encipherment=False,
                    key_agreement=False,
                    key_cert_sign=True,
                    crl_sign=True,
                    encipher_only=False,
                    decipher_only=False,
                ),
                critical=True,
            )
            .sign(self.key, hashes.SHA256())
        )
        self.pem = self.cert.public_bytes(serialization.Encoding.PEM)

    def issue(self, cn: str, *, server: bool = False, expired: bool = False) -> Issued:
        key = ec.generate_private_key(ec.SECP256R1())
        now = dt.datetime.now(dt.UTC)
        start, end = (
            (now - dt.timedelta(days=10), now - dt.timedelta(days=1))
            if expired
            else (now - dt.timedelta(days=1), now + dt.timedelta(days=10))
        )
        usage = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
        builder = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, cn)]))
            .issuer_name(self.name)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(start)
            .not_valid_after(end)
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([usage]), critical=False)
        )
        if server:
            san = [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            builder = builder.add_extension(x509.SubjectAlternativeName(san), critical=False)
        cert = builder.sign(self.key, hashes.SHA256())
        return Issued(
            cert.public_bytes(serialization.Encoding.PEM),
            key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            ),
        )


@dataclass
class AuditLog:
    """The ``audit`` callable: records every event (thread-safe)."""

    events: list[tuple[str, str, dict[str, Any]]] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def __call__(self, event: str, actor: str, **detail: Any) -> None:
        with self.lock:
            self.events.append((event, actor, detail))

    def of(self, event: str) -> list[tuple[str, str, dict[str, Any]]]:
        with self.lock:
            return [e for e in self.events if e[0] == event]


class Authority:
    """``authorize``: the certificate's CN, unless it was revoked (checked on every call)."""

    def __init__(self) -> None:
        self.revoked: set[str] = set()

    def __call__(self, cert_pem: bytes) -> str:
        cert = x509.load_pem_x509_certificate(cert_pem)
        cn = str(cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value)
        if cn in self.revoked:
            raise TrustError(f"certificate of {cn!r} is revoked")
        return cn


@dataclass
class Federation:
    """A started server with its CA, audit log and authority, and a client factory."""

    ca: ThrowawayCa
    server: CoordinatorServer
    audit: AuditLog
    authority: Authority
    clients: list[CoordinatorClient] = field(default_factory=list)

    @property
    def address(self) -> str:
        return f"127.0.0.1:{self.server.port}"

    def client(
        self, name: str | None, *, issued: Issued | None = None, ca: bytes | None = None, **kw: Any
    ) -> CoordinatorClient:
        creds = issued if issued is not None else (self.ca.issue(name) if name else None)
        c = CoordinatorClient(
            self.address,
            ca_cert=ca if ca is not None else self.ca.pem,
            cert=creds.cert if creds else None,
            key=creds.key if creds else None,
            call_timeout_s=kw.pop("call_timeout_s", 10.0),
            **kw,
        )
        self.clients.append(c)
        return c


def start_federation(
    participants: set[str],
    admins: set[str] = frozenset({"admin"}),
    **kw: Any,  # type: ignore[assignment]
) -> Federation:
    ca = ThrowawayCa()
    issued = ca.issue("localhost", server=True)
    audit, authority = AuditLog(), Authority()
    server = CoordinatorServer(
        "127.0.0.1:0",
        server_cert=issued.cert,
        server_key=issued.key,
        ca_cert=ca.pem,
        authorize=authority,
        audit=audit,
        participants=set(participants),
        admins=set(admins),
        **kw,
    )
    server.start()
    return Federation(ca, server, audit, authority)


def federation_factory() -> Iterator[Any]:
    """Body of a ``make_federation`` fixture: builds servers, stops them all at teardown."""
    made: list[Federation] = []

    def make(participants: set[str], **kw: Any) -> Federation:
        fed = start_federation(participants, **kw)
        made.append(fed)
        return fed

    yield make
    for fed in made:
        for c in fed.clients:
            c.close()
        fed.server.stop(0)
