"""Settings of secure aggregation, the per-round instance parameters, and their wire form.

:class:`SecAggSettings` is what a federation configures. :class:`InstanceParams` is what one
secure-aggregation run (one round, one kind of vector, all its buckets) tells every participant,
as the JSON ``secagg`` entry of the task config. Keys, ciphertexts and shares travel as ``|u1``
arrays in the task and reply ``extras`` under the names built here, so every transport (and the
gRPC codec, which maps ``extras`` as-is) carries them without a protocol change.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
from numpy.typing import NDArray

from phalanx.core.errors import ConfigError, ProtocolError
from phalanx.core.secagg.graph import default_degree, default_threshold, neighbours
from phalanx.core.types import ParticipantId, Weights

Kind = Literal["fit", "stats"]
CONFIG_KEY = "secagg"
KEYS = "sa:keys"
"""Reply extra of the advertise stage: ``[enc_pk, mask_pk, signature, credential]``."""
PEER_KEYS = "sa:keys:"
"""Task extra prefix of the share-keys stage: a neighbour's advertised keys."""
SHARE = "sa:share:"
"""Share-keys reply: ciphertext *to* the named neighbour; masked-input task: *from* it."""
B_SHARE = "sa:b:"
S_SHARE = "sa:s:"
"""Unmask reply prefixes: the named peer's self-mask seed share / masking-key share."""
SIGNING_CONTEXT = b"phalanx-secagg-v1"


@dataclass(frozen=True)
class SecAggSettings:
    """How a federation runs secure aggregation (SecAgg+, Bell et al., CCS 2020).

    Attributes
    ----------
    clip_norm:
        L2 bound on the vector each participant contributes, ``w_i * delta_i`` (its model delta
        is clipped to this norm, then scaled by its weight ``w_i <= 1``).
    weight_cap:
        Examples at which a participant's weight saturates: ``w_i = min(n_i / weight_cap, 1)``.
        The bucket sum of ``w_i`` is revealed, never an individual ``n_i``.
    bucket_size:
        Least members of a bucket; the sampled participants are shuffled into
        ``floor(n / bucket_size)`` buckets, each aggregated by its own instance (``None``: one).
    min_members:
        Fewest members an instance may have (at least 2: a sum of one is an individual update).
    degree:
        Neighbours per member in the SecAgg+ graph (``None``: ``2 * ceil(1.5 * log2 n)``).
    scale:
        Fixed-point steps per unit (``None``: the finest power of two that cannot overflow).
    noise_bound:
        Largest integer noise per word a participant's middleware may add (distributed DP).
    rounding:
        ``"stochastic"`` (unbiased) or ``"nearest"`` rounding to the fixed-point grid.
    """

    clip_norm: float = 100.0
    weight_cap: int = 10_000
    bucket_size: int | None = None
    min_members: int = 3
    degree: int | None = None
    scale: float | None = None
    noise_bound: float = 0.0
    rounding: Literal["stochastic", "nearest"] = "stochastic"

    def __post_init__(self) -> None:
        if not (math.isfinite(self.clip_norm) and self.clip_norm > 0):
            raise ConfigError(f"secure aggregation clip_norm must be > 0, found {self.clip_norm}")
        if self.weight_cap < 1:
            raise ConfigError(
                f"secure aggregation weight_cap must be >= 1, found {self.weight_cap}"
            )
        if self.min_members < 2:
            raise ConfigError(
                f"secure aggregation min_members must be >= 2, found {self.min_members}",
                hint="a sum over one participant is that participant's update",
            )
        if self.bucket_size is not None and self.bucket_size < self.min_members:
            raise ConfigError(
                f"bucket_size {self.bucket_size} is below min_members {self.min_members}"
            )
        if self.degree is not None and self.degree < 1:
            raise ConfigError(f"secure aggregation degree must be >= 1, found {self.degree}")
        if self.noise_bound < 0:
            raise ConfigError(f"noise_bound must be >= 0, found {self.noise_bound}")
        if self.rounding not in ("stochastic", "nearest"):
            raise ConfigError(f"rounding must be 'stochastic' or 'nearest', found {self.rounding}")


