"""Participant middleware that runs secure aggregation (SecAgg+) around the plain handler.

:class:`SecureAggregation` is a middleware ``(task, call_next) -> Reply`` (see
:mod:`phalanx.services.participant`). It answers the four secure stages itself:

``secagg_advertise``
    Turns the task back into the plain ``FIT`` or ``STATS`` task it carries and calls
    ``call_next`` with it, so inner middleware (clipping and noise of differential privacy,
    logging) sees a plain task and a plain reply. A refused inner reply is returned as the
    refusal of this stage (the existing refusal path: the coordinator leaves the participant
    out). Otherwise it encodes the result (clipped, weighted delta or statistics vector, see
    :mod:`phalanx.core.secagg.vectors`), keeps it, and replies with its signed public keys.
``secagg_share_keys``
    Verifies the neighbours' signed keys (a tampered or unsigned advertisement aborts this
    participant's part of the round with a clear refusal) and replies with encrypted shares.
``secagg_masked_input``
    Adds the optional integer noise (``integer_noise``, the hook for distributed DP: Kairouz
    et al., "The Distributed Discrete Gaussian Mechanism", ICML 2021) and the masks; replies with
    the masked ring words and the training metrics of :data:`CLEAR_METRICS` (not ``steps``,
    which would reveal the example count).
``secagg_unmask``
    Replies with the shares the coordinator may have.

Any other stage passes straight to ``call_next``.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

import numpy as np
from numpy.typing import NDArray

from phalanx.core.aggregation.classwise import COUNTS_KEY
from phalanx.core.errors import PhalanxError, ProtocolError
from phalanx.core.messages import Reply, Stage, Task
from phalanx.core.secagg import vectors
from phalanx.core.secagg.client import SecAggClient
from phalanx.core.secagg.crypto import IdentitySigner, IdentityVerifier, SecAggCrypto
from phalanx.core.secagg.params import (
    B_SHARE,
    KEYS,
    PEER_KEYS,
    S_SHARE,
    SHARE,
    AdvertisedKeys,
    InstanceParams,
    as_array,
    as_bytes,
)
from phalanx.core.types import ParticipantId
from phalanx.services.participant import Handler

log = logging.getLogger("phalanx.participant.secure")

CLEAR_METRICS = frozenset({"loss", "epochs"})
"""Training metrics still sent in the clear with the masked input (the rest stay local)."""

IntegerNoise = Callable[[InstanceParams, int], NDArray[np.int64]]
"""``(params, n_words) -> noise``: integer noise (in fixed-point units) added to the encoded
vector before masking. It must stay within the federation's ``secagg.noise_bound`` so the sum
cannot wrap; ``params.scale`` converts real-valued noise to encoded units."""


class SecureAggregation:
    """The participant middleware of secure aggregation.

    Parameters
    ----------
    participant:
        This participant's name (as its identity states it).
    crypto:
        The crypto port (``phalanx.adapters.crypto.CryptographyBackend``).
    signer, verifier:
        This participant's identity, and the check of its neighbours' identities.
    integer_noise:
        Optional distributed-DP noise, see :data:`IntegerNoise` (applied to ``fit`` vectors).
    rng:
        Drives stochastic rounding of the fixed-point encoding (``None``: seeded from each
        task's ``seed``, so a run is reproducible).
    """

    def __init__(
        self,
        participant: ParticipantId,
        crypto: SecAggCrypto,
        signer: IdentitySigner,
        verifier: IdentityVerifier,
        *,
        integer_noise: IntegerNoise | None = None,
        rng: np.random.Generator | None = None,
    ) -> None:
        self.client = SecAggClient(participant, crypto, signer, verifier)
        self.integer_noise = integer_noise
        self.rng = rng
        self._metrics: dict[str, float] = {}

    def __call__(self, task: Task, call_next: Handler) -> Reply:
        """Answer a secure stage, or pass any other task on."""
        if task.stage not in (
            Stage.SECAGG_ADVERTISE,
            Stage.SECAGG_SHARE,
            Stage.SECAGG_MASKED,
            Stage.SECAGG_UNMASK,
        ):
            return call_next(task)
        try:
            params = InstanceParams.from_config(task.config)
            if task.stage is Stage.SECAGG_ADVERTISE:
                return self._advertise(task, params, call_next)
            if task.stage is Stage.SECAGG_SHARE:
                return self._share(task, params)
            if task.stage is Stage.SECAGG_MASKED:
                return self._masked(task, params)
            return self._unmask(task, params)
        except PhalanxError as exc:
            log.warning("%s: %s aborted: %s", self.client.me, task.stage.value, exc)
            return self._reply(task, refused=f"secure aggregation aborted: {exc}")

    def _advertise(self, task: Task, params: InstanceParams, call_next: Handler) -> Reply:
        inner_stage = Stage.FIT if params.kind == "fit" else Stage.STATS
        config = {k: v for k, v in task.config.items() if k != "secagg"}
        inner = Task(
            round=task.round,
            stage=inner_stage,
            schema_hash=task.schema_hash,
            weights=task.weights,
            config=config,
            extras=task.extras,
        )
        plain = call_next(inner)
        if plain.refused:
            return self._reply(task, refused=plain.refused)
        if params.kind == "fit":
            rng = self.rng or np.random.default_rng(
                np.random.SeedSequence([int(task.config.get("seed", 0)), 0x5EC])
            )
            counts = plain.extras.get(COUNTS_KEY)  # class-wise averaging (ADR 0018)
            words = vectors.encode_fit(
                params, plain.arrays, task.weights, plain.num_examples, rng,
                None if counts is None else counts[0],
            )  # fmt: skip
        else:
            if len(plain.arrays) != 1:
                raise ProtocolError(f"statistics reply holds {len(plain.arrays)} arrays, not 1")
            words = vectors.encode_stats(params, plain.arrays[0])
        # scalars only, and none that reveal the example count (``steps`` would)
        self._metrics = {k: v for k, v in plain.metrics.items() if k in CLEAR_METRICS}
        keys = self.client.advertise(params, words)
        return self._reply(task, extras={KEYS: keys.to_arrays()})

    def _share(self, task: Task, params: InstanceParams) -> Reply:
        peers = {
            ParticipantId(k[len(PEER_KEYS) :]): AdvertisedKeys.from_arrays(v, k[len(PEER_KEYS) :])
            for k, v in task.extras.items()
            if k.startswith(PEER_KEYS)
        }
        out = self.client.share_keys(params, peers)
        return self._reply(task, extras={SHARE + p: [as_array(b)] for p, b in out.items()})

    def _masked(self, task: Task, params: InstanceParams) -> Reply:
        received: dict[ParticipantId, bytes] = {}
        for key, arrays in task.extras.items():
            if key.startswith(SHARE) and len(arrays) == 1:
                received[ParticipantId(key[len(SHARE) :])] = as_bytes(arrays[0], key)
        noise = None
        if self.integer_noise is not None and params.kind == "fit":
            noise = np.asarray(self.integer_noise(params, params.length), dtype=np.int64)
        words = self.client.masked_input(params, received, noise)
        return self._reply(task, arrays=[words], metrics=self._metrics)

    def _unmask(self, task: Task, params: InstanceParams) -> Reply:
        survivors = [ParticipantId(str(p)) for p in task.config.get("survivors", [])]
        dropped = [ParticipantId(str(p)) for p in task.config.get("dropped", [])]
        seeds, keys = self.client.unmask(params, survivors, dropped)
        extras = {B_SHARE + p: [as_array(b)] for p, b in seeds.items()}
        extras.update({S_SHARE + p: [as_array(b)] for p, b in keys.items()})
        return self._reply(task, extras=extras)

    def _reply(self, task: Task, **kw: object) -> Reply:
        return Reply(
            participant=self.client.me,
            round=task.round,
            stage=task.stage,
            schema_hash=task.schema_hash,
            **kw,  # type: ignore[arg-type]
        )
