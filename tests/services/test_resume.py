"""A federation restored from a snapshot continues exactly where an uninterrupted one goes."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from phalanx.adapters.inproc import InProcessTransport
from phalanx.core.aggregation import make_algorithm
from phalanx.core.errors import SchemaMismatchError
from phalanx.core.rounds import Federation, FederationPlan
from phalanx.core.types import ParticipantId
from phalanx.data.synthetic import generate_federation
from phalanx.models.federated import build_model
from phalanx.services.coordinator import Coordinator
from phalanx.services.participant import Participant

torch.set_num_threads(1)
SPEC = {"kind": "mlp", "hidden": [16], "dropout": 0.0, "lr": 0.01, "batch_size": 64}


def _setup(rounds: int, algorithm: str) -> tuple[Federation, InProcessTransport]:
    orgs = generate_federation(3, 400, seed=11)
    parts = {ParticipantId(f"org-{i}"): Participant(ParticipantId(f"org-{i}"), b)
             for i, b in enumerate(orgs)}  # fmt: skip
    transport = InProcessTransport({p: h.handle for p, h in parts.items()})
    plan = FederationPlan(rounds=rounds, fraction=0.67, seed=4,
                          train_config={"model": SPEC, "local_epochs": 1})  # fmt: skip

    def init(n: int) -> list[np.ndarray]:
        return build_model(SPEC, n, {"seed": 4}).get_weights()

    return Federation(plan, orgs[0].schema, make_algorithm(algorithm), init), transport


@pytest.mark.parametrize("algorithm", ["fedadam", "scaffold"])
def test_restore_then_continue_equals_uninterrupted(algorithm: str) -> None:
    straight, t1 = _setup(3, algorithm)
    Coordinator(straight, t1).run()

    first, t2 = _setup(2, algorithm)
    Coordinator(first, t2).run()
    meta, arrays = first.snapshot()

    resumed, t3 = _setup(3, algorithm)
    resumed.restore(meta, arrays)
    assert resumed.round == 2
    Coordinator(resumed, t3).run()
    assert [r.round for r in resumed.history] == [1, 2, 3]
    assert [r.participants for r in resumed.history] == [r.participants for r in straight.history]
    if algorithm == "fedadam":  # SCAFFOLD's participant-side controls live in the participants
        for a, b in zip(straight.weights, resumed.weights, strict=True):
            np.testing.assert_array_equal(a, b)


def test_a_snapshot_of_another_schema_is_refused() -> None:
    fed, t = _setup(1, "fedavg")
    Coordinator(fed, t).run()
    meta, arrays = fed.snapshot()
    meta["schema_hash"] = "f" * 64
    other, _ = _setup(1, "fedavg")
    with pytest.raises(SchemaMismatchError, match="checkpoint"):
        other.restore(meta, arrays)
