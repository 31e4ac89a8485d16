"""The coordinator's durable state in one SQLite file (WAL, ``synchronous=FULL``).

Tables: ``participants``, ``revocations``, ``rounds``, ``model_versions``, ``audit`` and ``kv``,
plus ``schema_version`` for migrations applied on open. The audit log is append-only: triggers
abort any UPDATE or DELETE, and each row carries ``hash = sha256(previous hash + row)`` so
:meth:`SqliteStore.verify_audit` detects rows edited with the triggers dropped (tamper-evident,
not tamper-proof: whoever can write the file can rebuild the chain).

State changes audit themselves in the same transaction (``participant.enrolled``,
``participant.status``, ``certificate.revoked``, ``round.started``, ``round.completed``,
``round.failed``); callers add their own events with :meth:`SqliteStore.audit`.

Certificate serials are up to 159 bits, beyond SQLite's 64-bit integers: they are kept as
decimal text. Timestamps are UTC ISO-8601.
"""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from os import PathLike
from pathlib import Path
from typing import Any

from phalanx.adapters.store.schema import (
    MIGRATIONS,
    SCHEMA_VERSION,
    STATUSES,
    StoreError,
    chain,
    dumps,
    parse_time,
    translate,
)
from phalanx.core.errors import TrustError
from phalanx.ports import AuditEvent, ParticipantRecord, RoundRecord


@dataclass(frozen=True)
class ModelVersion:
    """The global model a completed round produced."""

    round: int
    sha256: str
    path: str
    created_at: datetime


