"""One participant of the networked benchmark federation (started by ``bench_deployment.py``).

The same agent as ``phalanx participant join``: :func:`phalanx.services.agent.run_agent` over a
mutual-TLS :class:`phalanx.adapters.grpc.client.CoordinatorClient`, answering with a
:class:`phalanx.services.participant.Participant` wrapped in the ``log_sent`` middleware. The only
difference is where the flows come from: ``load_local_data`` reads NetFlow-style files or a
synthetic profile, while the reference workload is 122 anonymous float32 columns. This launcher
reads the client's partition from an ``.npz`` file (``x``, ``y``) that the harness wrote, and
builds the same :class:`FlowBatch` as ``bench_simulation.py`` does::

    python bench/deploy_participant.py --coordinator 127.0.0.1:PORT --identity DIR --data FILE.npz
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

WORKLOAD_CLASSES = ("normal", "dos", "probe", "r2l", "u2r")
TAXONOMY_OF = {  # the workload's classes in Phalanx's taxonomy (as in bench_simulation.py)
    "normal": "benign",
    "dos": "dos",
    "probe": "recon",
    "r2l": "brute-force",
    "u2r": "exploit",
}
SCHEMA_NAME = "fedbench-122"
N_FEATURES = 122


def workload_schema(n_features: int = N_FEATURES) -> Any:
    """The reference workload's schema: ``n_features`` numeric columns ``f000``..."""
    from phalanx.core.features.schema import Column, ColumnKind, FeatureSchema

    return FeatureSchema(
        source="fedbench",
        version=1,
        columns=tuple(Column(f"f{i:03d}", ColumnKind.NUMERIC) for i in range(n_features)),
    )


def to_flows(x: Any, y: Any) -> Any:
    """A :class:`FlowBatch` of the workload's rows ``x`` (float32) and class indices ``y``."""
    import numpy as np

    from phalanx.core.features.batch import FlowBatch

    names = np.array(WORKLOAD_CLASSES, dtype=object)
    cats = np.array([TAXONOMY_OF[c] for c in WORKLOAD_CLASSES], dtype=object)
    return FlowBatch(
        schema=workload_schema(x.shape[1]),
        numeric=x.astype(np.float64),
        categorical=np.empty((len(y), 0), dtype=object),
        label=names[y],
        category=cats[y],
    )


def main() -> None:
    t0 = time.time()
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--coordinator", required=True, help="HOST:PORT")
    ap.add_argument("--identity", required=True, type=Path, help="participant identity folder")
    ap.add_argument("--data", required=True, type=Path, help=".npz with x (float32) and y")
    a = ap.parse_args()

    # As `phalanx participant join` does (phalanx.cli.common.setup_runtime): one torch thread.
    logging.basicConfig(
        level=logging.WARNING, format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("phalanx.participant").setLevel(logging.INFO)
    import numpy as np
    import torch

    torch.set_num_threads(1)

    from phalanx.adapters.grpc.client import CoordinatorClient
    from phalanx.adapters.pki import identity_from_pem, load_identity
    from phalanx.core.types import ParticipantId
    from phalanx.services.agent import run_agent
    from phalanx.services.participant import Participant, log_sent

    key, cert, ca = load_identity(a.identity).read()
    name = identity_from_pem(cert).name
    with np.load(a.data) as npz:
        batch = to_flows(npz["x"], npz["y"])
    from phalanx.cli.participant import secure_middleware

    # the secure-aggregation stages are answered only when the coordinator runs them
    secure = secure_middleware(a.identity, name, key, cert, None)
    participant = Participant(ParticipantId(name), batch, middleware=[log_sent, secure])
    print(
        f"{name}: {len(batch):,} flows, schema {batch.schema.hash()[:12]}, ready after"
        f" {time.time() - t0:.2f} s; connecting to {a.coordinator}",
        flush=True,
    )

    def connect() -> CoordinatorClient:
        return CoordinatorClient(a.coordinator, ca_cert=ca, cert=cert, key=key)

    report = run_agent(connect, participant)
    print(f"{name}: federation finished ({report})", flush=True)


if __name__ == "__main__":
    main()
