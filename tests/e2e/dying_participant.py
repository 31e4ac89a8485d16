"""A real participant process that kills itself (SIGKILL) at a chosen secure-aggregation stage.

``python -m tests.e2e.dying_participant --die-at STAGE --coordinator HOST:PORT --identity DIR
--data SPEC`` runs exactly what ``phalanx participant join`` runs (same middleware, signing with
its mTLS identity key), plus an outermost middleware that, on receiving ``STAGE`` of round 1,
kills the process before answering: ``secagg_unmask`` means it dies right after sending its
masked input, ``secagg_masked_input`` right after sharing its keys.
"""

from __future__ import annotations

import argparse
import os
import signal
from pathlib import Path

import torch

from phalanx.adapters.grpc.client import CoordinatorClient
from phalanx.adapters.pki import identity_from_pem, load_identity
from phalanx.cli.participant import load_local_data, secure_middleware
from phalanx.core.messages import Reply, Task
from phalanx.core.types import ParticipantId
from phalanx.services.agent import run_agent
from phalanx.services.participant import Handler, Participant, log_sent


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--die-at", required=True)
    ap.add_argument("--coordinator", required=True)
    ap.add_argument("--identity", required=True, type=Path)
    ap.add_argument("--data", required=True)
    a = ap.parse_args()
    torch.set_num_threads(1)
    key, cert, ca = load_identity(a.identity).read()
    name = identity_from_pem(cert).name

    def die(task: Task, call_next: Handler) -> Reply:
        if task.round == 1 and task.stage.value == a.die_at:
            print(f"{name}: received {a.die_at} of round 1; killing myself", flush=True)
            os.kill(os.getpid(), signal.SIGKILL)
        return call_next(task)

    secure = secure_middleware(a.identity, name, key, cert, None)
    participant = Participant(
        ParticipantId(name), load_local_data(a.data, "auto"), middleware=[die, log_sent, secure]
    )

    def connect() -> CoordinatorClient:
        return CoordinatorClient(a.coordinator, ca_cert=ca, cert=cert, key=key)

    print(f"{name}: connecting to {a.coordinator}", flush=True)

    run_agent(connect, participant)


if __name__ == "__main__":
    main()
