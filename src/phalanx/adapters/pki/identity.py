"""Who a certificate names, and whether the federation still trusts it (:class:`TrustRoot`)."""

from __future__ import annotations

import os
import re
import threading
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal, TypeVar, cast, get_args

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from phalanx.core.errors import ConfigError, TrustError

_Key = TypeVar("_Key", ec.EllipticCurvePrivateKey, ed25519.Ed25519PrivateKey)

Role = Literal["participant", "admin", "coordinator"]
ROLES: tuple[Role, ...] = get_args(Role)
Usage = Literal["tls", "model-signing"]
"""What a certificate is checked for: a TLS peer (client or server auth by role) or the
coordinator's model-signing key (code signing, Ed25519)."""
URI_SCHEME = "phalanx"
_NAME = re.compile(r"^[A-Za-z0-9._-]{1,64}$")


@dataclass(frozen=True)
class Identity:
    """Who a certificate names: a member of one federation, in one role."""

    role: Role
    name: str
    federation: str
    serial: int
    not_after: datetime

    @property
    def uri(self) -> str:
        """``phalanx://<federation>/<role>/<name>``, the certificate's SAN URI."""
        return f"{URI_SCHEME}://{self.federation}/{self.role}/{self.name}"


def check_name(name: str, what: str = "name") -> str:
    """Return ``name`` if it is 1-64 letters, digits, ``.``, ``_`` or ``-``; else ConfigError."""
    if not _NAME.fullmatch(name) or name in {".", ".."}:
        raise ConfigError(
            f"invalid {what} {name!r}: expected 1-64 letters, digits, '.', '_' or '-'",
            hint=f"choose a {what} such as 'hospital-a' or 'coordinator.example.org'",
        )
    return name


def identity_from_pem(cert_pem: bytes) -> Identity:
    """Read the Phalanx identity a certificate names (no trust check: see :class:`TrustRoot`).

    Raises
    ------
    TrustError
        When the bytes are not a certificate or lack a consistent ``phalanx://`` SAN URI and
        subject.
    """
    return _identity(read_cert(cert_pem, "certificate"))


class TrustRoot:
    """Verifies certificates against a federation CA and its revocation list.

    Parameters
    ----------
    ca_cert:
        The CA certificate file (``ca.crt``).
    crl:
        The revocation list (``crl.pem``); re-read whenever the file changes. Missing or
        unreadable at verification time means every certificate is refused (fail closed).
        ``None`` skips revocation checks altogether: only for offline checks of a model
        signature where no CRL copy is at hand (``phalanx detect --trust ca.crt``), and
        :attr:`checks_revocation` says so.
    """

    def __init__(self, ca_cert: Path, crl: Path | None) -> None:
        self.ca_path = Path(ca_cert)
        self.crl_path = Path(crl) if crl is not None else None
        if not self.ca_path.is_file():
            raise ConfigError(f"{self.ca_path}: CA certificate file is missing")
        self.ca = read_cert(self.ca_path.read_bytes(), str(self.ca_path))
        orgs = self.ca.subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
        if not orgs:
            raise ConfigError(f"{self.ca_path}: not a Phalanx federation CA (no O= in subject)")
        self.federation = str(orgs[0].value)
        self._lock = threading.Lock()
        self._crl_key: tuple[int, int, int] | None = None
        self._revoked: dict[int, datetime] = {}
        try:
            self._refresh()
        except TrustError as err:
            raise ConfigError(err.message, hint=err.hint) from err

    @classmethod
    def from_ca_dir(cls, directory: Path) -> TrustRoot:
        """The trust root of a CA directory (``ca.crt`` and ``crl.pem``)."""
        return cls(Path(directory) / "ca.crt", Path(directory) / "crl.pem")

    @classmethod
    def from_identity(cls, directory: Path, crl: Path) -> TrustRoot:
        """The trust root of an identity folder's ``ca.crt`` with a copy of the CRL."""
        return cls(Path(directory) / "ca.crt", crl)

    @property
    def checks_revocation(self) -> bool:
        """False when the trust root was made without a CRL."""
        return self.crl_path is not None

    def verify(
        self, cert_pem: bytes, *, now: datetime | None = None, usage: Usage = "tls"
    ) -> Identity:
        """Return the identity of a certificate this federation's CA issued and still trusts.

        Raises
        ------
        TrustError
            Naming the reason: not a certificate, not issued by this CA, not yet valid,
            expired, revoked, another federation, a CA certificate, or missing Phalanx fields.
        """
        when = now if now is not None else datetime.now(UTC)
        leaf = read_cert(cert_pem, "certificate")
        who = _subject_cn(leaf)
        problem = issued_by(leaf, self.ca)
        if problem is not None:
            raise TrustError(
                f"certificate of {who!r} was not issued by federation {self.federation!r} CA"
                f" ({problem})",
                hint="use a certificate from `phalanx pki issue` of this federation",
            )
        if when < leaf.not_valid_before_utc:
            raise TrustError(
                f"certificate of {who!r} is not valid until {leaf.not_valid_before_utc}",
                hint="check both clocks",
            )
        if when > leaf.not_valid_after_utc:
            raise TrustError(
                f"certificate of {who!r} expired on {leaf.not_valid_after_utc}",
                hint="issue a new certificate with `phalanx pki issue`",
            )
        revoked_at = self._revoked_at(leaf.serial_number)
        if revoked_at is not None:
            raise TrustError(
                f"certificate of {who!r} was revoked at {revoked_at.isoformat()}"
                f" (serial {leaf.serial_number})",
                hint="ask the federation admin for a new certificate",
            )
        ident = _identity(leaf)
        if ident.federation != self.federation:
            raise TrustError(
                f"certificate of {who!r} is for federation {ident.federation!r}, expected"
                f" {self.federation!r}"
            )
        _check_usage(leaf, ident, usage)
        return ident

    def _revoked_at(self, serial: int) -> datetime | None:
        with self._lock:
            self._refresh()
            return self._revoked.get(serial)

    def _refresh(self) -> None:
        """Re-read the CRL if the file changed since it was last read (caller holds the lock)."""
        if self.crl_path is None:
            return
        try:
            st = os.stat(self.crl_path)
        except OSError as err:
            self._crl_key = None
            raise TrustError(
                f"{self.crl_path}: revocation list is unreadable ({err.strerror}); refusing"
                " every certificate",
                hint="restore crl.pem from the CA directory",
            ) from err
        key = (st.st_ino, st.st_mtime_ns, st.st_size)
        if key == self._crl_key:
            return
        crl = load_crl(self.crl_path, self.ca)
        self._revoked = {e.serial_number: e.revocation_date_utc for e in crl}
        self._crl_key = key


