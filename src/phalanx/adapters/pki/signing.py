"""Signed model bundles: the coordinator's Ed25519 model-signing key, chained to the federation CA.

The CA issues the coordinator a second certificate, next to its TLS one: an Ed25519 key
(Bernstein, Duif, Lange, Schwabe, Yang, "High-speed high-security signatures", CHES 2011;
RFC 8032) with extended key usage *code signing*, subject and SAN URI of the coordinator
(``phalanx://<federation>/coordinator/<name>``). It cannot serve TLS, and the TLS key cannot sign
models. A signed bundle holds a third file, ``model.sig``::

    {"format": "phalanx.signature", "format_version": 1, "algorithm": "Ed25519",
     "files": {"model.json": "<sha256>", "model.safetensors": "<sha256>"},
     "certificate": "<signer certificate, PEM>", "signature": "<base64>"}

The signature covers the canonical JSON of ``{"algorithm", "files", "format"}`` (sorted keys, no
spaces), so changing one byte of either bundle file, or swapping the manifest, breaks it.
Verification checks the signer certificate against the federation's :class:`TrustRoot` (issuer,
validity, revocation when a CRL is given, federation, role and usage) and then the signature.
See ``docs/adr/0006-signed-model-bundles.md``.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ed25519
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from phalanx.adapters.pki.authority import IdentityFiles, _load_ca
from phalanx.adapters.pki.files import json_bytes, read_json, write_atomic, write_private
from phalanx.adapters.pki.identity import (
    URI_SCHEME,
    Identity,
    TrustRoot,
    check_name,
    identity_from_pem,
    read_cert,
    read_private_key,
)
from phalanx.core.errors import ConfigError, TrustError

SIG_FILE = "model.sig"
SIGNED_FILES = ("model.json", "model.safetensors")
SIG_FORMAT = "phalanx.signature"
SIG_VERSION = 1
SIGNING_FOLDER = "signing"
"""Sub-folder of a coordinator identity folder holding its model-signing identity."""
_SKEW = timedelta(minutes=5)


@dataclass(frozen=True)
class Signer:
    """A model-signing key and its certificate."""

    key: ed25519.Ed25519PrivateKey
    cert_pem: bytes

    @classmethod
    def load(cls, directory: Path) -> Signer:
        """The signer in ``directory`` (``key.pem``, ``cert.pem``), as :func:`issue_signer` wrote.

        Raises
        ------
        ConfigError
            When a file is missing or the key is not an Ed25519 private key.
        """
        directory = Path(directory)
        key_path, cert_path = directory / "key.pem", directory / "cert.pem"
        for p in (key_path, cert_path):
            if not p.is_file():
                raise ConfigError(
                    f"{p}: model-signing file is missing",
                    hint="issue one with `phalanx pki issue --model-signer NAME --dir CA`",
                )
        key = read_private_key(
            key_path,
            ed25519.Ed25519PrivateKey,  # type: ignore[type-abstract]
            "an Ed25519 model-signing key",
            hint="the TLS key cannot sign models; use the identity's signing/ folder",
        )
        return cls(key, cert_path.read_bytes())

    @classmethod
    def throwaway(cls, name: str = "simulation") -> Signer:
        """A fresh key with a self-signed certificate (simulations; never chains to a CA)."""
        key = ed25519.Ed25519PrivateKey.generate()
        now = datetime.now(UTC)
        subject = x509.Name(
            [
                x509.NameAttribute(NameOID.ORGANIZATION_NAME, "simulation"),
                x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "coordinator"),
                x509.NameAttribute(NameOID.COMMON_NAME, name),
            ]
        )
        cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - _SKEW)
            .not_valid_after(now + timedelta(days=365))
            .add_extension(
                x509.SubjectAlternativeName(
                    [
                        x509.UniformResourceIdentifier(
                            f"{URI_SCHEME}://simulation/coordinator/{name}"
                        )
                    ]
                ),
                critical=False,
            )
            .sign(key, None)
        )
        return cls(key, cert.public_bytes(serialization.Encoding.PEM))


@dataclass(frozen=True)
class SignatureStatus:
    """What :func:`check_signature` found.

    Attributes
    ----------
    state:
        ``"valid"`` (signature and signer verified), ``"unsigned"`` (no ``model.sig``),
        ``"invalid"`` (tampered files, bad signature, or a signer the trust root refuses) or
        ``"unverified"`` (signed, but no trust root was given to check the signer against).
    reason:
        Why, in words a person can act on.
    signer:
        The signer's identity when the certificate could be read.
    revocation_checked:
        Whether a CRL was consulted.
    """

    state: Literal["valid", "unsigned", "invalid", "unverified"]
    reason: str
    signer: Identity | None = None
    revocation_checked: bool = False

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        signer = self.signer
        return {
            "state": self.state,
            "reason": self.reason,
            "signer": signer.uri if signer is not None else None,
            "revocation_checked": self.revocation_checked,
        }


def issue_signer(
    directory: Path, name: str, *, out: Path | None = None, days: int = 365
) -> IdentityFiles:
    """Issue the coordinator ``name`` an Ed25519 model-signing certificate from the CA.

    Writes ``key.pem`` (0600), ``cert.pem`` and ``ca.crt`` into ``out`` (default
    ``<directory>/coordinators/<name>/signing``) and records the certificate in ``issued.json``
    with ``"usage": "model-signing"`` so ``phalanx pki revoke`` can revoke it.

    Raises
    ------
    ConfigError
        On an invalid name or days, a missing CA, or an existing key in ``out``.
    """
    check_name(name)
    if days <= 0:
        raise ConfigError(f"model-signing certificate validity must be > 0 days, got {days}")
    directory = Path(directory)
    ca_cert, ca_key, federation = _load_ca(directory)
    target = Path(out) if out is not None else directory / "coordinators" / name / SIGNING_FOLDER
    if (target / "key.pem").exists():
        raise ConfigError(
            f"{target}: already holds a model-signing key",
            hint="issue into a new --out folder, deploy it, then revoke the old certificate",
        )
    now = datetime.now(UTC)
    key = ed25519.Ed25519PrivateKey.generate()
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(
            x509.Name(
                [
                    x509.NameAttribute(NameOID.ORGANIZATION_NAME, federation),
                    x509.NameAttribute(NameOID.ORGANIZATIONAL_UNIT_NAME, "coordinator"),
                    x509.NameAttribute(NameOID.COMMON_NAME, name),
                ]
            )
        )
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - _SKEW)
        .not_valid_after(min(now + timedelta(days=days), ca_cert.not_valid_after_utc))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(
                digital_signature=True,
                content_commitment=True,
                key_encipherment=False,
                data_encipherment=False,
                key_agreement=False,
                key_cert_sign=False,
                crl_sign=False,
                encipher_only=False,
                decipher_only=False,
            ),
            critical=True,
        )
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CODE_SIGNING]), critical=False)
        .add_extension(
            x509.SubjectAlternativeName(
                [x509.UniformResourceIdentifier(f"{URI_SCHEME}://{federation}/coordinator/{name}")]
            ),
            critical=False,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski), critical=False
        )
        .sign(ca_key, hashes.SHA256())
    )
    target.mkdir(parents=True, exist_ok=True)
    cert_pem = cert.public_bytes(serialization.Encoding.PEM)
    files = IdentityFiles(
        directory=target,
        key=target / "key.pem",
        cert=target / "cert.pem",
        ca=target / "ca.crt",
        identity=identity_from_pem(cert_pem),
    )
    write_private(
        files.key,
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ),
    )
    write_atomic(files.cert, cert_pem)
    write_atomic(files.ca, ca_cert.public_bytes(serialization.Encoding.PEM))
    index = read_json(directory / "issued.json", default=[])
    index.append(
        {
            "serial": cert.serial_number,
            "role": "coordinator",
            "name": name,
            "usage": "model-signing",
            "not_before": cert.not_valid_before_utc.isoformat(),
            "not_after": cert.not_valid_after_utc.isoformat(),
            "issued_at": now.isoformat(),
            "folder": str(target),
            "sha256": cert.fingerprint(hashes.SHA256()).hex(),
        }
    )
    write_atomic(directory / "issued.json", json_bytes(index))
    return files


def _digests(folder: Path) -> dict[str, str]:
    out: dict[str, str] = {}
    for name in SIGNED_FILES:
        path = folder / name
        try:
            out[name] = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError as err:
            raise TrustError(f"{path}: cannot read the bundle file ({err.strerror})") from err
    return out


def _message(files: dict[str, str]) -> bytes:
    doc = {"algorithm": "Ed25519", "files": files, "format": SIG_FORMAT}
    return json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()


def sign_bundle(folder: Path, signer: Signer) -> Path:
    """Sign the bundle in ``folder``: write ``model.sig`` over its two files; return its path."""
    folder = Path(folder)
    files = _digests(folder)
    doc = {
        "format": SIG_FORMAT,
        "format_version": SIG_VERSION,
        "algorithm": "Ed25519",
        "files": files,
        "certificate": signer.cert_pem.decode("ascii"),
        "signature": base64.b64encode(signer.key.sign(_message(files))).decode("ascii"),
    }
    path = folder / SIG_FILE
    write_atomic(path, json_bytes(doc))
    return path


def _read_sig(path: Path) -> dict[str, Any]:
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as err:
        raise TrustError(f"{path}: not a readable signature file ({err})") from err
    if not isinstance(doc, dict) or doc.get("format") != SIG_FORMAT:
        raise TrustError(f"{path}: not a Phalanx model signature ({SIG_FORMAT!r} expected)")
    if doc.get("format_version") != SIG_VERSION or doc.get("algorithm") != "Ed25519":
        raise TrustError(
            f"{path}: signature version {doc.get('format_version')!r} / algorithm"
            f" {doc.get('algorithm')!r}; this Phalanx checks version {SIG_VERSION}, Ed25519"
        )
    if not all(isinstance(doc.get(k), str) for k in ("certificate", "signature")):
        raise TrustError(f"{path}: 'certificate' and 'signature' must be strings")
    if not isinstance(doc.get("files"), dict):
        raise TrustError(f"{path}: 'files' must be an object")
    return doc


def check_signature(
    folder: Path, trust: TrustRoot | None, *, now: datetime | None = None
) -> SignatureStatus:
    """The signature status of the bundle in ``folder``; never raises for a bad signature.

    With ``trust=None`` a signature is checked for integrity only (state ``"unverified"`` when
    it matches): anyone can make a self-signed key, so only a trust root makes it ``"valid"``.
    """
    folder = Path(folder)
    path = folder / SIG_FILE
    if not path.is_file():
        return SignatureStatus("unsigned", f"{folder} holds no {SIG_FILE}")
    try:
        doc = _read_sig(path)
        cert = read_cert(doc["certificate"].encode("ascii"), f"{path} signer certificate")
        try:
            signer: Identity | None = identity_from_pem(doc["certificate"].encode("ascii"))
        except TrustError:
            signer = None
        files = _digests(folder)
        if doc["files"] != files:
            changed = sorted(n for n in SIGNED_FILES if doc["files"].get(n) != files[n])
            return SignatureStatus(
                "invalid", f"bundle files changed after signing: {', '.join(changed)}", signer
            )
        public = cert.public_key()
        if not isinstance(public, ed25519.Ed25519PublicKey):
            return SignatureStatus("invalid", "signer key is not Ed25519", signer)
        try:
            public.verify(base64.b64decode(doc["signature"], validate=True), _message(files))
        except (InvalidSignature, binascii.Error, ValueError):
            return SignatureStatus("invalid", "the signature does not verify", signer)
        if trust is None:
            return SignatureStatus(
                "unverified", "signature intact; signer not checked (no trust root given)", signer
            )
        ident = trust.verify(doc["certificate"].encode("ascii"), now=now, usage="model-signing")
    except TrustError as err:
        return SignatureStatus("invalid", err.message, None)
    return SignatureStatus(
        "valid",
        f"signed by {ident.uri}, certificate serial {ident.serial}",
        ident,
        revocation_checked=trust.checks_revocation,
    )


def require_signature(
    folder: Path, trust: TrustRoot | None, *, allow_unsigned: bool = False
) -> SignatureStatus:
    """:func:`check_signature`, raising :class:`TrustError` unless the bundle is valid.

    ``allow_unsigned`` lets an unsigned, unverified or invalid bundle through (the caller warns
    loudly); it is only ever set by an explicit command-line flag.
    """
    status = check_signature(folder, trust)
    if status.state == "valid" or allow_unsigned:
        return status
    hints = {
        "unsigned": "use a bundle published by the federation's coordinator, or pass"
        " --allow-unsigned to score with it anyway (simulation runs are unsigned)",
        "unverified": "pass --trust with the federation's ca.crt (or CA / identity folder)",
        "invalid": "do not use this model; fetch it again from the coordinator",
    }
    raise TrustError(
        f"refusing model {folder}: {status.state} signature ({status.reason})",
        hint=hints[status.state],
    )
