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

from phalanx.adapters.crypto import CryptographyBackend
from phalanx.adapters.grpc.server import CoordinatorServer
from phalanx.adapters.pki import Signer, TrustRoot, load_identity, sign_bundle
from phalanx.adapters.pki.signing import SIGNING_FOLDER
from phalanx.adapters.store import (
    SqliteStore,
    list_checkpoints,
    load_checkpoint,
    save_checkpoint,
)
from phalanx.cli.common import connect, setup_runtime, user_errors
from phalanx.cli.config import FederationConfig, load_config
from phalanx.cli.privacy import federation_dp
from phalanx.core.aggregation import make_algorithm
from phalanx.core.aggregation.suspicion import Quarantine
from phalanx.core.errors import ConfigError, RoundError, SecAggError, TrustError
from phalanx.core.messages import Stage
from phalanx.core.rounds import Federation, FederationPlan, RoundRecord, StageRequest
from phalanx.core.secagg.params import SecAggSettings
from phalanx.core.taxonomy import CATEGORIES
from phalanx.core.types import ParticipantId, Weights
from phalanx.data.schemas import SCHEMAS
from phalanx.models.bundle import pack_bundle, save_model
from phalanx.models.federated import build_model, server_params
from phalanx.models.hybrid import HybridDetector
from phalanx.services.coordinator import Coordinator
from phalanx.services.quarantine import QuarantineTransport

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
        signing = cfg.server.identity_dir / SIGNING_FOLDER
        self.signer = Signer.load(signing) if signing.is_dir() else None
        if self.signer is None:
            log.warning(
                "no model-signing key in %s: published models are unsigned and `phalanx detect`"
                " will refuse them (issue one with `phalanx pki issue --model-signer`)",
                signing,
            )
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
        params = server_params(
            self.model_spec, train.algorithm, train.params, classwise_head=train.classwise_head
        )
        dp_section, algorithm, weight_cap = federation_dp(
            cfg, make_algorithm(train.algorithm, **params)
        )
        plan = FederationPlan(
            rounds=train.rounds,
            fraction=cfg.participants.fraction,
            min_participants=cfg.participants.min,
            max_participants=cfg.participants.max,
            seed=train.seed,
            train_config={
                "model": self.model_spec,
                "local_epochs": train.local_epochs,
                **(
                    {"restricted_softmax": train.restricted_softmax}
                    if train.restricted_softmax != 1.0
                    else {}
                ),
                **dp_section,
            },
            secure_aggregation=train.secure_aggregation,
            secagg=SecAggSettings(
                clip_norm=train.secagg_clip,
                bucket_size=train.secagg_bucket_size,
                min_members=min(3, max(2, len(self.enrolled)), train.secagg_bucket_size or 3),
                weight_cap=weight_cap or SecAggSettings.weight_cap,
            ),
        )
        if not train.secure_aggregation:
            log.warning(
                "secure aggregation is off in %s: the coordinator sees every participant's update",
                "federation.toml",
            )
        self.federation = Federation(
            plan,
            self.schema,
            algorithm,
            self._init_weights,
            crypto=CryptographyBackend(),
            roster=[ParticipantId(p) for p in self.enrolled],
        )
        self.model_bytes: bytes | None = None
        self.quarantine = Quarantine(train.quarantine_after)
        self._resume()
        self._restore_quarantine()
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

    def _restore_quarantine(self) -> None:
        """Flag counts and suspended participants survive a restart (the store is the record)."""
        for name, (flagged, _) in self.store.flagged_counts().items():
            self.quarantine.flags[ParticipantId(name)] = flagged
        for rec in self.store.participants():
            if rec.status == "suspended":
                self.quarantine.excluded[ParticipantId(rec.name)] = 0

    def _screen(self, record: RoundRecord) -> None:
        """Keep the round's suspicion scores and apply the quarantine policy."""
        if not record.suspicion:
            return
        self.store.record_suspicion(
            record.round, {str(p): scores for p, scores in record.suspicion.items()}
        )
        for pid in self.quarantine.observe(record.round, record.suspicion):
            why = (
                f"update flagged as suspicious in {self.quarantine.flags[pid]} rounds"
                f" (quarantine_after = {self.quarantine.after})"
            )
            self.store.quarantine(str(pid), record.round, why)
            console.print(f"[bold red]quarantined[/] {pid} after round {record.round}: {why}")

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
            # A hybrid alerts above 1 on its combined score; its anomaly threshold needs benign
            # traffic the coordinator does not hold: members set it (detect --calibrate-on).
            "thresholds": (
                {"default": 1.0, "classifier": float(model.classifier_threshold)}
                if isinstance(model, HybridDetector)
                else {"default": 0.5}
            ),
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
        if self.signer is not None:
            sign_bundle(folder, self.signer)
        self.model_bytes = pack_bundle(folder)
        return folder, hashlib.sha256(self.model_bytes).hexdigest()

    def on_stage(self, req: StageRequest) -> None:
        self.phase = f"round {req.round} {req.stage.value}"
        secure_start = req.stage is Stage.SECAGG_ADVERTISE and req.round >= 1
        if req.stage is Stage.FIT or secure_start:
            self.store.begin_round(req.round, sorted(req.tasks))

    def on_round(self, record: RoundRecord) -> None:
        meta, arrays = self.federation.snapshot()
        save_checkpoint(self.checkpoints, record.round, arrays, {"federation": meta})
        folder, sha = self._publish(record.round)
        # every stage of the round (one FIT stage, or the four secure-aggregation stages)
        timings = [t for t in self.coordinator.timings if t.round == record.round]
        self.store.complete_round(
            record.round,
            participants=list(record.participants),
            bytes_up=sum(t.bytes_up for t in timings),
            bytes_down=sum(t.bytes_down for t in timings),
            metrics={**record.train_metrics, "left_out": len(record.refused)},
            model_sha256=sha,
            model_path=str(folder),
        )
        for pid, why in record.refused.items():
            self.store.audit("round.left_out", str(pid), round=record.round, reason=why)
        self._screen(record)
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
            "stopped": fed.stopped,
            "spent": dict(fed.spent),
            "uptime_s": time.time() - self.started,
            "schema_hash": self.schema.hash(),
            "connected": sorted(self.server.transport.available()),
            "enrolled": sorted(self.enrolled),
            "recent_rounds": [_jsonable(asdict(r)) for r in self.store.rounds(limit=5)],
            "bytes_down": self.server.transport.bytes_down,
            "bytes_up": self.server.transport.bytes_up,
            "suspicious": {
                name: {"flagged_rounds": f, "scored_rounds": n}
                for name, (f, n) in self.store.flagged_counts().items()
                if f
            },
            "quarantined": sorted(self.quarantine.excluded),
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
            QuarantineTransport(self.server.transport, self.quarantine),
            deadline_s=self.cfg.rounds.deadline_s,
            max_retries=self.cfg.rounds.max_retries,
            on_round=self.on_round,
            on_stage=self.on_stage,
            wait_for=lambda: self._wait_for_participants(stop),
        )
        try:
            try:
                self.coordinator.run()
            except (RoundError, SecAggError) as exc:
                failed = self.federation.round + 1
                self.phase = f"failed at round {failed}"
                self.store.fail_round(failed, str(exc))
                raise
            self.finished()
            stop.wait(self.cfg.rounds.linger_s)
        finally:
            self.server.stop()
            self.store.close()

    def finished(self) -> None:
        """Record the end of the federation (audit, status) and tell the agents it is over;
        says why when the participants' privacy budgets ended it before its planned rounds."""
        stopped = self.federation.stopped
        self.phase = "finished" if stopped is None else "stopped early"
        self.store.audit(
            "federation.finished",
            "coordinator",
            rounds=self.federation.round,
            **({"stopped": stopped} if stopped is not None else {}),
        )
        self.server.finish()
        if stopped is not None:
            console.print(f"[bold yellow]federation {stopped}[/]")
        console.print(
            "federation finished; final model published"
            if self.federation.round
            else "federation finished before any round completed; no model published"
        )

    def _wait_for_participants(self, stop: threading.Event) -> None:
        """Wait (at most one round deadline) until ``min`` participants are connected, not
        counting those whose privacy budget is spent (they are not asked to train again).

        Past that the stage goes out to whoever is there; falling short of ``min`` is then a
        round error, retried ``max_retries`` times before the coordinator gives up, or, when
        spent budgets leave too few of the enrolled members, the end of the federation
        (``Federation(roster=...)``).
        """
        need = self.cfg.participants.min

        def usable() -> int:
            return len(set(self.server.transport.available()) - set(self.federation.spent))

        end = time.monotonic() + self.cfg.rounds.deadline_s
        while usable() < need and not stop.is_set():
            if time.monotonic() > end:
                log.warning(
                    "only %d of %d participants connected (privacy budget spent: %d);"
                    " trying the round anyway",
                    usable(),
                    need,
                    len(self.federation.spent),
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
    if doc.get("spent"):
        console.print(
            f"privacy budget spent (not asked to train): {', '.join(sorted(doc['spent']))}"
        )
    if doc.get("stopped"):
        console.print(f"[bold yellow]federation {doc['stopped']}[/]")
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
    suspicious = doc.get("suspicious", {})
    if suspicious:
        sus = Table(title="suspicious participants (updates flagged, docs/robustness.md)")
        for col in ("participant", "flagged rounds", "scored rounds", "quarantined"):
            sus.add_column(col)
        for name, v in sorted(suspicious.items()):
            quarantined = "yes" if name in doc.get("quarantined", []) else ""
            sus.add_row(name, str(v["flagged_rounds"]), str(v["scored_rounds"]), quarantined)
        console.print(sus)
