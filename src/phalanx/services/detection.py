"""Detection: score flows with a model bundle, pick the calibrated threshold, write ECS alerts.

Pure of I/O: :class:`Detector` takes :class:`FlowBatch` chunks and returns alert documents; the
CLI (``phalanx detect``) reads the input, verifies the model's signature, writes the JSON lines
and prints the summary. An alert is a flow whose attack score exceeds the threshold:

* MLP classifier: score ``1 - P(benign)``; the alert's category is the most probable attack
  category.
* Autoencoder: score = reconstruction error; the category is ``other`` (an anomaly, no kind).

Thresholds come from the bundle's ``thresholds`` metadata, calibrated on benign validation flows
when the model was trained (``default`` and ``fpr=<rate>`` entries), or from ``--threshold``.
Alert documents use Elastic Common Schema field names (ECS 8.x: ``@timestamp``, ``event.*``,
``source.*``, ``destination.*``, ``network.*``, ``rule.*``, ``threat.*``); Phalanx's own fields
(score, threshold, model id and version, top contributing features) sit under ``phalanx.*``.
Threat tactics follow MITRE ATT&CK (Strom et al., "MITRE ATT&CK: Design and Philosophy", 2018).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import numpy as np
from numpy.typing import NDArray

from phalanx.core.errors import ConfigError, ModelError
from phalanx.core.features.batch import FlowBatch
from phalanx.core.features.transform import FeatureTransform
from phalanx.core.taxonomy import CATEGORIES, FALLBACK
from phalanx.models.explain import Model, attributions, column_groups, top_features
from phalanx.models.mlp import MLPClassifier

TIMESTAMP = "FLOW_START_MILLISECONDS"
TRANSPORTS = {"1": "icmp", "2": "igmp", "6": "tcp", "17": "udp", "47": "gre", "58": "ipv6-icmp"}
TACTICS: dict[str, tuple[str, str, str, str]] = {
    "dos": ("TA0040", "Impact", "T1499", "Endpoint Denial of Service"),
    "ddos": ("TA0040", "Impact", "T1498", "Network Denial of Service"),
    "recon": ("TA0043", "Reconnaissance", "T1595", "Active Scanning"),
    "brute-force": ("TA0006", "Credential Access", "T1110", "Brute Force"),
    "web-attack": ("TA0001", "Initial Access", "T1190", "Exploit Public-Facing Application"),
    "botnet-c2": ("TA0011", "Command and Control", "T1071", "Application Layer Protocol"),
    "exploit": ("TA0001", "Initial Access", "T1190", "Exploit Public-Facing Application"),
    "backdoor": ("TA0003", "Persistence", "T1133", "External Remote Services"),
    "infiltration": ("TA0010", "Exfiltration", "T1041", "Exfiltration Over C2 Channel"),
}
"""Taxonomy category -> MITRE ATT&CK (tactic id, tactic, technique id, technique)."""


def stored_fprs(thresholds: dict[str, float]) -> list[str]:
    """The ``fpr=<rate>`` keys of a bundle's thresholds, e.g. ``["fpr=0.001", "fpr=0.01"]``."""
    return sorted(k for k in thresholds if k.startswith("fpr="))


def choose_threshold(
    thresholds: dict[str, float], *, fpr: float | None = None, threshold: float | None = None
) -> tuple[float, str]:
    """The alert threshold and where it came from.

    Parameters
    ----------
    thresholds:
        The bundle's calibrated thresholds.
    fpr:
        Use the threshold stored for this false-positive rate.
    threshold:
        Use this value (overrides the stored ones).

    Raises
    ------
    ConfigError
        When both are given, the threshold is not finite, or no threshold is stored for ``fpr``
        (the message lists the stored ones).
    """
    if fpr is not None and threshold is not None:
        raise ConfigError("give --fpr or --threshold, not both")
    if threshold is not None:
        if not math.isfinite(threshold):
            raise ConfigError(f"--threshold must be a finite number, found {threshold}")
        return float(threshold), "--threshold"
    if fpr is not None:
        key = f"fpr={fpr:g}"
        if key not in thresholds:
            stored = ", ".join(k.removeprefix("fpr=") for k in stored_fprs(thresholds))
            raise ConfigError(
                f"the model stores no threshold calibrated at FPR {fpr:g}",
                hint=f"stored FPRs: {stored or 'none'}; or pass --threshold",
            )
        return float(thresholds[key]), f"calibrated at FPR {fpr:g}"
    if "default" in thresholds:
        return float(thresholds["default"]), "model default"
    raise ConfigError(
        "the model stores no default threshold",
        hint=f"pass --fpr (stored: {', '.join(stored_fprs(thresholds)) or 'none'}) or --threshold",
    )


@dataclass
class Summary:
    """Counts of one detection run."""

    flows: int = 0
    alerts: int = 0
    by_category: dict[str, int] = field(default_factory=dict)

    def add(self, flows: int, categories: Sequence[str]) -> None:
        """Count ``flows`` scored and the categories of the alerts raised among them."""
        self.flows += flows
        self.alerts += len(categories)
        for c in categories:
            self.by_category[c] = self.by_category.get(c, 0) + 1


