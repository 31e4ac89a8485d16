"""The coordinator's SQLite store: durable, atomic, append-only, thread-safe."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from phalanx.adapters.store import SqliteStore, StoreError
from phalanx.adapters.store.schema import translate
from phalanx.core.errors import PhalanxError, TrustError
from phalanx.ports import Store


@pytest.fixture
def db_path(tmp_path: Path) -> Path:
    return tmp_path / "state" / "coordinator.db"


@pytest.fixture
def store(db_path: Path) -> Iterator[SqliteStore]:
    with SqliteStore(db_path) as s:
        yield s


def _raw(path: Path) -> sqlite3.Connection:
    return sqlite3.connect(path, isolation_level=None)


def test_is_a_store_with_wal_and_full_sync(store: SqliteStore) -> None:
    as_port: Store = store
    assert as_port is store
    assert store.pragma("journal_mode") == "wal"
    assert store.pragma("synchronous") == 2  # FULL
    assert store.pragma("foreign_keys") == 1
    assert store.schema_version() == 1


def test_audit_rows_cannot_be_updated_or_deleted(store: SqliteStore, db_path: Path) -> None:
    first = store.audit("federation.started", "coordinator", rounds=3)
    store.audit("participant.connected", "hospital-a", peer="127.0.0.1")
    raw = _raw(db_path)
    try:
        for sql in (
            "UPDATE audit SET actor = 'mallory' WHERE id = ?",
            "DELETE FROM audit WHERE id = ?",
        ):
            with pytest.raises(sqlite3.IntegrityError, match="append-only") as info:
                raw.execute(sql, (first,))
            err = translate(db_path, info.value)
            assert isinstance(err, StoreError)
            assert "append-only" in str(err)
            assert str(db_path) in str(err)
    finally:
        raw.close()
    events = store.audit_events()
    assert [(e.event, e.actor) for e in events] == [
        ("federation.started", "coordinator"),
        ("participant.connected", "hospital-a"),
    ]
    assert events[0].detail == {"rounds": 3}
    assert events[0].at.tzinfo is not None
    assert store.verify_audit() == 2


def test_audit_chain_detects_an_edit_made_with_triggers_dropped(
    store: SqliteStore, db_path: Path
) -> None:
    for i in range(3):
        store.audit("e", "a", i=i)
    raw = _raw(db_path)
    try:
        raw.execute("DROP TRIGGER audit_no_update")
        raw.execute("""UPDATE audit SET detail = '{"i":9}' WHERE id = 2""")
    finally:
        raw.close()
    with pytest.raises(StoreError, match="audit row 2 does not match"):
        store.verify_audit()


def test_audit_filters_and_limit(store: SqliteStore) -> None:
    for i in range(5):
        store.audit("tick", "a" if i % 2 else "b", i=i)
    store.audit("other", "a")
    assert [e.detail["i"] for e in store.audit_events(event="tick")] == [0, 1, 2, 3, 4]
    assert [e.detail["i"] for e in store.audit_events(event="tick", actor="a")] == [1, 3]
    assert [e.event for e in store.audit_events(limit=2)] == ["tick", "other"]
    with pytest.raises(StoreError, match="not JSON-serializable"):
        store.audit("bad", "a", value=object())


def test_complete_round_is_one_transaction(store: SqliteStore, db_path: Path) -> None:
    store.begin_round(1, ["a", "b"])
    # a failure after the rounds row is written (the model_versions insert) rolls back all
    raw = _raw(db_path)
    try:
        raw.execute(
            "CREATE TRIGGER boom BEFORE INSERT ON model_versions"
            " BEGIN SELECT RAISE(ABORT, 'disk on fire'); END"
        )
    finally:
        raw.close()
    events_before = len(store.audit_events())
    with pytest.raises(StoreError, match="disk on fire"):
        store.complete_round(
            1,
            participants=["a", "b"],
            bytes_up=10,
            bytes_down=20,
            metrics={"loss": 0.5},
            model_sha256="ab" * 32,
            model_path="ckpt/round-000001.safetensors",
        )
    (rec,) = store.rounds()
    assert rec.state == "started"
    assert rec.model_sha256 is None
    assert store.model_versions() == []
    assert store.last_completed_round() == 0
    assert len(store.audit_events()) == events_before
    # and the store is usable afterwards
    store.audit("still", "alive")


def test_non_json_metric_leaves_no_partial_round(store: SqliteStore) -> None:
    store.begin_round(1, ["a"])
    with pytest.raises(StoreError, match="metrics of round 1"):
        store.complete_round(
            1,
            participants=["a"],
            bytes_up=1,
            bytes_down=1,
            metrics={"loss": {1, 2}},
            model_sha256="00" * 32,
            model_path="m",
        )
    with pytest.raises(StoreError, match="metrics of round 1"):
        store.complete_round(
            1,
            participants=["a"],
            bytes_up=1,
            bytes_down=1,
            metrics={"loss": float("nan")},
            model_sha256="00" * 32,
            model_path="m",
        )
    assert [r.state for r in store.rounds()] == ["started"]
    assert store.model_versions() == []


def test_round_lifecycle_survives_reopen(db_path: Path) -> None:
    t = datetime(2026, 1, 2, 3, 4, 5, tzinfo=UTC)
    with SqliteStore(db_path, clock=lambda: t) as s:
        s.enroll("hospital-a", "participant", 2**150 + 7)
        s.enroll("bank-b", "participant", 42)
        s.begin_round(1, ["hospital-a", "bank-b"])
        s.complete_round(
            1,
            participants=["hospital-a", "bank-b"],
            bytes_up=1000,
            bytes_down=2000,
            metrics={"loss": 0.25, "f1": {"dos": 0.9}},
            model_sha256="cd" * 32,
            model_path=Path("ckpt") / "round-000001.safetensors",
        )
        s.begin_round(2, ["hospital-a"])
        s.fail_round(2, "too few replies")
        s.set("plan", {"rounds": 10})
        s.record_revocation(42, name="bank-b", reason="key_compromise")
    with SqliteStore(db_path) as s:
        assert s.last_completed_round() == 1
        r1, r2 = s.rounds()
        assert (r1.state, r1.bytes_up, r1.bytes_down) == ("completed", 1000, 2000)
        assert r1.metrics == {"loss": 0.25, "f1": {"dos": 0.9}}
        assert r1.completed_at == t
        assert (r2.state, r2.reason) == ("failed", "too few replies")
        assert [r.round for r in s.rounds(limit=1)] == [2]
        (mv,) = s.model_versions()
        assert (mv.round, mv.sha256, mv.path) == (1, "cd" * 32, "ckpt/round-000001.safetensors")
        assert s.get("plan") == {"rounds": 10}
        assert s.get("missing", 7) == 7
        parts = {p.name: p for p in s.participants()}
        assert parts["hospital-a"].cert_serial == 2**150 + 7
        assert parts["hospital-a"].status == "active"
        assert parts["bank-b"].status == "revoked"
        assert s.revoked_serials() == {42}
        assert [e.event for e in s.audit_events()] == [
            "participant.enrolled",
            "participant.enrolled",
            "round.started",
            "round.completed",
            "round.started",
            "round.failed",
            "certificate.revoked",
        ]
        assert s.verify_audit() == 7
        assert s.schema_version() == 1


def test_completed_round_cannot_be_rewritten(store: SqliteStore) -> None:
    store.complete_round(
        3, participants=[], bytes_up=0, bytes_down=0, metrics={}, model_sha256="x", model_path="m"
    )
    with pytest.raises(StoreError, match="round 3 is already completed"):
        store.begin_round(3, ["a"])
    with pytest.raises(StoreError, match="already completed"):
        store.fail_round(3, "late")
    assert store.last_completed_round() == 3


def test_revoked_serial_cannot_enrol_and_status_is_checked(store: SqliteStore) -> None:
    store.record_revocation(99, name="org-x")
    with pytest.raises(TrustError, match="revoked"):
        store.enroll("org-x", "participant", 99)
    store.enroll("org-y", "participant", 100)
    store.set_status("org-y", "suspended")
    assert store.participants()[0].status == "suspended"
    with pytest.raises(StoreError, match="unknown status"):
        store.set_status("org-y", "banished")
    with pytest.raises(StoreError, match="no enrolled participant"):
        store.set_status("nobody", "active")


def test_concurrent_audit_from_threads(store: SqliteStore) -> None:
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            for i in range(50):
                store.audit("tick", f"thread-{k}", i=i)
        except PhalanxError as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    events = store.audit_events()
    assert len(events) == 400
    assert len({e.id for e in events}) == 400
    for k in range(8):
        mine = [e.detail["i"] for e in events if e.actor == f"thread-{k}"]
        assert mine == list(range(50))
    assert store.verify_audit() == 400


def test_corrupt_file_is_reported_with_path(tmp_path: Path) -> None:
    bad = tmp_path / "coordinator.db"
    bad.write_bytes(b"this is not a database at all" * 200)
    with pytest.raises(StoreError, match="not a SQLite database or corrupt") as info:
        SqliteStore(bad)
    assert str(bad) in str(info.value)


def test_locked_database_is_reported(db_path: Path) -> None:
    with SqliteStore(db_path) as s:
        s.audit("x", "y")
        holder = _raw(db_path)
        try:
            holder.execute("BEGIN IMMEDIATE")
            with (
                SqliteStore(db_path, timeout_s=0.05) as other,
                pytest.raises(StoreError, match="locked by another process"),
            ):
                other.audit("z", "w")
        finally:
            holder.execute("ROLLBACK")
            holder.close()


def test_newer_schema_is_refused(db_path: Path) -> None:
    SqliteStore(db_path).close()
    raw = _raw(db_path)
    try:
        raw.execute("INSERT INTO schema_version VALUES (99, 'later')")
    finally:
        raw.close()
    with pytest.raises(StoreError, match="schema version 99 is newer"):
        SqliteStore(db_path)
