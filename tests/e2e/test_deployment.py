"""End-to-end: a coordinator and participants as separate processes, mutual TLS on loopback."""

from __future__ import annotations

import json
import os
import signal
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from phalanx.adapters.crypto import CryptographyBackend, simulation_identities
from phalanx.adapters.inproc import InProcessTransport
from phalanx.cli.participant import load_local_data
from phalanx.core.aggregation import make_algorithm
from phalanx.core.rounds import Federation, FederationPlan
from phalanx.core.secagg.params import SecAggSettings
from phalanx.core.types import ParticipantId
from phalanx.models.bundle import load_model
from phalanx.models.federated import build_model
from phalanx.services.coordinator import Coordinator
from phalanx.services.participant import Participant
from phalanx.services.secure import SecureAggregation
from tests.e2e.federation import Federation as Deployed
from tests.e2e.federation import free_port

torch.set_num_threads(1)
SPEC = {
    "kind": "mlp",
    "hidden": [32, 16],
    "dropout": 0.0,
    "lr": 0.003,
    "batch_size": 128,
    "class_weight": "balanced",
}


def _simulate(dep: Deployed, wrap: Any = None) -> list[np.ndarray]:
    """The same federation, same seed, over the in-process transport (secure aggregation as the
    deployment has it, with throwaway simulation identities); ``wrap`` may wrap the transport."""
    ids = [ParticipantId(org) for org in dep.orgs]
    signers, verifier = simulation_identities(ids)
    crypto = CryptographyBackend()
    parts = {
        pid: Participant(
            pid,
            load_local_data(dep.data_spec(i), "auto"),
            middleware=[SecureAggregation(pid, crypto, signers[pid], verifier)],
        )
        for i, pid in enumerate(ids)
    }
    first = next(iter(parts.values()))
    plan = FederationPlan(
        rounds=dep.rounds,
        min_participants=dep.minimum or len(dep.orgs),
        seed=3,
        train_config={"model": SPEC, "local_epochs": 1},
        secure_aggregation=dep.secure,
        secagg=SecAggSettings(min_members=min(3, len(ids))),
    )

    def init(n: int) -> list[np.ndarray]:
        return build_model(SPEC, n, {"seed": 3}).get_weights()

    fed = Federation(plan, first.train.schema, make_algorithm("fedavg"), init, crypto=crypto)
    transport = InProcessTransport({p: h.handle for p, h in parts.items()})
    Coordinator(fed, wrap(transport) if wrap is not None else transport).run()
    return fed.weights