class Detector:
    """Scores flow batches with one model and turns high scores into ECS alert documents.

    Parameters
    ----------
    model, transform:
        The detector and the feature transform it was trained with.
    threshold:
        Alert when the attack score is above it.
    model_id, model_version:
        Written into every alert (``phalanx.model``).
    top_k:
        How many contributing features each alert names.
    """

    def __init__(
        self,
        model: Model,
        transform: FeatureTransform,
        *,
        threshold: float,
        model_id: str,
        model_version: str,
        top_k: int = 3,
    ) -> None:
        if model.n_features != transform.n_features:
            raise ModelError(
                f"model takes {model.n_features} features, its transform makes"
                f" {transform.n_features}",
                hint="the bundle's metadata and weights come from different models",
            )
        self.model = model
        self.transform = transform
        self.threshold = float(threshold)
        self.model_id = model_id
        self.model_version = model_version
        self.top_k = int(top_k)
        self.kind = "mlp" if isinstance(model, MLPClassifier) else "autoencoder"
        self.names, self.groups = column_groups(transform.schema)
        self.summary = Summary()
        self._benign = model.benign_index if isinstance(model, MLPClassifier) else 0

    def score(self, x: NDArray[np.float32]) -> tuple[NDArray[np.float32], NDArray[np.object_]]:
        """Attack scores and the category each flow would be alerted as, from model inputs."""
        if isinstance(self.model, MLPClassifier):
            return self._categorize(self.model.predict_proba(x))
        score = self.model.score(x)
        return score, np.full(len(score), FALLBACK, dtype=object)

    def _categorize(
        self, proba: NDArray[np.float32]
    ) -> tuple[NDArray[np.float32], NDArray[np.object_]]:
        benign = self._benign
        score = (1.0 - proba[:, benign]).astype(np.float32)
        attack = proba.copy()
        attack[:, benign] = -1.0
        return score, np.array(CATEGORIES, dtype=object)[attack.argmax(axis=1)]

    def detect(
        self, batch: FlowBatch, *, source: str = "", offset: int = 0
    ) -> list[dict[str, Any]]:
        """ECS alert documents for the flows of ``batch`` scored above the threshold.

        ``source`` and ``offset`` (the index of the batch's first flow in its source) locate each
        alerting flow: ``phalanx.input.path`` and ``phalanx.input.row``.
        """
        x = self.transform.transform(batch)
        score, cats = self.score(x)
        hit = np.flatnonzero(score > self.threshold)
        self.summary.add(len(batch), [str(c) for c in cats[hit]])
        if hit.size == 0:
            return []
        why = top_features(attributions(self.model, x[hit], self.groups), self.names, self.top_k)
        fields = _FlowFields(batch, hit)
        now = datetime.now(UTC).isoformat()
        scores = score[hit].astype(np.float64).tolist()
        categories = [str(c) for c in cats[hit].tolist()]
        rows = (hit + offset).tolist()
        return [
            self._alert(fields, i, scores[i], categories[i], why[i], now, source, rows[i])
            for i in range(len(rows))
        ]

    def _alert(
        self,
        f: _FlowFields,
        i: int,
        score: float,
        category: str,
        why: list[tuple[str, float]],
        now: str,
        source: str,
        row: int,
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
                "risk_score": round(score * 100.0, 3) if self.kind == "mlp" else None,
                "severity": _severity(score, self.threshold),
            },
            "source": {"ip": f.src_ip[i], "port": f.src_port[i]},
            "destination": {"ip": f.dst_ip[i], "port": f.dst_port[i]},
            "network": {"transport": f.transport[i], "iana_number": f.proto[i]},
            "rule": {
                "name": f"phalanx-{category}",
                "category": category,
                "ruleset": "phalanx",
                "version": self.model_version,
                "description": f"{self.kind} attack score {score:.4g} above {self.threshold:.4g}",
            },
            "threat": _threat(category),
            "phalanx": {
                "category": category,
                "score": score,
                "threshold": self.threshold,
                "model": {"id": self.model_id, "version": self.model_version, "kind": self.kind},
                "top_features": [{"feature": n, "contribution": v} for n, v in why],
                "input": {"path": source, "row": row},
            },
        }
        if doc["event"]["risk_score"] is None:
            del doc["event"]["risk_score"]
        return doc


def _severity(score: float, threshold: float) -> int:
    """ECS ``event.severity`` 1-100 from how far the score is above the threshold."""
    if threshold <= 0:
        return 100
    return int(min(100, max(1, round(50 * score / threshold))))


def _threat(category: str) -> dict[str, Any]:
    doc: dict[str, Any] = {"framework": "MITRE ATT&CK"}
    tactic = TACTICS.get(category)
    if tactic is not None:
        doc["tactic"] = {"id": [tactic[0]], "name": [tactic[1]]}
        doc["technique"] = {"id": [tactic[2]], "name": [tactic[3]]}
    return doc


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
    """The alert-relevant identifier and categorical fields of selected rows of a batch."""

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


__all__ = ["TACTICS", "Detector", "Summary", "choose_threshold", "stored_fprs"]
