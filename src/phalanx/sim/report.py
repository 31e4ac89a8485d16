"""``report.md`` and its PNG plots for a run directory."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from numpy.typing import NDArray

from phalanx.core.taxonomy import CATEGORIES


def _plt() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _fmt(v: Any, pct: bool = False) -> str:
    if v is None:
        return "n/a"
    return f"{100 * v:.2f}" if pct else f"{v:.4f}"


def write_report(
    out: Path,
    summary: dict[str, Any],
    history: list[dict[str, Any]],
    category_matrix: NDArray[np.int64],
) -> None:
    """Write ``report.md`` plus ``rounds.png``, ``per_class_recall.png``, ``confusion.png`` and
    ``baselines.png`` into ``out``."""
    plt = _plt()
    fed = summary["federated"]
    systems: dict[str, dict[str, Any]] = {"federated": fed}
    if "centralized" in summary:
        systems["centralized"] = summary["centralized"]
        systems["local-only (mean)"] = summary["local_only"]["mean"]
        systems["local-only (min)"] = summary["local_only"]["min"]

    # metrics per round
    fig, ax = plt.subplots(figsize=(7, 4))
    rounds = [h["round"] for h in history]
    ax.plot(rounds, [h["test"]["macro_f1"] for h in history], marker="o", label="macro-F1")
    ax.plot(rounds, [h["test"]["accuracy"] for h in history], marker="s", label="accuracy")
    ax.plot(
        rounds,
        [h["test"]["binary"]["accuracy"] for h in history],
        marker="^",
        label="binary accuracy",
    )
    if "centralized" in summary:
        ax.axhline(
            summary["centralized"]["macro_f1"], ls="--", c="grey", label="centralized macro-F1"
        )
        ax.axhline(
            summary["local_only"]["mean"]["macro_f1"],
            ls=":",
            c="red",
            label="local-only mean macro-F1",
        )
    ax.set_xlabel("round")
    ax.set_ylabel("test score")
    ax.set_ylim(0, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "rounds.png", dpi=110)
    plt.close(fig)

    # per-class recall
    present = [c for c in CATEGORIES if fed["per_class"].get(c, {}).get("support", 0)]
    fig, ax = plt.subplots(figsize=(8, 4))
    width = 0.8 / max(1, len(systems))
    for i, (name, res) in enumerate(systems.items()):
        vals = [(res["per_class"].get(c, {}) or {}).get("recall") or 0.0 for c in present]
        ax.bar(np.arange(len(present)) + i * width, vals, width, label=name)
    ax.set_xticks(np.arange(len(present)) + width * (len(systems) - 1) / 2)
    ax.set_xticklabels(present, rotation=30, ha="right")
    ax.set_ylabel("recall on the test set")
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "per_class_recall.png", dpi=110)
    plt.close(fig)

    # confusion matrix
    cm = np.asarray(fed.get("confusion", []), dtype=float)
    if cm.size:
        keep = [i for i, c in enumerate(CATEGORIES) if cm[i].sum() + cm[:, i].sum() > 0]
        sub = cm[np.ix_(keep, keep)]
        norm = sub / np.maximum(sub.sum(axis=1, keepdims=True), 1)
        fig, ax = plt.subplots(figsize=(6, 5))
        im = ax.imshow(norm, cmap="Blues", vmin=0, vmax=1)
        labels = [CATEGORIES[i] for i in keep]
        ax.set_xticks(range(len(keep)))
        ax.set_xticklabels(labels, rotation=45, ha="right")
        ax.set_yticks(range(len(keep)))
        ax.set_yticklabels(labels)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        for (r, c), v in np.ndenumerate(sub):
            ax.text(
                c,
                r,
                f"{int(v)}",
                ha="center",
                va="center",
                fontsize=7,
                color="white" if norm[r, c] > 0.5 else "black",
            )
        fig.colorbar(im, ax=ax, fraction=0.046)
        fig.tight_layout()
        fig.savefig(out / "confusion.png", dpi=110)
        plt.close(fig)

    # federated against baselines
    keys = [("accuracy", "accuracy"), ("macro_f1", "macro-F1")]
    bkeys = [("accuracy", "binary acc."), ("detection_rate", "detection rate"), ("fpr", "FPR")]
    fig, ax = plt.subplots(figsize=(8, 4))
    labels = [k[1] for k in keys] + [k[1] for k in bkeys]
    width = 0.8 / max(1, len(systems))
    for i, (name, res) in enumerate(systems.items()):
        vals = [res.get(k) or 0.0 for k, _ in keys]
        vals += [(res.get("binary", {}) or {}).get(k) or 0.0 for k, _ in bkeys]
        ax.bar(np.arange(len(labels)) + i * width, vals, width, label=name)
    ax.set_xticks(np.arange(len(labels)) + width * (len(systems) - 1) / 2)
    ax.set_xticklabels(labels)
    ax.set_ylim(0, 1.05)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(out / "baselines.png", dpi=110)
    plt.close(fig)

    lines = [
        "# Phalanx run report",
        "",
        f"- data: {summary['data']}",
        f"- participants: {summary['participants']}, rounds: {summary['rounds']},"
        f" algorithm: {summary['algorithm']}, partition: {summary['partition']}",
        f"- training rows: {summary['train_rows']}, test rows: {summary['test_rows']}",
        f"- feature schema: {summary['schema']['source']} v{summary['schema']['version']}"
        f" ({summary['schema']['hash'][:16]})",
        f"- bytes sent to participants: {summary['bytes_down']:,};"
        f" received: {summary['bytes_up']:,}",
        f"- wall time: {summary['wall_s']:.1f} s (federation {summary['federation_s']:.1f} s)",
        *([f"- **federation {summary['stopped']}**"] if summary.get("stopped") else []),
        "",
        "## Results on the test set",
        "",
        "| system | accuracy | macro-F1 | binary acc. | detection rate | FPR | ROC-AUC | PR-AUC |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, res in systems.items():
        b = res.get("binary", {})
        lines.append(
            f"| {name} | {_fmt(res.get('accuracy'))} | {_fmt(res.get('macro_f1'))} |"
            f" {_fmt(b.get('accuracy'))} | {_fmt(b.get('detection_rate'))} |"
            f" {_fmt(b.get('fpr'))} | {_fmt(b.get('roc_auc'))} | {_fmt(b.get('pr_auc'))} |"
        )
    lines += [
        "",
        "The binary decision flags a flow as an attack when the attack score (1 - P(benign))"
        " is above 0.5. Thresholds calibrated at target false-positive rates on benign"
        " validation flows are stored in the model: "
        + ", ".join(f"{k}: {v:.4f}" for k, v in summary["thresholds"].items()),
        "",
        *_hybrid_parts(systems),
        "![metrics per round](rounds.png)",
        "",
        "## Per-class recall",
        "",
        "| category | support | " + " | ".join(systems) + " |",
        "|---|---:|" + "---:|" * len(systems),
    ]
    for c in present:
        row = [f"{fed['per_class'][c]['support']}"]
        for res in systems.values():
            row.append(_fmt((res["per_class"].get(c, {}) or {}).get("recall")))
        lines.append(f"| {c} | " + " | ".join(row) + " |")
    lines += [
        "",
        "![per-class recall](per_class_recall.png)",
        "",
        "![confusion matrix of the federated model](confusion.png)",
        "",
        "![federated against baselines](baselines.png)",
        "",
        "## Training data per participant (rows per category)",
        "",
        "| participant | " + " | ".join(CATEGORIES) + " |",
        "|---|" + "---:|" * len(CATEGORIES),
    ]
    for i, row in enumerate(np.asarray(category_matrix)):
        lines.append(f"| org-{i + 1:02d} | " + " | ".join(str(int(v)) for v in row) + " |")
    lines += [
        "",
        "## Rounds",
        "",
        "| round | participants | macro-F1 | accuracy | bytes down | bytes up | seconds |",
        "|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for h in history:
        lines.append(
            f"| {h['round']} | {h['participants']} | {_fmt(h['test']['macro_f1'])} |"
            f" {_fmt(h['test']['accuracy'])} | {h['bytes_down']:,} | {h['bytes_up']:,} |"
            f" {h['seconds']:.2f} |"
        )
    lines += robustness_section(summary, history)
    lines += privacy_section(summary)
    (out / "report.md").write_text("\n".join(lines) + "\n")


def robustness_section(summary: dict[str, Any], history: list[dict[str, Any]]) -> list[str]:
    """The "Poisoning and suspicious participants" section of ``report.md`` (issue #8)."""
    att = summary.get("attack")
    susp = summary.get("suspicion", {})
    if att is None and not susp:
        return []
    lines = ["", "## Poisoning and suspicious participants", ""]
    if att is not None and att.get("kind", "none") != "none":
        lines.append(
            f"- simulated attack: **{att['kind']}** by {', '.join(att['attackers'])}"
            + ("" if att.get("scale") is None else f" (scale {att['scale']})")
        )
    if att is not None and att.get("attack_success_rate") is not None:
        lines.append(
            f"- backdoor (target family {att['target']}, trigger in the raw flow fields):"
            f" attack success rate {_fmt(att['attack_success_rate'], pct=True)}% of the flows"
            " the model detects without the trigger pass as benign with it;"
            f" {_fmt(att['triggered_benign_rate'], pct=True)}% of all triggered flows pass"
        )
    if susp.get("attacker_flag_rate") is not None:
        lines.append(
            f"- attackers' updates flagged in {_fmt(susp['attacker_flag_rate'], pct=True)}% of"
            f" their rounds; honest updates in {_fmt(susp['honest_flag_rate'], pct=True)}%"
        )
    excluded = summary.get("quarantine", {}).get("excluded", {})
    if excluded:
        lines.append(
            "- quarantined: " + ", ".join(f"{p} after round {r}" for p, r in excluded.items())
        )
    per = susp.get("participants", {})
    if per:
        lines += [
            "",
            "Suspicion scores per participant over the run (docs/robustness.md explains them):",
            "",
            "| participant | rounds | flagged rounds | mean distance z | mean max cosine |",
            "|---|---:|---:|---:|---:|",
        ]
        for pid, v in per.items():
            mark = " (attacker)" if v.get("attacker") else ""
            lines.append(
                f"| {pid}{mark} | {v['rounds']} | {v['flagged_rounds']} |"
                f" {v['mean_distance_z']:.2f} | {v['mean_max_cosine']:.3f} |"
            )
    rates = [(h["round"], h.get("backdoor", {}).get("attack_success_rate")) for h in history]
    if any(r is not None for _, r in rates):
        lines += ["", "| round | backdoor success |", "|---:|---:|"]
        lines += [f"| {r} | {_fmt(v, pct=True)}% |" for r, v in rates]
    return lines


def privacy_section(summary: dict[str, Any]) -> list[str]:
    """The "Differential privacy" section of ``report.md`` (issue #6, docs/privacy.md)."""
    p = summary.get("privacy")
    if not p:
        return ["", "## Differential privacy", "", "None: updates were released without noise."]
    z = p.get("noise_multiplier")
    if z is None:  # per-participant multipliers, and no participant was charged a round
        z_txt = "none (no round was charged)"
    else:
        z_txt = f"{z[0]:.4f} to {z[1]:.4f}" if isinstance(z, list | tuple) else f"{z:.4f}"
    q = p.get("sampling_rate")
    adaptive = " (adaptive, initial)" if p.get("adaptive_clip") else ""
    lines = [
        "",
        "## Differential privacy",
        "",
        f"**({p['epsilon']:.3f}, {p['delta']:g})-DP per {p['unit']}** over {p['rounds']} rounds.",
        "",
        "| | |",
        "|---|---|",
        f"| mechanism | {p['mechanism']} |",
        f"| mode | {p['mode']} |",
        f"| clipping norm | {p['clip']:g}{adaptive} |",
        f"| noise multiplier | {z_txt} |",
        f"| sampling rate | {'per participant (DP-SGD Poisson rate)' if q is None else f'{q:g}'} |",
        f"| accountant | {p['accountant']} |",
        f"| participant budget | {p.get('participant_budget') or 'unlimited (tracked)'} |",
        f"| largest epsilon a participant's ledger charged | {p['max_epsilon_spent']:.4f} |",
        "",
        "| participant | rounds charged | epsilon spent |",
        "|---|---:|---:|",
    ]
    for pid, row in p.get("participants", {}).items():
        lines.append(f"| {pid} | {row['rounds_charged']} | {row['epsilon']:.4f} |")
    lines += [
        "",
        "Not covered by this guarantee: the feature-statistics round (the transform is fit on",
        "exact sums) and federated evaluation metrics; see docs/privacy.md.",
    ]
    return lines


def _hybrid_parts(systems: dict[str, Any]) -> list[str]:
    """For a hybrid detector (models/hybrid.py): how each part alone would have done."""
    rows = [(name, res["parts"]) for name, res in systems.items() if "parts" in res]
    if not rows:
        return []
    lines = [
        "Hybrid detector: an alert when the classifier's 1 - P(benign) exceeds its threshold"
        " (`classifier`) OR the autoencoder's reconstruction error exceeds `anomaly`, the"
        " threshold that flags `anomaly_fpr` of benign validation flows; the binary metrics"
        " above are that OR. Each part alone:",
        "",
        "| system | classifier binary acc. | classifier detection | classifier FPR |"
        " anomaly binary acc. | anomaly detection | anomaly FPR |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for name, parts in rows:
        c, a = parts["classifier"]["binary"], parts["anomaly"]["binary"]
        cells = [c.get(k) for k in ("accuracy", "detection_rate", "fpr")]
        cells += [a.get(k) for k in ("accuracy", "detection_rate", "fpr")]
        lines.append(f"| {name} | " + " | ".join(_fmt(v) for v in cells) + " |")
    return [*lines, ""]
