"""Durable coordinator state: the SQLite store and round checkpoints."""

from phalanx.adapters.store.checkpoints import (
    CheckpointError,
    latest_checkpoint,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from phalanx.adapters.store.schema import StoreError
from phalanx.adapters.store.sqlite import ModelVersion, SqliteStore

__all__ = [
    "CheckpointError",
    "ModelVersion",
    "SqliteStore",
    "StoreError",
    "latest_checkpoint",
    "list_checkpoints",
    "load_checkpoint",
    "save_checkpoint",
]
