"""SecAgg+ client and server state machines: masked sum == plain sum under any dropout pattern."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phalanx.adapters.crypto import CryptographyBackend, simulation_identities
from phalanx.core.errors import SecAggError, TrustError
from phalanx.core.secagg.client import SecAggClient
from phalanx.core.secagg.params import AdvertisedKeys, InstanceParams
from phalanx.core.secagg.server import BucketServer
from phalanx.core.types import ParticipantId

LENGTH = 40


def _setup(
    n: int, degree: int, seed: int
) -> tuple[
    InstanceParams, dict[ParticipantId, SecAggClient], BucketServer, dict[ParticipantId, np.ndarray]
]:
    ids = tuple(ParticipantId(f"org-{i:02d}") for i in range(n))
    crypto = CryptographyBackend(np.random.default_rng(seed).bytes)
    signers, verifier = simulation_identities(list(ids))
    params = InstanceParams(
        f"r1-fit-{seed:x}", "fit", (ids,), degree, seed, 32, 1.0, 1.0, 1, LENGTH
    )
    clients = {p: SecAggClient(p, crypto, signers[p], verifier) for p in ids}
    rng = np.random.default_rng(seed + 1)
    inputs = {p: rng.integers(0, 2**32, LENGTH, dtype=np.uint32) for p in ids}
    return params, clients, BucketServer(params, ids, crypto), inputs


def _run(
    params: InstanceParams,
    clients: dict[ParticipantId, SecAggClient],
    server: BucketServer,
    inputs: dict[ParticipantId, np.ndarray],
    drops: list[set[ParticipantId]],
) -> np.ndarray:
    """Run the four stages; members in ``drops[i]`` vanish before answering stage ``i + 1``."""
    gone: set[ParticipantId] = set()

    def alive(stage: int, members: list[ParticipantId]) -> list[ParticipantId]:
        gone.update(drops[stage])
        return [p for p in members if p not in gone]

    keys = {p: clients[p].advertise(params, inputs[p]) for p in alive(0, list(clients))}
    server.receive_keys(keys)
    shares = {}
    for p in alive(1, sorted(server.keys)):
        try:
            shares[p] = clients[p].share_keys(params, server.peer_keys(p))
        except SecAggError:
            gone.add(p)  # an aborting client is a dropout
    server.receive_shares(shares)
    masked = {}
    for p in alive(2, sorted(server.shared)):
        try:
            masked[p] = clients[p].masked_input(params, server.shares_for(p))
        except SecAggError:
            gone.add(p)
    server.receive_masked(masked)
    seeds, keyshares = {}, {}
    for p in alive(3, server.survivors):
        try:
            seeds[p], keyshares[p] = clients[p].unmask(params, server.survivors, server.dropped)
        except SecAggError:
            gone.add(p)
    return server.finish(seeds, keyshares)


@settings(max_examples=30, deadline=None)
@given(n=st.integers(3, 9), degree=st.integers(2, 8), seed=st.integers(0, 10_000), data=st.data())
def test_masked_sum_equals_plain_sum_for_any_surviving_set_above_threshold(
    n: int, degree: int, seed: int, data: st.DataObject
) -> None:
    params, clients, server, inputs = _setup(n, degree, seed)
    ids = sorted(clients)
    drops = [set(data.draw(st.lists(st.sampled_from(ids), max_size=2))) for _ in range(4)]
    try:
        total = _run(params, clients, server, inputs, drops)
    except SecAggError as exc:
        reason = str(exc)  # an abort is only allowed when a neighbourhood fell below threshold
        assert "at least" in reason
        assert sum(len(d) for d in drops) >= 1
        return
    expected = np.zeros(LENGTH, dtype=np.uint32)
    for p in server.survivors:
        expected += inputs[p]
    np.testing.assert_array_equal(total, expected)
    # members whose neighbours all vanished abort themselves; nobody else is lost
    assert set(server.survivors) <= set(ids) - drops[0] - drops[1] - drops[2]
    if not any(drops[:3]):
        assert set(server.survivors) == set(ids)


@pytest.mark.parametrize("stage", [0, 1, 2, 3])
def test_one_dropout_at_each_stage_is_recovered(stage: int) -> None:
    params, clients, server, inputs = _setup(7, 6, stage)
    victim = ParticipantId("org-03")
    drops: list[set[ParticipantId]] = [set(), set(), set(), set()]
    drops[stage].add(victim)
    total = _run(params, clients, server, inputs, drops)
    included = [p for p in clients if stage >= 3 or p != victim]
    expected = np.zeros(LENGTH, dtype=np.uint32)
    for p in included:
        expected += inputs[p]
    np.testing.assert_array_equal(total, expected)
    assert (victim in server.dropped) == (stage == 2)


def test_too_many_dropouts_abort_with_a_clear_error() -> None:
    params, clients, server, inputs = _setup(5, 4, 1)
    drops = [
        set(),
        set(),
        {ParticipantId("org-00"), ParticipantId("org-01"), ParticipantId("org-02")},
        set(),
    ]
    with pytest.raises(SecAggError, match="at least 3 are needed"):
        _run(params, clients, server, inputs, drops)


def test_a_participant_never_reveals_both_shares_of_a_peer() -> None:
    params, clients, server, inputs = _setup(4, 3, 2)
    _run_until_unmask(params, clients, server, inputs)
    a, b = ParticipantId("org-00"), ParticipantId("org-01")
    with pytest.raises(SecAggError, match="both surviving and dropped"):
        clients[a].unmask(params, [a, b], [b])
    clients[a].unmask(params, server.survivors, [])
    with pytest.raises(SecAggError, match="no running secure aggregation"):
        clients[a].unmask(params, server.survivors, [])  # answered once only


def _run_until_unmask(
    params: InstanceParams,
    clients: dict[ParticipantId, SecAggClient],
    server: BucketServer,
    inputs: dict[ParticipantId, np.ndarray],
) -> None:
    server.receive_keys({p: c.advertise(params, inputs[p]) for p, c in clients.items()})
    server.receive_shares(
        {p: c.share_keys(params, server.peer_keys(p)) for p, c in clients.items()}
    )
    server.receive_masked(
        {p: c.masked_input(params, server.shares_for(p)) for p, c in clients.items()}
    )


def test_tampered_or_unsigned_keys_make_honest_participants_abort() -> None:
    params, clients, server, inputs = _setup(4, 3, 3)
    server.receive_keys({p: c.advertise(params, inputs[p]) for p, c in clients.items()})
    victim = ParticipantId("org-02")
    peers = server.peer_keys(ParticipantId("org-00"))
    good = peers[victim]
    forged = dict(peers)
    forged[victim] = AdvertisedKeys(bytes(32), good.mask_pk, good.signature, good.credential)
    with pytest.raises(TrustError, match=r"org-02.*do not verify"):
        clients[ParticipantId("org-00")].share_keys(params, forged)
    unsigned = server.peer_keys(ParticipantId("org-01"))
    unsigned[victim] = AdvertisedKeys(good.enc_pk, good.mask_pk, b"", b"")
    with pytest.raises(TrustError, match="not signed"):
        clients[ParticipantId("org-01")].share_keys(params, unsigned)


def test_an_instance_is_never_run_twice_and_stages_keep_their_order() -> None:
    params, clients, _, inputs = _setup(3, 2, 4)
    c = clients[ParticipantId("org-00")]
    c.advertise(params, inputs[ParticipantId("org-00")])
    with pytest.raises(SecAggError, match="already run"):
        c.advertise(params, inputs[ParticipantId("org-00")])
    with pytest.raises(SecAggError, match="stage"):
        c.masked_input(params, {})
    with pytest.raises(SecAggError, match="words"):
        clients[ParticipantId("org-01")].advertise(params, np.zeros(3, dtype=np.uint32))
