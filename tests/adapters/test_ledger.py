"""The participant's SQLite privacy ledger: durable, ordered, append-only."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from phalanx.adapters.store import StoreError
from phalanx.adapters.store.ledger import SqliteLedger
from phalanx.core.privacy import LedgerEntry, PrivacyEvent


def _entry(fed: str, rnd: int, total: float) -> LedgerEntry:
    return LedgerEntry(
        federation=fed,
        round=rnd,
        mode="record",
        event=PrivacyEvent("gaussian", 1.2, 0.1, 10),
        epsilon_round=0.5,
        epsilon_total=total,
        delta=1e-5,
    )


def test_entries_round_trip_and_survive_reopening(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "ledger.sqlite"
    ledger = SqliteLedger(path)
    ledger.record(_entry("a", 1, 0.5))
    ledger.record(_entry("b", 1, 0.9))
    ledger.record(_entry("a", 2, 1.2))
    ledger.close()
    again = SqliteLedger(path)
    got = again.entries()
    assert [(e.federation, e.round, e.epsilon_total) for e in got] == [
        ("a", 1, 0.5),
        ("b", 1, 0.9),
        ("a", 2, 1.2),
    ]
    assert got[0].event == PrivacyEvent("gaussian", 1.2, 0.1, 10)
    assert got[0].at is not None and got[0].at.tzinfo is not None
    assert [e.round for e in again.entries("a")] == [1, 2]


def test_spend_rows_cannot_be_edited_or_deleted(tmp_path: Path) -> None:
    path = tmp_path / "ledger.sqlite"
    ledger = SqliteLedger(path)
    ledger.record(_entry("a", 1, 0.5))
    ledger.close()
    conn = sqlite3.connect(path)
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("UPDATE spend SET epsilon_total = 0")
    with pytest.raises(sqlite3.DatabaseError, match="append-only"):
        conn.execute("DELETE FROM spend")
    conn.close()


def test_refusals_are_kept(tmp_path: Path) -> None:
    ledger = SqliteLedger(tmp_path / "l.sqlite")
    ledger.refusal("fed", 3, "privacy budget")
    ((_at, fed, rnd, why),) = ledger.refusals()
    assert (fed, rnd, why) == ("fed", 3, "privacy budget")


def test_unopenable_path_names_the_file(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(StoreError, match="cannot open the privacy ledger"):
        SqliteLedger(blocker / "ledger.sqlite").entries()
