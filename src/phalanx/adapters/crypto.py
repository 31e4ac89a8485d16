"""The secure-aggregation crypto port and identity signing, implemented with ``cryptography``.

* :class:`CryptographyBackend` implements :class:`~phalanx.core.secagg.crypto.SecAggCrypto`:
  X25519 (RFC 7748) key agreement followed by HKDF-SHA256 (RFC 5869), AES-256-GCM for the
  encrypted shares, and AES-256 in counter mode as the PRG that expands a 32-byte seed into mask
  words (the PRG of Bonawitz et al., CCS 2017 / Bell et al., CCS 2020).
* Identities sign each participant's per-round public keys so a coordinator cannot substitute
  keys of its own (Bonawitz et al., section 6, "active adversary"):

  - :class:`CertificateSigner` / :class:`CertificateVerifier` in a deployment: the participant
    signs with the ECDSA P-256 private key of its mTLS identity and sends its certificate; a
    verifier checks the certificate against the federation CA and CRL (:class:`TrustRoot`), that
    it names the claimed participant, then the signature;
  - :class:`Ed25519Signer` / :class:`KeyDirectoryVerifier` in a simulation: per-participant
    in-memory Ed25519 keys and a directory of their public keys.

Third-party exceptions are translated into ``SecAggError`` / ``TrustError`` here.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping

import numpy as np
from cryptography.exceptions import InvalidSignature, InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, x25519
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from numpy.typing import NDArray

from phalanx.adapters.pki.identity import TrustRoot, read_cert
from phalanx.core.errors import SecAggError, TrustError
from phalanx.core.secagg.crypto import KEY_BYTES
from phalanx.core.secagg.encoding import word_dtype
from phalanx.core.types import ParticipantId

NONCE_BYTES = 12
_ZERO_NONCE = bytes(16)


class CryptographyBackend:
    """:class:`~phalanx.core.secagg.crypto.SecAggCrypto` over the ``cryptography`` package.

    Parameters
    ----------
    random_bytes:
        Source of key material and nonces; ``secrets.token_bytes`` (the OS CSPRNG) unless a test
        passes a seeded one (e.g. ``numpy.random.Generator.bytes``).
    """

    def __init__(self, random_bytes: object | None = None) -> None:
        self._random = random_bytes if callable(random_bytes) else secrets.token_bytes

    def random_bytes(self, n: int) -> bytes:
        """``n`` random bytes."""
        return bytes(self._random(n))

    def keypair(self) -> tuple[bytes, bytes]:
        """A fresh X25519 key pair ``(private, public)`` as raw bytes."""
        private = self.random_bytes(KEY_BYTES)
        return private, self.public_key(private)

    def public_key(self, private: bytes) -> bytes:
        """The X25519 public key of a raw private key."""
        key = self._private(private)
        return key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    def agree(self, private: bytes, peer_public: bytes, info: bytes) -> bytes:
        """X25519 shared secret, then HKDF-SHA256 to 32 bytes with ``info``."""
        try:
            peer = x25519.X25519PublicKey.from_public_bytes(peer_public)
            shared = self._private(private).exchange(peer)
        except ValueError as exc:
            raise SecAggError(f"X25519 key agreement failed: {exc}") from None
        return HKDF(algorithm=hashes.SHA256(), length=KEY_BYTES, salt=None, info=info).derive(
            shared
        )

    def encrypt(self, key: bytes, plaintext: bytes, aad: bytes) -> bytes:
        """AES-256-GCM: ``nonce | ciphertext | tag``."""
        nonce = self.random_bytes(NONCE_BYTES)
        return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)

    def decrypt(self, key: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        """Inverse of :meth:`encrypt`; :class:`SecAggError` if authentication fails."""
        if len(ciphertext) < NONCE_BYTES + 16:
            raise SecAggError(f"an encrypted share of {len(ciphertext)} bytes is too short")
        try:
            return AESGCM(key).decrypt(ciphertext[:NONCE_BYTES], ciphertext[NONCE_BYTES:], aad)
        except InvalidTag:
            raise SecAggError(
                "an encrypted share does not authenticate: tampered with, or not for this round"
            ) from None

    def prg(self, seed: bytes, n_words: int, bits: int) -> NDArray[np.unsignedinteger]:
        """AES-256-CTR keystream (key ``seed``, zero IV) read as ``n_words`` ring words."""
        if len(seed) != KEY_BYTES:
            raise SecAggError(f"a PRG seed has {len(seed)} bytes, expected {KEY_BYTES}")
        dtype = word_dtype(bits)
        enc = Cipher(algorithms.AES(seed), modes.CTR(_ZERO_NONCE)).encryptor()
        stream = enc.update(bytes(n_words * dtype.itemsize))
        return np.frombuffer(stream, dtype=dtype.newbyteorder("<")).astype(dtype)

    @staticmethod
    def _private(raw: bytes) -> x25519.X25519PrivateKey:
        try:
            return x25519.X25519PrivateKey.from_private_bytes(raw)
        except ValueError as exc:
            raise SecAggError(f"not an X25519 private key: {exc}") from None


class CertificateSigner:
    """Signs with the ECDSA P-256 private key of a participant's mTLS identity."""

    def __init__(self, key_pem: bytes, cert_pem: bytes) -> None:
        try:
            key = serialization.load_pem_private_key(key_pem, password=None)
        except (ValueError, TypeError) as exc:
            raise TrustError(f"cannot load the identity private key: {exc}") from None
        if not isinstance(key, ec.EllipticCurvePrivateKey):
            raise TrustError(
                f"the identity key is a {type(key).__name__}, expected an ECDSA P-256 key",
                hint="use a key issued by `phalanx pki issue`",
            )
        self._key = key
        self._cert = cert_pem

    @property
    def credential(self) -> bytes:
        """The certificate (PEM) a verifier checks the signature against."""
        return self._cert

    def sign(self, message: bytes) -> bytes:
        """ECDSA-SHA256 signature (DER)."""
        return self._key.sign(message, ec.ECDSA(hashes.SHA256()))


