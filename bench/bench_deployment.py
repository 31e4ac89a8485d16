"""Phalanx's networked federation on the reference workload, beside Flower's deployment mode.

The reference workload is ``../shared/bench/flower`` (README.md, RESULTS.md there): 122 float32
Gaussian features, 5 classes, Dirichlet(0.5) partition over N clients (seed 1234), MLP 122-256-128,
dropout 0, Adam 1e-3, batch 256, 1 local epoch, FedAvg over every client, 10 rounds, central
evaluation after every round. For every N this script runs, in one invocation:

* the plain two-process FedAvg loop of the reference folder (``bench.py plain2``): the floor;
* Phalanx deployed: one coordinator process (``deploy_coordinator.py``: the production
  ``CoordinatorHost`` with the workload's schema, plus central evaluation) and N participant
  processes (``deploy_participant.py``: the agent of ``phalanx participant join``), gRPC with
  mutual TLS on loopback, a fresh CA and identities per run;
* Flower 1.42's deployment mode (``bench.py deploy``, with ``--tls`` for ``deploy-tls``): one
  SuperLink and N SuperNodes, HTTP on loopback, in the Flower venv ``bench_simulation.py`` makes.

Figures: steady round = median of rounds 2-10, a round running from the end of the central
evaluation of round r-1 to the start of that of round r (for Phalanx this includes the host's
per-round checkpoint, model bundle and store write). Bytes per round: Phalanx's store
(``bytes_up + bytes_down`` of the FIT stage, the frames the coordinator sent and received) and,
from ``ss`` socket counters, the TLS bytes on the public port and on the gateway's internal hop
(whole run / rounds, as the reference counts Flower's). Peak memory: largest sum of PSS over the
coordinator's and participants' process trees, sampled every 0.25 s.

Run::

    .venv/bin/python bench/bench_deployment.py --n 5 10
    .venv/bin/python bench/bench_deployment.py --n 5 --flower-modes deploy-tls   # quicker

Results go under ``$FEDBENCH_WORK`` (default ``/tmp/phalanx-bench``)/results/deployment-*. The
reference harness stops every process whose command line holds the work directory before each of
its runs: do not run two benchmark invocations on one work directory at once.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import socket
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_simulation import Bench, TreeSampler, _busy_cpu_s, _read, derive

HERE = Path(__file__).resolve().parent
MODEL_TOML = (
    'kind = "mlp"\nhidden = [256, 128]\ndropout = 0.0\nlr = 0.001\nbatch_size = 256\n'
    'class_weight = "none"\n'
)
GOAL_ROUND, GOAL_BYTES, GOAL_MEMORY_SHARE = 1.5, 1.1, 1 / 3
FED = "fedbench"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float, proc: subprocess.Popen[bytes]) -> bool:
    end = time.time() + timeout
    while time.time() < end and proc.poll() is None:
        with socket.socket() as s:
            s.settimeout(0.5)
            if s.connect_ex(("127.0.0.1", port)) == 0:
                return True
        time.sleep(0.05)
    return False


_SS_ADDR = re.compile(r"^\S+\s+\S+\s+(\S+):(\d+)\s+(\S+):(\d+)")
_SS_PID = re.compile(r"pid=(\d+)")


def _host(addr: str) -> str:
    """``127.0.0.1`` for ``127.0.0.1`` and for the IPv4-mapped ``[::ffff:127.0.0.1]``."""
    return addr.strip("[]").removeprefix("::ffff:")


class WireCounter(threading.Thread):
    """TCP payload bytes (TLS records included) on loopback, from ``ss -tinp`` socket counters.

    ``public``: the participants' connections to the coordinator's port, both directions.
    ``internal``: the coordinator's gateway <-> its loopback gRPC server hop, both directions
    (sockets with both ends in the coordinator process). Each connection's counters are
    cumulative; the largest value seen is kept, so bytes after the last sample are missed.
    """

    def __init__(self, port: int, interval: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.port, self.interval = port, interval
        self.coordinator_pid = 0
        self.stop_ev = threading.Event()
        self.public: dict[tuple[str, str], tuple[int, int]] = {}
        self.internal: dict[tuple[str, str], int] = {}

    def sample(self) -> None:
        out = subprocess.run(
            ["ss", "-tinpH", "state", "established"], capture_output=True, text=True
        ).stdout
        lines = out.splitlines()
        head = None
        for line in lines:
            if not line.startswith(("\t", " ")) or _SS_ADDR.match(line):
                head = line
                continue
            if head is None:
                continue
            m = _SS_ADDR.match(head)
            pid = _SS_PID.search(head)
            acked = re.search(r"bytes_acked:(\d+)", line)
            recv = re.search(r"bytes_received:(\d+)", line)
            if not m:
                continue
            a = int(acked.group(1)) if acked else 0
            r = int(recv.group(1)) if recv else 0
            loc_host, peer_host = (_host(m.group(1)), _host(m.group(3)))
            key = (f"{loc_host}:{m.group(2)}", f"{peer_host}:{m.group(4)}")
            if int(m.group(4)) == self.port:
                old = self.public.get(key, (0, 0))
                self.public[key] = (max(old[0], a), max(old[1], r))
            elif (
                pid
                and int(pid.group(1)) == self.coordinator_pid
                and int(m.group(2)) != self.port
                and loc_host.startswith("127.")
                and peer_host.startswith("127.")
            ):
                self.internal[key] = max(self.internal.get(key, 0), a)
            head = None

    def run(self) -> None:
        while not self.stop_ev.is_set():
            try:
                self.sample()
            except (OSError, ValueError) as exc:
                print("ss sampler:", exc, file=sys.stderr)
            self.stop_ev.wait(self.interval)

    def stop(self) -> dict[str, int]:
        self.stop_ev.set()
        self.join()
        # internal-hop sockets with both ends in the coordinator: keep only pairs whose peer was
        # seen too (the loopback hop), each end's sent bytes once
        internal = sum(
            v for (loc, peer), v in self.internal.items() if (peer, loc) in self.internal
        )
        return {
            "wire_public_up": sum(v[0] for v in self.public.values()),
            "wire_public_down": sum(v[1] for v in self.public.values()),
            "wire_internal": internal,
            "wire_connections": len(self.public),
        }


class DeployBench(Bench):
    """``bench_simulation.Bench``'s set-up (Flower venv, reference copy, data), deploy runs."""

    def __init__(self, args: argparse.Namespace) -> None:
        args.out = args.out or str(
            Path(args.work).resolve() / "results" / f"deployment-{time.strftime('%Y%m%d-%H%M%S')}"
        )
        super().__init__(args)

    # -- the reference harness: plain2, deploy, deploy --tls -------------------------------------
    def flower_run(self, mode: str, n: int, rep: int) -> dict[str, Any]:
        """Flower's deployment (``mode`` is ``deploy`` or ``deploy-tls``) through the harness."""
        r = self.reference(
            "deploy",
            n,
            rep,
            extra=("--tls",) if mode == "deploy-tls" else (),
            timeout=self.args.flower_timeout,
            label=mode,
        )
        if r.get("rc") not in (None, 0):
            return {"system": mode, "n": n, "rep": rep, "rc": r.get("rc")}
        lb = r.get("loopback_bytes") or {}
        if lb:
            r["bytes_per_round"] = (
                sum(lb.get(k, {}).get("bytes", 0) for k in ("to_superlink", "from_superlink"))
                / self.args.rounds
            )
        return r

    # -- Phalanx --------------------------------------------------------------------------------
    def partitions(self, n: int) -> tuple[list[Path], Path]:
        """Each client's rows as ``x``/``y`` in one .npz (what a participant holds), and the test
        set."""
        import numpy as np
        from fedbench_flwr import workload as W

        folder = self.cache / f"phalanx-parts-n{n}"
        test = self.cache / "phalanx-test.npz"
        files = [folder / f"client-{i:04d}.npz" for i in range(n)]
        if all(f.exists() for f in files) and test.exists():
            return files, test
        folder.mkdir(parents=True, exist_ok=True)
        with np.load(W.data_cache_path(str(self.cache))) as npz:
            x_tr, y_tr, x_te, y_te = (npz[k] for k in ("x_train", "y_train", "x_test", "y_test"))
        assign = W.load_partition(str(self.cache), n)
        for cid, f in enumerate(files):
            rows = np.flatnonzero(assign == cid)  # the client's rows in their original order
            np.savez(f, x=x_tr[rows], y=y_tr[rows])
        np.savez(test, x_test=x_te, y_test=y_te)
        return files, test

    def phalanx(self, n: int, rep: int) -> dict[str, Any]:
        from phalanx.adapters.pki import init_ca, issue
        from phalanx.adapters.store import SqliteStore

        files, test = self.partitions(n)
        root = self.out / f"phalanx-deploy_n{n}_r{rep}"
        if root.exists():
            import shutil

            shutil.rmtree(root)
        root.mkdir(parents=True)
        orgs = [f"org-{i + 1:04d}" for i in range(n)]
        pki = root / "pki"
        init_ca(pki, FED)
        issue(pki, "coordinator", "localhost")
        for org in orgs:
            issue(pki, "participant", org)
        port = free_port()
        (root / "federation.toml").write_text(
            f'[federation]\nname = "{FED}"\n\n[data]\nschema = "fedbench-122"\n\n'
            f"[model]\n{MODEL_TOML}\n"
            f'[training]\nalgorithm = "fedavg"\nrounds = {self.args.rounds}\nlocal_epochs = 1\n'
            # plaintext, like the Flower reference; bench_secagg.py measures what SecAgg+ adds
            f"seed = 0\nsecure_aggregation = false\n\n"
            f"[participants]\nenrolled = {json.dumps(orgs)}\nmin = {n}\n\n"
            f"[rounds]\ndeadline_s = {self.args.timeout}\nmax_retries = 0\nlinger_s = 0.5\n\n"
            f'[server]\nlisten = "127.0.0.1:{port}"\n\n[state]\ndir = "state"\n'
        )
        marks = root / "marks.json"
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        print(f"-- phalanx deploy N={n} rep {rep} (port {port})", flush=True)
        sampler, wire = TreeSampler(), WireCounter(port)
        procs: list[subprocess.Popen[bytes]] = []
        busy0 = _busy_cpu_s()
        t_launch = time.time()
        sampler.start()
        rc: int | str = "no result"
        try:
            with (root / "coordinator.log").open("wb") as log:
                coord = subprocess.Popen(
                    [
                        sys.executable,
                        str(HERE / "deploy_coordinator.py"),
                        "--config",
                        str(root / "federation.toml"),
                        "--test",
                        str(test),
                        "--out",
                        str(marks),
                    ],
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    env=env,
                    cwd=root,
                )
            procs.append(coord)
            sampler.roots.append(coord.pid)
            wire.coordinator_pid = coord.pid
            wire.start()
            if not wait_port(port, 60, coord):
                raise RuntimeError(f"coordinator did not open port {port}")
            t_port = time.time()
            for org, f in zip(orgs, files, strict=True):
                with (root / f"{org}.log").open("wb") as log:
                    p = subprocess.Popen(
                        [
                            sys.executable,
                            str(HERE / "deploy_participant.py"),
                            "--coordinator",
                            f"127.0.0.1:{port}",
                            "--identity",
                            str(pki / "participants" / org),
                            "--data",
                            str(f),
                        ],
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        env=env,
                        cwd=root,
                    )
                procs.append(p)
                sampler.roots.append(p.pid)
            try:
                rc = coord.wait(timeout=self.args.timeout)
            except subprocess.TimeoutExpired:
                rc = "timeout"
            for p in procs[1:]:
                with contextlib.suppress(subprocess.TimeoutExpired):
                    p.wait(timeout=15)
        finally:
            t_end = time.time()
            mem = sampler.stop()
            wires = wire.stop() if wire.is_alive() else {}
            for p in procs:  # only the processes this run started, by pid
                if p.poll() is None:
                    p.kill()
                    p.wait(timeout=10)
            other = max(_busy_cpu_s() - busy0, 0.0)
        rec: dict[str, Any] = {
            "system": "phalanx-deploy",
            "n": n,
            "rep": rep,
            "rc": rc,
            "port": port,
            **mem,
            **wires,
            "machine_busy_cpu_s": other,
            "machine_busy_frac": other / ((t_end - t_launch) * (os.cpu_count() or 1)),
            "participant_rc": [p.returncode for p in procs[1:]],
            "launch_to_port_s": t_port - t_launch,
        }
        if rc == 0 and marks.exists():
            srv = json.loads(marks.read_text())
            rec.update(derive(srv, t_launch, t_end))
            store = SqliteStore(root / "state" / "federation.db")
            try:
                rows = store.rounds()
            finally:
                store.close()
            rec["store_rounds"] = [
                {
                    "round": r.round,
                    "state": r.state,
                    "started_at": r.started_at.timestamp() if r.started_at else None,
                    "completed_at": r.completed_at.timestamp() if r.completed_at else None,
                    "bytes_up": r.bytes_up,
                    "bytes_down": r.bytes_down,
                }
                for r in rows
            ]
            per_round = [r["bytes_up"] + r["bytes_down"] for r in rec["store_rounds"]]
            rec["bytes_per_round"] = statistics.median(per_round)
            rec["store_round_s"] = [
                r["completed_at"] - r["started_at"]
                for r in rec["store_rounds"]
                if r["completed_at"] and r["started_at"]
            ]
            rec["stages"] = srv["stages"]
            rec["host_on_round_s"] = [m.get("host_on_round_s") for m in srv["marks"][1:]]
            rounds = max(len(srv["marks"]) - 1, 1)
            if wires:
                rec["wire_public_per_round"] = (
                    wires["wire_public_up"] + wires["wire_public_down"]
                ) / rounds
                rec["wire_internal_per_round"] = wires["wire_internal"] / rounds
        else:
            for name in ("coordinator", orgs[0]):
                print(f"{name}.log:\n{(root / f'{name}.log').read_text()[-3000:]}", file=sys.stderr)
        (self.out / f"phalanx-deploy_n{n}_r{rep}.json").write_text(json.dumps(rec, indent=1))
        return rec

    # -- driver ---------------------------------------------------------------------------------
    def run(self) -> None:
        self.prepare()
        a = self.args
        for rep in range(a.reps):
            for n in a.n:
                systems = ["plain2", "phalanx"]
                if not a.skip_flower and n not in a.skip_flower_n:
                    systems += a.flower_modes
                for system in systems:
                    if system == "phalanx":
                        rec = self.phalanx(n, rep)
                    elif system == "plain2":
                        rec = self.reference("plain2", n, rep)
                    else:
                        rec = self.flower_run(system, n, rep)
                    self.records.append(rec)
                    self.show(rec)
                    self.save()
        self.report()

    def summary(self) -> dict[str, Any]:
        ok = [r for r in self.records if r.get("rc") == 0]
        rows = []
        for system in ("plain2", "phalanx-deploy", "deploy-tls", "deploy"):
            for n in self.args.n:
                rs = [r for r in ok if r["system"] == system and r["n"] == n]
                if not rs:
                    continue

                def m(key: str, rs: list[dict[str, Any]] = rs) -> Any:
                    vals = [r[key] for r in rs if r.get(key) is not None]
                    return statistics.median(vals) if vals else None

                rows.append(
                    {
                        "system": system,
                        "n": n,
                        "runs": len(rs),
                        "steady_round_s": m("steady_round_median_s"),
                        "round1_s": m("round1_s"),
                        "to_first_round_start_s": m("to_first_round_start_s"),
                        "peak_pss_gb": m("peak_pss_mb") / 1024,
                        "accuracy": m("final_accuracy"),
                        "macro_f1": m("final_macro_f1"),
                        "model_bytes": rs[0].get("model_bytes"),
                        "bytes_per_round": m("bytes_per_round"),
                        "wire_public_per_round": m("wire_public_per_round"),
                        "wire_internal_per_round": m("wire_internal_per_round"),
                    }
                )
        by = {(r["system"], r["n"]): r for r in rows}
        for r in rows:
            floor = by.get(("plain2", r["n"]))
            r["ratio_to_plain2"] = r["steady_round_s"] / floor["steady_round_s"] if floor else None
            est = 2 * r["n"] * (r["model_bytes"] or 0)
            r["bytes_estimate"] = est
            r["bytes_ratio"] = r["bytes_per_round"] / est if r["bytes_per_round"] and est else None
        return {
            "stamp": self.stamp,
            "machine": {"cpus": os.cpu_count(), "loadavg": (_read("/proc/loadavg") or "").split()},
            "args": vars(self.args),
            "rows": rows,
            "runs": self.records,
        }

    def report(self) -> None:
        s = self.summary()
        label = {
            "plain2": "plain loop, 2 processes",
            "phalanx-deploy": "Phalanx deployed (gRPC, mutual TLS)",
            "deploy-tls": "Flower 1.42 deployment (HTTP, TLS)",
            "deploy": "Flower 1.42 deployment (HTTP, insecure)",
        }
        order = list(label)
        rows = sorted(s["rows"], key=lambda r: (r["n"], order.index(r["system"])))
        head = (
            f"| {'system':<38} | {'N':>3} | {'steady round (s)':>16} | {'x plain2':>8} |"
            f" {'bytes/round':>11} | {'x 2Nmodel':>9} | {'peak mem (GB)':>13} | {'accuracy':>8} |"
        )
        print("\n" + head)
        print(re.sub(r"[^|]", "-", head))
        for r in rows:
            ratio = f"{r['ratio_to_plain2']:.2f}x" if r["ratio_to_plain2"] else "-"
            b = f"{r['bytes_per_round'] / 1e6:.2f} MB" if r["bytes_per_round"] else "-"
            br = f"{r['bytes_ratio']:.2f}x" if r["bytes_ratio"] else "-"
            print(
                f"| {label[r['system']]:<38} | {r['n']:>3} | {r['steady_round_s']:>16.3f} |"
                f" {ratio:>8} | {b:>11} | {br:>9} | {r['peak_pss_gb']:>13.2f} |"
                f" {r['accuracy']:>8.4f} |"
            )
        print(
            "\nNotes: medians over runs; steady round = median of rounds 2-10.\n"
            "Phalanx bytes/round = the store's bytes_up + bytes_down of a round (application"
            " frames, FIT stage).\nPhalanx's MLP has 11 outputs (its taxonomy) against 5, so"
            " 2 x N x model uses 263,212 bytes instead of 260,116.\nFlower bytes/round ="
            " iptables counters on its SuperLink port (only where iptables exists).\nPeak"
            " memory = peak sum of PSS over the federation's processes."
        )
        for r in rows:
            if r["system"] == "phalanx-deploy" and r["wire_public_per_round"]:
                print(
                    f"  Phalanx N={r['n']}: TLS bytes on the wire per round (whole run / rounds):"
                    f" public port {r['wire_public_per_round'] / 1e6:.2f} MB, gateway->gRPC"
                    f" internal hop {(r['wire_internal_per_round'] or 0) / 1e6:.2f} MB"
                )
        by = {(r["system"], r["n"]): r for r in rows}
        print("\nGoals (Phalanx deployed):")
        for n in self.args.n:
            ph = by.get(("phalanx-deploy", n))
            if not ph:
                continue
            parts = []
            if ph["ratio_to_plain2"]:
                ok = "ok" if ph["ratio_to_plain2"] <= GOAL_ROUND else "MISSED"
                parts.append(f"round {ph['ratio_to_plain2']:.2f}x plain2 (<= {GOAL_ROUND}x) {ok}")
            if ph["bytes_ratio"]:
                ok = "ok" if ph["bytes_ratio"] <= GOAL_BYTES else "MISSED"
                parts.append(f"bytes {ph['bytes_ratio']:.3f}x 2Nmodel (<= {GOAL_BYTES}x) {ok}")
            fl = by.get(("deploy", n)) or by.get(("deploy-tls", n))
            if fl:
                share = ph["peak_pss_gb"] / fl["peak_pss_gb"]
                ok = "ok" if share <= GOAL_MEMORY_SHARE else "MISSED"
                parts.append(f"memory {share:.2f} of Flower's {fl['system']} (<= 1/3) {ok}")
            print(f"  N={n}: " + "; ".join(parts))
        print(f"\nresults: {self.out / 'summary.json'}")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, nargs="+", default=[5, 10], help="participants")
    ap.add_argument("--reps", type=int, default=1, help="cold runs of each system and N")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument(
        "--flower-modes",
        nargs="*",
        default=["deploy-tls", "deploy"],
        choices=["deploy-tls", "deploy"],
        help="Flower deployment variants to run (bench.py deploy [--tls])",
    )
    ap.add_argument("--skip-flower", action="store_true", help="plain loop and Phalanx only")
    ap.add_argument(
        "--skip-flower-n", type=int, nargs="*", default=[], help="no Flower run at these N"
    )
    ap.add_argument(
        "--work",
        default=os.environ.get("FEDBENCH_WORK", "/tmp/phalanx-bench"),
        help="venv, data cache, logs and results (default $FEDBENCH_WORK or /tmp/phalanx-bench)",
    )
    ap.add_argument("--flower-venv", default="", help="default WORK/flower-venv")
    ap.add_argument("--out", default="", help="results folder (default WORK/results/deployment-*)")
    ap.add_argument("--timeout", type=float, default=600, help="seconds per Phalanx/plain run")
    ap.add_argument("--flower-timeout", type=float, default=1200, help="seconds per Flower run")
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    DeployBench(args).run()


if __name__ == "__main__":
    main()
