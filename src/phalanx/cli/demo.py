"""``phalanx demo``: a whole networked federation on this machine.

A throwaway federation CA, a coordinator and N participants, each a separate process talking
gRPC with mutual TLS on loopback, each with synthetic traffic of a different organization profile.
When the federation finishes, the demo pulls the global model, writes the run directory (the same
files as ``phalanx simulate``), and scores a fresh synthetic day with it.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import typer
from rich.console import Console
from rich.table import Table

from phalanx.adapters.pki import TrustRoot, init_ca, issue, issue_signer, require_signature
from phalanx.adapters.pki.signing import SIGNING_FOLDER
from phalanx.adapters.store import SqliteStore
from phalanx.cli.common import connect, round_progress, setup_runtime, user_errors
from phalanx.core.errors import ConfigError, PhalanxError
from phalanx.core.features.batch import FlowBatch
from phalanx.core.features.transform import FeatureTransform
from phalanx.core.taxonomy import BENIGN, CATEGORIES
from phalanx.data.synthetic import PROFILES, generate
from phalanx.models.bundle import load_model, pack_bundle, unpack_bundle
from phalanx.models.mlp import MLPClassifier
from phalanx.services.correlation import AlertCorrelator
from phalanx.services.detection import Detector
from phalanx.sim.baselines import centralized_baseline, local_only_baseline
from phalanx.sim.config import SimConfig
from phalanx.sim.data import SimData, parts_category_matrix, stratified_split
from phalanx.sim.report import write_report
from phalanx.sim.scoring import calibrate, score, scoring_arrays

console = Console()
FEDERATION = "phalanx-demo"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _org_data(profile: str, flows: int, seed: int) -> FlowBatch:
    return generate(profile, flows, np.random.default_rng(seed))


def demo(
    participants: int = typer.Option(4, "--participants", "-n", min=2, max=len(PROFILES)),
    rounds: int = typer.Option(8, "--rounds", "-r", min=1, max=100),
    out: Path = typer.Option(Path("runs/demo"), "--out", help="Run directory to write."),
    flows: int = typer.Option(20_000, "--flows", help="Synthetic flows per organization."),
    local_epochs: int = typer.Option(2, "--local-epochs", min=1),
    seed: int = typer.Option(0, "--seed"),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Run a federation of separate processes over mutual TLS on loopback, then score a day."""
    setup_runtime(verbose)
    with user_errors():
        _run_demo(participants, rounds, out, flows, local_epochs, seed)


