"""A participant's own privacy ledger, in one SQLite file it keeps (never the coordinator's).

Implements :class:`~phalanx.ports.PrivacyLedger`. Table ``spend`` holds one row per charged
release (federation, round, mode, the mechanism as JSON, the release's own epsilon and the
participant's composed epsilon after it, at the budget's delta); ``refusals`` keeps every task the
participant declined and why. ``spend`` is append-only (triggers abort UPDATE and DELETE): a
budget that could be edited back down would not bound anything. Timestamps are UTC ISO-8601.

The connection opens lazily, on first use, so a ledger object can be created in a simulation's
parent process and used in the worker process that hosts the participant.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from datetime import UTC, datetime
from os import PathLike
from pathlib import Path

from phalanx.adapters.store.schema import StoreError
from phalanx.core.privacy.spec import LedgerEntry, PrivacyEvent

_SCHEMA = """
CREATE TABLE IF NOT EXISTS spend (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    federation TEXT NOT NULL,
    round INTEGER NOT NULL,
    mode TEXT NOT NULL,
    event TEXT NOT NULL,
    epsilon_round REAL NOT NULL,
    epsilon_total REAL NOT NULL,
    delta REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS refusals (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    at TEXT NOT NULL,
    federation TEXT NOT NULL,
    round INTEGER NOT NULL,
    reason TEXT NOT NULL
);
CREATE TRIGGER IF NOT EXISTS spend_no_update BEFORE UPDATE ON spend
BEGIN SELECT RAISE(ABORT, 'the privacy ledger is append-only'); END;
CREATE TRIGGER IF NOT EXISTS spend_no_delete BEFORE DELETE ON spend
BEGIN SELECT RAISE(ABORT, 'the privacy ledger is append-only'); END;
"""


class SqliteLedger:
    """The :class:`~phalanx.ports.PrivacyLedger` in a SQLite file.

    Parameters
    ----------
    path:
        The ledger file, created (with its folder) when missing.
    """

    def __init__(self, path: str | PathLike[str]) -> None:
        self.path = Path(path)
        self._conn: sqlite3.Connection | None = None
        self._lock = threading.Lock()

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            try:
                self.path.parent.mkdir(parents=True, exist_ok=True)
                conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=FULL")
                conn.executescript(_SCHEMA)
            except (sqlite3.Error, OSError) as err:
                raise StoreError(
                    f"{self.path}: cannot open the privacy ledger ({err})",
                    hint="check the path and its permissions, or pass another --ledger",
                ) from None
            self._conn = conn
        return self._conn

    def record(self, entry: LedgerEntry) -> None:
        """Append ``entry`` durably (committed before this returns)."""
        at = entry.at or datetime.now(UTC)
        with self._lock:
            try:
                self._db().execute(
                    "INSERT INTO spend (at, federation, round, mode, event, epsilon_round,"
                    " epsilon_total, delta) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        at.isoformat(),
                        entry.federation,
                        int(entry.round),
                        entry.mode,
                        json.dumps(entry.event.to_dict(), sort_keys=True),
                        float(entry.epsilon_round),
                        float(entry.epsilon_total),
                        float(entry.delta),
                    ),
                )
            except sqlite3.Error as err:
                raise StoreError(f"{self.path}: cannot write the privacy ledger ({err})") from None

    def refusal(self, federation: str, round: int, reason: str) -> None:
        """Remember a declined task and why."""
        with self._lock:
            try:
                self._db().execute(
                    "INSERT INTO refusals (at, federation, round, reason) VALUES (?, ?, ?, ?)",
                    (datetime.now(UTC).isoformat(), federation, int(round), reason),
                )
            except sqlite3.Error as err:
                raise StoreError(f"{self.path}: cannot write the privacy ledger ({err})") from None

    def entries(self, federation: str | None = None) -> list[LedgerEntry]:
        """Charged releases in order, optionally of one federation."""
        sql = (
            "SELECT at, federation, round, mode, event, epsilon_round, epsilon_total, delta"
            " FROM spend"
        )
        args: tuple[str, ...] = ()
        if federation is not None:
            sql += " WHERE federation = ?"
            args = (federation,)
        with self._lock:
            try:
                rows = self._db().execute(sql + " ORDER BY id", args).fetchall()
            except sqlite3.Error as err:
                raise StoreError(f"{self.path}: cannot read the privacy ledger ({err})") from None
        out = []
        for at, fed, rnd, mode, event, eps_r, eps_t, delta in rows:
            try:
                ev = PrivacyEvent.from_dict(json.loads(event))
            except json.JSONDecodeError as err:
                raise StoreError(
                    f"{self.path}: corrupt ledger row for round {rnd}: {err}"
                ) from None
            out.append(
                LedgerEntry(
                    federation=fed,
                    round=int(rnd),
                    mode=mode,
                    event=ev,
                    epsilon_round=float(eps_r),
                    epsilon_total=float(eps_t),
                    delta=float(delta),
                    at=datetime.fromisoformat(at),
                )
            )
        return out

    def refusals(self) -> list[tuple[datetime, str, int, str]]:
        """Declined tasks: ``(at, federation, round, reason)`` in order."""
        with self._lock:
            try:
                rows = (
                    self._db()
                    .execute("SELECT at, federation, round, reason FROM refusals ORDER BY id")
                    .fetchall()
                )
            except sqlite3.Error as err:
                raise StoreError(f"{self.path}: cannot read the privacy ledger ({err})") from None
        return [(datetime.fromisoformat(a), f, int(r), why) for a, f, r, why in rows]

    def close(self) -> None:
        """Close the connection (reopened on next use)."""
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None
