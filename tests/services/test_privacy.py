"""The participant's privacy middleware: its own accountant, its own ledger, its own budget."""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from phalanx.adapters.accounting import RdpAccountant
from phalanx.adapters.store.ledger import SqliteLedger
from phalanx.core.messages import Reply, Stage, Task
from phalanx.core.privacy import (
    UNCLIPPED_METRIC,
    Budget,
    DPTaskSpec,
    LedgerEntry,
    PrivacyEvent,
    l2_norm,
)
from phalanx.core.types import ParticipantId
from phalanx.services.privacy import PrivacyGuard
from phalanx.services.privacy_plan import plan_dp, task_section

PID = ParticipantId("org-01")


class MemoryLedger:
    """The in-memory twin of the ledger port (the SQLite one is tested in tests/adapters)."""

    def __init__(self) -> None:
        self.rows: list[LedgerEntry] = []
        self.refused: list[tuple[str, int, str]] = []

    def record(self, entry: LedgerEntry) -> None:
        self.rows.append(entry)

    def entries(self, federation: str | None = None) -> list[LedgerEntry]:
        return [e for e in self.rows if federation is None or e.federation == federation]

    def refusal(self, federation: str, round: int, reason: str) -> None:
        self.refused.append((federation, round, reason))


def _weights() -> list[np.ndarray]:
    return [np.zeros((4, 3), dtype=np.float32), np.zeros(3, dtype=np.float32)]


def _task(rnd: int, dp: dict[str, object] | None, stage: Stage = Stage.FIT) -> Task:
    config: dict[str, object] = {"model": {"batch_size": 50}, "local_epochs": 1}
    if dp is not None:
        config["dp"] = dp
    return Task(round=rnd, stage=stage, schema_hash="h", weights=_weights(), config=config)


def _trainer(shift: float = 5.0) -> object:
    """A stand-in for local training: moves every weight by ``shift``, reports DP-SGD's
    schedule as ``local_train`` does (read from the task it receives)."""

    def handle(task: Task) -> Reply:
        metrics = {"loss": 1.0}
        dp = task.config.get("dp")
        if isinstance(dp, dict) and dp["mode"] == "record":
            n, b = 1000, 50
            metrics |= {
                "dp_sampling_rate": b / n,
                "dp_steps": float(math.ceil(n / b)),
                "dp_noise_multiplier": float(dp["noise_multiplier"]),
            }
        arrays = [w + np.float32(shift) for w in task.weights]
        return Reply(PID, task.round, task.stage, "h", arrays, 1000, metrics)

    return handle


def _guard(ledger: object, epsilon: float = 5.0) -> PrivacyGuard:
    return PrivacyGuard(
        PID,
        ledger=ledger,  # type: ignore[arg-type]
        accountant=RdpAccountant(),
        budget=Budget(epsilon, 1e-5),
        num_examples=1000,
    )


def test_task_without_dp_is_refused_and_logged(caplog: pytest.LogCaptureFixture) -> None:
    ledger = MemoryLedger()
    reply = _guard(ledger)(_task(1, None), _trainer())  # type: ignore[arg-type]
    assert "asks for no differential privacy" in reply.refused
    assert reply.arrays == [] and ledger.rows == []
    assert ledger.refused and "no differential privacy" in caplog.text


def test_stats_and_evaluate_pass_through() -> None:
    ledger = MemoryLedger()
    reply = _guard(ledger)(_task(0, None, Stage.STATS), _trainer())  # type: ignore[arg-type]
    assert not reply.refused and ledger.rows == []


def test_record_mode_calibrates_its_own_noise_and_ignores_a_stated_cost() -> None:
    ledger = MemoryLedger()
    dp = {
        "mode": "record",
        "clip": 1.0,
        "target_epsilon": 4.0,
        "rounds": 5,
        "epsilon_per_round": 0.0001,  # a coordinator's claim: never read
    }
    seen: list[Task] = []

    def trainer(task: Task) -> Reply:
        seen.append(task)
        return _trainer()(task)  # type: ignore[operator, no-any-return]

    guard = _guard(ledger, epsilon=4.0)
    for r in range(1, 6):
        assert not guard(_task(r, dp), trainer).refused
    z = seen[0].config["dp"]["noise_multiplier"]
    assert z > 0.5
    assert guard.spent() == pytest.approx(4.0, abs=0.01)
    assert ledger.rows[-1].epsilon_total <= 4.0
    # the sixth round would overshoot: refused, nothing charged
    reply = guard(_task(6, dp), trainer)
    assert "privacy budget" in reply.refused and len(ledger.rows) == 5


