"""One secure aggregation as the round engine runs it: four stages over every bucket.

:class:`SecureRound` turns the sampled participants of a ``STATS`` or ``FIT`` stage into SecAgg+
instances (Bell et al., CCS 2020), one per bucket, and drives them through the stages
``secagg_advertise`` (participants also compute their statistics or train, and keep the result),
``secagg_share_keys``, ``secagg_masked_input`` and ``secagg_unmask``. It builds each stage's
tasks, reads the replies, and in the end yields one ring sum per bucket. A bucket whose
instance fails (too many dropouts, bad shares) is left out with its members marked refused;
when every bucket fails the round fails with :class:`SecAggError` and is retried from scratch
with fresh keys.

Buckets follow Karimireddy, He and Jaggi, "Byzantine-Robust Learning on Heterogeneous Datasets
via Bucketing", ICLR 2022: a seeded shuffle of the sampled participants into
``floor(n / bucket_size)`` buckets of at least ``bucket_size`` members each.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from typing import Any, cast

import numpy as np
from numpy.typing import NDArray

from phalanx.core.errors import ProtocolError, RoundError, SecAggError
from phalanx.core.messages import SECAGG_STAGES, Reply, Stage, Task
from phalanx.core.secagg.crypto import SecAggCrypto
from phalanx.core.secagg.encoding import FixedPoint, word_dtype
from phalanx.core.secagg.params import (
    B_SHARE,
    CONFIG_KEY,
    KEYS,
    PEER_KEYS,
    S_SHARE,
    SHARE,
    AdvertisedKeys,
    InstanceParams,
    Kind,
    SecAggSettings,
    as_array,
    as_bytes,
    plan_degree,
)
from phalanx.core.secagg.server import BucketServer
from phalanx.core.types import ParticipantId


def split_buckets(
    members: Sequence[ParticipantId], settings: SecAggSettings, rng: np.random.Generator
) -> tuple[tuple[ParticipantId, ...], ...]:
    """Shuffle ``members`` into buckets of at least ``settings.bucket_size`` (one by default).

    Raises
    ------
    RoundError
        When fewer than ``settings.min_members`` participants are available.
    """
    ordered = sorted(members)
    if len(ordered) < settings.min_members:
        raise RoundError(
            f"secure aggregation needs at least {settings.min_members} participants in a round,"
            f" {len(ordered)} are available",
            hint="start more participants (a sum over fewer would expose individual updates)",
        )
    size = settings.bucket_size or len(ordered)
    count = max(1, len(ordered) // size)
    if count == 1:
        return (tuple(ordered),)
    perm = rng.permutation(len(ordered)).tolist()
    return tuple(tuple(sorted(ordered[i] for i in perm[b::count])) for b in range(count))


@dataclass(frozen=True)
class BucketSum:
    """The unmasked ring sum of one bucket and whose inputs it holds."""

    members: tuple[ParticipantId, ...]
    words: NDArray[np.unsignedinteger]


class SecureRound:
    """The server side of one secure aggregation across its buckets.

    Parameters
    ----------
    round_id:
        The round the stages belong to (0 for statistics).
    kind:
        ``"fit"`` or ``"stats"``.
    sampled:
        The participants asked.
    settings:
        The federation's secure-aggregation settings.
    crypto:
        The cryptographic port.
    rng:
        The coordinator's generator: draws the bucket shuffle, graph seed and instance nonce.
    base:
        The task every participant would get without secure aggregation (``FIT`` with weights,
        or ``STATS``); its content rides on the advertise stage, and per-participant configs
        (seeds) are kept.
    length:
        Ring words of each contribution.
    classwise_layer:
        ``"fit"``: the output weight array also summed class by class (-1: none).
    """

    def __init__(
        self,
        round_id: int,
        kind: Kind,
        sampled: Sequence[ParticipantId],
        settings: SecAggSettings,
        crypto: SecAggCrypto,
        rng: np.random.Generator,
        base: Mapping[ParticipantId, Task],
        length: int,
        classwise_layer: int = -1,
    ) -> None:
        buckets = split_buckets(sampled, settings, rng)
        largest = max(len(b) for b in buckets)
        bits, scale = 64, 1.0
        if kind == "fit":
            bound = max(settings.clip_norm, 1.0)
            if settings.scale is None:
                enc = FixedPoint.fitting(largest, bound, 32, settings.noise_bound)
            else:
                enc = FixedPoint(settings.scale, bound, 32)
                enc.check_capacity(largest, settings.noise_bound)
            bits, scale = 32, enc.scale
        self.params = InstanceParams(
            instance=f"r{round_id}-{kind}-{rng.integers(1 << 62):x}",
            kind=kind,
            buckets=buckets,
            degree=plan_degree(settings, largest),
            graph_seed=int(rng.integers(1 << 31)),
            bits=bits,
            scale=scale,
            bound=settings.clip_norm,
            weight_cap=settings.weight_cap,
            length=length,
            classwise_layer=classwise_layer,
        )
        self.round = round_id
        self.base = dict(base)
        self.servers = [BucketServer(self.params, b, crypto) for b in buckets]
        self.stage_index = 0
        self.refused: dict[ParticipantId, str] = {}

    @property
    def stage(self) -> Stage:
        """The stage to run next."""
        return SECAGG_STAGES[self.stage_index]

    def _live(self) -> list[BucketServer]:
        return [s for s in self.servers if not set(s.bucket) <= set(self.refused)]

    def tasks(self) -> dict[ParticipantId, Task]:
        """The tasks of the current stage."""
        config = {CONFIG_KEY: self.params.to_json()}
        stage = self.stage
        out: dict[ParticipantId, Task] = {}
        for server in self._live():
            if stage is Stage.SECAGG_ADVERTISE:
                members = [p for p in server.bucket if p not in self.refused]
            elif stage is Stage.SECAGG_SHARE:
                members = sorted(server.keys)
            elif stage is Stage.SECAGG_MASKED:
                members = sorted(server.shared)
            else:
                members = server.survivors
            for p in members:
                base = self.base[p]
                if stage is Stage.SECAGG_ADVERTISE:
                    out[p] = replace(base, stage=stage, config={**base.config, **config})
                    continue
                extras: dict[str, Any] = {}
                cfg: dict[str, Any] = dict(config)
                if stage is Stage.SECAGG_SHARE:
                    extras = {PEER_KEYS + v: k.to_arrays() for v, k in server.peer_keys(p).items()}
                elif stage is Stage.SECAGG_MASKED:
                    extras = {SHARE + v: [as_array(b)] for v, b in server.shares_for(p).items()}
                else:
                    cfg["survivors"] = server.survivors
                    cfg["dropped"] = server.dropped
                out[p] = Task(
                    round=base.round,
                    stage=stage,
                    schema_hash=base.schema_hash,
                    config=cfg,
                    extras=extras,
                )
        return out

    def receive(self, replies: Mapping[ParticipantId, Reply]) -> list[BucketSum] | None:
        """Feed the valid replies of the current stage; the bucket sums after the last stage.

        Raises
        ------
        SecAggError
            When every bucket has failed.
        """
        stage = self.stage
        results: list[BucketSum] = []
        parsed = self._parse(stage, replies)
        for server in self._live():
            mine = {p: v for p, v in parsed.items() if p in server.graph}
            try:
                if stage is Stage.SECAGG_ADVERTISE:
                    server.receive_keys(mine)
                elif stage is Stage.SECAGG_SHARE:
                    server.receive_shares(mine)
                elif stage is Stage.SECAGG_MASKED:
                    server.receive_masked(mine)
                else:
                    seeds = {p: v[0] for p, v in mine.items()}
                    keys = {p: v[1] for p, v in mine.items()}
                    results.append(BucketSum(tuple(server.survivors), server.finish(seeds, keys)))
            except (SecAggError, ProtocolError) as exc:
                for p in server.bucket:
                    self.refused.setdefault(p, f"secure aggregation bucket aborted: {exc}")
        if not self._live():
            raise SecAggError(
                f"secure aggregation {self.params.instance} failed in every bucket at stage"
                f" {stage.value}: {sorted(set(self.refused.values()))[:3]}",
                hint="too many participants dropped out or misbehaved; the round is retried",
            )
        if stage is Stage.SECAGG_UNMASK:
            return results
        self.stage_index += 1
        return None

    def _parse(
        self, stage: Stage, replies: Mapping[ParticipantId, Reply]
    ) -> dict[ParticipantId, Any]:
        """Each reply's payload for ``stage``; a malformed reply counts as a dropout."""
        out: dict[ParticipantId, Any] = {}
        for p, r in replies.items():
            try:
                if stage is Stage.SECAGG_ADVERTISE:
                    out[p] = AdvertisedKeys.from_arrays(r.extras.get(KEYS, []), p)
                elif stage is Stage.SECAGG_SHARE:
                    out[p] = _named(r, SHARE)
                elif stage is Stage.SECAGG_MASKED:
                    out[p] = _single(r, self.params.length, self.params.bits)
                else:
                    out[p] = (_named(r, B_SHARE), _named(r, S_SHARE))
            except ProtocolError as exc:
                self.refused[p] = f"malformed {stage.value} reply, left out: {exc}"
        return out


