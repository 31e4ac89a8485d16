"""``federation.toml``'s ``[privacy]`` section drives DP in a deployed federation.

The coordinator sends the DP parameters with every training task and, for ``client-central``,
adds the noise itself; each participant's own guard charges its own ledger and refuses a task
that would take it past its own budget, and the federation goes on without it.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from phalanx.adapters.accounting import RdpAccountant
from phalanx.adapters.inproc import InProcessTransport
from phalanx.adapters.pki import init_ca, issue
from phalanx.adapters.store.ledger import SqliteLedger
from phalanx.cli.config import load_config
from phalanx.cli.coordinator import CoordinatorHost
from phalanx.cli.participant import load_local_data
from phalanx.core.errors import ConfigError, PhalanxError
from phalanx.core.privacy import Budget, DPFedAvg
from phalanx.core.types import ParticipantId
from phalanx.services.coordinator import Coordinator
from phalanx.services.participant import Participant
from phalanx.services.privacy import PrivacyGuard

torch.set_num_threads(1)
ORGS = ["office", "bank", "hospital"]


def _config(root: Path, privacy: str, *, secure: bool = False, rounds: int = 2) -> Path:
    init_ca(root / "pki", "dp-fed")
    issue(root / "pki", "coordinator", "localhost")
    path = root / "federation.toml"
    path.write_text(
        '[federation]\nname = "dp-fed"\n\n[model]\nhidden = [16]\n\n'
        f"[training]\nrounds = {rounds}\nseed = 3\n"
        f"secure_aggregation = {str(secure).lower()}\n\n"
        f"[privacy]\n{privacy}\n\n"
        f"[participants]\nenrolled = {json.dumps(ORGS)}\nmin = 2\n"
    )
    return path


def _attach_members(
    host: CoordinatorHost, root: Path, budgets: dict[str, float]
) -> dict[str, SqliteLedger]:
    """Give ``host`` an in-process coordinator over the three members, each behind its own
    privacy guard with its own budget and ledger; returns the ledgers."""
    ledgers: dict[str, SqliteLedger] = {}
    handlers = {}
    for i, org in enumerate(ORGS):
        batch = load_local_data(f"synthetic:{org}:400:{i}", "auto")
        ledgers[org] = SqliteLedger(root / f"{org}.sqlite")
        guard = PrivacyGuard(
            ParticipantId(org),
            ledger=ledgers[org],
            accountant=RdpAccountant(),
            budget=Budget(budgets[org], 1e-5),
            num_examples=len(batch),
        )
        part = Participant(ParticipantId(org), batch, middleware=[guard])
        handlers[ParticipantId(org)] = part.handle
    host.coordinator = Coordinator(
        host.federation,
        InProcessTransport(handlers),
        on_round=host.on_round,
        on_stage=host.on_stage,
        retry_wait_s=0.0,
    )
    return ledgers


def test_client_central_dp_is_charged_by_each_participant_and_a_tight_budget_refuses(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path, 'mode = "client-central"\nepsilon = 5.0\nclip = 1.0')
    host = CoordinatorHost(load_config(config))
    try:
        assert isinstance(host.federation.algorithm, DPFedAvg)
        assert host.federation.plan.train_config["dp"]["mode"] == "client-central"
        budgets = {"office": 20.0, "bank": 20.0, "hospital": 0.05}  # hospital's is too tight
        ledgers = _attach_members(host, tmp_path, budgets)
        history = host.coordinator.run()
        assert [r.round for r in history] == [1, 2]
        first, second = history
        assert "privacy budget" in first.refused[ParticipantId("hospital")]
        # a spent budget stays spent: the hospital is not asked to train again
        assert second.refused == {} and list(host.federation.spent) == ["hospital"]
        assert host.status()["spent"] == {"hospital": first.refused[ParticipantId("hospital")]}
        for record in history:
            assert set(record.participants) == {"office", "bank"}
        assert host.federation.stopped is None
        for org in ("office", "bank"):
            entries = ledgers[org].entries("dp-fed")
            assert [e.round for e in entries] == [1, 2]
            assert 0 < entries[-1].epsilon_total <= budgets[org]
        assert ledgers["hospital"].entries() == []
        assert ledgers["hospital"].refusals()
    finally:
        host.store.close()


def test_a_deployed_federation_whose_budgets_run_out_ends_early_and_says_so(
    tmp_path: Path,
) -> None:
    """Two of three members' own budgets run out (the hospital's at once, the bank's after one
    round) with ``min = 2``: the coordinator stops asking them, ends after round 1 instead of
    failing, and its status and audit trail say why."""
    config = _config(tmp_path, 'mode = "client-central"\nepsilon = 5.0\nclip = 1.0', rounds=3)
    host = CoordinatorHost(load_config(config))
    try:
        budgets = {"office": 20.0, "bank": 3.0, "hospital": 0.05}
        _attach_members(host, tmp_path, budgets)
        history = host.coordinator.run()
        assert [r.round for r in history] == [1]
        assert set(history[0].participants) == {"office", "bank"}
        assert sorted(host.federation.spent) == ["bank", "hospital"]
        host.finished()
        status = host.status()
        assert status["phase"] == "stopped early" and status["done"]
        assert status["stopped"].startswith("stopped after round 1 of 3")
        (event,) = host.store.audit_events(event="federation.finished")
        assert event.detail == {"rounds": 1, "stopped": status["stopped"]}
    finally:
        host.store.close()


@pytest.mark.parametrize(
    ("privacy", "secure", "message"),
    [
        ('mode = "client-central"\nepsilon = 5.0', True, "secure aggregation hides"),
        ('mode = "client-distributed"\nepsilon = 5.0', False, "needs [training]"),
        ('mode = "record"', False, "--epsilon or --noise-multiplier"),
    ],
)
def test_privacy_sections_that_cannot_work_are_refused(
    tmp_path: Path, privacy: str, secure: bool, message: str
) -> None:
    config = _config(tmp_path, privacy, secure=secure)
    with pytest.raises(PhalanxError) as info:
        CoordinatorHost(load_config(config))
    assert message in str(info.value)


def test_unknown_privacy_keys_are_refused(tmp_path: Path) -> None:
    config = _config(tmp_path, 'mode = "record"\nepsilonn = 3')
    with pytest.raises(ConfigError, match="epsilonn"):
        load_config(config)
