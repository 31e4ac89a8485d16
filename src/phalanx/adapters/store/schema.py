"""The SQLite schema of the coordinator's store, its migrations, and error translation."""

from __future__ import annotations

import hashlib
import json
import sqlite3
from datetime import datetime
from pathlib import Path
from typing import Any

from phalanx.core.errors import PhalanxError

SCHEMA_VERSION = 1
STATUSES = ("active", "suspended", "revoked")
MIGRATIONS: dict[int, tuple[str, ...]] = {
    1: (
        "CREATE TABLE participants (name TEXT PRIMARY KEY, role TEXT NOT NULL,"
        " enrolled_at TEXT NOT NULL, cert_serial TEXT,"
        " status TEXT NOT NULL CHECK (status IN ('active', 'suspended', 'revoked')))",
        "CREATE TABLE revocations (serial TEXT PRIMARY KEY, name TEXT, reason TEXT NOT NULL,"
        " revoked_at TEXT NOT NULL)",
        "CREATE TABLE rounds (round INTEGER PRIMARY KEY CHECK (round >= 0),"
        " state TEXT NOT NULL CHECK (state IN ('started', 'completed', 'failed')),"
        " participants TEXT NOT NULL, started_at TEXT, completed_at TEXT,"
        " bytes_up INTEGER NOT NULL DEFAULT 0, bytes_down INTEGER NOT NULL DEFAULT 0,"
        " metrics TEXT NOT NULL DEFAULT '{}', model_sha256 TEXT, reason TEXT)",
        "CREATE TABLE model_versions (round INTEGER PRIMARY KEY REFERENCES rounds(round),"
        " sha256 TEXT NOT NULL, path TEXT NOT NULL, created_at TEXT NOT NULL)",
        "CREATE TABLE audit (id INTEGER PRIMARY KEY AUTOINCREMENT, at TEXT NOT NULL,"
        " event TEXT NOT NULL, actor TEXT NOT NULL, detail TEXT NOT NULL, hash TEXT NOT NULL)",
        "CREATE INDEX audit_by_event ON audit(event)",
        "CREATE INDEX audit_by_actor ON audit(actor)",
        "CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit"
        " BEGIN SELECT RAISE(ABORT, 'phalanx audit log is append-only'); END",
        "CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit"
        " BEGIN SELECT RAISE(ABORT, 'phalanx audit log is append-only'); END",
        "CREATE TABLE kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, updated_at TEXT NOT NULL)",
    ),
}


class StoreError(PhalanxError):
    """The coordinator's state database cannot be opened, read or written."""


def dumps(value: Any, what: str) -> str:
    """Compact, key-sorted JSON of ``value``; StoreError naming ``what`` if it is not JSON."""
    try:
        return json.dumps(value, sort_keys=True, allow_nan=False, separators=(",", ":"))
    except (TypeError, ValueError) as err:
        raise StoreError(
            f"{what} is not JSON-serializable: {err}",
            hint="pass str, int, float (finite), bool, None, lists and dicts only",
        ) from err


def chain(prev: str, at: str, event: str, actor: str, detail: str) -> str:
    """The audit hash of a row following the row whose hash is ``prev``."""
    payload = json.dumps([prev, at, event, actor, detail], separators=(",", ":"))
    return hashlib.sha256(payload.encode("utf-8")).hexdigest()


def parse_time(text: str | None) -> datetime | None:
    """A stored ISO-8601 timestamp, or ``None``."""
    return None if text is None else datetime.fromisoformat(text)


def translate(path: Path, err: sqlite3.Error) -> StoreError:
    """A :class:`StoreError` naming ``path`` and what to do, for a sqlite3 error."""
    text = str(err)
    if "append-only" in text:
        return StoreError(
            f"{path}: the audit log is append-only; rows cannot be changed or deleted ({text})"
        )
    if "locked" in text or "busy" in text:
        return StoreError(
            f"{path}: database is locked by another process ({text})",
            hint="stop the other coordinator using this state folder, or use another --state",
        )
    if isinstance(err, sqlite3.DatabaseError) and (
        "not a database" in text or "malformed" in text or "corrupt" in text
    ):
        return StoreError(
            f"{path}: not a SQLite database or corrupt ({text})",
            hint="move the file aside and restore it from a backup, or start a new state folder",
        )
    if "unable to open" in text or "readonly" in text:
        return StoreError(
            f"{path}: cannot open the database for writing ({text})",
            hint="check the folder exists and is writable by this user",
        )
    return StoreError(f"{path}: database error ({type(err).__name__}: {text})")
