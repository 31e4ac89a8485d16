"""The cryptography-backed secure-aggregation port and identity signing."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from phalanx.adapters.crypto import (
    CertificateSigner,
    CertificateVerifier,
    CryptographyBackend,
    Ed25519Signer,
    KeyDirectoryVerifier,
    simulation_identities,
)
from phalanx.adapters.pki import TrustRoot, init_ca, issue, revoke
from phalanx.core.errors import SecAggError, TrustError
from phalanx.core.types import ParticipantId

A, B = ParticipantId("bank-a"), ParticipantId("isp-b")


def test_agreement_is_symmetric_and_depends_on_info() -> None:
    c = CryptographyBackend()
    a_sk, a_pk = c.keypair()
    b_sk, b_pk = c.keypair()
    assert c.agree(a_sk, b_pk, b"x") == c.agree(b_sk, a_pk, b"x")
    assert c.agree(a_sk, b_pk, b"x") != c.agree(a_sk, b_pk, b"y")
    assert c.public_key(a_sk) == a_pk
    with pytest.raises(SecAggError, match="X25519"):
        c.agree(a_sk, b"short", b"x")


def test_aes_gcm_round_trips_and_refuses_tampering_or_another_context() -> None:
    c = CryptographyBackend()
    key = c.random_bytes(32)
    blob = c.encrypt(key, b"share", b"r1")
    assert c.decrypt(key, blob, b"r1") == b"share"
    tampered = blob[:-1] + bytes([blob[-1] ^ 1])
    with pytest.raises(SecAggError, match="does not authenticate"):
        c.decrypt(key, tampered, b"r1")
    with pytest.raises(SecAggError, match="does not authenticate"):
        c.decrypt(key, blob, b"r2")
    with pytest.raises(SecAggError, match="too short"):
        c.decrypt(key, b"abc", b"r1")


@pytest.mark.parametrize("bits", [32, 64])
def test_prg_is_deterministic_per_seed_and_uniform_looking(bits: int) -> None:
    c = CryptographyBackend()
    seed = bytes(range(32))
    a = c.prg(seed, 100_000, bits)
    assert a.dtype == (np.uint32 if bits == 32 else np.uint64) and a.size == 100_000
    np.testing.assert_array_equal(a, c.prg(seed, 100_000, bits))
    assert not np.array_equal(a[:10], c.prg(bytes(32), 10, bits))
    top = (a >> (bits - 1)).astype(np.int64)
    assert abs(top.mean() - 0.5) < 0.01
    with pytest.raises(SecAggError, match="32"):
        c.prg(b"short", 4, bits)


def test_seeded_backend_is_reproducible() -> None:
    one = CryptographyBackend(np.random.default_rng(5).bytes)
    two = CryptographyBackend(np.random.default_rng(5).bytes)
    assert one.keypair() == two.keypair()


def test_simulation_identities_verify_and_refuse_forgeries() -> None:
    signers, verifier = simulation_identities([A, B])
    sig = signers[A].sign(b"keys")
    verifier.verify(A, b"keys", sig, b"")
    with pytest.raises(TrustError, match="invalid"):
        verifier.verify(B, b"keys", sig, b"")  # A's signature claimed for B
    with pytest.raises(TrustError, match="invalid"):
        verifier.verify(A, b"other keys", sig, b"")
    with pytest.raises(TrustError, match="not signed"):
        verifier.verify(A, b"keys", b"", b"")
    with pytest.raises(TrustError, match="directory"):
        KeyDirectoryVerifier({}).verify(A, b"keys", sig, b"")
    assert Ed25519Signer().credential == b""


@pytest.fixture
def pki(tmp_path: Path) -> Path:
    init_ca(tmp_path / "ca", "fed")
    issue(tmp_path / "ca", "participant", A)
    issue(tmp_path / "ca", "participant", B)
    issue(tmp_path / "ca", "admin", "ops")
    return tmp_path / "ca"


def _signer(pki: Path, folder: str) -> CertificateSigner:
    d = pki / folder
    return CertificateSigner((d / "key.pem").read_bytes(), (d / "cert.pem").read_bytes())


def test_certificate_signatures_verify_against_the_federation_ca(pki: Path, tmp_path: Path) -> None:
    verifier = CertificateVerifier(TrustRoot.from_ca_dir(pki))
    a = _signer(pki, f"participants/{A}")
    sig = a.sign(b"keys")
    verifier.verify(A, b"keys", sig, a.credential)
    with pytest.raises(TrustError, match="signed by the certificate of participant 'bank-a'"):
        verifier.verify(B, b"keys", sig, a.credential)  # A's certificate presented as B
    with pytest.raises(TrustError, match="signature on the keys of 'bank-a' is invalid"):
        verifier.verify(A, b"tampered keys", sig, a.credential)
    with pytest.raises(TrustError, match="not signed"):
        verifier.verify(A, b"keys", b"", b"")
    admin = _signer(pki, "admins/ops")
    with pytest.raises(TrustError, match="admin 'ops'"):
        verifier.verify(ParticipantId("ops"), b"keys", admin.sign(b"keys"), admin.credential)
    # a certificate from another federation's CA
    init_ca(tmp_path / "other", "fed")
    issue(tmp_path / "other", "participant", A)
    foreign = _signer(tmp_path / "other", f"participants/{A}")
    with pytest.raises(TrustError, match="not issued"):
        verifier.verify(A, b"keys", foreign.sign(b"keys"), foreign.credential)
    # revoked after the fact: the CRL is re-read
    revoke(pki, cert=pki / f"participants/{A}/cert.pem", reason="key_compromise")
    with pytest.raises(TrustError, match="revoked"):
        verifier.verify(A, b"keys", sig, a.credential)


def test_a_non_ecdsa_identity_key_is_refused(pki: Path) -> None:
    from cryptography.hazmat.primitives import serialization
    from cryptography.hazmat.primitives.asymmetric import ed25519

    pem = ed25519.Ed25519PrivateKey.generate().private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    )
    with pytest.raises(TrustError, match="ECDSA P-256"):
        CertificateSigner(pem, b"")
    with pytest.raises(TrustError, match="cannot load"):
        CertificateSigner(b"garbage", b"")
