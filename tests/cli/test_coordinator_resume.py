"""The coordinator resumes from the round its store recorded, whatever checkpoints lie around."""

from __future__ import annotations

import json
from pathlib import Path

import torch

from phalanx.adapters.inproc import InProcessTransport
from phalanx.adapters.pki import init_ca, issue
from phalanx.adapters.store import save_checkpoint
from phalanx.cli.config import load_config
from phalanx.cli.coordinator import CoordinatorHost
from phalanx.cli.participant import load_local_data
from phalanx.core.rounds import RoundRecord
from phalanx.core.types import ParticipantId
from phalanx.services.coordinator import Coordinator
from phalanx.services.participant import Participant

torch.set_num_threads(1)
ORGS = ["office", "bank"]


def _config(root: Path, rounds: int) -> Path:
    init_ca(root / "pki", "resume-fed")
    issue(root / "pki", "coordinator", "localhost")
    path = root / "federation.toml"
    path.write_text(
        '[federation]\nname = "resume-fed"\n\n[model]\nhidden = [16]\n\n'
        f"[training]\nrounds = {rounds}\nseed = 2\nsecure_aggregation = false\n\n"
        f"[participants]\nenrolled = {json.dumps(ORGS)}\nmin = 2\n"
    )
    return path


def _transport() -> InProcessTransport:
    parts = {
        ParticipantId(o): Participant(
            ParticipantId(o), load_local_data(f"synthetic:{o}:500:{i}", "auto")
        )
        for i, o in enumerate(ORGS)
    }
    return InProcessTransport({p: h.handle for p, h in parts.items()})


def test_a_checkpoint_the_store_never_recorded_is_ignored(tmp_path: Path) -> None:
    config = _config(tmp_path, rounds=3)
    host = CoordinatorHost(load_config(config))
    fed = host.federation
    host.coordinator = Coordinator(
        fed, _transport(), on_round=host.on_round, on_stage=host.on_stage
    )
    fed.plan = fed.plan.__class__(**{**fed.plan.__dict__, "rounds": 2})
    host.coordinator.run()
    assert host.store.last_completed_round() == 2

    def crash_after_checkpoint(record: RoundRecord) -> None:  # checkpoint written, store not
        meta, arrays = fed.snapshot()
        save_checkpoint(host.checkpoints, record.round, arrays, {"federation": meta})

    fed.plan = fed.plan.__class__(**{**fed.plan.__dict__, "rounds": 3})
    Coordinator(fed, _transport(), on_round=crash_after_checkpoint).run()
    assert fed.round == 3
    host.store.close()

    restarted = CoordinatorHost(load_config(config))
    try:
        assert restarted.federation.round == 2  # round 3 will be run again, not skipped
        assert restarted.store.last_completed_round() == 2
    finally:
        restarted.store.close()