def test_a_reply_that_ran_another_schedule_is_withheld() -> None:
    ledger = MemoryLedger()
    guard = _guard(ledger)

    def liar(task: Task) -> Reply:
        reply = _trainer()(task)  # type: ignore[operator]
        return Reply(PID, task.round, task.stage, "h", reply.arrays, 1000, {"dp_steps": 1.0})

    dp = {"mode": "record", "clip": 1.0, "noise_multiplier": 1.0}
    reply = guard(_task(1, dp), liar)
    assert "update withheld" in reply.refused and reply.arrays == [] and ledger.rows == []


def test_client_mode_clips_the_delta_and_reports_it() -> None:
    ledger = MemoryLedger()
    dp = {"mode": "client-central", "clip": 0.5, "noise_multiplier": 1.0}
    task = _task(1, dp)
    reply = _guard(ledger)(task, _trainer(shift=5.0))  # type: ignore[arg-type]
    delta = [a.astype(np.float64) - w for a, w in zip(reply.arrays, task.weights, strict=True)]
    assert l2_norm(delta) <= 0.5 + 1e-6
    assert reply.metrics[UNCLIPPED_METRIC] == 0.0
    assert ledger.rows[0].event == PrivacyEvent("gaussian", 1.0, 1.0, 1)
    small = _guard(MemoryLedger())(task, _trainer(shift=0.01))  # type: ignore[arg-type]
    assert small.metrics[UNCLIPPED_METRIC] == 1.0


def test_distributed_mode_without_secure_aggregation_is_refused() -> None:
    dp = {"mode": "client-distributed", "clip": 1.0, "noise_multiplier": 1.0}
    reply = _guard(MemoryLedger())(_task(1, dp), _trainer())  # type: ignore[arg-type]
    assert "secure aggregation" in reply.refused


@settings(
    max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    budget=st.floats(0.5, 20.0),
    tasks=st.lists(
        st.tuples(
            st.sampled_from(["record", "client-central"]),
            st.floats(0.3, 5.0),
            st.sampled_from(["fed-a", "fed-b"]),
        ),
        min_size=1,
        max_size=25,
    ),
)
def test_the_budget_is_never_overshot(
    budget: float, tasks: list[tuple[str, float, str]], tmp_path_factory: pytest.TempPathFactory
) -> None:
    """Whatever sequence of tasks arrives, across federations, the composed epsilon of what the
    ledger charged stays within the budget, and every refused task charged nothing."""
    ledger = SqliteLedger(tmp_path_factory.mktemp("ledger") / "l.sqlite")
    guard = _guard(ledger, epsilon=budget)
    acc = RdpAccountant()
    for r, (mode, z, fed) in enumerate(tasks, start=1):
        before = len(ledger.entries())
        dp = {"mode": mode, "clip": 1.0, "noise_multiplier": z, "federation": fed}
        reply = guard(_task(r, dp), _trainer())  # type: ignore[arg-type]
        after = ledger.entries()
        assert len(after) == before + (0 if reply.refused else 1)
        assert acc.epsilon([e.event for e in after], 1e-5) <= budget
    ledger.close()


def test_plan_dp_and_task_section() -> None:
    acc = RdpAccountant()
    assert plan_dp("none", accountant=acc, clip=1, noise_multiplier=None, epsilon=None,
                   delta=1e-5, rounds=5, fraction=1.0) is None  # fmt: skip
    spec = plan_dp("client-central", accountant=acc, clip=1.0, noise_multiplier=None,
                   epsilon=10.0, delta=1e-5, rounds=10, fraction=1.0)  # fmt: skip
    assert spec is not None and spec.noise_multiplier is not None
    ev = PrivacyEvent("gaussian", spec.noise_multiplier, 1.0, 10)
    assert acc.epsilon([ev], 1e-5) <= 10.0
    section = task_section(spec)["dp"]
    assert section["mode"] == "client-central" and section["noise_multiplier"] > 0
    rec = plan_dp("record", accountant=acc, clip=1.0, noise_multiplier=None, epsilon=8.0,
                  delta=1e-5, rounds=10, fraction=1.0)  # fmt: skip
    assert rec is not None and "noise_multiplier" not in task_section(rec)["dp"]


