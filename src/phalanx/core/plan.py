"""What a federation runs: its plan, the stage requests it makes, per-participant seeds."""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from phalanx.core.errors import ConfigError
from phalanx.core.messages import Stage, Task
from phalanx.core.secagg.params import SecAggSettings
from phalanx.core.types import ParticipantId


@dataclass(frozen=True)
class FederationPlan:
    """What a federation runs.

    Attributes
    ----------
    rounds:
        Training rounds.
    fraction:
        Share of available participants sampled each round (at least ``min_participants``).
    min_participants:
        Fewest replies a round accepts; fewer is a :class:`RoundError`.
    max_participants:
        Most participants sampled in one round (``None``: no cap).
    seed:
        Root seed: participant sampling and every participant's per-round training seed derive
        from it, so a run is reproducible on any transport.
    federated_stats:
        Run the ``STATS`` stage to fit the feature transform from everyone's statistics.
    evaluate:
        Run an ``EVALUATE`` stage after each round (participants score the new global model on
        their local validation data).
    train_config:
        JSON-ready parameters sent with every ``FIT`` task (model spec, local epochs, lr ...).
    secure_aggregation:
        Run ``STATS`` and ``FIT`` through SecAgg+: the coordinator learns only bucket sums.
    secagg:
        Clipping, weighting, bucketing and encoding of secure aggregation.
    """

    rounds: int
    fraction: float = 1.0
    min_participants: int = 1
    max_participants: int | None = None
    seed: int = 0
    federated_stats: bool = True
    evaluate: bool = False
    train_config: dict[str, Any] = field(default_factory=dict)
    secure_aggregation: bool = False
    secagg: SecAggSettings = field(default_factory=SecAggSettings)

    def __post_init__(self) -> None:
        if self.rounds < 1:
            raise ConfigError(f"rounds must be at least 1, found {self.rounds}")
        if not 0.0 < self.fraction <= 1.0:
            raise ConfigError(f"fraction must be in (0, 1], found {self.fraction}")
        if self.min_participants < 1:
            raise ConfigError(f"min_participants must be at least 1, found {self.min_participants}")
        if self.max_participants is not None and self.max_participants < self.min_participants:
            raise ConfigError(
                f"max_participants ({self.max_participants}) is below min_participants"
                f" ({self.min_participants})"
            )


@dataclass(frozen=True)
class StageRequest:
    """One stage to run: the tasks to send and how many replies make it count."""

    round: int
    stage: Stage
    tasks: dict[ParticipantId, Task]
    min_replies: int


def participant_seed(root: int, round_id: int, participant: ParticipantId) -> int:
    """The training seed of ``participant`` in ``round_id``: stable across transports."""
    ss = np.random.SeedSequence([root, round_id, zlib.crc32(str(participant).encode())])
    return int(ss.generate_state(1, dtype=np.uint32)[0])
