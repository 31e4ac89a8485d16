"""``phalanx coordinator serve`` and ``phalanx status``: the deployed coordinator.

This is a composition root: it picks the SQLite store, the PKI trust root and the gRPC server
with mutual TLS, and hands them to the same :class:`~phalanx.services.coordinator.Coordinator`
and :class:`~phalanx.core.rounds.Federation` that the simulation runs.
"""

from __future__ import annotations

import hashlib
import json
import logging
import signal
import threading
import time
from dataclasses import asdict
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from phalanx.adapters.grpc.server import CoordinatorServer
from phalanx.adapters.pki import TrustRoot, load_identity
from phalanx.adapters.store import (
    SqliteStore,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from phalanx.cli.common import connect, setup_runtime, user_errors
from phalanx.cli.config import FederationConfig, load_config
from phalanx.core.aggregation import make_algorithm
from phalanx.core.errors import ConfigError, RoundError, TrustError
from phalanx.core.messages import Stage
from phalanx.core.rounds import Federation, FederationPlan, RoundRecord, StageRequest
from phalanx.core.taxonomy import CATEGORIES
from phalanx.core.types import Weights
from phalanx.data.schemas import SCHEMAS
from phalanx.models.bundle import pack_bundle, save_model
from phalanx.models.federated import build_model
from phalanx.services.coordinator import Coordinator

app = typer.Typer(no_args_is_help=True)
console = Console()
log = logging.getLogger("phalanx.coordinator")


class CoordinatorHost:
    """The coordinator's moving parts for one ``federation.toml``."""

    def __init__(self, cfg: FederationConfig) -> None:
        self.cfg = cfg
        state = cfg.state.dir
        state.mkdir(parents=True, exist_ok=True)
        self.checkpoints = state / "checkpoints"
        self.models = state / "models"
        self.store = SqliteStore(state / "federation.db")
        self.trust = TrustRoot.from_ca_dir(cfg.server.pki_dir)
        key, cert, ca = load_identity(cfg.server.identity_dir).read()
        schema_name = cfg.data.schema_name
        if schema_name not in SCHEMAS:
            raise ConfigError(
                f"data.schema {schema_name!r} is not a known schema; expected one of"
                f" {', '.join(sorted(SCHEMAS))}"
            )
        self.schema = SCHEMAS[schema_name]
        self.enrolled = set(cfg.participants.enrolled)
        self.admins = set(cfg.participants.admins)
        train = cfg.training
        self.model_spec = cfg.model.model_dump(mode="json")
        plan = FederationPlan(
            rounds=train.rounds,
            fraction=cfg.participants.fraction,
            min_participants=cfg.participants.min,
            max_participants=cfg.participants.max,
            seed=train.seed,
            train_config={"model": self.model_spec, "local_epochs": train.local_epochs},
        )
        self.federation = Federation(
            plan, self.schema, make_algorithm(train.algorithm, **train.params), self._init_weights
        )
        self.model_bytes: bytes | None = None
        self._resume()
        self.server = CoordinatorServer(
            cfg.server.listen,
            server_cert=cert,
            server_key=key,
            ca_cert=ca,
            authorize=self._authorize,
            audit=self._audit,
            participants=self.enrolled,
            admins=self.admins,
            status=self.status,
            model=lambda: self.model_bytes,
            default_deadline_s=cfg.rounds.deadline_s,
        )
        self.started = time.time()
        self.phase = "starting"

    def _audit(self, event: str, actor: str, **detail: Any) -> None:
        self.store.audit(event, actor, **detail)

    def _init_weights(self, n_features: int) -> Weights:
        return build_model(
            self.model_spec, n_features, {"seed": self.cfg.training.seed}
        ).get_weights()

    def _authorize(self, cert_pem: bytes) -> str:
        ident = self.trust.verify(cert_pem)
        if ident.federation != self.cfg.federation.name:
            raise TrustError(
                f"certificate of {ident.name!r} belongs to federation {ident.federation!r},"
                f" this is {self.cfg.federation.name!r}"
            )
        allowed = self.enrolled if ident.role == "participant" else self.admins
        if ident.role not in ("participant", "admin") or ident.name not in allowed:
            raise TrustError(
                f"{ident.role} {ident.name!r} is not enrolled in federation"
                f" {self.cfg.federation.name!r}",
                hint="add it to federation.toml [participants] and restart the coordinator",
            )
        return ident.name

    def _resume(self) -> None:
        """Continue from the checkpoint of the last round the store recorded as completed.

        The store is the record: a checkpoint written just before a crash, for a round the store
        never completed, is ignored and that round is run again (no round counted twice).
        """
        done = self.store.last_completed_round()
        if done == 0:
            return
        path = dict(list_checkpoints(self.checkpoints)).get(done)
        if path is None:
            raise ConfigError(
                f"the store says round {done} completed but {self.checkpoints} holds no"
                " checkpoint of it",
                hint="restore the state directory from backup, or start a new one",
            )
        _, arrays, meta = load_checkpoint(path)
        self.federation.restore(meta["federation"], arrays)
        self._publish(done)
        self.store.audit("coordinator.resumed", "coordinator", round=done, checkpoint=str(path))

    def _publish(self, round_id: int) -> tuple[Path, str]:
        fed = self.federation
        transform = fed.transform
        if transform is None:
            raise ConfigError("no model to publish before the statistics stage")
        model = build_model(self.model_spec, transform.n_features, {"seed": 0})
        model.set_weights(fed.weights)
        folder = self.models / f"round-{round_id:06d}"
        meta = {
            "model": self.model_spec,
            "n_features": transform.n_features,
            "schema": self.schema.to_dict(),
            "schema_hash": self.schema.hash(),
            "transform": transform.to_dict(),
            "taxonomy": list(CATEGORIES),
            "thresholds": {"default": 0.5},
            "provenance": {
                "federation": self.cfg.federation.name,
                "algorithm": self.cfg.training.algorithm,
                "round": round_id,
                "rounds": self.cfg.training.rounds,
                "participants": len(fed.history[-1].participants) if fed.history else 0,
                "dp_epsilon": None,
                "created": datetime.now(UTC).isoformat(),
            },
        }
        save_model(folder, model, meta)
        self.model_bytes = pack_bundle(folder)
        return folder, hashlib.sha256(self.model_bytes).hexdigest()

    def on_stage(self, req: StageRequest) -> None:
        self.phase = f"round {req.round} {req.stage.value}"
        if req.stage is Stage.FIT:
            self.store.begin_round(req.round, sorted(req.tasks))

    def on_round(self, record: RoundRecord) -> None:
        meta, arrays = self.federation.snapshot()
        save_checkpoint(self.checkpoints, record.round, arrays, {"federation": meta})
        folder, sha = self._publish(record.round)
        timing = self.coordinator.timings[-1] if self.coordinator.timings else None
        self.store.complete_round(
            record.round,
            participants=list(record.participants),
            bytes_up=timing.bytes_up if timing else 0,
            bytes_down=timing.bytes_down if timing else 0,
            metrics={**record.train_metrics, "left_out": len(record.refused)},
            model_sha256=sha,
            model_path=str(folder),
        )
        for pid, why in record.refused.items():
            self.store.audit("round.left_out", str(pid), round=record.round, reason=why)
        console.print(
            f"round {record.round}/{self.cfg.training.rounds}: {len(record.participants)}"
            f" participants, loss {record.train_metrics.get('loss', float('nan')):.4f}"
        )

    def status(self) -> dict[str, Any]:
        fed = self.federation
        return {
            "federation": self.cfg.federation.name,
            "phase": self.phase,
            "round": fed.round,
            "rounds": self.cfg.training.rounds,
            "done": fed.done,
            "uptime_s": time.time() - self.started,
            "schema_hash": self.schema.hash(),
            "connected": sorted(self.server.transport.available()),
            "enrolled": sorted(self.enrolled),
            "recent_rounds": [_jsonable(asdict(r)) for r in self.store.rounds(limit=5)],
            "bytes_down": self.server.transport.bytes_down,
            "bytes_up": self.server.transport.bytes_up,
        }

    def run(self, stop: threading.Event) -> None:
        port = self.server.start()
        self.store.audit(
            "coordinator.started",
            "coordinator",
            listen=self.cfg.server.listen,
            port=port,
            round=self.federation.round,
        )
        console.print(
            f"coordinator of [bold]{self.cfg.federation.name}[/] listening on port {port}"
            f" (mutual TLS), round {self.federation.round}/{self.cfg.training.rounds}"
        )
        self.coordinator = Coordinator(
            self.federation,
            self.server.transport,
            deadline_s=self.cfg.rounds.deadline_s,
            max_retries=self.cfg.rounds.max_retries,
            on_round=self.on_round,
            on_stage=self.on_stage,
            wait_for=lambda: self._wait_for_participants(stop),
        )
        try:
            try:
                self.coordinator.run()
            except RoundError as exc:
                failed = self.federation.round + 1
                self.phase = f"failed at round {failed}"
                self.store.fail_round(failed, str(exc))
                raise
            self.phase = "finished"
            self.store.audit("federation.finished", "coordinator", rounds=self.federation.round)
            self.server.finish()
            console.print("federation finished; final model published")
            stop.wait(self.cfg.rounds.linger_s)
        finally:
            self.server.stop()
            self.store.close()

    def _wait_for_participants(self, stop: threading.Event) -> None:
        """Wait (at most one round deadline) until ``min`` participants are connected.

        Past that the stage goes out to whoever is there; falling short of ``min`` is then a
        round error, retried ``max_retries`` times before the coordinator gives up.
        """
        need = self.cfg.participants.min
        end = time.monotonic() + self.cfg.rounds.deadline_s
        while len(self.server.transport.available()) < need and not stop.is_set():
            if time.monotonic() > end:
                log.warning(
                    "only %d of %d participants connected; trying the round anyway",
                    len(self.server.transport.available()),
                    need,
                )
                return
            stop.wait(0.2)


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return {k: v.isoformat() if isinstance(v, datetime) else v for k, v in d.items()}


@app.command("serve")
def serve(
    config: Path = typer.Option(..., "--config", help="federation.toml"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Run the coordinator of the federation described in CONFIG until every round is done."""
    setup_runtime(verbose)
    with user_errors():
        host = CoordinatorHost(load_config(config))
        stop = threading.Event()

        def _stop(*_: object) -> None:
            stop.set()
            host.server.stop()

        signal.signal(signal.SIGTERM, _stop)
        host.run(stop)


def status_command(
    coordinator: str = typer.Option(..., "--coordinator", help="HOST:PORT"),
    identity: Path = typer.Option(..., "--identity", help="An admin identity folder."),
    as_json: bool = typer.Option(False, "--json"),
) -> None:
    """Show a federation's progress, participants and recent rounds (admin identity)."""
    with user_errors():
        client = connect(coordinator, identity)
        try:
            doc = client.status()
        finally:
            client.close()
    if as_json:
        typer.echo(json.dumps(doc, indent=2, default=str))
        return
    console.print(
        f"[bold]{doc['federation']}[/]: {doc['phase']}, round {doc['round']}/{doc['rounds']}"
    )
    console.print(
        f"connected: {', '.join(doc['connected']) or 'none'}; enrolled: {len(doc['enrolled'])}"
    )
    table = Table(title="recent rounds")
    for col in ("round", "state", "participants", "bytes down", "bytes up"):
        table.add_column(col)
    for r in doc["recent_rounds"]:
        table.add_row(
            str(r["round"]),
            str(r["state"]),
            str(len(r["participants"] or [])),
            f"{r['bytes_down']:,}",
            f"{r['bytes_up']:,}",
        )
    console.print(table)
