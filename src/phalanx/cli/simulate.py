"""``phalanx simulate``: a federation on one machine, with baselines and a report."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import typer
from pydantic import ValidationError
from rich.console import Console
from rich.table import Table

from phalanx.cli.common import round_progress, setup_runtime, user_errors
from phalanx.core.errors import ConfigError
from phalanx.sim.config import ALGORITHMS, ModelSpec, SimConfig

console = Console()


def simulate(
    data: str = typer.Option(
        "synthetic", "--data", help="Training file (any reader format) or 'synthetic'."
    ),
    test: str | None = typer.Option(
        None, "--test", help="Test file; default: a seeded stratified split."
    ),
    fmt: str = typer.Option(
        "auto", "--format", help="auto|nsl-kdd|unsw-nb15|cic-ids2017|netflow-v2"
    ),
    participants: int = typer.Option(10, "--participants", "-n", help="Number of organizations."),
    partition: str | None = typer.Option(
        None,
        "--partition",
        help="iid | dirichlet:ALPHA | families:K | quantity:ALPHA"
        " (default: natural for synthetic, one organization each; iid for files).",
    ),
    rounds: int = typer.Option(10, "--rounds", "-r"),
    local_epochs: int = typer.Option(1, "--local-epochs"),
    algorithm: str = typer.Option("fedavg", "--algorithm", help="|".join(ALGORITHMS)),
    proximal_mu: float = typer.Option(0.01, "--proximal-mu", help="FedProx proximal term."),
    restricted_softmax: float = typer.Option(
        1.0,
        "--restricted-softmax",
        help="FedRS alpha in [0, 1]: participants scale the logits of classes they do not hold"
        " by it in local training, so label skew does not erase rare classes (1: off).",
    ),
    classwise_head: bool = typer.Option(
        False,
        "--classwise-head",
        help="Average the classifier's output rows class by class, weighted by each"
        " participant's count of the class, so a rare class's few holders set its row"
        " (fedavg/fedprox/fedavgm/fedadam/fedyogi; not with --dp; with"
        " --secure-aggregation the coordinator learns each bucket's rows per class).",
    ),
    server_lr: float | None = typer.Option(
        None, "--server-lr", help="FedAvgM/FedAdam/FedYogi/SCAFFOLD server learning rate."
    ),
    server_momentum: float = typer.Option(0.9, "--server-momentum", help="FedAvgM momentum."),
    fraction: float = typer.Option(1.0, "--fraction", help="Share of participants per round."),
    seed: int = typer.Option(0, "--seed"),
    baselines: bool = typer.Option(
        False, "--baselines", help="Also train centralized and local-only models."
    ),
    out: Path | None = typer.Option(None, "--out", help="Run directory to write."),
    model: str = typer.Option(
        "mlp",
        "--model",
        help="mlp (multi-class classifier), autoencoder (anomaly detector trained on benign"
        " flows only, for participants without attack labels; scored as benign vs attack) or"
        " hybrid (the classifier OR an autoencoder on the benign flows: alerts on attacks unlike"
        " the training ones too; docs/user-guide.md).",
    ),
    ae_hidden: str = typer.Option(
        "64,16", "--ae-hidden", help="hybrid: encoder widths of its autoencoder (bottleneck last)."
    ),
    anomaly_fpr: float = typer.Option(
        0.01,
        "--anomaly-fpr",
        help="hybrid: share of benign validation flows its anomaly part may flag (sets its"
        " threshold).",
    ),
    ae_epochs: int = typer.Option(
        1,
        "--ae-epochs",
        help="hybrid: passes of its autoencoder over the benign rows per local epoch.",
    ),
    ae_optimizer: str | None = typer.Option(
        None, "--ae-optimizer", help="hybrid: its autoencoder's optimizer (default: --optimizer)."
    ),
    ae_lr: float | None = typer.Option(
        None, "--ae-lr", help="hybrid: its autoencoder's learning rate (default: --lr)."
    ),
    hidden: str | None = typer.Option(
        None,
        "--hidden",
        help="Hidden layer widths (default 256,128 for mlp, 64,16 for autoencoder).",
    ),
    lr: float = typer.Option(1e-3, "--lr", help="Local learning rate."),
    optimizer: str = typer.Option(
        "adam", "--optimizer", help="Local optimizer: adam (a fresh one each round) or sgd."
    ),
    momentum: float = typer.Option(0.0, "--momentum", help="SGD momentum (--optimizer sgd)."),
    batch_size: int = typer.Option(256, "--batch-size"),
    min_class_rows: int = typer.Option(
        0,
        "--min-class-rows",
        help="Oversample the classifier's rare classes: each row of a class the federation"
        " holds fewer than K times is presented about K / count times per epoch, at every"
        " participant and in the baselines (0: off; the NSL-KDD recipe uses 32;"
        " docs/adr/0019).",
    ),
    synthetic_flows: int = typer.Option(
        20_000, "--synthetic-flows", help="Flows per synthetic organization."
    ),
    workers: int = typer.Option(2, "--workers", help="Worker processes training participants."),
    target_fpr: float = typer.Option(
        0.01, "--target-fpr", help="False-positive rate for the stored alert threshold."
    ),
    secure_aggregation: bool = typer.Option(
        False,
        "--secure-aggregation",
        help="Aggregate through SecAgg+ (the coordinator learns only sums); see docs/protocol.md.",
    ),
    secagg_bucket_size: int | None = typer.Option(
        None,
        "--secagg-bucket-size",
        help="Split each round's participants into buckets of at least this many members, one"
        " secure sum per bucket (default: one bucket).",
    ),
    secagg_clip: float = typer.Option(
        100.0, "--secagg-clip", help="L2 clipping bound of each secure-aggregation update."
    ),
    attack: str = typer.Option(
        "none",
        "--attack",
        help="Poisoning attack by --attackers organizations (simulation only): none | label-flip"
        " | sign-flip | noise | alie | ipm | backdoor | scaling. See docs/robustness.md.",
    ),
    attackers: int = typer.Option(0, "--attackers", help="How many organizations attack."),
    attack_scale: float | None = typer.Option(
        None, "--attack-scale", help="Attack strength (default per attack, docs/robustness.md)."
    ),
    attack_target: str = typer.Option(
        "dos", "--attack-target", help="Attack family the backdoor hides (a taxonomy category)."
    ),
    poison_rows: int = typer.Option(
        1000, "--poison-rows", help="Triggered flows each backdoor attacker trains on."
    ),
    algorithm_option: list[str] = typer.Option(
        [],
        "--algorithm-option",
        help="KEY=VALUE algorithm parameter, repeatable (e.g. trim_ratio=0.2, byzantine=2).",
    ),
    fltrust_root: int = typer.Option(
        200, "--fltrust-root", help="Flows in the coordinator's FLTrust root dataset."
    ),
    quarantine_after: int = typer.Option(
        0, "--quarantine-after", help="Exclude a participant after K flagged rounds (0: never)."
    ),
    dp: str = typer.Option(
        "none",
        "--dp",
        help="Differential privacy: none | record (DP-SGD in every participant) |"
        " client-central (DP-FedAvg, noise at the coordinator) | client-distributed (integer"
        " noise under secure aggregation). See docs/privacy.md.",
    ),
    epsilon: float | None = typer.Option(
        None,
        "--epsilon",
        help="Target epsilon: per participant (record) or of the federation (client modes);"
        " the noise multiplier is calibrated to reach it over --rounds.",
    ),
    delta: float = typer.Option(1e-5, "--delta", help="Delta of the DP guarantee."),
    clip: float = typer.Option(
        1.0, "--clip", help="L2 clipping norm: per example (record) or per participant update."
    ),
    noise_multiplier: float | None = typer.Option(
        None, "--noise-multiplier", help="Noise std over --clip (instead of --epsilon)."
    ),
    participant_epsilon: float | None = typer.Option(
        None,
        "--participant-epsilon",
        help="Each participant's own budget; it refuses rounds past it (default: --epsilon).",
    ),
    adaptive_clip: bool = typer.Option(
        False,
        "--adaptive-clip",
        help="client-central: track the median update norm (Andrew et al. 2021) from --clip.",
    ),
    dp_class_balance: float = typer.Option(
        0.0,
        "--dp-class-balance",
        help="record: class-balanced sampling exponent, 1 balanced, 0 uniform (docs/privacy.md).",
    ),
    verbose: bool = typer.Option(False, "--verbose", "-v"),
) -> None:
    """Simulate a federation on this machine and report it against baselines."""
    setup_runtime(verbose)
    with user_errors():
        try:
            cfg = SimConfig(
                data=data,
                test=test,
                format=fmt,
                participants=participants,
                partition=partition or ("natural" if data == "synthetic" else "iid"),
                rounds=rounds,
                local_epochs=local_epochs,
                algorithm=algorithm,
                proximal_mu=proximal_mu,
                restricted_softmax=restricted_softmax,
                classwise_head=classwise_head,
                server_lr=server_lr,
                server_momentum=server_momentum,
                fraction=fraction,
                seed=seed,
                baselines=baselines,
                out=out,
                synthetic_flows=synthetic_flows,
                workers=workers,
                target_fpr=target_fpr,
                dp=dp,
                epsilon=epsilon,
                delta=delta,
                clip=clip,
                noise_multiplier=noise_multiplier,
                participant_epsilon=participant_epsilon,
                adaptive_clip=adaptive_clip,
                dp_class_balance=dp_class_balance,
                attack=attack,
                attackers=attackers,
                attack_scale=attack_scale,
                attack_target=attack_target,
                poison_rows=poison_rows,
                algorithm_options=_options(algorithm_option),
                fltrust_root=fltrust_root,
                quarantine_after=quarantine_after,
                secure_aggregation=secure_aggregation,
                secagg_bucket_size=secagg_bucket_size,
                secagg_clip=secagg_clip,
                model=ModelSpec(
                    kind=model,
                    hidden=_hidden(hidden or ("64,16" if model == "autoencoder" else "256,128")),
                    lr=lr,
                    optimizer=optimizer,
                    momentum=momentum,
                    batch_size=batch_size,
                    min_class_rows=min_class_rows,
                    ae_hidden=_hidden(ae_hidden),
                    anomaly_fpr=anomaly_fpr,
                    ae_epochs=ae_epochs,
                    ae_optimizer=ae_optimizer,
                    ae_lr=ae_lr,
                ),
            )
        except ValidationError as exc:
            raise ConfigError(_pydantic_message(exc)) from None
        from phalanx.sim.runner import run_simulation, write_run

        with round_progress(console) as bar:
            task = bar.add_task("rounds", total=cfg.rounds, status="preparing data")

            def progress(line: dict[str, Any]) -> None:
                if "round" in line:
                    t = line["test"]
                    bar.update(
                        task,
                        completed=line["round"],
                        status=(
                            f"macro-F1 {t['macro_f1']:.3f}  acc {t['accuracy']:.3f}"
                            f"  {line['seconds']:.2f} s/round"
                        ),
                    )
                else:
                    bar.update(task, status="training baselines")

            result = run_simulation(cfg, progress=progress)
        _print_summary(result.summary)
        if out is not None:
            write_run(result, out)
            console.print(f"run directory: [bold]{out}[/] (report.md, summary.json, model/)")


def _options(items: list[str]) -> dict[str, float]:
    """``KEY=VALUE`` pairs of ``--algorithm-option`` as numbers."""
    out: dict[str, float] = {}
    for item in items:
        key, sep, value = item.partition("=")
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if not sep or not key.strip() or number != number:
            raise ConfigError(
                f"--algorithm-option expects KEY=NUMBER like trim_ratio=0.2; found {item!r}"
            )
        out[key.strip()] = number
    return out


def _hidden(text: str) -> tuple[int, ...]:
    try:
        widths = tuple(int(x) for x in text.split(",") if x.strip())
    except ValueError:
        raise ConfigError(
            f"--hidden expects comma-separated integers like 256,128, found {text!r}"
        ) from None
    if not widths or min(widths) < 1:
        raise ConfigError(f"--hidden expects positive widths, found {text!r}")
    return widths


def _pydantic_message(exc: ValidationError) -> str:
    parts = []
    for e in exc.errors():
        loc = ".".join(str(x) for x in e["loc"])
        parts.append(f"--{loc.replace('_', '-')}: {e['msg']}")
    return "invalid simulation options: " + "; ".join(parts)


def _print_summary(summary: dict[str, Any]) -> None:
    table = Table(title="test-set results", show_lines=False)
    for col in ("system", "accuracy", "macro-F1", "binary acc.", "detection", "FPR", "ROC-AUC"):
        table.add_column(col, justify="right" if col != "system" else "left", no_wrap=True)
    rows = [("federated", summary["federated"])]
    if "centralized" in summary:
        rows += [
            ("centralized", summary["centralized"]),
            ("local-only mean", summary["local_only"]["mean"]),
            ("local-only min", summary["local_only"]["min"]),
        ]
    for name, r in rows:
        b = r["binary"]
        table.add_row(
            name,
            *(
                _f(v)
                for v in (
                    r["accuracy"],
                    r["macro_f1"],
                    b["accuracy"],
                    b["detection_rate"],
                    b["fpr"],
                    b["roc_auc"],
                )
            ),
        )
    console.print(table)
    _print_attack(summary)
    _print_privacy(summary)
    if summary.get("stopped"):
        console.print(f"[bold yellow]federation {summary['stopped']}[/]")
    console.print(
        f"{summary['rounds']} rounds, {summary['participants']} participants,"
        f" {summary['bytes_down'] / 1e6:.1f} MB down, {summary['bytes_up'] / 1e6:.1f} MB up,"
        f" {summary['wall_s']:.1f} s"
    )


def _print_privacy(summary: dict[str, Any]) -> None:
    """The DP guarantee of the run and what the participants' own ledgers charged."""
    p = summary.get("privacy")
    if not p:
        return
    console.print(
        f"differential privacy: {p['mechanism']}; ({p['epsilon']:.3f}, {p['delta']:g})-DP per"
        f" {p['unit']} over {p['rounds']} rounds; largest epsilon a participant's ledger"
        f" charged: {p['max_epsilon_spent']:.3f}"
    )


def _print_attack(summary: dict[str, Any]) -> None:
    """The attack, its success rate and the suspicious participants (when there was one)."""
    att = summary.get("attack", {})
    susp = summary.get("suspicion", {}).get("participants", {})
    if att.get("kind", "none") != "none":
        asr = att.get("attack_success_rate")
        console.print(
            f"attack {att['kind']} by {', '.join(att['attackers']) or 'nobody'}"
            + ("" if asr is None else f"; backdoor success {100 * asr:.1f}%")
        )
    flagged = {p: v["flagged_rounds"] for p, v in susp.items() if v["flagged_rounds"]}
    if flagged:
        console.print(
            "flagged as suspicious (rounds): "
            + ", ".join(f"{p} ({n})" for p, n in sorted(flagged.items()))
        )
    excluded = summary.get("quarantine", {}).get("excluded", {})
    if excluded:
        console.print(
            "quarantined: " + ", ".join(f"{p} after round {r}" for p, r in excluded.items())
        )


def _f(v: Any) -> str:
    return "n/a" if v is None else f"{v:.4f}"