@dataclass(frozen=True)
class InstanceParams:
    """One secure-aggregation run as every participant sees it (the task's ``secagg`` config).

    Attributes
    ----------
    instance:
        Unique name of this run (round, kind and a fresh nonce): it is signed with the keys, so
        keys of another round or another attempt are refused.
    kind:
        ``"fit"`` (fixed point in Z_{2^32}) or ``"stats"`` (wide fixed point in Z_{2^64}).
    buckets:
        The members of each bucket; each bucket is an independent instance.
    degree, graph_seed:
        The neighbour graph of each bucket.
    bits, scale, bound:
        The ring and the fixed-point encoding of ``"fit"`` vectors.
    weight_cap:
        See :class:`SecAggSettings`.
    length:
        Ring words of every contributed vector.
    classwise_layer:
        For ``"fit"``: index of the output weight array whose rows are also summed class by
        class (class-wise averaging, ADR 0018; :mod:`~phalanx.core.secagg.vectors`); -1: off.
    """

    instance: str
    kind: Kind
    buckets: tuple[tuple[ParticipantId, ...], ...]
    degree: int
    graph_seed: int
    bits: int
    scale: float
    bound: float
    weight_cap: int
    length: int
    classwise_layer: int = -1

    def to_json(self) -> dict[str, Any]:
        """The JSON-ready form sent in the task config."""
        return {
            "instance": self.instance,
            "kind": self.kind,
            "buckets": [list(b) for b in self.buckets],
            "degree": self.degree,
            "graph_seed": self.graph_seed,
            "bits": self.bits,
            "scale": self.scale,
            "bound": self.bound,
            "weight_cap": self.weight_cap,
            "length": self.length,
            **({"classwise_layer": self.classwise_layer} if self.classwise_layer >= 0 else {}),
        }

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> InstanceParams:
        """Read the ``secagg`` entry of a task config; :class:`ProtocolError` if malformed."""
        raw = config.get(CONFIG_KEY)
        if not isinstance(raw, dict):
            raise ProtocolError("a secure-aggregation task lacks its 'secagg' parameters")
        try:
            kind = str(raw["kind"])
            if kind not in ("fit", "stats"):
                raise ValueError(f"unknown kind {kind!r}")
            return cls(
                instance=str(raw["instance"]),
                kind="fit" if kind == "fit" else "stats",
                buckets=tuple(tuple(ParticipantId(str(p)) for p in b) for b in raw["buckets"]),
                degree=int(raw["degree"]),
                graph_seed=int(raw["graph_seed"]),
                bits=int(raw["bits"]),
                scale=float(raw["scale"]),
                bound=float(raw["bound"]),
                weight_cap=int(raw["weight_cap"]),
                length=int(raw["length"]),
                classwise_layer=int(raw.get("classwise_layer", -1)),
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise ProtocolError(f"malformed secure-aggregation parameters: {exc}") from None

    def bucket_of(self, participant: ParticipantId) -> tuple[ParticipantId, ...]:
        """The members of ``participant``'s bucket; :class:`ProtocolError` if it has none."""
        for bucket in self.buckets:
            if participant in bucket:
                return bucket
        raise ProtocolError(f"{participant!r} is in no bucket of instance {self.instance}")

    def graph(
        self, bucket: tuple[ParticipantId, ...]
    ) -> dict[ParticipantId, tuple[ParticipantId, ...]]:
        """The neighbour graph of one bucket."""
        return neighbours(bucket, self.degree, self.graph_seed)

    def threshold(self, graph: Mapping[ParticipantId, tuple[ParticipantId, ...]]) -> int:
        """Shares needed to reconstruct a member's secret: a majority of its neighbours."""
        degrees = [len(v) for v in graph.values()]
        return default_threshold(min(degrees)) if degrees else 1


def plan_degree(settings: SecAggSettings, n: int) -> int:
    """The graph degree for a bucket of ``n`` members."""
    return min(n - 1, settings.degree) if settings.degree is not None else default_degree(n)


def point(bucket: tuple[ParticipantId, ...], holder: ParticipantId) -> int:
    """The Shamir evaluation point of ``holder`` in its bucket (1-based position)."""
    return bucket.index(holder) + 1


def signed_message(
    instance: str, participant: ParticipantId, enc_pk: bytes, mask_pk: bytes
) -> bytes:
    """What a participant signs: context, instance, its name and both public keys."""
    return b"\x00".join(
        [SIGNING_CONTEXT, instance.encode(), str(participant).encode(), enc_pk + mask_pk]
    )


@dataclass(frozen=True)
class AdvertisedKeys:
    """A participant's per-instance public keys, signed with its identity."""

    enc_pk: bytes
    mask_pk: bytes
    signature: bytes
    credential: bytes

    def to_arrays(self) -> Weights:
        """As four ``|u1`` arrays (the reply or task extra)."""
        return [as_array(b) for b in (self.enc_pk, self.mask_pk, self.signature, self.credential)]

    @classmethod
    def from_arrays(cls, arrays: Weights, who: str) -> AdvertisedKeys:
        """Inverse of :meth:`to_arrays`; :class:`ProtocolError` when malformed."""
        if len(arrays) != 4:
            raise ProtocolError(f"advertised keys of {who} hold {len(arrays)} arrays, expected 4")
        enc, mask, sig, cred = (as_bytes(a, f"keys of {who}") for a in arrays)
        if len(enc) != 32 or len(mask) != 32:
            raise ProtocolError(f"advertised keys of {who} are not 32-byte X25519 public keys")
        return cls(enc, mask, sig, cred)


def as_array(blob: bytes) -> NDArray[Any]:
    """Bytes as a ``|u1`` array (how byte strings travel in extras)."""
    return np.frombuffer(blob, dtype=np.uint8).copy()


def as_bytes(array: NDArray[Any], what: str) -> bytes:
    """Inverse of :func:`as_array`; :class:`ProtocolError` unless a 1-d ``uint8`` array."""
    arr = np.asarray(array)
    if arr.dtype != np.uint8 or arr.ndim != 1:
        raise ProtocolError(f"{what} must be a 1-d uint8 array, found {arr.dtype} {arr.shape}")
    return arr.tobytes()