class CertificateVerifier:
    """Verifies signatures made with a federation member's certificate key.

    Checks, in order: the certificate chains to the federation CA, is valid now and not revoked
    (:meth:`TrustRoot.verify`); it is a participant's and names the claimed participant; the
    signature verifies under its public key.
    """

    def __init__(self, trust: TrustRoot) -> None:
        self.trust = trust

    def verify(
        self, participant: ParticipantId, message: bytes, signature: bytes, credential: bytes
    ) -> None:
        """Return if valid, else :class:`TrustError` naming the reason."""
        if not credential or not signature:
            raise TrustError(f"the key advertisement of {participant!r} is not signed")
        ident = self.trust.verify(credential)
        if ident.role != "participant" or ident.name != participant:
            raise TrustError(
                f"keys claimed for participant {participant!r} are signed by the certificate of"
                f" {ident.role} {ident.name!r}"
            )
        public = read_cert(credential, "certificate").public_key()
        if not isinstance(public, ec.EllipticCurvePublicKey):
            raise TrustError(f"the certificate of {participant!r} has no ECDSA key")
        try:
            public.verify(signature, message, ec.ECDSA(hashes.SHA256()))
        except InvalidSignature:
            raise TrustError(f"the signature on the keys of {participant!r} is invalid") from None


class Ed25519Signer:
    """An in-memory Ed25519 identity (simulation); the verifier holds its public key."""

    def __init__(self, private: ed25519.Ed25519PrivateKey | None = None) -> None:
        self._key = private if private is not None else ed25519.Ed25519PrivateKey.generate()

    @property
    def credential(self) -> bytes:
        """Empty: the verifier looks the public key up in its directory."""
        return b""

    @property
    def public_bytes(self) -> bytes:
        """The raw 32-byte public key."""
        return self._key.public_key().public_bytes(
            serialization.Encoding.Raw, serialization.PublicFormat.Raw
        )

    def sign(self, message: bytes) -> bytes:
        """Ed25519 signature."""
        return self._key.sign(message)


class KeyDirectoryVerifier:
    """Verifies Ed25519 signatures against a directory ``{participant: raw public key}``."""

    def __init__(self, directory: Mapping[ParticipantId, bytes]) -> None:
        self._keys: dict[ParticipantId, ed25519.Ed25519PublicKey] = {}
        for pid, raw in directory.items():
            try:
                self._keys[pid] = ed25519.Ed25519PublicKey.from_public_bytes(raw)
            except ValueError as exc:
                raise TrustError(f"the directory key of {pid!r} is not Ed25519: {exc}") from None

    def verify(
        self, participant: ParticipantId, message: bytes, signature: bytes, credential: bytes
    ) -> None:
        """Return if valid, else :class:`TrustError`."""
        key = self._keys.get(participant)
        if key is None:
            raise TrustError(f"{participant!r} is not in the identity directory")
        if not signature:
            raise TrustError(f"the key advertisement of {participant!r} is not signed")
        try:
            key.verify(signature, message)
        except InvalidSignature:
            raise TrustError(f"the signature on the keys of {participant!r} is invalid") from None


def simulation_identities(
    participants: list[ParticipantId],
) -> tuple[dict[ParticipantId, Ed25519Signer], KeyDirectoryVerifier]:
    """Throwaway Ed25519 identities for a simulation and the directory that verifies them."""
    signers = {p: Ed25519Signer() for p in participants}
    return signers, KeyDirectoryVerifier({p: s.public_bytes for p, s in signers.items()})
