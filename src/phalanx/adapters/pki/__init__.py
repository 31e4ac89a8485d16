"""The federation PKI: one CA per federation, identities for its members, a revocation list.

A CA directory (``phalanx pki init``) holds::

    ca.key            the CA private key (ECDSA P-256, PKCS#8 PEM, mode 0600)
    ca.crt            the self-signed CA certificate (CA:true, pathlen 0)
    crl.pem           the signed X.509 revocation list, replaced atomically on each revocation
    federation.json   {"name", "created", "ca_sha256"}
    issued.json       index of issued certificates (serial, role, name, validity, folder)
    revoked.json      index of revocations (serial, name, role, reason, revoked_at)
    participants/<name>/, admins/<name>/, coordinators/<host>/   key.pem (0600), cert.pem, ca.crt

A member is named by its certificate: subject ``CN=<name>, OU=<role>, O=<federation>`` and the
SAN URI ``phalanx://<federation>/<role>/<name>``. :class:`TrustRoot` checks a presented
certificate against the CA, its validity window, the revocation list (re-read when the file
changes, so a revocation takes effect on the next connection) and the federation name.

P-256 rather than Ed25519: gRPC's TLS stack and most TLS 1.2 peers accept ECDSA P-256, while
Ed25519 certificates are refused by several of them. Model bundles are signed with a separate
Ed25519 key whose certificate the same CA issues (:mod:`.signing`, ``coordinators/<host>/signing``).
"""

from phalanx.adapters.pki.authority import (
    REASONS,
    IdentityFiles,
    RevokedEntry,
    init_ca,
    issue,
    load_identity,
    revoke,
)
from phalanx.adapters.pki.identity import (
    ROLES,
    Identity,
    Role,
    TrustRoot,
    check_name,
    identity_from_pem,
)
from phalanx.adapters.pki.signing import (
    SIG_FILE,
    SignatureStatus,
    Signer,
    check_signature,
    issue_signer,
    require_signature,
    sign_bundle,
)

__all__ = [
    "REASONS",
    "ROLES",
    "SIG_FILE",
    "Identity",
    "IdentityFiles",
    "RevokedEntry",
    "Role",
    "SignatureStatus",
    "Signer",
    "TrustRoot",
    "check_name",
    "check_signature",
    "identity_from_pem",
    "init_ca",
    "issue",
    "issue_signer",
    "load_identity",
    "require_signature",
    "revoke",
    "sign_bundle",
]
