"""Secure aggregation (SecAgg+) against plaintext aggregation: round time and bytes.

Two parts, each run with ``secure_aggregation`` off and on, in one invocation:

* **simulation** (``phalanx simulate`` machinery, process-pool transport, both cores): synthetic
  traffic, one organization per participant, N = 10, 50, 100 by default;
* **networked** (real processes, gRPC with mutual TLS on loopback): ``phalanx coordinator
  serve`` and N ``phalanx participant join`` processes, N = 5, 10 by default.

Figures per N: steady round time (median over rounds 2..R; a round is the sum of its stages:
one ``fit`` stage in plaintext, the four ``secagg_*`` stages with secure aggregation), bytes up
and down per round (every frame the coordinator received / sent in that round), their ratios
(goals: round time <= 1.5x at N = 100, upload <= 1.2x), and the final macro-F1 (simulation).

Run::

    nice -n 10 .venv/bin/python bench/bench_secagg.py                 # everything
    nice -n 10 .venv/bin/python bench/bench_secagg.py --sim 10 --net  # a quick look
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

GOAL_TIME, GOAL_UP = 1.5, 1.2
PROFILES = ("office", "datacenter", "iot-ot", "isp-edge", "hospital", "bank")


def sim_run(n: int, secure: bool, args: argparse.Namespace) -> dict[str, Any]:
    from phalanx.sim.config import SimConfig
    from phalanx.sim.runner import run_simulation

    cfg = SimConfig(
        data="synthetic",
        participants=n,
        rounds=args.rounds,
        synthetic_flows=args.flows,
        seed=args.seed,
        workers=2,
        secure_aggregation=secure,
    )
    result = run_simulation(cfg)
    per_round: dict[int, dict[str, float]] = {}
    for st in result.summary["stages"]:
        if st["round"] < 1:
            continue
        acc = per_round.setdefault(st["round"], {"s": 0.0, "up": 0, "down": 0})
        acc["s"] += st["seconds"]
        acc["up"] += st["bytes_up"]
        acc["down"] += st["bytes_down"]
    steady = [v for r, v in sorted(per_round.items()) if r >= 2] or list(per_round.values())
    return {
        "round_s": statistics.median(v["s"] for v in steady),
        "up": statistics.median(v["up"] for v in steady),
        "down": statistics.median(v["down"] for v in steady),
        "macro_f1": result.summary["federated"]["macro_f1"],
    }


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def net_run(n: int, secure: bool, args: argparse.Namespace) -> dict[str, Any]:
    from phalanx.adapters.pki import init_ca, issue
    from phalanx.adapters.store import SqliteStore

    root = Path(tempfile.mkdtemp(prefix=f"secagg-net-{n}-{int(secure)}-"))
    orgs = [f"org-{i + 1:02d}" for i in range(n)]
    init_ca(root / "pki", "bench")
    issue(root / "pki", "coordinator", "localhost")
    for org in orgs:
        issue(root / "pki", "participant", org)
    port = _free_port()
    (root / "federation.toml").write_text(
        '[federation]\nname = "bench"\n\n[data]\nschema = "netflow-v2"\n\n'
        '[model]\nkind = "mlp"\nhidden = [256, 128]\n\n'
        f'[training]\nalgorithm = "fedavg"\nrounds = {args.rounds}\nlocal_epochs = 1\n'
        f"seed = {args.seed}\nsecure_aggregation = {str(secure).lower()}\n\n"
        f"[participants]\nenrolled = {json.dumps(orgs)}\nmin = {n}\n\n"
        "[rounds]\ndeadline_s = 300\nmax_retries = 2\nlinger_s = 0.5\n\n"
        f'[server]\nlisten = "127.0.0.1:{port}"\n\n[state]\ndir = "state"\n'
    )
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    procs: list[subprocess.Popen[bytes]] = []

    def spawn(name: str, argv: list[str]) -> subprocess.Popen[bytes]:
        with (root / f"{name}.log").open("wb") as log:
            p = subprocess.Popen(
                [sys.executable, "-m", "phalanx", *argv], stdout=log, stderr=subprocess.STDOUT,
                env=env,
            )  # fmt: skip
        procs.append(p)
        return p

    try:
        coord = spawn(
            "coordinator", ["coordinator", "serve", "--config", str(root / "federation.toml")]
        )
        for i, org in enumerate(orgs):
            data = f"synthetic:{PROFILES[i % len(PROFILES)]}:{args.flows}:{args.seed + i}"
            ident = str(root / "pki" / "participants" / org)
            spawn(org, ["participant", "join", "--coordinator", f"127.0.0.1:{port}",
                        "--identity", ident, "--data", data])  # fmt: skip
        rc = coord.wait(timeout=args.timeout)
    finally:
        for p in procs:  # only what this run started, by pid
            if p.poll() is None:
                p.kill()
                p.wait(timeout=10)
    if rc != 0:
        raise RuntimeError(
            f"coordinator exited {rc}: {(root / 'coordinator.log').read_text()[-2000:]}"
        )
    store = SqliteStore(root / "state" / "federation.db")
    try:
        rows = [r for r in store.rounds() if r.state == "completed"]
    finally:
        store.close()
    steady = [r for r in rows if r.round >= 2] or rows
    return {
        "round_s": statistics.median(
            (r.completed_at - r.started_at).total_seconds()
            for r in steady  # type: ignore[operator]
        ),
        "up": statistics.median(r.bytes_up for r in steady),
        "down": statistics.median(r.bytes_down for r in steady),
        "macro_f1": None,
    }


def table(title: str, rows: list[tuple[int, dict[str, Any], dict[str, Any]]]) -> str:
    out = [
        f"\n{title}",
        "| N | plain s/round | secure s/round | time ratio | plain up MB | secure up MB |"
        " up ratio | down ratio | macro-F1 plain / secure |",
        "|---:|---:|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for n, p, s in rows:
        f1 = f"{p['macro_f1']:.4f} / {s['macro_f1']:.4f}" if p["macro_f1"] is not None else "n/a"
        out.append(
            f"| {n} | {p['round_s']:.3f} | {s['round_s']:.3f} | {s['round_s'] / p['round_s']:.2f}x"
            f" | {p['up'] / 1e6:.3f} | {s['up'] / 1e6:.3f} | {s['up'] / p['up']:.3f}x"
            f" | {s['down'] / p['down']:.3f}x | {f1} |"
        )
    return "\n".join(out)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--sim", type=int, nargs="*", default=[10, 50, 100])
    ap.add_argument("--net", type=int, nargs="*", default=[5, 10])
    ap.add_argument("--rounds", type=int, default=4)
    ap.add_argument("--flows", type=int, default=2000, help="synthetic flows per participant")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--timeout", type=float, default=900.0)
    ap.add_argument("--out", type=Path, default=None, help="also write the results as JSON")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    results: dict[str, Any] = {"sim": {}, "net": {}}
    sim_rows, net_rows = [], []
    for n in args.sim:
        t0 = time.time()
        plain, secure = sim_run(n, False, args), sim_run(n, True, args)
        results["sim"][n] = {"plain": plain, "secure": secure}
        sim_rows.append((n, plain, secure))
        print(f"simulation N={n} done in {time.time() - t0:.0f} s", flush=True)
        print(table("simulation so far", sim_rows), flush=True)
    for n in args.net:
        t0 = time.time()
        plain, secure = net_run(n, False, args), net_run(n, True, args)
        results["net"][n] = {"plain": plain, "secure": secure}
        net_rows.append((n, plain, secure))
        print(f"networked N={n} done in {time.time() - t0:.0f} s", flush=True)
        print(table("networked so far", net_rows), flush=True)
    if sim_rows:
        print(
            table(
                f"simulation ({args.rounds} rounds, {args.flows} flows each, 2 workers)", sim_rows
            )
        )
    if net_rows:
        print(table("networked (separate processes, mutual TLS on loopback)", net_rows))
    print(f"\ngoals: time ratio <= {GOAL_TIME}x at N=100; upload ratio <= {GOAL_UP}x")
    if args.out is not None:
        args.out.write_text(json.dumps(results, indent=1, default=str))


if __name__ == "__main__":
    main()
