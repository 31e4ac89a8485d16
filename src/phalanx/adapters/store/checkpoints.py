"""Round checkpoints: one safetensors file per completed round, written atomically.

``round-000012.safetensors`` holds the arrays of each group under ``<group>/<index>`` (for
example ``weights/0`` or ``algo:momentum/3``) and, in the safetensors metadata header (strings
only), ``format``, ``format_version``, ``round``, ``groups`` (JSON: group -> array count),
``content_sha256`` (over every tensor's name, dtype, shape and bytes) and ``meta`` (the caller's
JSON). Nothing is pickled.

A checkpoint is written to a temporary file in the same folder, flushed and fsynced, renamed
over its final name, and the folder is fsynced: after a crash there is either the whole new
file or none. Only the newest ``keep`` checkpoints are kept.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np
from safetensors import SafetensorError
from safetensors.numpy import load as st_load
from safetensors.numpy import save as st_save

from phalanx.adapters.pki.files import write_atomic
from phalanx.adapters.store.schema import StoreError

FORMAT = "phalanx.checkpoint"
FORMAT_VERSION = 1
_NAME = re.compile(r"^round-(\d{6,})\.safetensors$")
_MAX_HEADER = 100 * 1024 * 1024


class CheckpointError(StoreError):
    """A checkpoint file is missing, truncated, corrupt or not a Phalanx checkpoint."""


def checkpoint_name(round: int) -> str:
    """``round-000012.safetensors`` for round 12."""
    return f"round-{round:06d}.safetensors"


def save_checkpoint(
    directory: Path,
    round: int,
    arrays: dict[str, list[np.ndarray]],
    meta: dict[str, Any],
    *,
    keep: int = 3,
) -> tuple[Path, str]:
    """Write the checkpoint of ``round`` atomically; return its path and the file's sha256.

    Parameters
    ----------
    directory:
        Checkpoint folder (created if needed).
    round:
        The completed round (>= 0).
    arrays:
        Named groups of arrays, e.g. ``{"weights": [...], "algo:momentum": [...]}``.
    meta:
        JSON-serializable state to keep with the arrays.
    keep:
        How many of the newest checkpoints to keep; older ones are deleted.

    Raises
    ------
    CheckpointError
        On a negative round, ``keep < 1``, an empty group name, an object array, metadata that
        is not JSON, or a write that fails (no partial file is left behind).
    """
    if round < 0 or keep < 1:
        raise CheckpointError(f"invalid checkpoint request: round={round} (>= 0), keep={keep}")
    tensors: dict[str, np.ndarray] = {}
    for group, values in arrays.items():
        if not group or group.startswith("__"):
            raise CheckpointError(f"invalid array group name {group!r} in checkpoint {round}")
        for i, a in enumerate(values):
            arr = np.asarray(a)
            if arr.dtype.kind not in "biuf":
                raise CheckpointError(
                    f"array {group}/{i} of checkpoint {round} has dtype {arr.dtype}; expected"
                    " bool, integer or float"
                )
            if arr.dtype.byteorder == ">":  # safetensors is little-endian
                arr = arr.astype(arr.dtype.newbyteorder("<"))
            tensors[f"{group}/{i}"] = arr if arr.flags.c_contiguous else arr.copy(order="C")
    try:
        header = {
            "format": FORMAT,
            "format_version": str(FORMAT_VERSION),
            "round": str(round),
            "groups": json.dumps({g: len(v) for g, v in arrays.items()}, sort_keys=True),
            "content_sha256": _content_digest(tensors),
            "meta": json.dumps(meta, sort_keys=True, allow_nan=False),
        }
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"metadata of checkpoint {round} is not JSON: {err}") from err
    try:
        data = st_save(tensors, metadata=header)
    except (SafetensorError, ValueError, TypeError) as err:
        raise CheckpointError(f"cannot encode checkpoint {round}: {err}") from err
    folder = Path(directory)
    path = folder / checkpoint_name(round)
    try:
        folder.mkdir(parents=True, exist_ok=True)
        write_atomic(path, data, mode=0o600)
    except OSError as err:
        raise CheckpointError(
            f"{path}: cannot write checkpoint ({err.strerror or err})",
            hint="check free space and permissions of the state folder",
        ) from err
    prune_checkpoints(folder, keep=keep)
    return path, hashlib.sha256(data).hexdigest()


def load_checkpoint(
    path: Path, *, sha256: str | None = None
) -> tuple[int, dict[str, list[np.ndarray]], dict[str, Any]]:
    """Read a checkpoint; return ``(round, arrays, meta)``.

    Parameters
    ----------
    path:
        A file written by :func:`save_checkpoint`.
    sha256:
        The file digest :func:`save_checkpoint` returned (e.g. from the store); checked when
        given. The tensor content digest in the header is always checked.

    Raises
    ------
    CheckpointError
        When the file is missing, truncated, corrupt, of another format, or its digest differs.
    """
    path = Path(path)
    try:
        data = path.read_bytes()
    except OSError as err:
        raise CheckpointError(f"{path}: cannot read checkpoint ({err.strerror or err})") from err
    if sha256 is not None and hashlib.sha256(data).hexdigest() != sha256.lower():
        raise CheckpointError(
            f"{path}: checkpoint sha256 is {hashlib.sha256(data).hexdigest()[:16]}..., expected"
            f" {sha256[:16]}...; the file was changed or damaged",
            hint="restore it from a backup or resume from an older checkpoint",
        )
    header = _read_header(path, data)
    try:
        tensors = st_load(data)
    except (SafetensorError, ValueError) as err:
        raise CheckpointError(f"{path}: not a readable safetensors file ({err})") from err
    if header.get("format") != FORMAT or header.get("format_version") != str(FORMAT_VERSION):
        raise CheckpointError(
            f"{path}: not a Phalanx checkpoint: expected format {FORMAT} v{FORMAT_VERSION},"
            f" found {header.get('format')!r} v{header.get('format_version')!r}"
        )
    if _content_digest(tensors) != header.get("content_sha256"):
        raise CheckpointError(f"{path}: checkpoint content does not match its digest (damaged)")
    try:
        round = int(header["round"])
        groups: dict[str, int] = json.loads(header["groups"])
        meta: dict[str, Any] = json.loads(header["meta"])
        arrays = {g: [tensors[f"{g}/{i}"] for i in range(n)] for g, n in groups.items()}
    except (KeyError, ValueError, TypeError) as err:
        raise CheckpointError(f"{path}: checkpoint header is incomplete ({err})") from err
    named = _NAME.fullmatch(path.name)
    if named is not None and int(named.group(1)) != round:
        raise CheckpointError(f"{path}: file name says round {named.group(1)}, header {round}")
    return round, arrays, meta


def list_checkpoints(directory: Path) -> list[tuple[int, Path]]:
    """``(round, path)`` of the checkpoints in ``directory``, oldest first."""
    folder = Path(directory)
    if not folder.is_dir():
        return []
    found = [(_NAME.fullmatch(p.name), p) for p in folder.iterdir()]
    return sorted((int(m.group(1)), p) for m, p in found if m is not None and p.is_file())


def latest_checkpoint(directory: Path) -> Path | None:
    """The checkpoint of the highest round in ``directory``, or ``None``."""
    found = list_checkpoints(directory)
    return found[-1][1] if found else None


def prune_checkpoints(directory: Path, *, keep: int = 3) -> list[Path]:
    """Delete all but the newest ``keep`` checkpoints; return the deleted paths."""
    found = list_checkpoints(directory)
    doomed = [p for _, p in found[: max(0, len(found) - keep)]]
    for p in doomed:
        p.unlink(missing_ok=True)
    return doomed


def _content_digest(tensors: dict[str, np.ndarray]) -> str:
    h = hashlib.sha256()
    for name in sorted(tensors):
        a = tensors[name]
        h.update(json.dumps([name, a.dtype.str, list(a.shape)]).encode("utf-8"))
        h.update(a.tobytes())
    return h.hexdigest()


def _read_header(path: Path, data: bytes) -> dict[str, str]:
    """The ``__metadata__`` of a safetensors file, read with bounds checks."""
    if len(data) < 8:
        raise CheckpointError(f"{path}: checkpoint is truncated ({len(data)} bytes)")
    (size,) = struct.unpack("<Q", data[:8])
    if size > min(_MAX_HEADER, len(data) - 8):
        raise CheckpointError(
            f"{path}: checkpoint is truncated or corrupt (header of {size} bytes, file of"
            f" {len(data)})"
        )
    try:
        doc = json.loads(data[8 : 8 + size])
        meta = doc.get("__metadata__", {})
    except (ValueError, AttributeError) as err:
        raise CheckpointError(f"{path}: checkpoint header is not JSON ({err})") from err
    if not isinstance(meta, dict):
        raise CheckpointError(f"{path}: checkpoint metadata is not a mapping")
    return {str(k): str(v) for k, v in meta.items()}
