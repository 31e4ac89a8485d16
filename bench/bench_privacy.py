"""Utility cost of differential privacy: the epsilon-vs-macro-F1 curve and client-level DP.

Two experiments, run serially (each run trains a whole federation with 2 worker processes):

* **record** level (DP-SGD inside every participant, Abadi et al. 2016) on NSL-KDD
  (``KDDTrain+_20Percent``, 10 participants, Dirichlet(0.5), FedAdam, tested on ``KDDTest+``):
  one run per per-participant epsilon (``--epsilons``, delta 1e-5), each participant calibrating
  its own noise multiplier with its own accountant; beside the same configuration without DP
  and the project's default non-private configuration. The DP recipe defaults to the one chosen
  on a validation split (``docs/privacy.md``): class-balanced Poisson sampling
  (``--class-balance 1``), hidden 32, expected batch 2048 (one or two steps per round), clip 5,
  Adam lr 0.03; ``--validation`` scores on an 80/20 split of the training file instead of
  ``KDDTest+`` (to compare recipes without touching the test set);
* **client** level (DP-FedAvg with central noise, McMahan et al. 2018) on synthetic traffic with
  ``--clients`` participants (default 100) at epsilon ``--client-epsilon`` (default 10), beside
  the same federation without DP.

Run::

    nice -n 10 .venv/bin/python bench/bench_privacy.py                 # both experiments
    nice -n 10 .venv/bin/python bench/bench_privacy.py --only record --epsilons 8,none
    nice -n 10 .venv/bin/python bench/bench_privacy.py --only record --validation --epsilons 8

Prints one table per experiment (test-set macro-F1, accuracy, binary accuracy and ROC-AUC, the
epsilon each participant's ledger charged, the noise multipliers and wall time) and, with
``--json``, writes every summary. Noise comes from the OS CSPRNG, so runs differ slightly; the
seed fixes data, partition, initialization and sampling of participants.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]


def _datasets(arg: str | None) -> Path:
    if arg:
        return Path(arg)
    env = os.environ.get("PHALANX_DATASETS")
    return Path(env) if env else ROOT.parent / "shared" / "datasets"


def _run(kw: dict[str, Any]) -> dict[str, Any]:
    from phalanx.sim.config import ModelSpec, SimConfig
    from phalanx.sim.runner import run_simulation

    kw = dict(kw)
    model = ModelSpec(**kw.pop("model", {}))
    cfg = SimConfig(model=model, **kw)
    t0 = time.perf_counter()
    result = run_simulation(cfg)
    out = dict(result.summary)
    out["bench_wall_s"] = time.perf_counter() - t0
    out["config"] = cfg.model_dump(mode="json")
    return out


def _row(label: str, s: dict[str, Any]) -> list[str]:
    fed = s["federated"]
    p = s.get("privacy") or {}
    z = p.get("noise_multiplier")
    if isinstance(z, list | tuple):
        z_txt = f"{z[0]:.2f}-{z[1]:.2f}"
    else:
        z_txt = "-" if z is None else f"{z:.3f}"
    spent = p.get("max_epsilon_spent")
    return [
        label,
        f"{fed['macro_f1']:.4f}",
        f"{fed['accuracy']:.4f}",
        f"{fed['binary']['accuracy']:.4f}",
        "n/a" if fed["binary"]["roc_auc"] is None else f"{fed['binary']['roc_auc']:.4f}",
        "-" if not p else f"{p['epsilon']:.3f}",
        "-" if spent is None else f"{spent:.3f}",
        z_txt,
        f"{s['bench_wall_s']:.0f}",
    ]


def _table(title: str, rows: list[list[str]]) -> str:
    head = ["run", "macro-F1", "accuracy", "binary acc.", "ROC-AUC", "epsilon",
            "max ledger eps.", "noise mult.", "wall s"]  # fmt: skip
    lines = [f"### {title}", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    lines += ["| " + " | ".join(r) + " |" for r in rows]
    return "\n".join(lines)


def _validation_split(train: Path, seed: int) -> tuple[Path, Path]:
    """A random 80/20 split of the training file (rows shuffled with ``seed``), written to a
    temporary directory: recipes are compared on the 20 %, never on ``KDDTest+``."""
    rows = train.read_text().splitlines()
    order = list(range(len(rows)))
    random.Random(seed).shuffle(order)
    cut = int(0.8 * len(rows))
    out = Path(tempfile.mkdtemp(prefix="phalanx-dp-val-"))
    fit, val = out / "fit.txt", out / "validation.txt"
    fit.write_text("\n".join(rows[i] for i in sorted(order[:cut])) + "\n")
    val.write_text("\n".join(rows[i] for i in sorted(order[cut:])) + "\n")
    return fit, val


def record_level(args: argparse.Namespace, results: dict[str, Any]) -> str:
    nsl = _datasets(args.datasets) / "nsl-kdd"
    data, test = nsl / "KDDTrain+_20Percent.txt", nsl / "KDDTest+.txt"
    if args.validation:
        data, test = _validation_split(data, args.seed)
    base: dict[str, Any] = {
        "data": str(data),
        "test": str(test),
        "participants": 10,
        "partition": "dirichlet:0.5",
        "rounds": args.rounds,
        "algorithm": args.algorithm,
        "seed": args.seed,
        "workers": 2,
    }
    dp_model = {"hidden": tuple(args.hidden), "batch_size": args.batch_size, "lr": args.lr}
    rows = []
    runs: list[tuple[str, dict[str, Any]]] = [("non-private, default model", base)]
    for eps in args.epsilons.split(","):
        if eps.strip() == "none":
            runs.append(("non-private, DP model", {**base, "model": dp_model}))
        else:
            runs.append(
                (
                    f"record DP, epsilon {float(eps):g}",
                    {**base, "model": dp_model, "dp": "record", "epsilon": float(eps),
                     "delta": args.delta, "clip": args.clip,
                     "dp_class_balance": args.class_balance},
                )
            )  # fmt: skip
    for label, kw in runs:
        print(f"[record] {label} ...", file=sys.stderr, flush=True)
        s = _run(kw)
        results.setdefault("record", {})[label] = s
        rows.append(_row(label, s))
        print(_table("record-level (running)", rows[-1:]), file=sys.stderr, flush=True)
    where = "80/20 validation split of KDDTrain+_20Percent" if args.validation else "KDDTest+"
    return _table(
        f"Record-level DP-SGD, NSL-KDD (scored on {where}), 10 participants, Dirichlet(0.5),"
        f" {args.algorithm}, {args.rounds} rounds, class balance {args.class_balance:g},"
        f" delta {args.delta:g}, clip {args.clip:g}, DP model hidden"
        f" {','.join(map(str, args.hidden))} batch {args.batch_size}",
        rows,
    )


def client_level(args: argparse.Namespace, results: dict[str, Any]) -> str:
    base: dict[str, Any] = {
        "data": "synthetic",
        "participants": args.clients,
        "partition": "natural",
        "synthetic_flows": args.client_flows,
        "rounds": args.client_rounds,
        "algorithm": "fedavg",
        "seed": args.seed,
        "workers": 2,
    }
    rows = []
    runs = [
        ("non-private", base),
        (
            f"client DP (central), epsilon {args.client_epsilon:g}",
            {**base, "dp": "client-central", "epsilon": args.client_epsilon,
             "delta": args.delta, "clip": args.client_clip, "adaptive_clip": True},
        ),
    ]  # fmt: skip
    for label, kw in runs:
        print(f"[client] {label} ...", file=sys.stderr, flush=True)
        s = _run(kw)
        results.setdefault("client", {})[label] = s
        rows.append(_row(label, s))
    return _table(
        f"Client-level DP-FedAvg, synthetic traffic, {args.clients} participants"
        f" ({args.client_flows} flows each), FedAvg, {args.client_rounds} rounds, every"
        f" participant every round, delta {args.delta:g}, adaptive clipping from"
        f" {args.client_clip:g}",
        rows,
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", choices=("record", "client"), default=None)
    ap.add_argument("--datasets", default=None)
    ap.add_argument("--epsilons", default="1,2,4,8,none")
    ap.add_argument("--delta", type=float, default=1e-5)
    ap.add_argument("--rounds", type=int, default=20)
    ap.add_argument("--clip", type=float, default=5.0)
    ap.add_argument("--batch-size", type=int, default=2048)
    ap.add_argument("--hidden", type=int, nargs="+", default=[32])
    ap.add_argument("--lr", type=float, default=3e-2)
    ap.add_argument("--algorithm", default="fedadam")
    ap.add_argument(
        "--class-balance",
        type=float,
        default=1.0,
        help="record DP: class-balanced sampling exponent (0 uniform, 1 balanced)",
    )
    ap.add_argument(
        "--validation",
        action="store_true",
        help="record DP: train on 80%% of KDDTrain+_20Percent, score on the other 20%%",
    )
    ap.add_argument("--clients", type=int, default=100)
    ap.add_argument("--client-flows", type=int, default=1000)
    ap.add_argument("--client-rounds", type=int, default=10)
    ap.add_argument("--client-epsilon", type=float, default=10.0)
    ap.add_argument("--client-clip", type=float, default=0.5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=None)
    args = ap.parse_args()
    import torch

    torch.set_num_threads(1)
    results: dict[str, Any] = {}
    tables = []
    if args.only in (None, "record"):
        tables.append(record_level(args, results))
    if args.only in (None, "client"):
        tables.append(client_level(args, results))
    if args.json is not None:
        args.json.write_text(json.dumps(results, indent=2, default=str) + "\n")
    print("\n\n".join(tables))


if __name__ == "__main__":
    main()