def test_guard_spent_reads_the_sqlite_ledger(tmp_path: Path) -> None:
    ledger = SqliteLedger(tmp_path / "l.sqlite")
    guard = _guard(ledger)
    dp = {"mode": "client-central", "clip": 1.0, "noise_multiplier": 2.0}
    guard(_task(1, dp), _trainer())  # type: ignore[arg-type]
    ev = PrivacyEvent("gaussian", 2.0, 1.0, 1)
    assert guard.spent() == pytest.approx(RdpAccountant().epsilon([ev], 1e-5))


def _params(scale: float, length: int) -> object:
    from phalanx.core.secagg.params import InstanceParams

    return InstanceParams(
        instance="r1", kind="fit", buckets=((PID,),), degree=1, graph_seed=0, bits=32,
        scale=scale, bound=2.0, weight_cap=1000, length=length,
    )  # fmt: skip


@pytest.mark.filterwarnings("ignore::phalanx.core.privacy.SeededNoiseWarning")
def test_distributed_mode_charges_and_arms_one_noise_draw() -> None:
    from phalanx.core.errors import PrivacyError
    from phalanx.core.privacy import DistributedNoise

    hook = DistributedNoise(noise_seed=3)
    ledger = MemoryLedger()
    guard = PrivacyGuard(
        PID, ledger=ledger, accountant=RdpAccountant(), budget=Budget(50.0, 1e-5),
        num_examples=1000, distributed=hook,
    )  # fmt: skip
    dp = {"mode": "client-distributed", "clip": 1.0, "noise_multiplier": 1.0,
          "min_participants": 4, "min_scale": 1024}  # fmt: skip
    with pytest.raises(PrivacyError, match="did not charge"):
        hook(_params(1024.0, 16), 16)  # type: ignore[arg-type]
    reply = guard(_task(1, dp), _trainer())  # type: ignore[arg-type]
    assert not reply.refused
    assert ledger.rows[0].event.kind == "zcdp" and ledger.rows[0].event.rho > 0
    noise = hook(_params(1024.0, 16), 16)  # type: ignore[arg-type]
    assert noise.dtype == np.int64 and noise.shape == (16,)
    with pytest.raises(PrivacyError, match="did not charge"):  # one draw per charge
        hook(_params(1024.0, 16), 16)  # type: ignore[arg-type]
    guard(_task(2, dp), _trainer())  # type: ignore[arg-type]
    with pytest.raises(PrivacyError, match="below the 1024"):
        hook(_params(512.0, 16), 16)  # type: ignore[arg-type]
    # the noise shares of 4 participants sum to std z * sqrt(C^2 + 1) * scale
    hook_big = DistributedNoise(noise_seed=4)
    draws = []
    for _ in range(4):
        hook_big.arm(guard_spec(dp), 1024.0, [np.zeros(20_000, dtype=np.float32)])
        draws.append(hook_big(_params(1024.0, 20_001), 20_001))  # type: ignore[arg-type]
    total = np.sum(draws, axis=0)
    assert abs(total.std() / 1024.0 - math.sqrt(2.0)) < 0.03


def guard_spec(dp: dict[str, object]) -> DPTaskSpec:
    spec = DPTaskSpec.from_config({"dp": dp})
    if spec is None:
        raise AssertionError("the test's dp section must parse")
    return spec


@pytest.mark.slow
@pytest.mark.parametrize(
    ("mode", "extra"),
    [
        ("record", {}),
        ("client-central", {"adaptive_clip": True}),
        ("client-distributed", {"secure_aggregation": True}),
    ],
)
def test_simulation_states_the_guarantee_its_ledgers_charged(
    mode: str, extra: dict[str, object], tmp_path: Path
) -> None:
    """End to end through the simulation: every participant's own ledger stays within the
    target, and report.md and the model bundle state the guarantee."""
    import json

    from phalanx.sim.config import SimConfig
    from phalanx.sim.runner import run_simulation, write_run

    cfg = SimConfig(
        data="synthetic", participants=4, partition="natural", synthetic_flows=200, rounds=2,
        workers=1, dp=mode, epsilon=6.0, clip=0.5, **extra,
    )  # fmt: skip
    result = run_simulation(cfg)
    privacy = result.summary["privacy"]
    assert privacy["mode"] == mode
    assert 0 < privacy["max_epsilon_spent"] <= 6.0
    assert all(p["rounds_charged"] == 2 for p in privacy["participants"].values())
    write_run(result, tmp_path)
    report = (tmp_path / "report.md").read_text()
    assert "## Differential privacy" in report and f"| mode | {mode} |" in report
    meta = json.loads((tmp_path / "model" / "model.json").read_text())
    provenance = meta["metadata"]["provenance"]
    assert provenance["dp_epsilon"] == pytest.approx(privacy["epsilon"])
    assert provenance["privacy"]["delta"] == 1e-5 and "participants" not in provenance["privacy"]


