"""The cryptographic port secure aggregation needs, and the identity port that signs its keys.

The core cannot import ``cryptography`` (import-linter forbids it), so the protocol state machines
take these small :class:`typing.Protocol` objects; ``phalanx.adapters.crypto`` implements them with
X25519, HKDF-SHA256, AES-GCM and AES-CTR, and with ECDSA P-256 certificates (deployment) or
per-participant Ed25519 keys (simulation) for identities.
"""

from __future__ import annotations

from typing import Protocol

import numpy as np
from numpy.typing import NDArray

from phalanx.core.types import ParticipantId

KEY_BYTES = 32
"""Bytes of an X25519 private or public key, of a PRG seed and of a derived symmetric key."""


class SecAggCrypto(Protocol):
    """Key agreement, key derivation, authenticated encryption and a PRG.

    Every method raises :class:`~phalanx.core.errors.SecAggError` (never a third-party
    exception) on bad input; :meth:`decrypt` raises it when authentication fails.
    """

    def random_bytes(self, n: int) -> bytes:
        """``n`` bytes from a cryptographically secure source."""
        ...

    def keypair(self) -> tuple[bytes, bytes]:
        """A fresh X25519 key pair ``(private, public)``, 32 raw bytes each."""
        ...

    def public_key(self, private: bytes) -> bytes:
        """The X25519 public key of ``private``."""
        ...

    def agree(self, private: bytes, peer_public: bytes, info: bytes) -> bytes:
        """X25519 agreement then HKDF-SHA256 with ``info``: a 32-byte key both sides share."""
        ...

    def encrypt(self, key: bytes, plaintext: bytes, aad: bytes) -> bytes:
        """AES-256-GCM: ``nonce | ciphertext | tag``, authenticated with ``aad``."""
        ...

    def decrypt(self, key: bytes, ciphertext: bytes, aad: bytes) -> bytes:
        """Inverse of :meth:`encrypt`; :class:`SecAggError` when authentication fails."""
        ...

    def prg(self, seed: bytes, n_words: int, bits: int) -> NDArray[np.unsignedinteger]:
        """``n_words`` pseudo-random ring words (uint32 or uint64) expanded from a 32-byte seed."""
        ...


class IdentitySigner(Protocol):
    """A participant's long-term identity, used to sign its per-round public keys."""

    @property
    def credential(self) -> bytes:
        """What a verifier needs besides the signature (a certificate PEM; may be empty)."""
        ...

    def sign(self, message: bytes) -> bytes:
        """A signature over ``message``."""
        ...


class IdentityVerifier(Protocol):
    """Checks that a signature was made by the named participant's identity."""

    def verify(
        self, participant: ParticipantId, message: bytes, signature: bytes, credential: bytes
    ) -> None:
        """Return when valid; raise :class:`~phalanx.core.errors.TrustError` naming the reason."""
        ...
