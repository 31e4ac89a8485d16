"""The federation CA: create it, issue member certificates, revoke them."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, cast

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from phalanx.adapters.pki.files import json_bytes, read_json, write_atomic, write_private
from phalanx.adapters.pki.identity import (
    ROLES,
    URI_SCHEME,
    Identity,
    Role,
    check_name,
    identity_from_pem,
    issued_by,
    load_crl,
    read_cert,
    read_private_key,
)
from phalanx.core.errors import ConfigError, TrustError

_SKEW = timedelta(minutes=5)
REASONS: dict[str, x509.ReasonFlags] = {
    f.name: f for f in x509.ReasonFlags if f is not x509.ReasonFlags.remove_from_crl
}


@dataclass(frozen=True)
class IdentityFiles:
    """The files of one issued identity, as :func:`issue` wrote them."""

    directory: Path
    key: Path
    cert: Path
    ca: Path
    identity: Identity

    def read(self) -> tuple[bytes, bytes, bytes]:
        """``(key_pem, cert_pem, ca_pem)``, as gRPC's ``ssl_*_credentials`` want them."""
        return self.key.read_bytes(), self.cert.read_bytes(), self.ca.read_bytes()


@dataclass(frozen=True)
class RevokedEntry:
    """One line of ``revoked.json``."""

    serial: int
    name: str
    role: str
    reason: str
    revoked_at: datetime


