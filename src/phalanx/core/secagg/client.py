"""A participant's side of SecAgg+ as a state machine over the four secure stages.

Bonawitz et al., "Practical Secure Aggregation for Privacy-Preserving Machine Learning", CCS 2017
(rounds 0-3: advertise keys, share keys, masked input, unmask), restricted to a neighbour graph
as in Bell et al., "Secure Single-Server Aggregation with (Poly)Logarithmic Overhead", CCS 2020.

Per instance the participant draws two X25519 key pairs (``enc`` to encrypt shares to its
neighbours, ``mask`` to agree pairwise mask seeds) and a 32-byte self-mask seed ``b``; signs both
public keys with its identity; shares ``b`` and the mask private key t-of-k among its neighbours;
sends ``y = x + PRG(b) + sum_{v > u} PRG(s_uv) - sum_{v < u} PRG(s_uv)`` (mod 2^bits); and at
unmasking reveals, for each neighbour, the share of ``b`` if it survived or the share of its mask
key if it dropped, never both. Errors are :class:`SecAggError` (protocol violations, too few
neighbours) or :class:`TrustError` (a key advertisement that does not verify): the participant
then aborts its part of the round.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from numpy.typing import NDArray

from phalanx.core.errors import ProtocolError, SecAggError, TrustError
from phalanx.core.secagg import shamir
from phalanx.core.secagg.crypto import KEY_BYTES, IdentitySigner, IdentityVerifier, SecAggCrypto
from phalanx.core.secagg.params import AdvertisedKeys, InstanceParams, point, signed_message
from phalanx.core.types import ParticipantId

ENC_INFO = b"phalanx-secagg share encryption"
MASK_INFO = b"phalanx-secagg pairwise mask|"
_ID_BYTES = 64


def mask_info(instance: str) -> bytes:
    """HKDF info of the pairwise mask seeds of ``instance``."""
    return MASK_INFO + instance.encode()


def mask_sign(me: ParticipantId, peer: ParticipantId) -> int:
    """``+1`` when ``me`` adds the pairwise mask shared with ``peer``, ``-1`` when it subtracts."""
    return 1 if str(me) < str(peer) else -1


@dataclass
class _Session:
    params: InstanceParams
    bucket: tuple[ParticipantId, ...]
    neighbours: tuple[ParticipantId, ...]
    threshold: int
    vector: NDArray[np.unsignedinteger]
    enc_sk: bytes
    mask_sk: bytes
    seed: bytes
    peers: dict[ParticipantId, AdvertisedKeys] = field(default_factory=dict)
    held: dict[ParticipantId, tuple[int, int]] = field(default_factory=dict)
    stage: int = 1


class SecAggClient:
    """One participant's SecAgg+ state (one instance at a time).

    Parameters
    ----------
    me:
        This participant's name, as its identity states it.
    crypto:
        The cryptographic port.
    signer:
        Signs this participant's per-instance public keys.
    verifier:
        Checks the neighbours' signatures.
    """

    def __init__(
        self,
        me: ParticipantId,
        crypto: SecAggCrypto,
        signer: IdentitySigner,
        verifier: IdentityVerifier,
    ) -> None:
        self.me = me
        self.crypto = crypto
        self.signer = signer
        self.verifier = verifier
        self._session: _Session | None = None
        self._seen: set[str] = set()

    def advertise(
        self, params: InstanceParams, vector: NDArray[np.unsignedinteger]
    ) -> AdvertisedKeys:
        """Stage 1: remember the encoded ``vector`` and return this instance's signed keys."""
        if params.instance in self._seen:
            raise SecAggError(
                f"instance {params.instance} was already run: refusing to reuse it",
                hint="the coordinator must start a new instance for a new attempt",
            )
        if vector.size != params.length:
            raise SecAggError(
                f"the vector to aggregate has {vector.size} words, instance {params.instance}"
                f" expects {params.length}"
            )
        bucket = params.bucket_of(self.me)
        graph = params.graph(bucket)
        enc_sk, enc_pk = self.crypto.keypair()
        mask_sk, mask_pk = self.crypto.keypair()
        self._seen.add(params.instance)
        self._session = _Session(
            params=params,
            bucket=bucket,
            neighbours=graph[self.me],
            threshold=params.threshold(graph),
            vector=vector,
            enc_sk=enc_sk,
            mask_sk=mask_sk,
            seed=self.crypto.random_bytes(KEY_BYTES),
        )
        signature = self.signer.sign(signed_message(params.instance, self.me, enc_pk, mask_pk))
        return AdvertisedKeys(enc_pk, mask_pk, signature, self.signer.credential)

    def share_keys(
        self, params: InstanceParams, peers: Mapping[ParticipantId, AdvertisedKeys]
    ) -> dict[ParticipantId, bytes]:
        """Stage 2: verify the neighbours' keys; return the encrypted shares, one per neighbour.

        Raises
        ------
        TrustError
            When an advertisement's signature or credential does not verify (the round aborts).
        SecAggError
            When fewer than the threshold of neighbours advertised keys.
        """
        s = self._expect(params, 1)
        unknown = sorted(set(peers) - set(s.neighbours))
        if unknown:
            raise ProtocolError(f"keys relayed for {unknown}, who are not neighbours of {self.me}")
        for peer, keys in sorted(peers.items()):
            try:
                self.verifier.verify(
                    peer,
                    signed_message(params.instance, peer, keys.enc_pk, keys.mask_pk),
                    keys.signature,
                    keys.credential,
                )
            except TrustError as exc:
                raise TrustError(
                    f"{self.me} aborts secure aggregation {params.instance}: the keys advertised"
                    f" for {peer!r} do not verify ({exc.message})",
                    hint="the advertisement was tampered with or not signed by its owner",
                ) from None
        live = sorted(peers)
        self._check_enough(s, len(live), "advertised keys")
        s.peers = dict(peers)
        holders = [*live, self.me]
        xs = [point(s.bucket, h) for h in holders]
        b_shares = shamir.split(s.seed, xs, s.threshold, self.crypto.random_bytes)
        k_shares = shamir.split(s.mask_sk, xs, s.threshold, self.crypto.random_bytes)
        mine = point(s.bucket, self.me)
        s.held[self.me] = (b_shares[mine], k_shares[mine])
        out: dict[ParticipantId, bytes] = {}
        for peer in live:
            x = point(s.bucket, peer)
            plain = (
                _name(self.me)
                + _name(peer)
                + shamir.share_to_bytes(b_shares[x])
                + shamir.share_to_bytes(k_shares[x])
            )
            key = self.crypto.agree(s.enc_sk, peers[peer].enc_pk, ENC_INFO)
            out[peer] = self.crypto.encrypt(key, plain, params.instance.encode())
        s.stage = 2
        return out

    def masked_input(
        self,
        params: InstanceParams,
        ciphertexts: Mapping[ParticipantId, bytes],
        noise: NDArray[np.int64] | None = None,
    ) -> NDArray[np.unsignedinteger]:
        """Stage 3: keep the neighbours' shares; return the masked vector.

        ``noise`` (integer, one value per word) is added to the encoded vector before masking:
        the extension point for distributed differential privacy.
        """
        s = self._expect(params, 2)
        for peer, blob in sorted(ciphertexts.items()):
            if peer not in s.peers:
                raise ProtocolError(f"a share arrived from {peer!r}, who is not a live neighbour")
            key = self.crypto.agree(s.enc_sk, s.peers[peer].enc_pk, ENC_INFO)
            plain = self.crypto.decrypt(key, blob, params.instance.encode())
            size = 2 * _ID_BYTES + 2 * shamir.SHARE_BYTES
            if (
                len(plain) != size
                or plain[:_ID_BYTES] != _name(peer)
                or (plain[_ID_BYTES : 2 * _ID_BYTES] != _name(self.me))
            ):
                raise SecAggError(f"the share from {peer!r} is not addressed from it to {self.me}")
            b = shamir.share_from_bytes(plain[2 * _ID_BYTES : 2 * _ID_BYTES + shamir.SHARE_BYTES])
            k = shamir.share_from_bytes(plain[2 * _ID_BYTES + shamir.SHARE_BYTES :])
            s.held[peer] = (b, k)
        senders = sorted(ciphertexts)
        self._check_enough(s, len(senders), "shared their keys")
        words = s.vector.copy()
        dtype = words.dtype
        if noise is not None:
            if noise.shape != words.shape:
                raise SecAggError(
                    f"integer noise has shape {noise.shape}, the vector {words.shape}"
                )
            words += np.asarray(noise, dtype=np.int64).astype(dtype)  # two's complement wrap
        words += self.crypto.prg(s.seed, words.size, params.bits)
        info = mask_info(params.instance)
        for peer in senders:
            pairwise = self.crypto.prg(
                self.crypto.agree(s.mask_sk, s.peers[peer].mask_pk, info), words.size, params.bits
            )
            if mask_sign(self.me, peer) > 0:
                words += pairwise
            else:
                words -= pairwise
        s.stage = 3
        s.vector = np.zeros(0, dtype=dtype)  # the plain vector is no longer needed
        return words

    def unmask(
        self,
        params: InstanceParams,
        survivors: Sequence[ParticipantId],
        dropped: Sequence[ParticipantId],
    ) -> tuple[dict[ParticipantId, bytes], dict[ParticipantId, bytes]]:
        """Stage 4: the self-mask shares of surviving and the key shares of dropped neighbours.

        Answered once per instance; a peer listed as both survivor and dropped is refused, so
        the coordinator can never hold both shares of one participant's secrets.
        """
        s = self._expect(params, 3)
        alive, gone = set(survivors), set(dropped)
        if alive & gone:
            raise SecAggError(
                f"the coordinator lists {sorted(alive & gone)} as both surviving and dropped:"
                " refusing to reveal both of their secrets"
            )
        if self.me not in alive:
            raise SecAggError(f"{self.me} is asked to unmask but not listed among the survivors")
        self._check_enough(s, len(alive & set(s.peers)), "sent masked inputs")
        b_out: dict[ParticipantId, bytes] = {}
        k_out: dict[ParticipantId, bytes] = {}
        for peer, (b, k) in s.held.items():
            if peer in alive:
                b_out[peer] = shamir.share_to_bytes(b)
            elif peer in gone:
                k_out[peer] = shamir.share_to_bytes(k)
        s.stage = 4
        self._session = None
        return b_out, k_out

    def _expect(self, params: InstanceParams, stage: int) -> _Session:
        s = self._session
        if s is None or s.params.instance != params.instance:
            raise SecAggError(
                f"{self.me} has no running secure aggregation {params.instance}",
                hint="a stage arrived out of order or after a restart; the round is retried",
            )
        if s.stage != stage:
            raise SecAggError(
                f"{self.me} is at stage {s.stage} of {params.instance}, a stage-{stage + 1}"
                " message arrived"
            )
        return s

    def _check_enough(self, s: _Session, live: int, what: str) -> None:
        if live + 1 < s.threshold:
            raise SecAggError(
                f"only {live} of {self.me}'s {len(s.neighbours)} neighbours {what}; at least"
                f" {s.threshold - 1} are needed (threshold {s.threshold} with itself)",
                hint="too many participants dropped out; the round is retried",
            )


def _name(participant: ParticipantId) -> bytes:
    raw = str(participant).encode()
    if len(raw) > _ID_BYTES:
        raise SecAggError(f"participant name {participant!r} is longer than {_ID_BYTES} bytes")
    return raw.ljust(_ID_BYTES, b"\x00")
