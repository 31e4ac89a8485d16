"""The per-alert ECS renderer ``phalanx detect`` used before the column-wise one (the oracle).

Copied unchanged (apart from being module functions instead of ``Detector`` methods) from
``src/phalanx/services/detection.py`` at commit 7d43376, so the tests can check that
:meth:`phalanx.services.alerts.AlertBatch.to_jsonl` writes the very same documents.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray

from phalanx.core.features.batch import FlowBatch
from phalanx.services.alerts import TIMESTAMP, TRANSPORTS, threat


def documents(
    batch: FlowBatch,
    hit: NDArray[np.intp],
    scores: list[float],
    categories: list[str],
    why: list[list[tuple[str, float]]],
    *,
    kind: str,
    threshold: float,
    model_id: str,
    model_version: str,
    now: str,
    source: str,
    offset: int,
) -> list[dict[str, Any]]:
    """The documents of the alerting rows ``hit`` of ``batch``."""
    fields = _FlowFields(batch, hit)
    rows = (hit + offset).tolist()
    return [
        _alert(
            fields,
            i,
            scores[i],
            categories[i],
            why[i],
            now,
            source,
            rows[i],
            kind=kind,
            threshold=threshold,
            model_id=model_id,
            model_version=model_version,
        )
        for i in range(len(rows))
    ]


def _alert(
    f: _FlowFields,
    i: int,
    score: float,
    category: str,
    why: list[tuple[str, float]],
    now: str,
    source: str,
    row: int,
    *,
    kind: str,
    threshold: float,
    model_id: str,
    model_version: str,
) -> dict[str, Any]:
    ts = f.timestamp(i)
    doc: dict[str, Any] = {
        "@timestamp": ts or now,
        "event": {
            "kind": "alert",
            "category": ["network", "intrusion_detection"],
            "type": ["info"],
            "module": "phalanx",
            "dataset": "phalanx.alerts",
            "created": now,
            "risk_score": round(score * 100.0, 3) if kind == "mlp" else None,
            "severity": _severity(score, threshold),
        },
        "source": {"ip": f.src_ip[i], "port": f.src_port[i]},
        "destination": {"ip": f.dst_ip[i], "port": f.dst_port[i]},
        "network": {"transport": f.transport[i], "iana_number": f.proto[i]},
        "rule": {
            "name": f"phalanx-{category}",
            "category": category,
            "ruleset": "phalanx",
            "version": model_version,
            "description": f"{kind} attack score {score:.4g} above {threshold:.4g}",
        },
        "threat": threat(category),
        "phalanx": {
            "category": category,
            "score": score,
            "threshold": threshold,
            "model": {"id": model_id, "version": model_version, "kind": kind},
            "top_features": [{"feature": n, "contribution": v} for n, v in why],
            "input": {"path": source, "row": row},
        },
    }
    if doc["event"]["risk_score"] is None:
        del doc["event"]["risk_score"]
    return doc


def _severity(score: float, threshold: float) -> int:
    if threshold <= 0:
        return 100
    return int(min(100, max(1, round(50 * score / threshold))))


def _ipv4(values: NDArray[Any]) -> list[str]:
    a = values.astype(np.uint64)
    return [f"{(v >> 24) & 255}.{(v >> 16) & 255}.{(v >> 8) & 255}.{v & 255}" for v in a.tolist()]


def _texts(values: NDArray[Any]) -> list[str]:
    if np.issubdtype(values.dtype, np.integer):
        return _ipv4(values)
    return [str(v) for v in values.tolist()]


def _ports(values: NDArray[Any] | None, n: int) -> list[int | None]:
    if values is None:
        return [None] * n
    out: list[int | None] = []
    for v in values.tolist():
        try:
            out.append(int(float(v)))
        except (TypeError, ValueError):
            out.append(None)
    return out


class _FlowFields:
    def __init__(self, batch: FlowBatch, rows: NDArray[np.intp]) -> None:
        ids = batch.identifiers
        n = len(rows)
        cat = {name: batch.categorical[rows, j] for j, name in enumerate(batch.schema.categorical)}

        def ident(name: str) -> NDArray[Any] | None:
            return ids[name][rows] if name in ids else None

        src, dst = ident("IPV4_SRC_ADDR"), ident("IPV4_DST_ADDR")
        none: list[str | None] = [None] * n
        self.src_ip: list[str | None] = list(_texts(src)) if src is not None else none
        self.dst_ip: list[str | None] = list(_texts(dst)) if dst is not None else none
        self.src_port = _ports(ident("L4_SRC_PORT"), n)
        dport = ident("L4_DST_PORT")
        self.dst_port = _ports(dport if dport is not None else cat.get("L4_DST_PORT"), n)
        proto = cat.get("PROTOCOL")
        self.proto: list[str | None] = (
            [str(p).split(".")[0] for p in proto.tolist()] if proto is not None else [None] * n
        )
        self.transport = [TRANSPORTS.get(p or "", p) for p in self.proto]
        ts = ident(TIMESTAMP)
        self._ms: list[int] | None = ts.astype(np.int64).tolist() if ts is not None else None

    def timestamp(self, i: int) -> str | None:
        if self._ms is None:
            return None
        ms = self._ms[i]
        return datetime.fromtimestamp(ms / 1000.0, UTC).isoformat(timespec="milliseconds")
