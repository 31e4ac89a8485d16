"""Phalanx's simulation on the reference federated workload, beside Flower and the plain loop.

The reference workload is ``../shared/bench/flower`` (see its README.md and RESULTS.md): synthetic
class-conditional Gaussians (122 float32 features, 5 classes, 100,000 training and 20,000 test
rows), a Dirichlet(0.5) label-skew partition over N clients, an MLP 122-256-128, Adam 1e-3 fresh
each round, batch 256, 1 local epoch, FedAvg over every client, 10 rounds, central evaluation after
every round. This script runs, in one invocation and interleaved per N so that machine noise hits
every system alike:

* the plain two-process FedAvg loop of the reference folder (``bench.py plain2``): the floor;
* Phalanx's simulation: the production ``Participant``, ``Federation``, ``Coordinator`` and
  ``ProcessPoolTransport`` (2 workers), composed as ``phalanx.sim.runner.run_simulation`` does,
  on the same data and partition (imported from the reference ``workload.py``);
* Flower 1.42's simulation (``bench.py sim``: ``flwr run`` with a local SuperLink and Ray), in a
  virtual environment this script creates (Flower is not a project dependency).

Run::

    .venv/bin/python bench/bench_simulation.py --n 10 100 1000 --reps 1
    .venv/bin/python bench/bench_simulation.py --n 10 100 --skip-flower   # minutes, not tens

Timing convention (the reference README): a round runs from the end of the central evaluation of
round r-1 to the start of the evaluation of round r; steady round = median of rounds 2-10;
start-up = launch to the start of round 1, plus the extra time of round 1 over a steady round.
Peak memory = the largest sum of PSS over the process tree (sampled every 0.25 s from /proc), the
figure the reference harness reports. Results (one JSON per run and a summary) are written under
``$FEDBENCH_WORK`` (default ``/tmp/phalanx-bench``), never into the repository.

Every process whose command line contains the work directory is the reference harness's to stop
between runs: do not run two invocations on one work directory at once.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import re
import resource
import shutil
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

REFERENCE = Path(
    os.environ.get("FEDBENCH_REFERENCE", Path(__file__).resolve().parents[2] / "shared/bench")
)
TORCH_PIN = "torch==2.13.0"  # a local CPU wheel; anything else downloads a CUDA build
FLOWER_PIN = "flwr[simulation]==1.42.0"
PAGE = os.sysconf("SC_PAGE_SIZE")
WORKLOAD_CLASSES = ("normal", "dos", "probe", "r2l", "u2r")
TAXONOMY_OF = {  # the workload's classes in Phalanx's taxonomy (NSL-KDD's usual mapping)
    "normal": "benign",
    "dos": "dos",
    "probe": "recon",
    "r2l": "brute-force",
    "u2r": "exploit",
}
FIVE_OUTPUTS = {  # --phalanx-outputs 5: the first five taxonomy categories stand in as labels
    "normal": "benign",
    "dos": "dos",
    "probe": "recon",
    "r2l": "brute-force",
    "u2r": "ddos",
}
MODEL_SPEC: dict[str, Any] = {
    "kind": "mlp",
    "hidden": [256, 128],
    "dropout": 0.0,
    "lr": 1e-3,
    "batch_size": 256,
    "class_weight": "none",
}
GOAL_RATIO, GOAL_STARTUP_S, GOAL_MEMORY_SHARE = 1.2, 3.0, 1 / 3
EVAL_ROWS = 4096  # rows per slice of the central evaluation


# ---------------------------------------------------------------------------------------------
# Phalanx side: runs in a fresh child process (a cold start, like the other systems)
# ---------------------------------------------------------------------------------------------
def _one_thread() -> None:
    import torch

    torch.set_num_threads(1)


def _rss_mb() -> float:
    """This process's resident set size (from /proc), for the parent's memory by phase."""
    m = re.search(r"^VmRSS:\s+(\d+) kB", _read("/proc/self/status") or "", re.M)
    return int(m.group(1)) / 1024 if m else float("nan")


class _MarkedTransport:
    """Delegates to a transport; runs ``before_fit`` once, before the first ``FIT`` stage.

    The statistics stage fits the feature transform and the initial weights; the central
    evaluation of those weights (the reference's "round 0" mark) can only run after it.
    """

    def __init__(self, inner: Any, before_fit: Any) -> None:
        self.inner = inner
        self.before_fit = before_fit
        self.fired = False

    def available(self) -> Any:
        return self.inner.available()

    @property
    def streams_replies(self) -> bool:
        return getattr(self.inner, "streams_replies", False) is True

    def exchange(self, tasks: Any, *, deadline_s: float | None = None, **streaming: Any) -> Any:
        from phalanx.core.messages import Stage

        if not self.fired and any(t.stage is Stage.FIT for t in tasks.values()):
            self.fired = True
            self.before_fit()
        return self.inner.exchange(tasks, deadline_s=deadline_s, **streaming)

    @property
    def bytes_down(self) -> int:
        return int(self.inner.bytes_down)

    @property
    def bytes_up(self) -> int:
        return int(self.inner.bytes_up)

    def close(self) -> None:
        self.inner.close()


def phalanx_child(
    n: int, rounds: int, cache: str, out: str, workers: int, profile: str, outputs: int = 11
) -> None:
    """One cold Phalanx simulation of the workload; writes marks like the reference ServerApp.

    ``outputs=5`` trains a 5-output MLP (``n_classes`` in the model spec) with the workload's
    classes mapped to the first five taxonomy categories: an accuracy check against the reference
    models, which have 5 outputs, not the production configuration.
    """
    t_main = time.time()
    _one_thread()
    import numpy as np

    sys.path.insert(0, str(Path(cache).parent / "flower" / "flower_app"))
    from fedbench_flwr import workload as W

    from phalanx.adapters.pool import ProcessPoolTransport
    from phalanx.core.aggregation import make_algorithm
    from phalanx.core.features.batch import FlowBatch
    from phalanx.core.features.schema import Column, ColumnKind, FeatureSchema
    from phalanx.core.rounds import Federation, FederationPlan, RoundRecord
    from phalanx.core.taxonomy import CATEGORY_INDEX
    from phalanx.core.types import ParticipantId
    from phalanx.models.federated import build_model
    from phalanx.services.coordinator import Coordinator
    from phalanx.services.participant import ModelCache, Participant

    phases = {"imported": time.time()}
    rss = {"imported": _rss_mb()}
    with np.load(W.data_cache_path(cache)) as npz:  # the workload's data (not its torch cache)
        x_tr, y_tr, x_te, y_te = (npz[k] for k in ("x_train", "y_train", "x_test", "y_test"))
    assign = W.load_partition(cache, n)
    schema = FeatureSchema(
        source="fedbench",
        version=1,
        columns=tuple(Column(f"f{i:03d}", ColumnKind.NUMERIC) for i in range(x_tr.shape[1])),
    )
    names = np.array(WORKLOAD_CLASSES, dtype=object)
    mapping = FIVE_OUTPUTS if outputs == 5 else TAXONOMY_OF
    cats = np.array([mapping[c] for c in WORKLOAD_CLASSES], dtype=object)
    spec = {**MODEL_SPEC, "n_classes": 5} if outputs == 5 else MODEL_SPEC

    def flows(x: Any, y: Any) -> FlowBatch:
        return FlowBatch(  # the workload's float32 features as they are (no float64 copy)
            schema=schema,
            numeric=x,
            categorical=np.empty((len(y), 0), dtype=object),
            label=names[y],
            category=cats[y],
        )

    test: list[FlowBatch] = [flows(x_te, y_te)]  # dropped once its transform is computed
    order = np.argsort(assign, kind="stable")  # each client's rows in their original order
    x_tr, y_tr = x_tr[order], y_tr[order]  # one copy; each client's flows are a slice of it
    bounds = np.cumsum(np.bincount(assign, minlength=n))
    ids = [ParticipantId(f"org-{i + 1:04d}") for i in range(n)]
    models = ModelCache()  # as run_simulation does: one network per worker process
    participants = {
        pid: Participant(pid, flows(x_tr[lo:hi], y_tr[lo:hi]), models=models)
        for pid, lo, hi in zip(ids, [0, *bounds[:-1]], bounds, strict=True)
    }
    del x_tr, y_tr, x_te
    phases["participants_built"] = time.time()
    rss["participants_built"] = _rss_mb()
    pool = ProcessPoolTransport(
        {p: h.handle for p, h in participants.items()}, workers=workers, worker_init=_one_thread
    )
    phases["pool_started"] = time.time()
    rss["pool_started"] = _rss_mb()
    tconf = {"model": spec, "local_epochs": 1}
    plan = FederationPlan(rounds=rounds, min_participants=n, seed=0, train_config=tconf)

    def init_weights(n_features: int) -> Any:
        return build_model(spec, n_features, {"seed": 0}).get_weights()

    fed = Federation(plan, schema, make_algorithm("fedavg"), init_weights)
    y_test = np.array([CATEGORY_INDEX[c] for c in cats], dtype=np.int64)[y_te]
    marks: list[dict[str, Any]] = []
    test_x: list[Any] = []

    def central_eval(rnd: int) -> None:
        t0 = time.time()
        assert fed.transform is not None
        if not test_x:
            test_x.append(fed.transform.transform(test.pop()))
        model = build_model(spec, fed.transform.n_features, {"seed": 0})
        model.set_weights(fed.weights)
        # In slices, as the reference's evaluate does (8,192 rows): one pass over all 20,000
        # rows holds about 60 MB of activations, which the parent's heap then keeps.
        x = test_x[0]
        pred = np.concatenate(
            [model.predict(x[s : s + EVAL_ROWS]) for s in range(0, len(x), EVAL_ROWS)]
        )
        f1s = []
        for c in np.unique(y_test):
            tp = float(np.sum((pred == c) & (y_test == c)))
            denom = float(np.sum(pred == c) + np.sum(y_test == c))
            f1s.append(2 * tp / denom if denom else 0.0)
        res = {"accuracy": float(np.mean(pred == y_test)), "macro_f1": float(np.mean(f1s))}
        t1 = time.time()
        marks.append(
            {
                "round": rnd,
                "eval_start": t0,
                "eval_end": t1,
                **res,
                "bytes_down": transport.bytes_down,
                "bytes_up": transport.bytes_up,
                "parent_rss_mb": _rss_mb(),
            }
        )
        print(f"[phalanx] n={n} round={rnd} acc={res['accuracy']:.4f} t={t1:.3f}", flush=True)

    transport = _MarkedTransport(pool, lambda: central_eval(0))

    def on_round(record: RoundRecord) -> None:
        central_eval(record.round)

    coordinator = Coordinator(fed, transport, on_round=on_round)
    prof = None
    if profile:
        import cProfile

        prof = cProfile.Profile(time.process_time)  # CPU time: waits for workers do not count
        prof.enable()
    try:
        coordinator.run()
    finally:
        if prof is not None:
            prof.disable()
            prof.dump_stats(profile)
        transport.close()  # joins the workers, so their CPU is in os.times().children_*
    cpu = os.times()
    model_bytes = sum(w.nbytes for w in fed.weights)
    result = {
        "system": "phalanx",
        "workers": workers,
        "t_servermain_start": t_main,
        "num_clients": n,
        "num_rounds": rounds,
        "model_bytes": model_bytes,
        "bytes_down": transport.bytes_down,
        "bytes_up": transport.bytes_up,
        "marks": marks,
        "cpu_parent_s": cpu.user + cpu.system,
        "parent_rss_mb": {**rss, "end": _rss_mb()},
        "cpu_workers_s": cpu.children_user + cpu.children_system,
        "phases": {k: v - t_main for k, v in phases.items()},
        "stages": [
            {"round": t.round, "stage": t.stage.value, "seconds": t.seconds, "replies": t.replies}
            for t in coordinator.timings
        ],
    }
    Path(out).write_text(json.dumps(result, indent=1))


# ---------------------------------------------------------------------------------------------
# Measurement helpers (parent side)
# ---------------------------------------------------------------------------------------------
def _read(path: str) -> str | None:
    try:
        with open(path, "rb") as fh:
            return fh.read().decode(errors="replace")
    except OSError:
        return None


def _busy_cpu_s() -> float:
    """CPU seconds the whole machine spent busy (not idle or waiting for I/O) since boot."""
    fields = [int(v) for v in (_read("/proc/stat") or "cpu 0 0 0 0 0").split("\n")[0].split()[1:]]
    return (sum(fields) - fields[3] - fields[4]) / os.sysconf("SC_CLK_TCK")


def _tree(root: int) -> list[int]:
    """``root`` and its descendants (from /proc)."""
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            st = _read(f"/proc/{d}/stat")
            if st:
                ppid = int(st[st.rfind(")") + 2 :].split()[1])
                children.setdefault(ppid, []).append(int(d))
    out, stack = [], [root]
    while stack:
        p = stack.pop()
        out.append(p)
        stack.extend(children.get(p, []))
    return out


class TreeSampler(threading.Thread):
    """Peak sum of PSS and of RSS over the process trees of ``roots`` (every ``interval`` s).

    More roots may be appended to :attr:`roots` while it runs (a federation starting up).
    """

    def __init__(self, *roots: int, interval: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.roots, self.interval = list(roots), interval
        self.stop_ev = threading.Event()
        self.peak_pss = self.peak_rss = self.peak_nproc = 0

    def sample(self) -> None:
        pss = rss = 0
        pids = {p for r in list(self.roots) for p in _tree(r)}
        for p in pids:
            sm = _read(f"/proc/{p}/smaps_rollup")
            m = re.search(r"^Pss:\s+(\d+) kB", sm or "", re.M)
            pss += int(m.group(1)) * 1024 if m else 0
            stm = _read(f"/proc/{p}/statm")
            rss += int(stm.split()[1]) * PAGE if stm else 0
        self.peak_pss = max(self.peak_pss, pss)
        self.peak_rss = max(self.peak_rss, rss)
        self.peak_nproc = max(self.peak_nproc, len(pids))

    def run(self) -> None:
        while not self.stop_ev.is_set():
            self.sample()
            self.stop_ev.wait(self.interval)

    def stop(self) -> dict[str, float]:
        self.stop_ev.set()
        self.join()
        return {
            "peak_pss_mb": self.peak_pss / 2**20,
            "peak_rss_sum_mb": self.peak_rss / 2**20,
            "peak_nproc": self.peak_nproc,
        }


def derive(srv: dict[str, Any], t_launch: float, t_end: float) -> dict[str, Any]:
    """The reference harness's figures from a run's marks (bench.py ``derive``)."""
    m = srv["marks"]
    rounds = [b["eval_start"] - a["eval_end"] for a, b in itertools.pairwise(m)]
    steady = rounds[1:] or rounds
    return {
        "round_s": rounds,
        "round1_s": rounds[0],
        "steady_round_median_s": statistics.median(steady),
        "to_first_round_start_s": m[0]["eval_end"] - t_launch,
        "total_wall_s": t_end - t_launch,
        "final_accuracy": m[-1]["accuracy"],
        "final_macro_f1": m[-1]["macro_f1"],
        "model_bytes": srv["model_bytes"],
    }


def startup_s(r: dict[str, Any]) -> float:
    """Launch to round 1 start, plus what round 1 costs over a steady round (README)."""
    return float(r["to_first_round_start_s"] + (r["round1_s"] - r["steady_round_median_s"]))


# ---------------------------------------------------------------------------------------------
# Runs
# ---------------------------------------------------------------------------------------------
class Bench:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.work = Path(args.work).resolve()
        self.venv = Path(args.flower_venv or self.work / "flower-venv").resolve()
        self.stamp = time.strftime("%Y%m%d-%H%M%S")
        self.out = Path(args.out or self.work / "results" / f"simulation-{self.stamp}").resolve()
        self.flower = self.work / "flower"
        self.cache = self.work / "cache"
        self.records: list[dict[str, Any]] = []

    # -- set-up ------------------------------------------------------------------------------
    def prepare(self) -> None:
        self.work.mkdir(parents=True, exist_ok=True)
        self.out.mkdir(parents=True, exist_ok=True)
        src = REFERENCE / "flower"
        if not (src / "bench.py").exists():
            sys.exit(f"reference workload not found at {src} (set FEDBENCH_REFERENCE)")
        shutil.rmtree(self.flower, ignore_errors=True)
        shutil.copytree(src, self.flower, ignore=shutil.ignore_patterns("results*", "__pycache__"))
        for p in self.flower.rglob("*"):
            p.chmod(p.stat().st_mode | 0o200)
        self.flower.chmod(self.flower.stat().st_mode | 0o200)
        if self.args.skip_flower and not self._flower_venv_ok():
            # The plain loop needs only numpy and torch: this interpreter's environment has both.
            self.python_env = Path(sys.prefix)
        else:
            self.ensure_flower_venv()
            self.python_env = self.venv
        sys.path.insert(0, str(self.flower / "flower_app"))
        from fedbench_flwr import workload as W

        print(f"preparing data and partitions in {self.cache}", flush=True)
        W.prepare(str(self.cache), client_counts=tuple(self.args.n))

    def _flower_venv_ok(self) -> bool:
        py = self.venv / "bin" / "python"
        if not py.exists():
            return False
        check = (
            "import flwr, torch, numpy; from importlib.metadata import version;"
            "assert version('flwr') == '1.42.0', version('flwr');"
            "assert torch.__version__.startswith('2.13.0'), torch.__version__"
        )
        return subprocess.run([str(py), "-c", check], capture_output=True).returncode == 0

    def ensure_flower_venv(self) -> None:
        if self._flower_venv_ok():
            print(f"Flower venv: {self.venv} (reused)", flush=True)
            return
        print(f"creating Flower's venv in {self.venv} (a few minutes)", flush=True)
        python3 = shutil.which("python3") or sys.executable
        pip = [str(self.venv / "bin" / "python"), "-m", "pip"]
        log = (self.work / "flower-venv-setup.log").open("w")
        for cmd in (
            [python3, "-m", "venv", "--clear", str(self.venv)],
            [*pip, "install", "-U", "pip"],
            [*pip, "install", TORCH_PIN, FLOWER_PIN, "numpy"],
        ):
            print("  $", " ".join(cmd), flush=True)
            if subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT).returncode != 0:
                sys.exit(f"failed: {' '.join(cmd)} (see {log.name})")
        if not self._flower_venv_ok():
            sys.exit(f"Flower venv {self.venv} does not import flwr 1.42.0 and torch 2.13.0")

    # -- one run of each system ---------------------------------------------------------------
    def reference(
        self,
        mode: str,
        n: int,
        rep: int,
        *,
        extra: tuple[str, ...] = (),
        timeout: float | None = None,
        label: str | None = None,
    ) -> dict[str, Any]:
        """One run of the reference harness (``bench.py plain|plain2|sim|deploy``).

        ``extra`` are more ``bench.py`` arguments (e.g. ``--tls``); ``label`` names the result
        (default: ``mode``).
        """
        label = label or mode
        env = os.environ.copy()
        env.update(
            FEDBENCH_WORK=str(self.work),
            FEDBENCH_VENV=str(self.python_env),
            FEDBENCH_RESULTS=str(self.out),
        )
        env.pop("VIRTUAL_ENV", None)
        cmd = [
            str(self.python_env / "bin" / "python"),
            str(self.flower / "bench.py"),
            mode,
            *extra,
            "--n",
            str(n),
            "--reps",
            "1",
            "--rep0",
            str(rep),
            "--rounds",
            str(self.args.rounds),
            "--timeout",
            str(timeout if timeout is not None else self.args.timeout),
        ]
        print(f"-- {label} N={n} rep {rep}", flush=True)
        proc = subprocess.run(cmd, env=env, cwd=self.flower, capture_output=True, text=True)
        path = self.out / f"{label}_n{n}_r{rep}.json"
        if proc.returncode != 0 or not path.exists():
            print(proc.stdout[-2000:], proc.stderr[-4000:], sep="\n", file=sys.stderr)
            return {"system": label, "n": n, "rep": rep, "rc": proc.returncode or "no result"}
        r: dict[str, Any] = json.loads(path.read_text())
        r.pop("server", None)
        r.update(system=label, n=n)
        return r

    def phalanx(self, n: int, rep: int) -> dict[str, Any]:
        """One cold run of Phalanx's simulation in a child process, its tree sampled."""
        out = self.out / f"phalanx_n{n}_r{rep}.server.json"
        log = self.out / f"phalanx_n{n}_r{rep}.log"
        out.unlink(missing_ok=True)
        prof = str(self.out / f"phalanx_n{n}_r{rep}.prof") if self.args.profile else ""
        cmd = [
            sys.executable,
            str(Path(__file__).resolve()),
            "--phalanx-child",
            str(n),
            "--rounds",
            str(self.args.rounds),
            "--work",
            str(self.work),
            "--child-out",
            str(out),
            "--workers",
            str(self.args.workers),
            "--phalanx-outputs",
            str(self.args.phalanx_outputs),
            "--child-profile",
            prof,
        ]
        print(f"-- phalanx N={n} rep {rep}", flush=True)
        with log.open("w") as fh:
            ru0, busy0 = resource.getrusage(resource.RUSAGE_CHILDREN), _busy_cpu_s()
            t_launch = time.time()
            proc = subprocess.Popen(cmd, stdout=fh, stderr=subprocess.STDOUT)
            sampler = TreeSampler(proc.pid)
            sampler.start()
            try:
                rc: int | str = proc.wait(timeout=self.args.timeout)
            except subprocess.TimeoutExpired:
                proc.kill()
                rc = "timeout"
            t_end = time.time()
            mem = sampler.stop()
            ru = resource.getrusage(resource.RUSAGE_CHILDREN)
            tree_cpu = ru.ru_utime + ru.ru_stime - ru0.ru_utime - ru0.ru_stime
            other = max(_busy_cpu_s() - busy0 - tree_cpu, 0.0)
        rec: dict[str, Any] = {
            "system": "phalanx",
            "n": n,
            "rep": rep,
            "rc": rc,
            **mem,
            "tree_cpu_s": tree_cpu,
            "other_cpu_frac_of_machine": other / ((t_end - t_launch) * (os.cpu_count() or 1)),
        }
        if rc == 0 and out.exists():
            srv = json.loads(out.read_text())
            rec.update(derive(srv, t_launch, t_end))
            rec.update(
                bytes_down_per_round=srv["bytes_down"] / max(len(srv["marks"]) - 1, 1),
                bytes_up_per_round=srv["bytes_up"] / max(len(srv["marks"]) - 1, 1),
                stages=srv["stages"],
                phases={"launch_to_main": srv["t_servermain_start"] - t_launch, **srv["phases"]},
                cpu_parent_s=srv.get("cpu_parent_s"),
                cpu_workers_s=srv.get("cpu_workers_s"),
            )
        else:
            print(log.read_text()[-4000:], file=sys.stderr)
        (self.out / f"phalanx_n{n}_r{rep}.json").write_text(json.dumps(rec, indent=1))
        return rec

    def run(self) -> None:
        self.prepare()
        a = self.args
        for rep in range(a.reps):
            for n in a.n:
                systems = ["plain2", *(["plain"] if a.plain1 else []), "phalanx"]
                if not a.skip_flower and n not in a.skip_flower_n:
                    systems.append("sim")
                for system in systems:
                    if system == "phalanx":
                        rec = self.phalanx(n, rep)
                    else:
                        rec = self.reference(system, n, rep)
                    self.records.append(rec)
                    self.show(rec)
                    self.save()
        self.report()

    @staticmethod
    def show(r: dict[str, Any]) -> None:
        if r.get("rc") != 0:
            print(f"   {r['system']} N={r['n']}: FAILED rc={r.get('rc')}", flush=True)
            return
        print(
            f"   {r['system']} N={r['n']}: steady {r['steady_round_median_s']:.3f} s, round 1"
            f" {r['round1_s']:.2f} s, launch->round 1 {r['to_first_round_start_s']:.2f} s,"
            f" peak PSS {r['peak_pss_mb']:.0f} MB, accuracy {r['final_accuracy']:.4f},"
            f" other load {r.get('other_cpu_frac_of_machine', float('nan')):.2f},"
            f" CPU {r.get('tree_cpu_s', float('nan')):.1f} s"
            + (
                f" (parent {r['cpu_parent_s']:.1f} s, workers {r['cpu_workers_s']:.1f} s)"
                if "cpu_parent_s" in r
                else ""
            ),
            flush=True,
        )

    def save(self) -> None:
        (self.out / "summary.json").write_text(json.dumps(self.summary(), indent=1))

    # -- report --------------------------------------------------------------------------------
    def summary(self) -> dict[str, Any]:
        ok = [r for r in self.records if r.get("rc") == 0]
        rows = []
        for system in ("plain2", "plain", "phalanx", "sim"):
            for n in self.args.n:
                rs = [r for r in ok if r["system"] == system and r["n"] == n]
                if not rs:
                    continue
                med = statistics.median
                rows.append(
                    {
                        "system": system,
                        "n": n,
                        "runs": len(rs),
                        "steady_round_s": med(r["steady_round_median_s"] for r in rs),
                        "round1_s": med(r["round1_s"] for r in rs),
                        "to_first_round_start_s": med(r["to_first_round_start_s"] for r in rs),
                        "startup_s": med(startup_s(r) for r in rs),
                        "peak_pss_gb": med(r["peak_pss_mb"] for r in rs) / 1024,
                        "accuracy": med(r["final_accuracy"] for r in rs),
                        "macro_f1": med(r["final_macro_f1"] for r in rs),
                        "model_bytes": rs[0].get("model_bytes"),
                    }
                )
        by = {(r["system"], r["n"]): r for r in rows}
        for r in rows:
            floor = by.get(("plain2", r["n"]))
            r["ratio_to_plain2"] = r["steady_round_s"] / floor["steady_round_s"] if floor else None
        return {
            "stamp": self.stamp,
            "machine": {"cpus": os.cpu_count(), "loadavg": (_read("/proc/loadavg") or "").split()},
            "args": {k: v for k, v in vars(self.args).items() if not k.startswith("child")},
            "rows": rows,
            "runs": self.records,
        }

    def report(self) -> None:
        s = self.summary()
        label = {
            "plain2": "plain loop, 2 processes",
            "plain": "plain loop, 1 process",
            "phalanx": "Phalanx simulation (pool, 2 workers)"
            + (" [5 outputs]" if self.args.phalanx_outputs == 5 else ""),
            "sim": "Flower 1.42 simulation (flwr run, Ray)",
        }
        rows = sorted(s["rows"], key=lambda r: (r["n"], ["plain2", "plain", "phalanx", "sim"]
                                                .index(r["system"])))  # fmt: skip
        head = (
            f"| {'system':<40} | {'N':>5} | {'steady round (s)':>16} | {'x plain2':>8} |"
            f" {'start-up (s)':>12} | {'peak mem (GB)':>13} | {'accuracy':>8} |"
        )
        print("\n" + head)
        print(re.sub(r"[^|]", "-", head))
        for r in rows:
            ratio = f"{r['ratio_to_plain2']:.2f}x" if r["ratio_to_plain2"] else "-"
            print(
                f"| {label[r['system']]:<40} | {r['n']:>5} | {r['steady_round_s']:>16.3f} |"
                f" {ratio:>8} | {r['startup_s']:>12.2f} | {r['peak_pss_gb']:>13.2f} |"
                f" {r['accuracy']:>8.4f} |"
            )
        outputs = (
            "Phalanx's MLP has 11 outputs (its taxonomy; the workload's 5 classes map to"
            " benign/dos/recon/brute-force/exploit) against 5 in the reference, so its model is"
            " 263,212 bytes instead of 260,116."
            if self.args.phalanx_outputs == 11
            else "Phalanx's MLP was given 5 outputs (--phalanx-outputs 5, an accuracy check; the"
            " classes stand in as benign/dos/recon/brute-force/ddos), like the reference."
        )
        print(
            "\nNotes: medians over runs; steady round = median of rounds 2-10; start-up = launch"
            " to round 1 start + (round 1 - steady round); peak memory = peak sum of PSS over"
            f" the process tree. {outputs} Phalanx also runs a statistics stage and standardizes"
            " the features (counted in its start-up)."
        )
        by = {(r["system"], r["n"]): r for r in rows}
        print("\nGoals (Phalanx):")
        for n in self.args.n:
            ph, p2, fl = by.get(("phalanx", n)), by.get(("plain2", n)), by.get(("sim", n))
            if not ph:
                continue
            parts = []
            if p2:
                ratio = ph["steady_round_s"] / p2["steady_round_s"]
                mark = "ok" if ratio <= GOAL_RATIO else "MISSED"
                parts.append(f"round {ratio:.2f}x plain2 (<= {GOAL_RATIO}x) {mark}")
                diff = ph["accuracy"] - p2["accuracy"]
                mark = "ok" if abs(diff) <= 1e-2 else "DIFFERS"
                parts.append(f"accuracy {ph['accuracy']:.4f} vs {p2['accuracy']:.4f} {mark}")
            mark = "ok" if ph["startup_s"] < GOAL_STARTUP_S else "MISSED"
            parts.append(f"start-up {ph['startup_s']:.2f} s (< {GOAL_STARTUP_S} s) {mark}")
            if fl:
                share = ph["peak_pss_gb"] / fl["peak_pss_gb"]
                mark = "ok" if share <= GOAL_MEMORY_SHARE else "MISSED"
                parts.append(f"memory {share:.2f} of Flower's (<= 1/3) {mark}")
            print(f"  N={n}: " + "; ".join(parts))
        print(f"\nresults: {self.out / 'summary.json'}")


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--n", type=int, nargs="+", default=[10, 100, 1000], help="participants")
    ap.add_argument("--reps", type=int, default=1, help="cold runs of each system and N")
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2, help="Phalanx pool workers")
    ap.add_argument(
        "--phalanx-outputs",
        type=int,
        choices=(11, 5),
        default=11,
        help="Phalanx's MLP outputs: 11 (its taxonomy, the default) or 5 (accuracy check)",
    )
    ap.add_argument("--skip-flower", action="store_true", help="plain loop and Phalanx only")
    ap.add_argument(
        "--skip-flower-n", type=int, nargs="*", default=[], help="no Flower run at these N"
    )
    ap.add_argument("--plain1", action="store_true", help="also the 1-process plain loop")
    ap.add_argument(
        "--profile", action="store_true", help="cProfile Phalanx's coordinator (CPU time)"
    )
    ap.add_argument(
        "--work",
        default=os.environ.get("FEDBENCH_WORK", "/tmp/phalanx-bench"),
        help="venv, data cache, logs and results (default $FEDBENCH_WORK or /tmp/phalanx-bench)",
    )
    ap.add_argument("--flower-venv", default="", help="default WORK/flower-venv")
    ap.add_argument("--out", default="", help="results folder (default WORK/results/simulation-*)")
    ap.add_argument("--timeout", type=float, default=1800, help="seconds per run")
    ap.add_argument("--phalanx-child", type=int, default=0, help=argparse.SUPPRESS)
    ap.add_argument("--child-out", default="", help=argparse.SUPPRESS)
    ap.add_argument("--child-profile", default="", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.phalanx_child:
        cache = str(Path(args.work).resolve() / "cache")
        phalanx_child(
            args.phalanx_child,
            args.rounds,
            cache,
            args.child_out,
            args.workers,
            args.child_profile,
            args.phalanx_outputs,
        )
        return
    _one_thread()
    Bench(args).run()


if __name__ == "__main__":
    main()
