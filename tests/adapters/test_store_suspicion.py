"""The coordinator store keeps suspicion scores and quarantines (issue #8), audited."""

from __future__ import annotations

from pathlib import Path

import pytest

from phalanx.adapters.store import SqliteStore
from phalanx.adapters.store.schema import StoreError


def test_scores_are_kept_counted_and_audited(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "f.db") as store:
        assert store.suspicion() == [] and store.flagged_counts() == {}
        store.record_suspicion(1, {"b": {"flagged": 1.0, "norm_z": 9.0}, "a": {"flagged": 0.0}})
        store.record_suspicion(2, {"b": {"flagged": 1.0}, "a": {"flagged": 0.0}})
        store.record_suspicion(2, {"b": {"flagged": 0.0}, "a": {"flagged": 0.0}})  # replaced
        rows = store.suspicion(round=1)
        assert rows == [(1, "a", False, {"flagged": 0.0}),
                        (1, "b", True, {"flagged": 1.0, "norm_z": 9.0})]  # fmt: skip
        assert store.flagged_counts() == {"a": (0, 2), "b": (1, 2)}
        events = store.audit_events(event="round.suspicion")
        assert [e.detail["flagged"] for e in events] == [["b"], ["b"], []]
        assert store.verify_audit() == len(store.audit_events())


def test_quarantine_suspends_and_survives_reopening(tmp_path: Path) -> None:
    path = tmp_path / "f.db"
    with SqliteStore(path) as store:
        store.enroll("a", "participant", 7)
        store.quarantine("a", 3, "flagged in 3 rounds")
        store.quarantine("ghost", 4, "flagged in 3 rounds")  # never enrolled in the store
    with SqliteStore(path) as store:
        status = {p.name: p.status for p in store.participants()}
        assert status == {"a": "suspended", "ghost": "suspended"}
        ev = store.audit_events(event="participant.quarantined")
        assert [(e.detail["name"], e.detail["round"]) for e in ev] == [("a", 3), ("ghost", 4)]


def test_scores_must_be_json(tmp_path: Path) -> None:
    with SqliteStore(tmp_path / "f.db") as store, pytest.raises(StoreError, match="scores"):
        store.record_suspicion(1, {"a": {"flagged": float("nan")}})