def test_networked_federation_completes_and_equals_the_simulation(tmp_path: Path) -> None:
    dep = Deployed(tmp_path, ["office", "datacenter", "iot-ot"], rounds=2, port=free_port())
    try:
        dep.start_coordinator()
        for i in range(3):
            dep.start_participant(i)
        dep.wait_rounds(2, timeout_s=240)
        assert dep.procs["coordinator"].wait(timeout=60) == 0, dep.log("coordinator")
        for org in dep.orgs:
            assert dep.procs[org].wait(timeout=60) == 0, dep.log(org)
    finally:
        dep.stop_all()
    store = dep.store()
    try:
        events = [e.event for e in store.audit_events()]
        versions = store.model_versions()
    finally:
        store.close()
    assert "federation.finished" in events
    assert [v.round for v in versions] == [1, 2]
    model, _ = load_model(Path(versions[-1].path))
    networked = model.get_weights()
    for a, b in zip(networked, _simulate(dep), strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    # participants log what they sent (sizes and hashes), never data
    log = dep.log("office")
    assert "sha256" in log and "bytes" in log


@pytest.mark.slow
def test_coordinator_kill9_and_restart_resumes_without_losing_or_repeating_a_round(
    tmp_path: Path,
) -> None:
    dep = Deployed(tmp_path, ["office", "bank"], rounds=4, port=free_port(), flows=30_000)
    try:
        coord = dep.start_coordinator()
        for i in range(2):
            dep.start_participant(i)
        dep.wait_rounds(1, timeout_s=240)
        os.kill(coord.pid, signal.SIGKILL)
        coord.wait(timeout=30)
        dep.start_coordinator()
        dep.wait_rounds(4, timeout_s=300)
        assert dep.procs["coordinator"].wait(timeout=60) == 0, dep.log("coordinator")
    finally:
        dep.stop_all()
    store = dep.store()
    try:
        rounds = [r for r in store.rounds() if r.state == "completed"]
        events = store.audit_events()
    finally:
        store.close()
    assert sorted(r.round for r in rounds) == [1, 2, 3, 4]
    completed = [e for e in events if e.event == "round.completed"]
    assert sorted(json.loads(json.dumps(e.detail)).get("round") for e in completed) == [1, 2, 3, 4]
    resumed = [e for e in events if e.event == "coordinator.resumed"]
    assert len(resumed) == 1
    assert 1 <= resumed[0].detail["round"] < 4  # killed mid-federation, not after it


@pytest.mark.slow
def test_a_participant_killed_mid_federation_does_not_stop_it(tmp_path: Path) -> None:
    dep = Deployed(
        tmp_path,
        ["office", "bank", "hospital"],
        rounds=3,
        port=free_port(),
        minimum=2,
        deadline_s=8.0,
        flows=30_000,
        secure=False,  # two survivors: below secure aggregation's three-member minimum
    )
    try:
        dep.start_coordinator()
        for i in range(3):
            dep.start_participant(i)
        dep.wait_rounds(1, timeout_s=240)
        dep.procs["hospital"].kill()
        dep.wait_rounds(3, timeout_s=300)
        assert dep.procs["coordinator"].wait(timeout=60) == 0, dep.log("coordinator")
    finally:
        dep.stop_all()
    store = dep.store()
    try:
        last = [r for r in store.rounds() if r.state == "completed"][-1]
    finally:
        store.close()
    assert "hospital" not in last.participants
    assert sorted(last.participants) == ["bank", "office"]


def test_a_revoked_participant_is_refused_and_audited(tmp_path: Path) -> None:
    from phalanx.adapters.pki import revoke

    # one participant left: secure aggregation would (rightly) refuse a sum over one member
    dep = Deployed(
        tmp_path, ["office", "bank"], rounds=1, port=free_port(), minimum=1, secure=False
    )
    revoke(
        tmp_path / "pki", cert=tmp_path / "pki/participants/bank/cert.pem", reason="key_compromise"
    )
    try:
        dep.start_coordinator()
        dep.start_participant(0)
        bank = dep.start_participant(1)
        assert bank.wait(timeout=120) != 0  # the agent stops: retrying cannot help
        dep.wait_rounds(1, timeout_s=240)
    finally:
        dep.stop_all()
    store = dep.store()
    try:
        refusals = [e for e in store.audit_events() if e.event == "auth.refused"]
    finally:
        store.close()
    assert any("revoked" in json.dumps(e.detail) for e in refusals)
    assert "refused" in dep.log("bank").lower()


def test_status_and_model_pull_from_the_command_line(tmp_path: Path) -> None:
    import time

    from typer.testing import CliRunner

    from phalanx.cli.main import app

    dep = Deployed(tmp_path, ["office"], rounds=1, port=free_port())
    admin = str(tmp_path / "pki/admins/ops")
    addr = f"127.0.0.1:{dep.port}"
    runner = CliRunner()
    try:
        dep.start_coordinator()
        for _ in range(100):
            res = runner.invoke(
                app, ["status", "--coordinator", addr, "--identity", admin, "--json"]
            )
            if res.exit_code == 0:
                break
            time.sleep(0.2)
        assert res.exit_code == 0, res.output
        doc = json.loads(res.output)
        assert doc["federation"] == "e2e-fed"
        assert doc["round"] == 0
        assert doc["connected"] == []
        assert doc["enrolled"] == ["office"]
        res = runner.invoke(
            app,
            [
                "model",
                "pull",
                "--coordinator",
                addr,
                "--identity",
                admin,
                "--out",
                str(tmp_path / "m"),
            ],
        )
        assert res.exit_code == 2
        assert "model" in res.output.lower()
        # a participant identity may not call the admin status
        office = str(tmp_path / "pki/participants/office")
        res = runner.invoke(app, ["status", "--coordinator", addr, "--identity", office])
        assert res.exit_code == 2
    finally:
        dep.stop_all()


@pytest.mark.slow
def test_too_few_participants_is_retried_then_a_clear_failure(tmp_path: Path) -> None:
    dep = Deployed(tmp_path, ["office", "bank"], rounds=2, port=free_port(), deadline_s=3.0)
    try:
        coord = dep.start_coordinator()
        dep.start_participant(0)  # 'bank' never comes: min is 2
        assert coord.wait(timeout=240) == 2
    finally:
        dep.stop_all()
    log = dep.log("coordinator")
    assert any(
        why in log
        for why in ("usable replies", "no participant", "secure aggregation needs at least 2")
    )
    store = dep.store()
    try:
        rounds = store.rounds()
    finally:
        store.close()
    assert [(r.round, r.state) for r in rounds][-1] == (1, "failed")


def _wait_until_serving(dep: Deployed) -> None:
    import time

    from phalanx.cli.common import connect
    from phalanx.core.errors import PhalanxError

    client = connect(f"127.0.0.1:{dep.port}", dep.root / "pki/admins/ops")
    try:
        for _ in range(150):
            try:
                client.status()
                return
            except PhalanxError:
                time.sleep(0.2)
    finally:
        client.close()
    raise AssertionError(f"coordinator never served:\n{dep.log('coordinator')}")


def test_foreign_expired_and_missing_certificates_are_refused_and_audited(tmp_path: Path) -> None:
    from datetime import UTC, datetime, timedelta

    from phalanx.adapters.grpc.client import CoordinatorClient
    from phalanx.adapters.pki import init_ca, issue, load_identity
    from phalanx.core.errors import PhalanxError

    dep = Deployed(tmp_path, ["office"], rounds=1, port=free_port())
    now = datetime.now(UTC)
    issue(
        tmp_path / "pki",
        "participant",
        "office",
        out=tmp_path / "expired",
        not_before=now - timedelta(days=30),
        not_after=now - timedelta(days=1),
    )
    init_ca(tmp_path / "rogue", "e2e-fed")  # same federation name, another CA
    issue(tmp_path / "rogue", "participant", "office")
    ca = (tmp_path / "pki/ca.crt").read_bytes()
    attempts = {
        "expired": load_identity(tmp_path / "expired").read()[:2],
        "foreign": load_identity(tmp_path / "rogue/participants/office").read()[:2],
        "none": (None, None),
    }
    try:
        dep.start_coordinator()
        _wait_until_serving(dep)
        for key, cert in attempts.values():
            client = CoordinatorClient(
                f"127.0.0.1:{dep.port}", ca_cert=ca, cert=cert, key=key, call_timeout_s=5.0
            )
            with pytest.raises(PhalanxError):
                client.pull_task(wait_s=0.1)
            client.close()
        assert dep.procs["coordinator"].poll() is None  # still serving
    finally:
        dep.stop_all()
    store = dep.store()
    try:
        reasons = " ".join(
            json.dumps(e.detail) for e in store.audit_events(event="tls.handshake_refused")
        ).lower()
    finally:
        store.close()
    assert "expired" in reasons
    assert "issuer" in reasons or "unknown ca" in reasons
    assert "certificate" in reasons