def init_ca(directory: Path, federation: str, *, days: int = 3650) -> Path:
    """Create the CA of ``federation`` in ``directory``; return ``directory``.

    Raises
    ------
    ConfigError
        When the federation name is invalid, ``days`` is not positive, or a CA already exists
        there (it is never overwritten).
    """
    check_name(federation, "federation name")
    if days <= 0:
        raise ConfigError(f"CA validity must be a positive number of days, got {days}")
    directory = Path(directory)
    if (directory / "ca.key").exists() or (directory / "ca.crt").exists():
        raise ConfigError(
            f"{directory}: a federation CA already exists here",
            hint="use it as it is, or choose another --dir; delete the folder only if no"
            " certificate it issued is still in use",
        )
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.now(UTC)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, federation),
            x509.NameAttribute(NameOID.COMMON_NAME, f"{federation} federation CA"),
        ]
    )
    ski = x509.SubjectKeyIdentifier.from_public_key(key.public_key())
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _SKEW)
        .not_valid_after(now + timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(_key_usage(cert_sign=True), critical=True)
        .add_extension(ski, critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    write_private(
        directory / "ca.key",
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    write_atomic(directory / "ca.crt", cert.public_bytes(serialization.Encoding.PEM))
    write_atomic(directory / "crl.pem", _sign_crl(cert, key, [], number=1, now=now))
    doc = {
        "name": federation,
        "created": now.isoformat(),
        "ca_sha256": cert.fingerprint(hashes.SHA256()).hex(),
    }
    write_atomic(directory / "federation.json", json_bytes(doc))
    write_atomic(directory / "issued.json", json_bytes([]))
    write_atomic(directory / "revoked.json", json_bytes([]))
    return directory


def issue(
    directory: Path,
    role: Role,
    name: str,
    *,
    out: Path | None = None,
    hosts: Sequence[str] = ("localhost", "127.0.0.1"),
    days: int = 365,
    not_before: datetime | None = None,
    not_after: datetime | None = None,
) -> IdentityFiles:
    """Issue a certificate for ``name`` in ``role``; write key, certificate and CA copy.

    Parameters
    ----------
    directory:
        The CA directory from :func:`init_ca`.
    role, name:
        What the certificate names. For a coordinator, ``name`` is usually its host name.
    out:
        Folder for ``key.pem`` (0600), ``cert.pem`` and ``ca.crt``; default
        ``<directory>/<role>s/<name>``. It must not already hold a key.
    hosts:
        DNS names and IP addresses put in a coordinator certificate's SAN (ignored otherwise).
    days:
        Validity from now when ``not_after`` is not given (capped at the CA's own expiry).
    not_before, not_after:
        Explicit validity window (timezone-aware); meant for tests and migrations.

    Raises
    ------
    ConfigError
        On an unknown role, an invalid name, host or window, a missing CA, or existing files.
    """
    if role not in ROLES:
        raise ConfigError(f"unknown role {role!r}: expected one of {', '.join(ROLES)}")
    check_name(name)
    ca_cert, ca_key, federation = _load_ca(Path(directory))
    now = datetime.now(UTC)
    start = not_before if not_before is not None else now - _SKEW
    end = not_after if not_after is not None else min(now + timedelta(days=days), _ca_end(ca_cert))
    if start.tzinfo is None or end.tzinfo is None or end <= start or days <= 0:
        raise ConfigError(
            f"invalid validity window {start} .. {end} (days={days})",
            hint="give timezone-aware datetimes with not_before < not_after, and days > 0",
        )
    target = Path(out) if out is not None else Path(directory) / f"{role}s" / name
    if (target / "key.pem").exists():
        raise ConfigError(
            f"{target}: already holds an identity (key.pem)",
            hint="to rotate, issue into a new --out folder, deploy it, then revoke the old"
            " certificate",
        )
    key = ec.generate_private_key(ec.SECP256R1())
    san: list[x509.GeneralName] = [
        x509.UniformResourceIdentifier(f"{URI_SCHEME}://{federation}/{role}/{name}")
    ]
    if role == "coordinator":
        san.extend(_host_names(hosts))
    server = role == "coordinator"
    eku = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, federation),
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, role),
                    x509.NameAttribute(NameOID.COMMON_NAME, name),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(start)
        .not_valid_after(end)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(_key_usage(cert_sign=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage([eku]), critical=False)
        .add_extension(x509.SubjectAlternativeName(san), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    target.mkdir(parents=True, exist_ok=True)
    files = IdentityFiles(
        directory=target,
        key=target / "key.pem",
        cert=target / "cert.pem",
        ca=target / "ca.crt",
        identity=identity_from_pem(cert.public_bytes(serialization.Encoding.PEM)),
    )
    write_private(
        files.key,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    write_atomic(files.cert, cert.public_bytes(serialization.Encoding.PEM))
    write_atomic(files.ca, ca_cert.public_bytes(serialization.Encoding.PEM))
    index = read_json(Path(directory) / "issued.json", default=[])
    index.append(
        {
            "serial": cert.serial_number,
            "role": role,
            "name": name,
            "not_before": cert.not_valid_before_utc.isoformat(),
            "not_after": cert.not_valid_after_utc.isoformat(),
            "issued_at": now.isoformat(),
            "folder": str(target),
            "sha256": cert.fingerprint(hashes.SHA256()).hex(),
        }
    )
    write_atomic(Path(directory) / "issued.json", json_bytes(index))
    return files


def load_identity(directory: Path) -> IdentityFiles:
    """The identity folder :func:`issue` wrote (``key.pem``, ``cert.pem``, ``ca.crt``).

    Raises
    ------
    ConfigError
        When a file is missing or the certificate is not a Phalanx certificate.
    """
    directory = Path(directory)
    paths = [directory / n for n in ("key.pem", "cert.pem", "ca.crt")]
    for p in paths:
        if not p.is_file():
            raise ConfigError(
                f"{p}: identity file is missing",
                hint="an identity folder holds key.pem, cert.pem and ca.crt from"
                " `phalanx pki issue`",
            )
    try:
        ident = identity_from_pem(paths[1].read_bytes())
    except TrustError as err:
        raise ConfigError(f"{paths[1]}: {err.message}", hint=err.hint) from err
    return IdentityFiles(directory, paths[0], paths[1], paths[2], ident)


def revoke(
    directory: Path,
    *,
    cert: Path | None = None,
    serial: int | None = None,
    reason: str = "unspecified",
) -> RevokedEntry:
    """Revoke a certificate by file or serial: re-sign ``crl.pem`` and append to ``revoked.json``.

    Revoking a certificate twice returns the first revocation unchanged.

    Raises
    ------
    ConfigError
        When neither or both of ``cert``/``serial`` are given, the reason is unknown, the
        certificate was not issued by this CA, or the serial is not in ``issued.json``.
    """
    directory = Path(directory)
    if (cert is None) == (serial is None):
        raise ConfigError("revoke needs exactly one of a certificate file or a serial number")
    flag = REASONS.get(reason.replace("-", "_").lower())
    if flag is None:
        raise ConfigError(
            f"unknown revocation reason {reason!r}: expected one of {', '.join(REASONS)}"
        )
    ca_cert, ca_key, _ = _load_ca(directory)
    issued = read_json(directory / "issued.json", default=[])
    record: dict[str, Any] | None = None
    if cert is not None:
        if not Path(cert).is_file():
            raise ConfigError(f"{cert}: certificate file not found")
        leaf = read_cert(Path(cert).read_bytes(), str(cert))
        if issued_by(leaf, ca_cert) is not None:
            raise ConfigError(f"{cert}: certificate was not issued by the CA in {directory}")
        serial = leaf.serial_number
        ident = identity_from_pem(leaf.public_bytes(serialization.Encoding.PEM))
        record = {"name": ident.name, "role": ident.role}
    record = next((e for e in issued if e["serial"] == serial), record)
    if record is None:
        raise ConfigError(
            f"serial {serial} is not in {directory / 'issued.json'}",
            hint="`phalanx pki list` shows the serials this CA issued; or pass --cert",
        )
    revoked = read_json(directory / "revoked.json", default=[])
    for e in revoked:
        if e["serial"] == serial:
            return _entry(e)
    now = datetime.now(UTC)
    crl = load_crl(directory / "crl.pem", ca_cert)
    serial = cast(int, serial)
    listed = crl.get_revoked_certificate_by_serial_number(serial)
    if listed is not None:  # in the CRL but not the index: a crash between the two writes
        now = listed.revocation_date_utc
    entries = [e for e in crl if e.serial_number != serial]
    entries.append(_revoked_cert(serial, now, flag))
    try:
        number = crl.extensions.get_extension_for_class(x509.CRLNumber).value.crl_number + 1
    except x509.ExtensionNotFound:
        number = len(entries)
    # The CRL is what is enforced, so it is written first; revoked.json is the readable index.
    write_atomic(directory / "crl.pem", _sign_crl(ca_cert, ca_key, entries, number=number, now=now))
    doc = {
        "serial": serial,
        "name": record["name"],
        "role": record["role"],
        "reason": flag.name,
        "revoked_at": now.isoformat(),
    }
    write_atomic(directory / "revoked.json", json_bytes([*revoked, doc]))
    return _entry(doc)


def _key_usage(*, cert_sign: bool) -> x509.KeyUsage:
    return x509.KeyUsage(
        digital_signature=not cert_sign,
        content_commitment=False,
        key_encipherment=False,
        data_encipherment=False,
        key_agreement=False,
        key_cert_sign=cert_sign,
        crl_sign=cert_sign,
        encipher_only=False,
        decipher_only=False,
    )


def _host_names(hosts: Sequence[str]) -> list[x509.GeneralName]:
    names: list[x509.GeneralName] = []
    for h in hosts:
        try:
            names.append(x509.IPAddress(ipaddress.ip_address(h)))
        except ValueError:
            if not re.fullmatch(r"[A-Za-z0-9*]([A-Za-z0-9.-]{0,251}[A-Za-z0-9])?", h):
                raise ConfigError(
                    f"invalid host {h!r}: expected a DNS name or an IP address"
                ) from None
            names.append(x509.DNSName(h))
    return names


def _load_ca(directory: Path) -> tuple[x509.Certificate, ec.EllipticCurvePrivateKey, str]:
    key_path, cert_path = directory / "ca.key", directory / "ca.crt"
    if not key_path.is_file() or not cert_path.is_file():
        raise ConfigError(
            f"{directory}: no federation CA here (ca.key and ca.crt)",
            hint="create one with `phalanx pki init --federation NAME --dir DIR`",
        )
    key = read_private_key(
        key_path,
        ec.EllipticCurvePrivateKey,  # type: ignore[type-abstract]
        "an ECDSA key",
    )
    cert = read_cert(cert_path.read_bytes(), str(cert_path))
    orgs = cert.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    return cert, key, str(orgs[0].value) if orgs else ""


def _ca_end(ca: x509.Certificate) -> datetime:
    return ca.not_valid_after_utc


def _revoked_cert(serial: int, when: datetime, flag: x509.ReasonFlags) -> x509.RevokedCertificate:
    builder = x509.RevokedCertificateBuilder().serial_number(serial).revocation_date(when)
    if flag is not x509.ReasonFlags.unspecified:  # RFC 5280 5.3.1: omit rather than unspecified
        builder = builder.add_extension(x509.CRLReason(flag), critical=False)
    return builder.build()


def _sign_crl(
    ca: x509.Certificate,
    key: ec.EllipticCurvePrivateKey,
    entries: Sequence[x509.RevokedCertificate],
    *,
    number: int,
    now: datetime,
) -> bytes:
    """A CRL valid until the CA expires: the file is re-signed on every revocation."""
    ski = ca.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    builder = (
        x509.CertificateRevocationListBuilder()
        .issuer_name(ca.subject)
        .last_update(now - _SKEW)
        .next_update(max(_ca_end(ca), now + timedelta(days=1)))
        .add_extension(x509.CRLNumber(number), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ski), critical=False
        )
    )
    for e in entries:
        builder = builder.add_revoked_certificate(e)
    return builder.sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)


def _entry(doc: dict[str, Any]) -> RevokedEntry:
    return RevokedEntry(
        serial=int(doc["serial"]),
        name=str(doc["name"]),
        role=str(doc["role"]),
        reason=str(doc["reason"]),
        revoked_at=datetime.fromisoformat(doc["revoked_at"]),
    )
