"""The secure-aggregation participant middleware, over real participants and a real transport."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import numpy as np
import pytest
import torch

from phalanx.adapters.crypto import CryptographyBackend, simulation_identities
from phalanx.adapters.inproc import InProcessTransport
from phalanx.core.aggregation import make_algorithm
from phalanx.core.errors import RoundError, SecAggError
from phalanx.core.messages import Reply, Stage, Task
from phalanx.core.rounds import Federation, FederationPlan
from phalanx.core.secagg.params import PEER_KEYS, InstanceParams, SecAggSettings
from phalanx.core.types import ParticipantId
from phalanx.data.synthetic import generate_federation
from phalanx.models.federated import build_model
from phalanx.services.coordinator import Coordinator
from phalanx.services.participant import Handler, Middleware, ModelCache, Participant
from phalanx.services.secure import SecureAggregation

torch.set_num_threads(1)
SPEC = {"kind": "mlp", "hidden": [16], "dropout": 0.0}
IDS = [ParticipantId(f"org-{i}") for i in range(5)]
ORGS = generate_federation(5, 600, seed=2)


def _federation(
    secure: bool,
    *,
    inner: Mapping[ParticipantId, list[Middleware]] | None = None,
    rounds: int = 1,
    settings: SecAggSettings | None = None,
) -> tuple[Federation, InProcessTransport]:
    crypto = CryptographyBackend()
    signers, verifier = simulation_identities(IDS)
    parts = {
        p: Participant(
            p,
            batch,
            models=ModelCache(),
            middleware=([SecureAggregation(p, crypto, signers[p], verifier)] if secure else [])
            + list((inner or {}).get(p, [])),
        )
        for p, batch in zip(IDS, ORGS, strict=True)
    }
    plan = FederationPlan(
        rounds=rounds,
        seed=4,
        min_participants=3,
        train_config={"model": SPEC, "local_epochs": 1},
        secure_aggregation=secure,
        secagg=settings or SecAggSettings(),
    )
    fed = Federation(
        plan,
        ORGS[0].schema,
        make_algorithm("fedavg"),
        lambda n: build_model(SPEC, n, {"seed": 4}).get_weights(),
        crypto=crypto,
    )
    return fed, InProcessTransport({p: h.handle for p, h in parts.items()})


def test_secure_federation_matches_the_plain_one_within_quantization() -> None:
    plain, t1 = _federation(False, rounds=2)
    Coordinator(plain, t1).run()
    secure, t2 = _federation(True, rounds=2)
    history = Coordinator(secure, t2).run()
    assert [h.participants for h in history] == [tuple(IDS)] * 2
    # the loss travels in the clear, the step count (which reveals the example count) does not
    assert "loss" in history[-1].train_metrics and "steps" not in history[-1].train_metrics
    assert plain.transform is not None and secure.transform is not None
    np.testing.assert_allclose(secure.transform.mean, plain.transform.mean, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(secure.transform.scale, plain.transform.scale, rtol=1e-6)
    for a, b in zip(secure.weights, plain.weights, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-4)


class _Tampering:
    """A malicious coordinator's relay: swaps one participant's advertised key on the way."""

    def __init__(self, inner: InProcessTransport, victim: ParticipantId, mode: str) -> None:
        self.inner, self.victim, self.mode = inner, victim, mode

    def available(self) -> list[ParticipantId]:
        return self.inner.available()

    def exchange(
        self, tasks: Mapping[ParticipantId, Task], *, deadline_s: float | None = None
    ) -> dict[ParticipantId, Reply]:
        changed = {}
        for p, t in tasks.items():
            key = PEER_KEYS + self.victim
            if t.stage is Stage.SECAGG_SHARE and key in t.extras:
                enc, mask, sig, cred = t.extras[key]
                if self.mode == "tamper":
                    enc = np.zeros_like(enc)
                else:
                    sig = np.zeros(0, dtype=np.uint8)
                t = replace(t, extras={**t.extras, key: [enc, mask, sig, cred]})
            changed[p] = t
        return self.inner.exchange(changed, deadline_s=deadline_s)

    bytes_down = property(lambda self: self.inner.bytes_down)
    bytes_up = property(lambda self: self.inner.bytes_up)

    def close(self) -> None:
        self.inner.close()


@pytest.mark.parametrize(("mode", "why"), [("tamper", "do not verify"), ("strip", "not signed")])
def test_a_tampered_or_unsigned_key_advertisement_aborts_the_round(mode: str, why: str) -> None:
    fed, transport = _federation(True)
    coordinator = Coordinator(fed, _Tampering(transport, IDS[0], mode), max_retries=0)
    with pytest.raises((RoundError, SecAggError), match=why) as err:
        coordinator.run()
    assert "org-0" in str(err.value)


def test_a_refusal_inside_the_middleware_takes_the_existing_refusal_path() -> None:
    def budget_spent(task: Task, call_next: Handler) -> Reply:
        if task.stage is Stage.FIT:
            return Reply(IDS[4], task.round, task.stage, task.schema_hash, refused="budget spent")
        return call_next(task)

    fed, transport = _federation(True, inner={IDS[4]: [budget_spent]})
    (record,) = Coordinator(fed, transport).run()
    assert IDS[4] not in record.participants
    assert record.refused[IDS[4]] == "budget spent"


def test_integer_noise_is_added_to_the_encoded_vector_before_masking() -> None:
    calls: list[int] = []
    units = 1000

    def noise(params: InstanceParams, n: int) -> np.ndarray:
        calls.append(n)
        out = np.full(n, units, dtype=np.int64)
        out[-1] = 0  # leave the weight word alone
        return out

    crypto = CryptographyBackend()
    signers, verifier = simulation_identities(IDS[:3])
    weights = [np.zeros((2, 2), np.float32)]
    params = InstanceParams("r1-fit-n", "fit", (tuple(IDS[:3]),), 2, 0, 32, 2.0**20, 10.0, 10, 5)
    totals = []
    for use_noise in (False, True):
        mws = {
            p: SecureAggregation(
                p,
                crypto,
                signers[p],
                verifier,
                integer_noise=noise if use_noise else None,
                rng=np.random.default_rng(0),
            )
            for p in IDS[:3]
        }
        totals.append(_one_secure_sum(mws, params, weights))
    assert calls == [5, 5, 5]
    diff = (totals[1] - totals[0]).astype(np.int64)
    np.testing.assert_array_equal(diff, [3 * units] * 4 + [0])


def _one_secure_sum(
    mws: dict[ParticipantId, SecureAggregation], params: InstanceParams, weights: list[np.ndarray]
) -> np.ndarray:
    from phalanx.core.secagg.params import B_SHARE, KEYS, S_SHARE, SHARE, AdvertisedKeys, as_array
    from phalanx.core.secagg.round import _named, _single
    from phalanx.core.secagg.server import BucketServer

    def trained(task: Task) -> Reply:
        return Reply(task.participant if False else IDS[0], 1, Stage.FIT, "h",
                     [w + 0.5 for w in task.weights], 10)  # fmt: skip

    server = BucketServer(params, params.buckets[0], CryptographyBackend())
    cfg = {"secagg": params.to_json()}
    task = Task(1, Stage.SECAGG_ADVERTISE, "h", weights, cfg)
    replies = {p: m(task, trained) for p, m in mws.items()}
    server.receive_keys(
        {p: AdvertisedKeys.from_arrays(r.extras[KEYS], p) for p, r in replies.items()}
    )
    replies = {
        p: m(Task(1, Stage.SECAGG_SHARE, "h", [], cfg,
                  {PEER_KEYS + v: k.to_arrays() for v, k in server.peer_keys(p).items()}), trained)
        for p, m in mws.items()
    }  # fmt: skip
    server.receive_shares({p: _named(r, SHARE) for p, r in replies.items()})
    replies = {
        p: m(Task(1, Stage.SECAGG_MASKED, "h", [], cfg,
                  {SHARE + v: [as_array(b)] for v, b in server.shares_for(p).items()}), trained)
        for p, m in mws.items()
    }  # fmt: skip
    server.receive_masked({p: _single(r, params.length, 32) for p, r in replies.items()})
    ucfg = {**cfg, "survivors": server.survivors, "dropped": server.dropped}
    replies = {p: m(Task(1, Stage.SECAGG_UNMASK, "h", [], ucfg), trained) for p, m in mws.items()}
    return server.finish(
        {p: _named(r, B_SHARE) for p, r in replies.items()},
        {p: _named(r, S_SHARE) for p, r in replies.items()},
    )


def test_updates_are_clipped_to_the_bound_before_encoding() -> None:
    from phalanx.core.secagg.vectors import decode_fit, encode_fit

    params = InstanceParams("r1-fit-c", "fit", ((IDS[0], IDS[1]),), 1, 0, 32, 2.0**16, 1.0, 100, 5)
    g = [np.zeros((2, 2), np.float32)]
    words = encode_fit(params, [np.full((2, 2), 10.0, np.float32)], g, 100, None)
    decoded = decode_fit(params, words, g)
    assert decoded is not None and decoded.class_weights is None
    assert decoded.weight == 1.0
    assert np.linalg.norm(decoded.weights[0]) == pytest.approx(1.0, abs=1e-4)
    with pytest.raises(SecAggError, match="layer shapes"):
        encode_fit(params, [np.zeros(3, np.float32)], g, 1, None)


def test_uniform_weights_divide_by_the_member_count_not_the_noisy_weight_word() -> None:
    """Distributed DP (weight_cap 1) puts noise shares on the weight word too: the bucket mean
    divides by the public member count, so noise that drives the word to zero or below neither
    fails the round nor rescales the mean."""
    from phalanx.core.secagg.vectors import decode_fit, encode_fit

    members = (IDS[0], IDS[1], IDS[2])
    params = InstanceParams("r1-fit-u", "fit", (members,), 1, 0, 32, 2.0**16, 1.0, 1, 5)
    g = [np.zeros((2, 2), np.float32)]
    deltas = [np.full((2, 2), v, np.float32) for v in (0.1, 0.2, 0.3)]
    total = sum(encode_fit(params, [d], g, 50, None).astype(np.uint64) for d in deltas)
    noisy = np.asarray(total, np.uint64)
    noisy[4] = (int(noisy[4]) - int(3.5 * 2.0**16)) % 2**32  # weight word: 3 - 3.5 < 0
    noisy = (noisy % 2**32).astype(np.uint32)
    assert decode_fit(params, noisy, g) is None  # the word alone says "weightless"
    decoded = decode_fit(params, noisy, g, members=3)
    assert decoded is not None and decoded.weight == 3.0
    np.testing.assert_allclose(decoded.weights[0], np.full((2, 2), 0.2), atol=1e-4)
    capped = InstanceParams("r1-fit-w", "fit", (members,), 1, 0, 32, 2.0**16, 1.0, 100, 5)
    words = encode_fit(capped, [deltas[0]], g, 50, None)
    assert decode_fit(capped, words, g, members=3).weight == pytest.approx(0.5)  # type: ignore[union-attr]


def test_other_stages_pass_through_and_bad_parameters_are_refused_clearly() -> None:
    crypto = CryptographyBackend()
    signers, verifier = simulation_identities(IDS[:1])
    mw = SecureAggregation(IDS[0], crypto, signers[IDS[0]], verifier)
    plain = Reply(IDS[0], 1, Stage.EVALUATE, "h")
    assert mw(Task(1, Stage.EVALUATE, "h"), lambda t: plain) is plain
    bad = mw(Task(1, Stage.SECAGG_SHARE, "h", config={}), lambda t: plain)
    assert "lacks its 'secagg' parameters" in bad.refused


@pytest.mark.parametrize("stage", [s for s in Stage if s.value.startswith("secagg_")])
def test_secure_stages_and_their_extras_cross_both_wire_formats(stage: Stage) -> None:
    from phalanx.adapters.grpc import codec
    from phalanx.core import messages

    extras = {"sa:keys:org-1": [np.arange(32, dtype=np.uint8), np.zeros(70, np.uint8)]}
    task = Task(3, stage, "h", [], {"secagg": {"instance": "r3-fit-1"}}, extras)
    masked = np.arange(10, dtype=np.uint32) * 4_000_000_000
    reply = Reply(
        IDS[0],
        3,
        stage,
        "h",
        [masked],
        0,
        {"loss": 1.0},
        {"sa:b:org-2": [extras["sa:keys:org-1"][0]]},
    )
    for enc_t, dec_t, enc_r, dec_r in (
        (codec.encode_task, codec.decode_task, codec.encode_reply, codec.decode_reply),
        (messages.encode_task, messages.decode_task, messages.encode_reply, messages.decode_reply),
    ):
        t = dec_t(enc_t(task))
        assert t.stage is stage and t.config == task.config
        np.testing.assert_array_equal(t.extras["sa:keys:org-1"][1], extras["sa:keys:org-1"][1])
        r = dec_r(enc_r(reply))
        assert r.stage is stage and r.arrays[0].dtype == np.uint32
        np.testing.assert_array_equal(r.arrays[0], masked)
        np.testing.assert_array_equal(r.extras["sa:b:org-2"][0], np.arange(32, dtype=np.uint8))
