"""Core value types shared by every layer.

Numpy arrays are the currency between layers: a model's parameters are a :data:`Weights` list of
arrays in a fixed order, and aggregation works on those lists, never on message containers.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import NewType

import numpy as np
from numpy.typing import NDArray

ParticipantId = NewType("ParticipantId", str)
RoundId = NewType("RoundId", int)

Array = NDArray[np.floating]
Weights = list[NDArray[np.float32]]
"""A model's parameters as float32 arrays, in the model's fixed parameter order."""


@dataclass(frozen=True)
class Update:
    """What a participant returns from a training task.

    Attributes
    ----------
    participant:
        Who produced the update.
    round:
        The round it answers; updates for another round are refused.
    weights:
        The new local weights (or a delta, as the algorithm says), one array per parameter.
    num_examples:
        Training examples behind the update (the FedAvg weight).
    schema_hash:
        Hash of the feature schema the participant trained on; a mismatch is refused.
    metrics:
        Scalar training metrics (loss, ...), never data.
    extras:
        Algorithm-specific arrays, e.g. SCAFFOLD's control-variate delta.
    """

    participant: ParticipantId
    round: int
    weights: Weights
    num_examples: int
    schema_hash: str
    metrics: dict[str, float] = field(default_factory=dict)
    extras: dict[str, Weights] = field(default_factory=dict)


def weights_nbytes(weights: Weights) -> int:
    """Bytes the arrays occupy in raw form (what they cost on the wire, before framing)."""
    return int(sum(w.nbytes for w in weights))
