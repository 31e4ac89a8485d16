"""``phalanx privacy status``: what a participant's own privacy ledger says it has spent."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.table import Table

from phalanx.adapters.accounting import RdpAccountant
from phalanx.adapters.store.ledger import SqliteLedger
from phalanx.cli.common import setup_runtime, user_errors
from phalanx.cli.config import FederationConfig
from phalanx.core.aggregation import ServerAlgorithm
from phalanx.core.errors import ConfigError
from phalanx.core.privacy import DPFedAvg
from phalanx.services.privacy_plan import plan_dp, task_section

app = typer.Typer(no_args_is_help=True)
console = Console()

DEFAULT_LEDGER = Path("privacy-ledger.sqlite")
"""Where ``participant join`` keeps the ledger unless told otherwise (``--ledger``)."""


@app.command("status")
def status(
    ledger: Path = typer.Option(
        DEFAULT_LEDGER, "--ledger", help="The participant's privacy ledger (SQLite file)."
    ),
    epsilon: float | None = typer.Option(
        None, "--epsilon", help="Budget epsilon, to show what is left."
    ),
    delta: float | None = typer.Option(
        None, "--delta", help="Delta to state epsilons at (default: the ledger's)."
    ),
    rounds: int = typer.Option(10, "--rounds", help="Most recent charged rounds to list."),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Show the epsilon spent per federation and per round, and the tasks refused."""
    setup_runtime(verbose)
    with user_errors():
        if not ledger.is_file():
            raise ConfigError(
                f"no privacy ledger at {ledger}",
                hint="pass --ledger FILE (participant join keeps it in its --ledger path)",
            )
        book = SqliteLedger(ledger)
        entries = book.entries()
        refusals = book.refusals()
        book.close()
        if not entries and not refusals:
            console.print(f"{ledger}: nothing charged yet")
            return
        d = delta if delta is not None else (entries[-1].delta if entries else 1e-5)
        acc = RdpAccountant()
        feds = sorted({e.federation for e in entries})
        table = Table(title=f"privacy spent (epsilon at delta {d:g}, {acc.name})")
        for col in ("federation", "rounds", "modes", "epsilon"):
            table.add_column(col, justify="left" if col in ("federation", "modes") else "right")
        for fed in feds:
            mine = [e for e in entries if e.federation == fed]
            table.add_row(
                fed,
                str(len(mine)),
                ",".join(sorted({e.mode for e in mine})),
                f"{acc.epsilon([e.event for e in mine], d):.4f}",
            )
        total = acc.epsilon([e.event for e in entries], d)
        table.add_row("all (composed)", str(len(entries)), "", f"{total:.4f}")
        console.print(table)
        if epsilon is not None:
            left = max(0.0, epsilon - total)
            console.print(f"budget epsilon {epsilon:g}: spent {total:.4f}, left {left:.4f}")
        recent = Table(title=f"last {min(rounds, len(entries))} charged rounds")
        for col in ("UTC", "federation", "round", "mode", "noise mult.", "q", "steps",
                    "epsilon (round)", "epsilon (total)"):  # fmt: skip
            recent.add_column(col)
        for e in entries[-rounds:]:
            recent.add_row(
                e.at.strftime("%m-%d %H:%M") if e.at else "",
                e.federation,
                str(e.round),
                e.mode,
                f"{e.event.noise_multiplier:.4f}",
                f"{e.event.sampling_rate:.4g}",
                str(e.event.steps),
                f"{e.epsilon_round:.4f}",
                f"{e.epsilon_total:.4f}",
            )
        if entries:
            console.print(recent)
        if refusals:
            console.print(f"[bold]{len(refusals)} task(s) refused[/]:")
            for at, fed, rnd, why in refusals[-rounds:]:
                console.print(f"  {at:%Y-%m-%d %H:%M:%S} {fed} round {rnd}: {why}")


def federation_dp(
    cfg: FederationConfig, algorithm: ServerAlgorithm
) -> tuple[dict[str, Any], ServerAlgorithm, int | None]:
    """The DP of a deployed federation from ``federation.toml``'s ``[privacy]`` section.

    Returns the ``dp`` section every training task carries (empty without DP), the server
    algorithm (wrapped in central DP-FedAvg for ``client-central``) and the secure-aggregation
    weight cap (``1`` for ``client-distributed``, whose noise shares assume equal weights;
    ``None``: the default). Participants never trust these numbers: each one's own guard
    recomputes the cost of every task with its own accountant before it trains.
    """
    priv, train, parts = cfg.privacy, cfg.training, cfg.participants
    if priv.mode == "none":
        return {}, algorithm, None
    if priv.mode == "client-central" and train.secure_aggregation:
        raise ConfigError(
            "[privacy] mode = 'client-central' adds noise at the coordinator to updates that"
            " secure aggregation hides from it",
            hint="use mode = 'client-distributed' with secure_aggregation = true",
        )
    if priv.mode == "client-distributed" and not train.secure_aggregation:
        raise ConfigError(
            "[privacy] mode = 'client-distributed' needs [training] secure_aggregation = true"
            " (participants add noise shares to the masked sum)"
        )
    enrolled = len(parts.enrolled)
    expected = max(1, min(enrolled, math.ceil(parts.fraction * enrolled)))
    if parts.max is not None:
        expected = min(expected, parts.max)
    shares = max(1, min(expected, train.secagg_bucket_size or expected, parts.min))
    spec = plan_dp(
        priv.mode,
        accountant=RdpAccountant(),
        clip=priv.clip,
        noise_multiplier=priv.noise_multiplier,
        epsilon=priv.epsilon,
        delta=priv.delta,
        rounds=train.rounds,
        fraction=expected / enrolled,
        min_participants=shares,
        federation=cfg.federation.name,
        class_balance=priv.class_balance,
    )
    if spec is None:
        return {}, algorithm, None
    if spec.mode == "client-central" and spec.noise_multiplier is not None:
        algorithm = DPFedAvg(
            algorithm,
            clip_norm=spec.clip,
            noise_multiplier=spec.noise_multiplier,
            expected_participants=expected,
        )
    return task_section(spec), algorithm, 1 if spec.mode == "client-distributed" else None