def read_cert(pem: bytes, what: str) -> x509.Certificate:
    """Parse a PEM certificate; TrustError naming ``what`` when it is not one."""
    try:
        return x509.load_pem_x509_certificate(pem)
    except ValueError as err:
        raise TrustError(f"{what}: not a PEM X.509 certificate ({err})") from err


def read_private_key(path: Path, kind: type[_Key], expected: str, hint: str | None = None) -> _Key:
    """Load the unencrypted PEM private key at ``path``; ConfigError unless it is a ``kind``.

    ``expected`` names the key in the error (``"an ECDSA key"``, ``"an Ed25519 ... key"``).
    ``kind`` is one of cryptography's abstract key classes (callers silence mypy's
    ``type-abstract`` check: only ``isinstance`` uses it).
    """
    try:
        key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    except (ValueError, TypeError) as err:
        raise ConfigError(f"{path}: not an unencrypted PEM private key ({err})") from err
    if not isinstance(key, kind):
        raise ConfigError(f"{path}: expected {expected}, found {type(key).__name__}", hint=hint)
    return key


def issued_by(leaf: x509.Certificate, ca: x509.Certificate) -> str | None:
    """``None`` if ``ca`` signed ``leaf``; otherwise why not."""
    try:
        leaf.verify_directly_issued_by(ca)
    except (ValueError, TypeError) as err:
        return str(err)
    except InvalidSignature:
        return "signature does not verify"
    return None


def _subject_cn(cert: x509.Certificate) -> str:
    cns = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    return str(cns[0].value) if cns else cert.subject.rfc4514_string()


def _identity(cert: x509.Certificate) -> Identity:
    who = _subject_cn(cert)
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    found = [u for u in uris if u.startswith(f"{URI_SCHEME}://")]
    parts = found[0][len(URI_SCHEME) + 3 :].split("/") if len(found) == 1 else []
    if len(parts) != 3 or parts[1] not in ROLES:
        raise TrustError(
            f"certificate of {who!r} is not a Phalanx identity: expected one SAN URI"
            f" {URI_SCHEME}://<federation>/<role>/<name>, found {uris or 'none'}",
            hint="use a certificate from `phalanx pki issue`",
        )
    federation, role, name = parts
    subject = {
        a.oid: str(a.value)
        for a in cert.subject
        if a.oid
        in (NameOID.COMMON_NAME, NameOID.ORGANIZATIONAL_UNIT_NAME, NameOID.ORGANIZATION_NAME)
    }
    expected = {
        NameOID.COMMON_NAME: name,
        NameOID.ORGANIZATIONAL_UNIT_NAME: role,
        NameOID.ORGANIZATION_NAME: federation,
    }
    if subject != expected:
        raise TrustError(
            f"certificate of {who!r}: subject {cert.subject.rfc4514_string()} does not match"
            f" its SAN URI {found[0]}"
        )
    return Identity(
        cast(Role, role), name, federation, cert.serial_number, cert.not_valid_after_utc
    )


def _check_usage(cert: x509.Certificate, ident: Identity, usage: Usage = "tls") -> None:
    server = ident.role == "coordinator"
    want = ExtendedKeyUsageOID.SERVER_AUTH if server else ExtendedKeyUsageOID.CLIENT_AUTH
    if usage == "model-signing":
        want = ExtendedKeyUsageOID.CODE_SIGNING
        if not server:
            raise TrustError(
                f"certificate of {ident.name!r} is a {ident.role} certificate; only the"
                " coordinator signs models"
            )
    try:
        bc = cert.extensions.get_extension_for_class(x509.BasicConstraints).value
        eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    except x509.ExtensionNotFound as err:
        raise TrustError(f"certificate of {ident.name!r} lacks {err.oid.dotted_string}") from err
    if bc.ca or want not in eku:
        raise TrustError(
            f"certificate of {ident.name!r} is not usable as a {ident.role} certificate"
            f" (CA={bc.ca}, extended key usage {[u.dotted_string for u in eku]})"
        )


def load_crl(path: Path, ca: x509.Certificate) -> x509.CertificateRevocationList:
    """Read the CRL at ``path`` and check ``ca`` signed it; TrustError otherwise."""
    try:
        crl = x509.load_pem_x509_crl(path.read_bytes())
    except (OSError, ValueError) as err:
        raise TrustError(
            f"{path}: not a readable PEM revocation list ({err}); refusing every certificate",
            hint="restore crl.pem from the CA directory",
        ) from err
    if crl.issuer != ca.subject or not crl.is_signature_valid(ca.public_key()):  # type: ignore[arg-type]
        raise TrustError(
            f"{path}: revocation list is not signed by the federation CA; refusing every"
            " certificate",
            hint="copy crl.pem from the CA directory of this federation",
        )
    return crl
