"""The deployed coordinator keeps suspicion scores, quarantines a poisoner, and remembers it.

The coordinator host is the production one (`CoordinatorHost`, its store and quarantine policy);
only the transport is in-process, and the attacker is the simulation's sign-flipping middleware.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

from phalanx.adapters.inproc import InProcessTransport
from phalanx.adapters.pki import init_ca, issue
from phalanx.cli.config import load_config
from phalanx.cli.coordinator import CoordinatorHost
from phalanx.cli.participant import load_local_data
from phalanx.core.types import ParticipantId
from phalanx.services.coordinator import Coordinator
from phalanx.services.participant import Participant
from phalanx.services.quarantine import QuarantineTransport
from phalanx.sim.attacks import AttackMiddleware, AttackPlan

torch.set_num_threads(1)
ORGS = ["office", "bank", "hospital", "datacenter", "isp-edge"]
ATTACKER = ParticipantId("bank")


def _config(root: Path) -> Path:
    init_ca(root / "pki", "guarded-fed")
    issue(root / "pki", "coordinator", "localhost")
    path = root / "federation.toml"
    path.write_text(
        '[federation]\nname = "guarded-fed"\n\n[model]\nhidden = [16]\n\n'
        '[training]\nalgorithm = "median"\nrounds = 4\nseed = 5\n'
        "secure_aggregation = false\nquarantine_after = 1\n\n"
        f"[participants]\nenrolled = {json.dumps(ORGS)}\nmin = 3\n"
    )
    return path


def test_a_sign_flipper_is_scored_quarantined_and_stays_out_after_a_restart(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path)
    host = CoordinatorHost(load_config(config))
    try:
        plan = AttackPlan("sign-flip", (ATTACKER,), scale=10.0)
        handlers = {}
        for i, org in enumerate(ORGS):
            pid = ParticipantId(org)
            mw = [AttackMiddleware(plan, len(ORGS))] if pid == ATTACKER else []
            data = load_local_data(f"synthetic:office:400:{i}", "auto")
            handlers[pid] = Participant(pid, data, middleware=mw).handle
        transport = QuarantineTransport(InProcessTransport(handlers), host.quarantine)
        host.coordinator = Coordinator(
            host.federation, transport, on_round=host.on_round, on_stage=host.on_stage
        )
        history = host.coordinator.run()
        assert [r.round for r in history] == [1, 2, 3, 4]
        assert ATTACKER in history[0].participants
        assert history[0].suspicion[ATTACKER]["flagged"] == 1.0
        honest_flags = [
            s["flagged"] for r in history for p, s in r.suspicion.items() if p != ATTACKER
        ]
        assert honest_flags and max(honest_flags) == 0.0
        for record in history[1:]:  # quarantined after its first flagged round
            assert ATTACKER not in record.participants
        flagged = host.store.flagged_counts()
        assert flagged["bank"][0] >= 1
        events = host.store.audit_events(event="participant.quarantined")
        assert [e.detail["name"] for e in events] == ["bank"]
        status = host.status()  # what `phalanx status` shows an admin
        assert status["quarantined"] == ["bank"]
        assert status["suspicious"]["bank"]["flagged_rounds"] >= 1
    finally:
        host.store.close()

    restarted = CoordinatorHost(load_config(config))
    try:
        assert ATTACKER in restarted.quarantine.excluded
        assert restarted.quarantine.flags[ATTACKER] >= 1
    finally:
        restarted.store.close()
