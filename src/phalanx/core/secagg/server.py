"""The coordinator's side of SecAgg+ for one bucket: relay, sum, unmask, and nothing else.

Bonawitz et al., CCS 2017, with the neighbour graph of Bell et al., CCS 2020. The server only
relays signed public keys and encrypted shares, adds masked vectors modulo ``2^bits``, and at the
end removes the masks it is entitled to remove: the self-masks ``PRG(b_u)`` of the participants
whose masked vector it received (``U3``), and the pairwise masks those participants shared with
neighbours that dropped after sharing their keys (``U2 \\ U3``). The only result is the bucket's
sum (:meth:`BucketServer.finish`): no method returns or keeps an individual unmasked vector.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np
from numpy.typing import NDArray

from phalanx.core.errors import SecAggError
from phalanx.core.secagg import shamir
from phalanx.core.secagg.client import mask_info, mask_sign
from phalanx.core.secagg.crypto import KEY_BYTES, SecAggCrypto
from phalanx.core.secagg.encoding import word_dtype
from phalanx.core.secagg.params import AdvertisedKeys, InstanceParams, point
from phalanx.core.types import ParticipantId


class BucketServer:
    """The server state of one bucket's secure-aggregation instance.

    Parameters
    ----------
    params:
        The instance parameters sent to the participants.
    bucket:
        This bucket's members (one of ``params.buckets``).
    crypto:
        The cryptographic port (key agreement and PRG for unmasking).
    """

    def __init__(
        self, params: InstanceParams, bucket: tuple[ParticipantId, ...], crypto: SecAggCrypto
    ) -> None:
        self.params = params
        self.bucket = bucket
        self.crypto = crypto
        self.graph = params.graph(bucket)
        self.threshold = params.threshold(self.graph)
        self.keys: dict[ParticipantId, AdvertisedKeys] = {}
        self.inbox: dict[ParticipantId, dict[ParticipantId, bytes]] = {}
        self.shared: set[ParticipantId] = set()
        self.masked: set[ParticipantId] = set()
        self._sum = np.zeros(params.length, dtype=word_dtype(params.bits))

    @property
    def min_live(self) -> int:
        """Fewest live members the bucket needs at any stage."""
        return max(2, self.threshold)

    def _enough(self, live: set[ParticipantId], stage: str) -> None:
        if len(live) < self.min_live:
            raise SecAggError(
                f"bucket of {len(self.bucket)} in {self.params.instance}: only {len(live)}"
                f" members {stage}, at least {self.min_live} are needed",
                hint="too many participants dropped out; the round is retried",
            )

    # stage 1 -> 2
    def receive_keys(self, keys: Mapping[ParticipantId, AdvertisedKeys]) -> None:
        """Keep the advertised keys of the members who answered stage 1."""
        self.keys = {p: k for p, k in keys.items() if p in self.graph}
        self._enough(set(self.keys), "advertised keys")

    def peer_keys(self, member: ParticipantId) -> dict[ParticipantId, AdvertisedKeys]:
        """The keys to relay to ``member``: its neighbours that advertised."""
        return {v: self.keys[v] for v in self.graph[member] if v in self.keys}

    # stage 2 -> 3
    def receive_shares(self, shares: Mapping[ParticipantId, Mapping[ParticipantId, bytes]]) -> None:
        """Route the encrypted shares of the members who answered stage 2."""
        self.shared = {p for p in shares if p in self.keys}
        self._enough(self.shared, "shared their keys")
        self.inbox = {p: {} for p in self.shared}
        for sender in self.shared:
            for to, blob in shares[sender].items():
                if to in self.inbox and to in self.graph[sender]:
                    self.inbox[to][sender] = blob

    def shares_for(self, member: ParticipantId) -> dict[ParticipantId, bytes]:
        """The ciphertexts to relay to ``member`` (from its neighbours that shared)."""
        return dict(self.inbox.get(member, {}))

    # stage 3 -> 4
    def receive_masked(self, vectors: Mapping[ParticipantId, NDArray[np.unsignedinteger]]) -> None:
        """Add the masked vectors of the members who answered stage 3 into the running sum."""
        dtype = self._sum.dtype
        for p, vec in sorted(vectors.items()):
            if p not in self.shared:
                continue
            arr = np.asarray(vec)
            if arr.dtype != dtype or arr.shape != self._sum.shape:
                raise SecAggError(
                    f"masked input of {p!r} is {arr.dtype} {arr.shape}, expected {dtype}"
                    f" {self._sum.shape}"
                )
            self._sum += arr
            self.masked.add(p)
        self._enough(self.masked, "sent masked inputs")

    @property
    def survivors(self) -> list[ParticipantId]:
        """Members whose masked input is in the sum (``U3``)."""
        return sorted(self.masked)

    @property
    def dropped(self) -> list[ParticipantId]:
        """Members who shared keys but sent no masked input (``U2 \\ U3``)."""
        return sorted(self.shared - self.masked)

    # stage 4
    def finish(
        self,
        seed_shares: Mapping[ParticipantId, Mapping[ParticipantId, bytes]],
        key_shares: Mapping[ParticipantId, Mapping[ParticipantId, bytes]],
    ) -> NDArray[np.unsignedinteger]:
        """Unmask the bucket sum from the shares the unmasking members sent.

        Parameters
        ----------
        seed_shares, key_shares:
            Per answering member, the self-mask seed shares (of survivors) and the mask-key
            shares (of dropped members) it revealed, by the peer they belong to.

        Raises
        ------
        SecAggError
            When a secret has fewer than the threshold of shares, or shares are inconsistent.
        """
        responders = {p for p in seed_shares if p in self.masked}
        self._enough(responders, "sent their unmasking shares")
        total = self._sum.copy()
        n = total.size
        bits = self.params.bits
        for u in self.survivors:
            shares = self._collect(u, seed_shares, responders)
            seed = shamir.reconstruct(shares, self.threshold, KEY_BYTES)
            total -= self.crypto.prg(seed, n, bits)
        info = mask_info(self.params.instance)
        for v in self.dropped:
            shares = self._collect(v, key_shares, responders)
            secret = shamir.reconstruct(shares, self.threshold, KEY_BYTES)
            if self.crypto.public_key(secret) != self.keys[v].mask_pk:
                raise SecAggError(
                    f"the reconstructed masking key of {v!r} does not match its advertised key:"
                    " some shares are corrupted"
                )
            for w in self.graph[v]:
                if w in self.masked:
                    pairwise = self.crypto.prg(
                        self.crypto.agree(secret, self.keys[w].mask_pk, info), n, bits
                    )
                    # w added +PRG when w < v: remove what w added
                    if mask_sign(w, v) > 0:
                        total -= pairwise
                    else:
                        total += pairwise
        return total

    def _collect(
        self,
        owner: ParticipantId,
        shares: Mapping[ParticipantId, Mapping[ParticipantId, bytes]],
        responders: set[ParticipantId],
    ) -> dict[int, int]:
        out: dict[int, int] = {}
        for holder in sorted(responders):
            if holder != owner and holder not in self.graph[owner]:
                continue
            blob = shares[holder].get(owner)
            if blob is not None:
                out[point(self.bucket, holder)] = shamir.share_from_bytes(blob)
        if len(out) < self.threshold:
            raise SecAggError(
                f"only {len(out)} shares of {owner!r}'s secret arrived in"
                f" {self.params.instance}, at least {self.threshold} are needed",
                hint="too many participants dropped out before unmasking; the round is retried",
            )
        return out