@pytest.mark.parametrize(
    ("mode", "budget", "rounds_done"),
    [("client-central", 3.0, (1, 2, 3)), ("record", 0.5, (0,))],  # the second affords none
)
def test_a_simulation_whose_participants_run_out_of_budget_ends_early_and_says_so(
    mode: str, budget: float, rounds_done: tuple[int, ...], tmp_path: Path
) -> None:
    """Participants' own budgets below what the plan spends: the run keeps the rounds they could
    afford (none, at worst: the model is then the initial one), writes its directory, and
    states where and why it stopped; no ledger goes past its budget."""
    import json

    from phalanx.sim.config import SimConfig
    from phalanx.sim.runner import run_simulation, write_run

    cfg = SimConfig(
        data="synthetic", participants=4, partition="natural", synthetic_flows=200, rounds=4,
        workers=1, dp=mode, epsilon=6.0, participant_epsilon=budget, clip=0.5,
    )  # fmt: skip
    result = run_simulation(cfg)
    summary = result.summary
    assert summary["rounds"] in rounds_done and summary["rounds_planned"] == 4
    assert summary["stopped"].startswith(f"stopped after round {summary['rounds']} of 4")
    assert summary["privacy"]["max_epsilon_spent"] <= budget
    write_run(result, tmp_path)
    assert f"**federation {summary['stopped']}**" in (tmp_path / "report.md").read_text()
    meta = json.loads((tmp_path / "model" / "model.json").read_text())
    assert meta["metadata"]["provenance"]["rounds"] == summary["rounds"]
    lines = (tmp_path / "metrics.jsonl").read_text().splitlines()
    assert len(lines) == summary["rounds"]


def test_class_balanced_dp_sgd_is_charged_at_the_largest_inclusion_rate(
    rng: np.random.Generator,
) -> None:
    """Real local training with class-balanced sampling under the guard: the reply's schedule
    matches the charge, whose rate is the largest per-class inclusion rate (the rarest class's)
    and bounds every class's rate."""
    from phalanx.models.federated import local_train
    from phalanx.models.mlp import MLPClassifier

    x = rng.normal(size=(1000, 4)).astype(np.float32)
    y = np.array([0] * 900 + [1] * 80 + [2] * 20)
    model = MLPClassifier(4, hidden=(3,), n_classes=3, batch_size=50).initialize()
    spec = plan_dp("record", accountant=RdpAccountant(), clip=1.0, noise_multiplier=None,
                   epsilon=4.0, delta=1e-5, rounds=2, fraction=1.0, class_balance=0.7)  # fmt: skip
    assert spec is not None and task_section(spec)["dp"]["class_balance"] == 0.7
    rates: list[float] = []

    def trainer(task: Task) -> Reply:
        model.set_weights(task.weights)
        weights, n, metrics, _ = local_train(model, x, y, task.config, {}, noise_rng=rng)
        rates.append(metrics["dp_max_class_rate"])
        return Reply(PID, task.round, task.stage, "h", weights, n, metrics)

    ledger = MemoryLedger()
    guard = _guard(ledger, epsilon=4.0)
    config = {"model": {"batch_size": 50}, "local_epochs": 1, **task_section(spec)}
    task = Task(round=1, stage=Stage.FIT, schema_hash="h", weights=model.get_weights(),
                config=config)  # fmt: skip
    reply = guard(task, trainer)
    assert not reply.refused
    charged = ledger.rows[0].event
    assert charged.sampling_rate == pytest.approx(50 / 1000)
    assert rates[0] == pytest.approx(charged.sampling_rate)

    # a reply claiming a class sampled above the charged rate is withheld
    def greedy(task: Task) -> Reply:
        r = trainer(task)
        return Reply(PID, r.round, r.stage, "h", r.arrays, r.num_examples,
                     {**r.metrics, "dp_max_class_rate": 2 * charged.sampling_rate})  # fmt: skip

    withheld = guard(dataclasses.replace(task, round=2), greedy)
    assert "above the rate" in withheld.refused and len(ledger.rows) == 1