def _run_demo(n: int, rounds: int, out: Path, flows: int, epochs: int, seed: int) -> None:
    t0 = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix="phalanx-demo-"))
    pki = work / "pki"
    init_ca(pki, FEDERATION)
    coord = issue(pki, "coordinator", "localhost")
    # the coordinator signs every bundle it publishes with this Ed25519 key
    issue_signer(pki, "localhost", out=coord.directory / SIGNING_FOLDER)
    orgs = list(PROFILES[:n])
    for org in orgs:
        issue(pki, "participant", org)
    issue(pki, "admin", "demo-admin")
    port = _free_port()
    config = work / "federation.toml"
    config.write_text(
        f'[federation]\nname = "{FEDERATION}"\n\n[data]\nschema = "netflow-v2"\n\n'
        f'[model]\nkind = "mlp"\nhidden = [256, 128]\n\n'
        f'[training]\nalgorithm = "fedavg"\nrounds = {rounds}\nlocal_epochs = {epochs}\n'
        f"seed = {seed}\nsecure_aggregation = true\n\n"
        f'[participants]\nenrolled = {json.dumps(orgs)}\nadmins = ["demo-admin"]\n'
        f"min = {n}\n\n[rounds]\ndeadline_s = 120\nlinger_s = 2\n\n"
        f'[server]\nlisten = "127.0.0.1:{port}"\npki_dir = "pki"\n'
        f'identity_dir = "pki/coordinators/localhost"\n\n[state]\ndir = "state"\n'
    )
    console.print(
        f"demo federation [bold]{FEDERATION}[/]: throwaway CA in {pki}, coordinator on"
        f" 127.0.0.1:{port}, {n} organizations ({', '.join(orgs)})"
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    logs = work / "logs"
    logs.mkdir()
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(name: str, args: list[str]) -> None:
        fh = (logs / f"{name}.log").open("wb")
        procs.append(
            subprocess.Popen(  # noqa: S603 - our own interpreter and module
                [sys.executable, "-m", "phalanx", *args],
                stdout=fh,
                stderr=subprocess.STDOUT,
                env=env,
            )
        )

    try:
        spawn("coordinator", ["coordinator", "serve", "--config", str(config)])
        for i, org in enumerate(orgs):
            spawn(
                org,
                [
                    "participant",
                    "join",
                    "--coordinator",
                    f"127.0.0.1:{port}",
                    "--identity",
                    str(pki / "participants" / org),
                    "--data",
                    f"synthetic:{org}:{flows}:{seed + i}",
                ],
            )
        _follow(port, pki, rounds, procs, logs)
        for p in procs:
            p.wait(timeout=60)
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
    if procs[0].returncode != 0:
        raise PhalanxError(
            f"the coordinator exited with status {procs[0].returncode}",
            hint=f"see {logs / 'coordinator.log'}",
        )
    fed_s = time.perf_counter() - t0
    _write_run(out, work, orgs, flows, rounds, epochs, seed, fed_s, t0)


def _follow(
    port: int, pki: Path, rounds: int, procs: list[subprocess.Popen[bytes]], logs: Path
) -> None:
    client = connect(f"127.0.0.1:{port}", pki / "admins" / "demo-admin", call_timeout_s=5.0)
    try:
        with round_progress(console) as bar:
            task = bar.add_task("rounds", total=rounds, status="starting")
            while procs[0].poll() is None:
                try:
                    doc = client.status()
                except PhalanxError:
                    time.sleep(0.3)
                    continue
                bar.update(
                    task,
                    completed=doc["round"],
                    status=f"{doc['phase']}, {len(doc['connected'])} connected",
                )
                if doc["done"]:
                    break
                time.sleep(0.3)
                if any(p.poll() not in (None, 0) for p in procs[1:]):
                    bad = [p.args for p in procs[1:] if p.poll() not in (None, 0)]
                    raise PhalanxError(
                        f"a participant exited early: {bad}", hint=f"see the logs in {logs}"
                    )
        time.sleep(0.5)
        unpack_bundle(client.pull_model(), logs.parent / "model")
        status = require_signature(
            logs.parent / "model", TrustRoot.from_ca_dir(logs.parent / "pki")
        )
        console.print(f"global model signature: [bold]{status.state}[/] ({status.reason})")
    finally:
        client.close()


def _write_run(
    out: Path,
    work: Path,
    orgs: list[str],
    flows: int,
    rounds: int,
    epochs: int,
    seed: int,
    fed_s: float,
    t0: float,
) -> None:
    model, meta = load_model(work / "model")
    if not isinstance(model, MLPClassifier):
        raise ConfigError("the demo federation trains the MLP classifier")
    transform = FeatureTransform.from_dict(meta["transform"])
    cfg = SimConfig(
        participants=len(orgs),
        rounds=rounds,
        local_epochs=epochs,
        seed=seed,
        baselines=True,
        synthetic_flows=flows,
        out=out,
    )
    rng = np.random.default_rng(seed + 7919)
    parts, vals = [], []
    for i, org in enumerate(orgs):
        batch = _org_data(org, flows, seed + i)
        parts.append(batch)
        _, held = stratified_split(batch.category, 0.1, rng)
        vals.append(batch.take(held))
    test = FlowBatch.concat(
        [_org_data(org, max(1000, flows // 4), seed + 1000 + i) for i, org in enumerate(orgs)]
    )
    matrix = parts_category_matrix(parts)
    data = SimData(parts, FlowBatch.concat(vals), test, "synthetic traffic (demo)", matrix)
    arrays = scoring_arrays(cfg, transform, data)
    history = _history(work, cfg, arrays)
    store = SqliteStore(work / "state" / "federation.db")
    recorded = store.rounds()
    store.close()
    summary: dict[str, Any] = {
        "federated": score(cfg, model, arrays, confusion=True),
        "rounds": rounds,
        "participants": len(orgs),
        "bytes_up": int(sum(r.bytes_up for r in recorded)),
        "bytes_down": int(sum(r.bytes_down for r in recorded)),
        "federation_s": fed_s,
        "algorithm": "fedavg",
        "partition": "one organization profile per participant",
        "data": f"synthetic traffic, {len(orgs)} organizations x {flows} flows (networked demo)",
        "test_rows": len(test),
        "train_rows": int(sum(len(p) for p in parts)),
        "schema": {
            "source": meta["schema"]["source"],
            "version": meta["schema"]["version"],
            "hash": meta["schema_hash"],
        },
        "thresholds": calibrate(model, transform, data.validation, cfg.target_fpr),
    }
    console.print("training the baselines (centralized and each organization alone)...")
    summary["centralized"] = centralized_baseline(cfg, data, transform, arrays)
    summary["local_only"] = local_only_baseline(cfg, data)
    summary["wall_s"] = time.perf_counter() - t0
    (out / "config.json").write_text(cfg.model_dump_json(indent=2) + "\n")
    with (out / "metrics.jsonl").open("w") as fh:
        for line in history:
            fh.write(json.dumps(line) + "\n")
    (out / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    unpack_bundle(pack_bundle(work / "model"), out / "model")
    write_report(out, summary, history, matrix)
    _print_results(summary)
    _score_fresh_day(model, transform, orgs, flows, seed, summary["thresholds"])
    console.print(
        f"run directory: [bold]{out}[/] (report.md, summary.json, model/); "
        f"federation files in {work}"
    )


def _history(work: Path, cfg: SimConfig, arrays: dict[str, Any]) -> list[dict[str, Any]]:
    store = SqliteStore(work / "state" / "federation.db")
    try:
        rows = [r for r in store.rounds() if r.state == "completed"]
        paths = {v.round: Path(v.path) for v in store.model_versions()}
    finally:
        store.close()
    history = []
    prev_end: float | None = None
    for r in sorted(rows, key=lambda r: r.round):
        model, _ = load_model(paths[r.round])
        result = score(cfg, model, arrays)
        start = r.started_at.timestamp() if r.started_at else 0.0
        end = r.completed_at.timestamp() if r.completed_at else start
        history.append(
            {
                "round": r.round,
                "participants": len(r.participants),
                "train": r.metrics,
                "test": {
                    "accuracy": result["accuracy"],
                    "macro_f1": result["macro_f1"],
                    "binary": result["binary"],
                },
                "bytes_down": r.bytes_down,
                "bytes_up": r.bytes_up,
                "seconds": end - (prev_end if prev_end is not None else start),
            }
        )
        prev_end = end
    return history


def _print_results(summary: dict[str, Any]) -> None:
    table = Table(title="test-set results")
    for col in ("system", "accuracy", "macro-F1", "detection", "FPR"):
        table.add_column(col, no_wrap=True)
    rows = [
        ("federated", summary["federated"]),
        ("centralized", summary["centralized"]),
        ("each org alone (mean)", summary["local_only"]["mean"]),
    ]
    for name, r in rows:
        b = r["binary"]
        table.add_row(
            name,
            f"{r['accuracy']:.4f}",
            f"{r['macro_f1']:.4f}",
            f"{b['detection_rate']:.4f}",
            f"{b['fpr']:.4f}",
        )
    console.print(table)


def _score_fresh_day(
    model: MLPClassifier,
    transform: FeatureTransform,
    orgs: list[str],
    flows: int,
    seed: int,
    thresholds: dict[str, float],
) -> None:
    day = FlowBatch.concat(
        [_org_data(org, flows // 2, seed + 5000 + i) for i, org in enumerate(orgs)]
    )
    threshold = thresholds.get("fpr=0.01", 0.5)
    # Scored as `phalanx detect` scores it: the same detector and alert correlation.
    with Detector(
        model,
        transform,
        threshold=threshold,
        model_id="demo",
        model_version="demo",
        correlator=AlertCorrelator(),
    ) as detector:
        alerts = detector.detect(day)
    alert = np.zeros(len(day), dtype=bool)
    alert[alerts.rows] = True
    predicted = np.full(len(day), BENIGN, dtype=object)
    predicted[alerts.rows] = alerts.category
    truth = day.category
    table = Table(title=f"a fresh day of traffic: {len(day):,} flows, alert threshold at 1% FPR")
    for col in ("category", "flows", "alerted", "caught", "named right"):
        table.add_column(col, no_wrap=True)
    for cat in CATEGORIES:
        sel = truth == cat
        if not sel.any():
            continue
        caught = int(alert[sel].sum())
        right = int((alert[sel] & (predicted[sel] == cat)).sum())
        share = caught / int(sel.sum())
        table.add_row(
            cat,
            f"{int(sel.sum()):,}",
            f"{caught:,}",
            "false alarms" if cat == BENIGN else f"{share:.1%}",
            "" if cat == BENIGN else f"{right:,}",
        )
    console.print(table)
