"""The coordinator of the networked benchmark federation (started by ``bench_deployment.py``).

This is ``phalanx coordinator serve --config federation.toml`` with two additions, both outside
the production code path of a round:

* the reference workload's schema (122 numeric columns) is registered under ``fedbench-122`` in
  :data:`phalanx.data.schemas.SCHEMAS` before :class:`phalanx.cli.coordinator.CoordinatorHost`
  reads ``[data] schema`` (the host only accepts named schemas);
* a subclass of the host evaluates the global model centrally on the workload's test set after
  every round, like the reference ServerApp, and writes the per-round marks (``eval_start``,
  ``eval_end``, accuracy, macro-F1, bytes) to a JSON file the harness reads.

Everything else (SQLite store, checkpoints, model bundle publication, the gRPC server behind its
mutual-TLS gateway, the ``Coordinator`` service) is the production ``CoordinatorHost``::

    python bench/deploy_coordinator.py --config federation.toml --test test.npz --out marks.json
"""

from __future__ import annotations

import argparse
import json
import signal
import threading
import time
from pathlib import Path
from typing import Any

from deploy_participant import SCHEMA_NAME, TAXONOMY_OF, WORKLOAD_CLASSES, to_flows, workload_schema


def main() -> None:
    t_main = time.time()
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--config", required=True, type=Path, help="federation.toml")
    ap.add_argument("--test", required=True, type=Path, help=".npz with x_test, y_test")
    ap.add_argument("--out", required=True, type=Path, help="marks JSON to write")
    a = ap.parse_args()

    from phalanx.cli.common import setup_runtime

    setup_runtime(False)  # as `phalanx coordinator serve`: logging, one torch thread
    import numpy as np

    from phalanx.cli.config import load_config
    from phalanx.cli.coordinator import CoordinatorHost
    from phalanx.core.messages import Stage
    from phalanx.core.rounds import RoundRecord, StageRequest
    from phalanx.core.taxonomy import CATEGORY_INDEX
    from phalanx.data.schemas import SCHEMAS
    from phalanx.models.federated import build_model

    SCHEMAS[SCHEMA_NAME] = workload_schema()
    with np.load(a.test) as npz:
        x_te, y_te = npz["x_test"], npz["y_test"]
    test = to_flows(x_te, y_te)
    cat_idx = np.array([CATEGORY_INDEX[TAXONOMY_OF[c]] for c in WORKLOAD_CLASSES])
    y_test = cat_idx[y_te]
    del x_te

    class BenchHost(CoordinatorHost):
        """``CoordinatorHost`` plus the reference's central evaluation and round marks."""

        marks: list[dict[str, Any]]
        test_x: Any = None

        def central_eval(self, rnd: int) -> None:
            t0 = time.time()
            fed = self.federation
            assert fed.transform is not None
            if self.test_x is None:
                self.test_x = fed.transform.transform(test)
            model = build_model(self.model_spec, fed.transform.n_features, {"seed": 0})
            model.set_weights(fed.weights)
            pred = model.predict(self.test_x)
            f1s = []
            for c in np.unique(y_test):
                tp = float(np.sum((pred == c) & (y_test == c)))
                denom = float(np.sum(pred == c) + np.sum(y_test == c))
                f1s.append(2 * tp / denom if denom else 0.0)
            t1 = time.time()
            transport = self.server.transport
            self.marks.append(
                {
                    "round": rnd,
                    "eval_start": t0,
                    "eval_end": t1,
                    "accuracy": float(np.mean(pred == y_test)),
                    "macro_f1": float(np.mean(f1s)),
                    "bytes_down": transport.bytes_down,
                    "bytes_up": transport.bytes_up,
                }
            )
            print(f"[phalanx-deploy] round={rnd} acc={self.marks[-1]['accuracy']:.4f}", flush=True)

        def on_stage(self, req: StageRequest) -> None:
            first = req.stage is Stage.FIT or (req.stage is Stage.SECAGG_ADVERTISE and req.round)
            if first and not self.marks:
                self.central_eval(0)  # the initial weights exist once the STATS stage is done
            super().on_stage(req)

        def on_round(self, record: RoundRecord) -> None:
            self.central_eval(record.round)
            t0 = time.time()
            super().on_round(record)  # checkpoint, model bundle, store: counted in round r+1
            self.marks[-1]["host_on_round_s"] = time.time() - t0

    host = BenchHost(load_config(a.config))
    host.marks = []
    stop = threading.Event()

    def _stop(*_: object) -> None:
        stop.set()
        host.server.stop()

    signal.signal(signal.SIGTERM, _stop)
    t_ready = time.time()
    host.run(stop)
    fed = host.federation
    a.out.write_text(
        json.dumps(
            {
                "system": "phalanx-deploy",
                "t_servermain_start": t_main,
                "t_host_ready": t_ready,
                "num_rounds": fed.round,
                "model_bytes": int(sum(w.nbytes for w in fed.weights)),
                "marks": host.marks,
                "stages": [
                    {
                        "round": t.round,
                        "stage": t.stage.value,
                        "seconds": t.seconds,
                        "bytes_down": t.bytes_down,
                        "bytes_up": t.bytes_up,
                        "replies": t.replies,
                    }
                    for t in host.coordinator.timings
                ],
            },
            indent=1,
        )
    )


if __name__ == "__main__":
    main()
