"""End-to-end secure aggregation: real processes, mutual TLS, participants killed mid-protocol."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from phalanx.cli.participant import load_local_data
from phalanx.core.features.transform import FeatureTransform
from phalanx.core.messages import Stage, Task
from phalanx.core.rounds import participant_seed
from phalanx.core.secagg.params import SecAggSettings
from phalanx.core.types import ParticipantId
from phalanx.models.bundle import load_model
from phalanx.models.federated import build_model
from phalanx.services.participant import Participant
from tests.e2e.federation import Federation as Deployed
from tests.e2e.federation import free_port
from tests.e2e.test_deployment import SPEC

torch.set_num_threads(1)

ORGS = ["office", "datacenter", "iot-ot", "bank", "hospital"]


def _expected(dep: Deployed, transform: dict[str, Any], members: list[str]) -> list[np.ndarray]:
    """Round 1 computed in the clear: each member trains the round-1 task in-process, and the
    weighted mean of the clipped deltas (as ``phalanx.core.secagg.vectors`` defines them) is
    added to the initial model."""
    settings = SecAggSettings()
    n_features = FeatureTransform.from_dict(transform).n_features
    start = build_model(SPEC, n_features, {"seed": 3}).get_weights()
    num = [np.zeros(w.shape, np.float64) for w in start]
    total = 0.0
    for org in members:
        i = ORGS.index(org)
        part = Participant(ParticipantId(org), load_local_data(dep.data_spec(i), "auto"))
        config = {
            "model": SPEC,
            "local_epochs": 1,
            "seed": participant_seed(3, 1, ParticipantId(org)),
            "transform": transform,
        }
        reply = part.handle(Task(1, Stage.FIT, part.schema_hash, start, config))
        deltas = [a.astype(np.float64) - s for a, s in zip(reply.arrays, start, strict=True)]
        norm = float(np.sqrt(sum(float((d**2).sum()) for d in deltas)))
        clip = min(1.0, settings.clip_norm / norm) if norm > 0 else 1.0
        w = min(reply.num_examples / settings.weight_cap, 1.0)
        for acc, d in zip(num, deltas, strict=True):
            acc += w * clip * d
        total += w
    return [(s + acc / total).astype(np.float32) for s, acc in zip(start, num, strict=True)]


def _run(
    tmp_path: Path, die_at: str, minimum: int
) -> tuple[list[np.ndarray], list[np.ndarray], list[str]]:
    dep = Deployed(tmp_path, ORGS, rounds=1, port=free_port(), minimum=minimum, deadline_s=20.0)
    try:
        dep.start_coordinator()
        dep.wait_log("coordinator", "listening on port", timeout_s=60)
        # the dying one connects first, so the round (which starts once `minimum` are
        # connected) certainly includes it
        dying = dep.start_participant(len(ORGS) - 1, die_at=die_at)
        dep.wait_log("hospital", "connecting", timeout_s=60)
        for i in range(len(ORGS) - 1):
            dep.start_participant(i)
        dep.wait_rounds(1, timeout_s=240)
        assert dep.procs["coordinator"].wait(timeout=60) == 0, dep.log("coordinator")
        assert dying.wait(timeout=10) == -9, dep.log("hospital")  # killed, not finished
        assert f"received {die_at} of round 1" in dep.log("hospital")
    finally:
        dep.stop_all()
    store = dep.store()
    try:
        (record,) = [r for r in store.rounds() if r.state == "completed"]
        version = store.model_versions()[-1]
    finally:
        store.close()
    model, meta = load_model(Path(version.path))
    members = sorted(record.participants)
    return model.get_weights(), _expected(dep, meta["transform"], members), members


@pytest.mark.slow
def test_a_participant_killed_after_its_masked_input_leaves_a_correct_sum(tmp_path: Path) -> None:
    """Five organizations; ``hospital`` is SIGKILLed right after sending its masked input. The
    coordinator reconstructs its self-mask from its neighbours' shares, so the round completes,
    and the sum holds every masked input that arrived: the model equals the simulation's."""
    networked, expected, members = _run(tmp_path, "secagg_unmask", minimum=5)
    assert members == sorted(ORGS)
    for a, b in zip(networked, expected, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)


@pytest.mark.slow
def test_a_participant_killed_before_its_masked_input_leaves_the_sum_of_the_others(
    tmp_path: Path,
) -> None:
    """``hospital`` is SIGKILLed after sharing its keys, before sending its masked input: the
    coordinator reconstructs its masking key from its neighbours' shares and removes its pairwise
    masks, so the round completes with exactly the sum of the four others."""
    networked, expected, members = _run(tmp_path, "secagg_masked_input", minimum=4)
    assert members == sorted(set(ORGS) - {"hospital"})
    for a, b in zip(networked, expected, strict=True):
        np.testing.assert_allclose(a, b, atol=1e-5)
