"""What completed training rounds produced, and how a coordinator checkpoints it.

A :class:`RoundRecord` per round; JSON-ready (de)serialization for the coordinator's resumable
snapshot (:meth:`phalanx.core.rounds.Federation.snapshot`); example-weighted metric means.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from phalanx.core.types import ParticipantId


@dataclass(frozen=True)
class RoundRecord:
    """What one completed training round produced."""

    round: int
    participants: tuple[ParticipantId, ...]
    num_examples: int
    train_metrics: dict[str, float]
    eval_metrics: dict[str, float] = field(default_factory=dict)
    refused: dict[ParticipantId, str] = field(default_factory=dict)
    suspicion: dict[ParticipantId, dict[str, float]] = field(default_factory=dict)
    """Per-update suspicion scores from the algorithm's ``report()`` (robust aggregators)."""


def record_to_dict(r: RoundRecord) -> dict[str, Any]:
    """``r`` as a JSON-ready dict (the inverse of :func:`record_from_dict`)."""
    return {
        "round": r.round,
        "participants": list(r.participants),
        "num_examples": r.num_examples,
        "train_metrics": r.train_metrics,
        "eval_metrics": r.eval_metrics,
        "refused": dict(r.refused),
        "suspicion": {p: dict(s) for p, s in r.suspicion.items()},
    }


def record_from_dict(d: dict[str, Any]) -> RoundRecord:
    """The :class:`RoundRecord` a dict of :func:`record_to_dict` describes."""
    return RoundRecord(
        round=int(d["round"]),
        participants=tuple(ParticipantId(p) for p in d["participants"]),
        num_examples=int(d["num_examples"]),
        train_metrics={k: float(v) for k, v in d["train_metrics"].items()},
        eval_metrics={k: float(v) for k, v in d.get("eval_metrics", {}).items()},
        refused={ParticipantId(k): str(v) for k, v in d.get("refused", {}).items()},
        suspicion={
            ParticipantId(p): {str(k): float(v) for k, v in s.items()}
            for p, s in d.get("suspicion", {}).items()
        },
    )


def weighted_metrics(items: Sequence[tuple[int, Mapping[str, float]]]) -> dict[str, float]:
    """Example-weighted means of the metrics every item reports."""
    total = sum(n for n, _ in items)
    if total <= 0:
        return {}
    keys = set.intersection(*(set(m) for _, m in items)) if items else set()
    return {k: float(sum(n * m[k] for n, m in items) / total) for k in sorted(keys)}