def _named(reply: Reply, prefix: str) -> dict[ParticipantId, bytes]:
    out: dict[ParticipantId, bytes] = {}
    for key, arrays in reply.extras.items():
        if key.startswith(prefix):
            if len(arrays) != 1:
                raise ProtocolError(f"{key} from {reply.participant!r} must hold one array")
            out[ParticipantId(key[len(prefix) :])] = as_bytes(arrays[0], key)
    return out


def _single(reply: Reply, length: int, bits: int) -> NDArray[np.unsignedinteger]:
    if len(reply.arrays) != 1:
        raise ProtocolError(
            f"masked input of {reply.participant!r} holds {len(reply.arrays)} arrays, expected 1"
        )
    arr = cast("NDArray[np.unsignedinteger]", np.asarray(reply.arrays[0]))
    dtype = word_dtype(bits)
    if arr.dtype != dtype or arr.shape != (length,):
        raise ProtocolError(
            f"masked input of {reply.participant!r} is {arr.dtype} {arr.shape}, expected"
            f" {dtype} ({length},)"
        )
    return arr


def is_secure(stage: Stage) -> bool:
    """Whether ``stage`` is one of the secure-aggregation stages."""
    return stage in SECAGG_STAGES


__all__ = ["BucketSum", "SecureRound", "is_secure", "split_buckets"]