class SqliteStore:
    """The :class:`~phalanx.ports.Store` of a coordinator, in one SQLite file.

    Parameters
    ----------
    path:
        The database file, created (with its folder) when missing.
    timeout_s:
        How long to wait for a lock held by another connection before giving up.
    clock:
        Returns the current UTC time; injected by tests.

    Raises
    ------
    StoreError
        When the file is not a SQLite database, is corrupt or locked, was written by a newer
        Phalanx, or its folder cannot be created.
    """

    def __init__(
        self,
        path: Path,
        *,
        timeout_s: float = 5.0,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self.path = Path(path)
        self._clock = clock or (lambda: datetime.now(UTC))
        self._lock = threading.RLock()
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as err:
            raise StoreError(f"{self.path}: cannot create the state folder ({err})") from err
        with self._errors():
            self._conn = sqlite3.connect(
                self.path, timeout=timeout_s, isolation_level=None, check_same_thread=False
            )
        try:
            with self._errors():
                mode = self._conn.execute("PRAGMA journal_mode=WAL").fetchone()[0]
                self._conn.execute("PRAGMA synchronous=FULL")
                self._conn.execute("PRAGMA foreign_keys=ON")
            if str(mode).lower() != "wal":
                raise StoreError(
                    f"{self.path}: cannot switch the database to WAL journaling (got {mode!r})",
                    hint="put the state folder on a local file system",
                )
            self._migrate()
        except BaseException:
            self._conn.close()
            raise

    # --- plumbing -------------------------------------------------------------------------

    def close(self) -> None:
        """Close the connection; the store cannot be used afterwards."""
        with self._lock:
            self._conn.close()

    def __enter__(self) -> SqliteStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def pragma(self, name: str) -> Any:
        """The value of ``PRAGMA name`` (e.g. ``journal_mode``), for diagnostics and tests."""
        if not name.isidentifier():
            raise StoreError(f"invalid pragma name {name!r}")
        with self._lock, self._errors():
            return self._conn.execute(f"PRAGMA {name}").fetchone()[0]

    def schema_version(self) -> int:
        """The highest migration applied to the file."""
        with self._lock, self._errors():
            row = self._conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
        return int(row[0] or 0)

    @contextmanager
    def _errors(self) -> Iterator[None]:
        """Translate sqlite3 errors into :class:`StoreError` naming the file and what to do."""
        try:
            yield
        except sqlite3.Error as err:
            raise translate(self.path, err) from err

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``): all of it is committed, or none."""
        with self._lock, self._errors():
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
                self._conn.execute("COMMIT")
            except BaseException:
                if self._conn.in_transaction:
                    self._conn.execute("ROLLBACK")
                raise

    def _now(self) -> str:
        return self._clock().astimezone(UTC).isoformat()

    def _migrate(self) -> None:
        with self._lock, self._errors():  # read first: an up-to-date file needs no write lock
            found = self._conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'schema_version'"
            ).fetchone()
            if found:
                row = self._conn.execute("SELECT MAX(version) FROM schema_version").fetchone()
                if int(row[0] or 0) == SCHEMA_VERSION:
                    return
        with self._tx() as db:
            db.execute(
                "CREATE TABLE IF NOT EXISTS schema_version"
                " (version INTEGER PRIMARY KEY, applied_at TEXT NOT NULL)"
            )
            current = int(db.execute("SELECT MAX(version) FROM schema_version").fetchone()[0] or 0)
            if current > SCHEMA_VERSION:
                raise StoreError(
                    f"{self.path}: database schema version {current} is newer than this"
                    f" Phalanx understands ({SCHEMA_VERSION})",
                    hint="upgrade Phalanx, or point --state at another folder",
                )
            for version in range(current + 1, SCHEMA_VERSION + 1):
                for statement in MIGRATIONS[version]:
                    db.execute(statement)
                db.execute("INSERT INTO schema_version VALUES (?, ?)", (version, self._now()))

    def _append_audit(self, db: sqlite3.Connection, event: str, actor: str, detail: Any) -> int:
        at = self._now()
        text = dumps(detail, f"detail of audit event {event!r}")
        row = db.execute("SELECT hash FROM audit ORDER BY id DESC LIMIT 1").fetchone()
        digest = chain(row[0] if row else "", at, event, actor, text)
        cur = db.execute(
            "INSERT INTO audit (at, event, actor, detail, hash) VALUES (?, ?, ?, ?, ?)",
            (at, event, actor, text, digest),
        )
        return int(cur.lastrowid or 0)

    # --- audit -----------------------------------------------------------------------------

    def audit(self, event: str, actor: str, **detail: Any) -> int:
        """Append ``event`` by ``actor`` with JSON-serializable ``detail``; return its id."""
        with self._tx() as db:
            return self._append_audit(db, event, actor, detail)

    def audit_events(
        self, *, event: str | None = None, actor: str | None = None, limit: int | None = None
    ) -> list[AuditEvent]:
        """Audit events, oldest first; with ``limit``, the most recent ``limit`` of them."""
        with self._lock, self._errors():
            rows = self._conn.execute(
                "SELECT id, at, event, actor, detail FROM audit"
                " WHERE (?1 IS NULL OR event = ?1) AND (?2 IS NULL OR actor = ?2)"
                " ORDER BY id DESC LIMIT ?3",
                (event, actor, -1 if limit is None else int(limit)),
            ).fetchall()
        return [
            AuditEvent(int(i), datetime.fromisoformat(at), ev, who, json.loads(d))
            for i, at, ev, who, d in reversed(rows)
        ]

    def verify_audit(self) -> int:
        """Recompute the audit hash chain; return the number of rows checked.

        Raises
        ------
        StoreError
            Naming the first row whose hash does not match (the log was edited).
        """
        prev = ""
        with self._lock, self._errors():
            rows = self._conn.execute(
                "SELECT id, at, event, actor, detail, hash FROM audit ORDER BY id"
            ).fetchall()
        for i, at, event, actor, detail, digest in rows:
            prev_expected = chain(prev, at, event, actor, detail)
            if digest != prev_expected:
                raise StoreError(
                    f"{self.path}: audit row {i} does not match the hash chain; the audit log"
                    " was edited",
                    hint="treat the database as tampered with; compare with a backup",
                )
            prev = digest
        return len(rows)

    # --- participants ----------------------------------------------------------------------

    def enroll(
        self, name: str, role: str, cert_serial: int | None, *, actor: str = "coordinator"
    ) -> None:
        """Add or re-enrol ``name`` as ``role`` holding certificate ``cert_serial``.

        Raises
        ------
        TrustError
            When ``cert_serial`` has been revoked.
        """
        serial = None if cert_serial is None else str(cert_serial)
        with self._tx() as db:
            if (
                serial is not None
                and db.execute("SELECT 1 FROM revocations WHERE serial = ?", (serial,)).fetchone()
            ):
                raise TrustError(
                    f"cannot enrol {name!r}: certificate serial {serial} was revoked",
                    hint="issue a new certificate with `phalanx pki issue`",
                )
            db.execute(
                "INSERT INTO participants VALUES (?, ?, ?, ?, 'active') ON CONFLICT(name) DO"
                " UPDATE SET role = excluded.role, cert_serial = excluded.cert_serial,"
                " status = 'active'",
                (name, role, self._now(), serial),
            )
            self._append_audit(
                db, "participant.enrolled", actor, {"name": name, "role": role, "serial": serial}
            )

    def participants(self) -> list[ParticipantRecord]:
        """Enrolled members, by name."""
        with self._lock, self._errors():
            rows = self._conn.execute(
                "SELECT name, role, enrolled_at, cert_serial, status FROM participants"
                " ORDER BY name"
            ).fetchall()
        return [
            ParticipantRecord(n, r, datetime.fromisoformat(at), None if s is None else int(s), st)
            for n, r, at, s, st in rows
        ]

    def set_status(self, name: str, status: str, *, actor: str = "coordinator") -> None:
        """Set a member's status: one of ``active``, ``suspended``, ``revoked``."""
        if status not in STATUSES:
            raise StoreError(f"unknown status {status!r}: expected one of {', '.join(STATUSES)}")
        with self._tx() as db:
            cur = db.execute("UPDATE participants SET status = ? WHERE name = ?", (status, name))
            if cur.rowcount == 0:
                raise StoreError(f"no enrolled participant named {name!r}", hint="enrol it first")
            self._append_audit(db, "participant.status", actor, {"name": name, "status": status})

    def record_revocation(
        self,
        serial: int,
        *,
        name: str | None = None,
        reason: str = "unspecified",
        actor: str = "coordinator",
    ) -> None:
        """Remember that certificate ``serial`` was revoked; its holder becomes 'revoked'."""
        with self._tx() as db:
            db.execute(
                "INSERT OR IGNORE INTO revocations VALUES (?, ?, ?, ?)",
                (str(serial), name, reason, self._now()),
            )
            db.execute(
                "UPDATE participants SET status = 'revoked' WHERE cert_serial = ?", (str(serial),)
            )
            self._append_audit(
                db,
                "certificate.revoked",
                actor,
                {"serial": str(serial), "name": name, "reason": reason},
            )

    def revoked_serials(self) -> set[int]:
        """Serials recorded by :meth:`record_revocation`."""
        with self._lock, self._errors():
            rows = self._conn.execute("SELECT serial FROM revocations").fetchall()
        return {int(r[0]) for r in rows}

    # --- rounds ----------------------------------------------------------------------------

    def begin_round(self, round: int, participants: Sequence[str]) -> None:
        """Record that ``round`` started (again, after a failure or a crash) with ``participants``.

        Raises
        ------
        StoreError
            When ``round`` is already completed.
        """
        names = dumps(list(participants), "participants")
        with self._tx() as db:
            self._check_open(db, round)
            db.execute(
                "INSERT INTO rounds (round, state, participants, started_at) VALUES"
                " (?, 'started', ?, ?) ON CONFLICT(round) DO UPDATE SET state = 'started',"
                " participants = excluded.participants, started_at = excluded.started_at,"
                " completed_at = NULL, reason = NULL",
                (round, names, self._now()),
            )
            self._append_audit(
                db, "round.started", "coordinator", {"round": round, "participants": participants}
            )

    def complete_round(
        self,
        round: int,
        *,
        participants: Sequence[str],
        bytes_up: int,
        bytes_down: int,
        metrics: Mapping[str, Any],
        model_sha256: str,
        model_path: str | PathLike[str],
    ) -> None:
        """Record the completed round, its model version and a ``round.completed`` event.

        All three are written in one transaction: after a crash the round is either fully
        recorded or still 'started'.
        """
        names = dumps(list(participants), "participants")
        values = dumps(dict(metrics), f"metrics of round {round}")
        now = self._now()
        with self._tx() as db:
            self._check_open(db, round)
            db.execute(
                "INSERT INTO rounds VALUES (?, 'completed', ?, ?, ?, ?, ?, ?, ?, NULL)"
                " ON CONFLICT(round) DO UPDATE SET state = 'completed',"
                " participants = excluded.participants, completed_at = excluded.completed_at,"
                " bytes_up = excluded.bytes_up, bytes_down = excluded.bytes_down,"
                " metrics = excluded.metrics, model_sha256 = excluded.model_sha256,"
                " reason = NULL",
                (round, names, now, now, int(bytes_up), int(bytes_down), values, model_sha256),
            )
            db.execute(
                "INSERT INTO model_versions VALUES (?, ?, ?, ?)",
                (round, model_sha256, str(model_path), now),
            )
            self._append_audit(
                db,
                "round.completed",
                "coordinator",
                {"round": round, "model_sha256": model_sha256, "participants": len(participants)},
            )

    def fail_round(self, round: int, reason: str) -> None:
        """Record that ``round`` failed and why (it may be begun again)."""
        with self._tx() as db:
            self._check_open(db, round)
            db.execute(
                "INSERT INTO rounds (round, state, participants, completed_at, reason) VALUES"
                " (?, 'failed', '[]', ?, ?) ON CONFLICT(round) DO UPDATE SET state = 'failed',"
                " completed_at = excluded.completed_at, reason = excluded.reason",
                (round, self._now(), reason),
            )
            self._append_audit(
                db, "round.failed", "coordinator", {"round": round, "reason": reason}
            )

    def _check_open(self, db: sqlite3.Connection, round: int) -> None:
        row = db.execute("SELECT state FROM rounds WHERE round = ?", (round,)).fetchone()
        if row is not None and row[0] == "completed":
            raise StoreError(
                f"{self.path}: round {round} is already completed",
                hint="resume from last_completed_round() + 1",
            )

    def last_completed_round(self) -> int:
        """The highest completed round, 0 when none."""
        with self._lock, self._errors():
            row = self._conn.execute(
                "SELECT MAX(round) FROM rounds WHERE state = 'completed'"
            ).fetchone()
        return int(row[0] or 0)

    def rounds(self, limit: int | None = None) -> list[RoundRecord]:
        """Recorded rounds in order; with ``limit``, the last ``limit`` of them."""
        with self._lock, self._errors():
            rows = self._conn.execute(
                "SELECT * FROM rounds ORDER BY round DESC LIMIT ?",
                (-1 if limit is None else int(limit),),
            ).fetchall()
        return [
            RoundRecord(
                round=r[0],
                state=r[1],
                participants=json.loads(r[2]),
                started_at=parse_time(r[3]),
                completed_at=parse_time(r[4]),
                bytes_up=r[5],
                bytes_down=r[6],
                metrics=json.loads(r[7]),
                model_sha256=r[8],
                reason=r[9],
            )
            for r in reversed(rows)
        ]

    def model_versions(self) -> list[ModelVersion]:
        """Model versions by round."""
        with self._lock, self._errors():
            rows = self._conn.execute("SELECT * FROM model_versions ORDER BY round").fetchall()
        return [ModelVersion(r, s, p, datetime.fromisoformat(at)) for r, s, p, at in rows]

    # --- suspicion (issue #8) ----------------------------------------------------------------
    # The table is created on first use (CREATE TABLE IF NOT EXISTS) rather than by a numbered
    # migration, so it adds to any schema version without a migration race between features.

    _SUSPICION_TABLE = (
        "CREATE TABLE IF NOT EXISTS suspicion (round INTEGER NOT NULL, participant TEXT NOT NULL,"
        " flagged INTEGER NOT NULL, scores TEXT NOT NULL, at TEXT NOT NULL,"
        " PRIMARY KEY (round, participant))"
    )

    def record_suspicion(
        self, round: int, scores: Mapping[str, Mapping[str, float]], *, actor: str = "coordinator"
    ) -> None:
        """Keep one round's per-update suspicion scores and audit who was flagged.

        ``scores`` is an aggregation algorithm's ``report()``; a ``flagged`` score of 1 marks a
        suspicious update. Re-recording a round replaces its rows.
        """
        now = self._now()
        rows = [
            (round, str(p), int(float(s.get("flagged", 0.0)) >= 1.0), dumps(dict(s), "scores"), now)
            for p, s in sorted(scores.items())
        ]
        with self._tx() as db:
            db.execute(self._SUSPICION_TABLE)
            db.executemany("INSERT OR REPLACE INTO suspicion VALUES (?, ?, ?, ?, ?)", rows)
            self._append_audit(
                db,
                "round.suspicion",
                actor,
                {"round": round, "scored": len(rows), "flagged": [r[1] for r in rows if r[2]]},
            )

    def suspicion(self, round: int | None = None) -> list[tuple[int, str, bool, dict[str, float]]]:
        """Stored scores as ``(round, participant, flagged, scores)``, by round and name."""
        with self._lock, self._errors():
            if not self._has_table("suspicion"):
                return []
            rows = self._conn.execute(
                "SELECT round, participant, flagged, scores FROM suspicion"
                " WHERE (?1 IS NULL OR round = ?1) ORDER BY round, participant",
                (round,),
            ).fetchall()
        return [(int(r), str(p), bool(f), json.loads(sc)) for r, p, f, sc in rows]

    def flagged_counts(self) -> dict[str, tuple[int, int]]:
        """Per participant: ``(rounds flagged, rounds scored)``."""
        with self._lock, self._errors():
            if not self._has_table("suspicion"):
                return {}
            rows = self._conn.execute(
                "SELECT participant, SUM(flagged), COUNT(*) FROM suspicion GROUP BY participant"
                " ORDER BY participant"
            ).fetchall()
        return {str(p): (int(f), int(n)) for p, f, n in rows}

    def quarantine(self, name: str, round: int, reason: str, *, actor: str = "coordinator") -> None:
        """Suspend ``name`` (no further tasks; recorded as a participant if it was not yet)
        and audit ``participant.quarantined`` with why."""
        with self._tx() as db:
            db.execute(
                "INSERT INTO participants VALUES (?, 'participant', ?, NULL, 'suspended')"
                " ON CONFLICT(name) DO UPDATE SET status = 'suspended'",
                (name, self._now()),
            )
            self._append_audit(
                db,
                "participant.quarantined",
                actor,
                {"name": name, "round": round, "reason": reason},
            )

    def _has_table(self, name: str) -> bool:
        return (
            self._conn.execute(
                "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?", (name,)
            ).fetchone()
            is not None
        )

    # --- federation state ------------------------------------------------------------------

    def get(self, key: str, default: Any = None) -> Any:
        """The JSON value stored under ``key``, or ``default``."""
        with self._lock, self._errors():
            row = self._conn.execute("SELECT value FROM kv WHERE key = ?", (key,)).fetchone()
        return default if row is None else json.loads(row[0])

    def set(self, key: str, value: Any) -> None:
        """Store JSON-serializable ``value`` under ``key``."""
        text = dumps(value, f"value of {key!r}")
        with self._tx() as db:
            db.execute(
                "INSERT INTO kv VALUES (?, ?, ?) ON CONFLICT(key) DO UPDATE SET"
                " value = excluded.value, updated_at = excluded.updated_at",
                (key, text, self._now()),
            )
