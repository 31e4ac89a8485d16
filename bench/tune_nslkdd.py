"""Choose NSL-KDD training defaults on validation data, then confirm on the test sets.

Usage::

    nice -n 10 .venv/bin/python bench/tune_nslkdd.py [--variants default,fedyogi ...]
        [--seeds 0,1,2] [--datasets PATH] [--test] [--local] [--json OUT]

Selection never looks at KDDTest+ or KDDTest-21. For each seed, ``KDDTrain+_20Percent.txt`` is
split (seeded, stratified by attack name) into

* a **selection** set: 20 % of the rows of every attack name, plus *all* rows of the attack
  names in :data:`UNSEEN` (one DoS and one probe attack, the least frequent name with at least
  100 rows in each of those two categories). They are never trained on, so the selection set
  also asks how well a model flags attacks it has never seen, which is what KDDTest+ mostly
  holds (Tavallaee et al., CISDA 2009);
* the simulation's own 10 % calibration hold-out (benign rows fix the thresholds at a target
  false-positive rate, exactly as ``phalanx simulate`` does);
* the training rows, spread over 10 participants by Dirichlet(0.5) label skew.

Every variant trains the federated model (the production coordinator and participants) and a
centralized model on the pooled training rows, same model and ``rounds x local_epochs`` epochs.
The table shows, on the selection set, the macro-F1 of both and the federated-minus-centralized
gap, and the binary accuracy and the detection rate on the unseen attack names at the 0.5 cut
and at the threshold calibrated at ``--target-fpr`` on benign calibration rows. With ``--test``
the same models are then scored on KDDTest+ and KDDTest-21 (for confirmation only). Each cell is
the median over the seeds.

Selection rule, fixed before any test-set score was seen: the highest median selection
macro-F1 of the federated model, then the smallest median federated-minus-centralized gap. The
outcome and its confirmation on the test sets are in ``docs/results-history.md``.

Hybrid detectors (``--model hybrid``, ``models/hybrid.py``): the ``hyb-*`` variants (anomaly
FPR 1 %, 2 %, 5 %; autoencoder 64-16 or 128-32) against the MLP ``default``. Each model is scored
at its own default operating point (the MLP: ``1 - P(benign) > 0.5``; the hybrid: its OR rule,
combined score > 1) and at the threshold calibrated at ``--target-fpr``. The hybrid question is a
binary one, so it has its own rule, fixed before any test-set score of these variants was seen:
the highest median **three-group balanced accuracy** of the federated model on the selection
set at its default operating point, ``(1 - FPR on benign rows + detection rate on seen-name
attack rows + detection rate on unseen-name attack rows) / 3`` (benign traffic, known attacks
and novel attacks weigh alike, as a detector must serve all three), then the higher median
selection macro-F1. ``--hybrid-table`` prints that comparison, with the autoencoder part alone
(``anom DR`` at its threshold and ``anom AUC`` on the selection set's attack rows) beside it.

Two later questions, each with a criterion fixed before its run (``docs/results.md``):

* the anomaly part (ADR 0016): the fewest autoencoder passes per round (``ae_epochs`` 1, 5, 10)
  at which the federated autoencoder flags as many selection attacks at its threshold as the
  centralized one (``fed anom DR`` against ``cen anom DR``);
* the classifier's local optimizer (ADR 0017, :data:`SGD_CANDIDATES`, seeds 0-9): the highest
  median selection macro-F1 of the federated model, then the smallest median gap;
* class-wise averaging of the output layer (ADR 0018, the ``-cw`` variant). Both training
  ``phf`` rows (the only ``web-attack`` rows) stay in training at every seed, so the selection
  set can show what predicting that class costs but not what it gains. The rule was therefore
  one of non-inferiority on validation, then the test gap: a candidate qualifies if its median
  selection F1 over the classes present in the selection truth is at most 1 point below the
  recipe's and its median selection binary accuracy at most 0.5 points below; among those, the
  smallest median KDDTest+ macro-F1 gap wins, confirmed on fresh seeds 10-19. The same rule,
  with class-wise averaging as the reference, then turned down global class weights in every
  participant's loss, with and without weighting updates by their class-weighted mass
  (``docs/results.md``; those runs patched the loss in a one-off script, not kept as variants).
  The same rule then turned down a larger FedAdam server learning rate and FedAvg for the
  classifier (the ``-cw-slr*`` and ``-cw-fedavg`` variants) and averaging the global model over
  the last 3, 5 or 10 rounds (a one-off script).
* Session 7 (``-cw-r40``, ``-cw-le2``, ``-cw-le2-r10``, ``-cw-le4-r5``): the epochs over the
  data and their split into rounds. The same rule, with a guard that the centralized baseline
  (``rounds x local_epochs`` epochs, as the issue defines it) is not weaker, turned all four
  down: ``-cw-le2`` (two local epochs per round over 20 rounds) won on seeds 0-9 and failed its
  confirmation on seeds 10-19. ``docs/results.md`` has the runs, the disclosed revision of the
  guard and the confirmation. A second rule then turned down more local steps per round
  (``-cw-bs128``, ``-cw-bs64``, ``-cw-lr0.1``): batch 128 passed on seeds 0-9, but on seeds
  10-19 its centralized baseline (same SGD settings) collapsed at two seeds.
* Session 8 (``-cw-o32``, ``-cw-o128``; ADR 0019): rare classes oversampled to 32 or 128
  presentations per epoch. The same rule and guards; 32 passed seeds 0-9 and 10-19. Its first
  version (each call's own counts) then missed its rule on the issue's setup; the second
  (the federation's counts, from the statistics stage, which these variants now run) met it on
  fresh seeds 40-59 and joined the recipe (``docs/results.md``).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import statistics
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
from numpy.typing import NDArray

from phalanx.core.features.batch import FlowBatch
from phalanx.core.metrics import binary_rates, evaluate, roc_auc
from phalanx.core.taxonomy import BENIGN, CATEGORIES, CATEGORY_INDEX
from phalanx.data.partition import parse_partition
from phalanx.data.readers import read_flows
from phalanx.models.federated import Model
from phalanx.models.hybrid import HybridDetector
from phalanx.models.mlp import MLPClassifier
from phalanx.services.participant import category_indices
from phalanx.sim.config import ModelSpec, SimConfig
from phalanx.sim.data import SimData, parts_category_matrix, stratified_split
from phalanx.sim.runner import run_simulation
from phalanx.sim.scoring import calibrate, class_probabilities, make_model

UNSEEN = ("teardrop", "nmap")
"""Attack names held out of training entirely (see the module docstring for the rule)."""

SELECTION_FRACTION = 0.2

BASE: dict[str, Any] = {
    "participants": 10,
    "partition": "dirichlet:0.5",
    "rounds": 20,
    "local_epochs": 1,
    "algorithm": "fedadam",
    "workers": 2,
}


def _hyb(fpr: float, sim: dict[str, Any] | None = None, **model: Any) -> dict[str, Any]:
    """A hybrid variant: anomaly FPR ``fpr``, simulation overrides ``sim``, model overrides."""
    return {**(sim or {}), "model": {"kind": "hybrid", "anomaly_fpr": fpr, **model}}


def _sgd(lr: float, restricted_softmax: float | None = None) -> dict[str, Any]:
    """An MLP variant: local SGD at ``lr`` with momentum 0.9, optionally FedRS."""
    out: dict[str, Any] = {"model": {"optimizer": "sgd", "lr": lr, "momentum": 0.9}}
    if restricted_softmax is not None:
        out["restricted_softmax"] = restricted_softmax
    return out


VARIANTS: dict[str, dict[str, Any]] = {
    "default": {},
    "fedyogi": {"algorithm": "fedyogi"},
    "fedadam-slr0.003": {"server_lr": 0.003},
    "fedadam-slr0.03": {"server_lr": 0.03},
    "h64-32-r10": {"rounds": 10, "model": {"hidden": (64, 32)}},
    "h64-32-r20": {"model": {"hidden": (64, 32)}},
    "h128-64": {"model": {"hidden": (128, 64)}},
    "r40-bs512": {"rounds": 40, "model": {"batch_size": 512}},
    "r10": {"rounds": 10},
    "r40": {"rounds": 40},
    "r40-slr0.03": {"rounds": 40, "server_lr": 0.03},
    "r40-bs512-slr0.03": {"rounds": 40, "server_lr": 0.03, "model": {"batch_size": 512}},
    "r40-bs512-fedyogi": {"rounds": 40, "algorithm": "fedyogi", "model": {"batch_size": 512}},
    "r40-bs512-h128-64": {"rounds": 40, "model": {"batch_size": 512, "hidden": (128, 64)}},
    "r60-bs512": {"rounds": 60, "model": {"batch_size": 512}},
    "r80-bs1024": {"rounds": 80, "model": {"batch_size": 1024}},
    "r40-bs1024": {"rounds": 40, "model": {"batch_size": 1024}},
    "la1": {"model": {"logit_adjust": 1.0, "class_weight": "none"}},
    "la1-cw": {"model": {"logit_adjust": 1.0}},
    "la1-r40-bs512": {
        "rounds": 40,
        "model": {"logit_adjust": 1.0, "class_weight": "none", "batch_size": 512},
    },
    "la1-cw-r40-bs512": {"rounds": 40, "model": {"logit_adjust": 1.0, "batch_size": 512}},
    "ls0.1-r40-bs512": {"rounds": 40, "model": {"label_smoothing": 0.1, "batch_size": 512}},
    "ls0.1": {"model": {"label_smoothing": 0.1}},
    # hybrid detectors: classifier OR autoencoder on benign flows (models/hybrid.py)
    "hyb-fpr0.01": _hyb(0.01),
    "hyb-fpr0.02": _hyb(0.02),
    "hyb-fpr0.05": _hyb(0.05),
    "hyb-fpr0.01-ae128-32": _hyb(0.01, ae_hidden=(128, 32)),
    "hyb-fpr0.02-ae128-32": _hyb(0.02, ae_hidden=(128, 32)),
    "hyb-fpr0.05-ae128-32": _hyb(0.05, ae_hidden=(128, 32)),
    # does the federated autoencoder part catch up with more training? (the previous session's
    # 40-round recipe; a diagnostic of the anomaly part, scored by anom DR / anom AUC)
    "hyb-fpr0.01-r40-bs512-slr0.03": _hyb(0.01, {"rounds": 40, "server_lr": 0.03}, batch_size=512),
    "hyb-fpr0.01-fedavg": _hyb(0.01, {"algorithm": "fedavg"}),
    "hyb-fpr0.01-slr0.03": _hyb(0.01, {"server_lr": 0.03}),
    "hyb-fpr0.01-le2": _hyb(0.01, {"local_epochs": 2}),
    # FedRS (restricted softmax, Li and Zhan, KDD 2021) for the classifier under label skew
    "rs0.5": {"restricted_softmax": 0.5},
    "rs0.1": {"restricted_softmax": 0.1},
    "rs0": {"restricted_softmax": 0.0},
    # ADR 0016: the autoencoder part averaged plainly under FedAdam, with ae_epochs passes
    "hyb-fpr0.01-ae5": _hyb(0.01, ae_epochs=5),
    "hyb-fpr0.01-ae10": _hyb(0.01, ae_epochs=10),
    "hyb-fpr0.02-ae10": _hyb(0.02, ae_epochs=10),
    "hyb-fpr0.01-ae10-rs0.5": _hyb(0.01, {"restricted_softmax": 0.5}, ae_epochs=10),
    "hyb-fpr0.01-ae10-rs0": _hyb(0.01, {"restricted_softmax": 0.0}, ae_epochs=10),
    "hyb-fpr0.01-ae10-le2": _hyb(0.01, {"local_epochs": 2}, ae_epochs=10),
    "hyb-fpr0.01-ae10-le3": _hyb(0.01, {"local_epochs": 3}, ae_epochs=10),
    "hyb-fpr0.01-ae10-r40": _hyb(0.01, {"rounds": 40}, ae_epochs=10),
    "hyb-fpr0.01-fedavg-ae10": _hyb(0.01, {"algorithm": "fedavg"}, ae_epochs=10),
    # local SGD instead of a fresh Adam each round (Adam's normalized steps turn the tiny
    # gradient that pushes a rare class down on every other row into full-size steps), with and
    # without FedRS (ADR 0017); the rule's candidates are in SGD_CANDIDATES
    **{
        f"sgd-lr{lr:g}-m0.9{'' if rs is None else f'-rs{rs:g}'}": _sgd(lr, rs)
        for lr in (0.01, 0.02, 0.03, 0.05, 0.1)
        for rs in (None, 0.5, 0.0)
    },
    # the server algorithm, with the chosen local SGD (SCAFFOLD's local steps are plain SGD)
    **{
        f"sgd-lr0.05-m0.9-{algo}": {"algorithm": algo, **_sgd(0.05)}
        for algo in ("fedavg", "fedavgm", "fedprox", "fedyogi", "scaffold")
    },
    # ADR 0016/0017: an SGD classifier beside an autoencoder on SGD too, or on Adam
    "hyb-fpr0.01-ae10-sgd-lr0.02-m0.9": _hyb(0.01, ae_epochs=10, **_sgd(0.02)["model"]),
    "hyb-fpr0.01-ae10-sgd-lr0.05-m0.9": _hyb(0.01, ae_epochs=10, **_sgd(0.05)["model"]),
    "hyb-fpr0.01-ae10-sgd-lr0.05-m0.9-aeadam": _hyb(
        0.01, ae_epochs=10, ae_optimizer="adam", ae_lr=1e-3, **_sgd(0.05)["model"]
    ),
    # ADR 0018: that recipe with the output layer averaged class by class
    "hyb-fpr0.01-ae10-sgd-lr0.05-m0.9-aeadam-cw": _hyb(
        0.01,
        {"classwise_head": True},
        ae_epochs=10,
        ae_optimizer="adam",
        ae_lr=1e-3,
        **_sgd(0.05)["model"],
    ),
    # Sessions 6 and 7: changes to that recipe, none adopted (docs/results.md). Each is
    # (name, simulation overrides, classifier overrides); the baselines share them.
    **{
        f"hyb-fpr0.01-ae10-sgd-lr0.05-m0.9-aeadam-cw-{name}": _hyb(
            0.01,
            {"classwise_head": True, **sim},
            ae_epochs=10,
            ae_optimizer="adam",
            ae_lr=1e-3,
            **(_sgd(0.05)["model"] | model),
        )
        for name, sim, model in (
            # session 6: the server step (FedAdam's server lr, or FedAvg)
            ("slr0.02", {"server_lr": 0.02}, {}),
            ("slr0.03", {"server_lr": 0.03}, {}),
            ("slr0.05", {"server_lr": 0.05}, {}),
            ("fedavg", {"algorithm": "fedavg"}, {}),
            # session 7: the epochs over the data and their split into rounds
            ("r40", {"rounds": 40}, {}),
            ("le2", {"local_epochs": 2}, {}),
            ("le2-r10", {"local_epochs": 2, "rounds": 10}, {}),
            ("le4-r5", {"local_epochs": 4, "rounds": 5}, {}),
            # session 7: more local steps per round
            ("bs128", {}, {"batch_size": 128}),
            ("bs64", {}, {"batch_size": 64}),
            ("lr0.1", {}, {"lr": 0.1}),
            # session 8: rare classes oversampled to 32 or 128 presentations (ADR 0019)
            ("o32", {}, {"min_class_rows": 32}),
            ("o128", {}, {"min_class_rows": 128}),
        )
    },
}

SGD_CANDIDATES = tuple(
    ["default"]
    + [f"sgd-lr{lr:g}-m0.9{sfx}" for lr in (0.02, 0.03, 0.05) for sfx in ("", "-rs0.5", "-rs0")]
)
"""The local-optimizer rule's candidates (ADR 0017), fixed before its 10-seed run: the highest
median selection macro-F1 of the federated model, then the smallest median gap."""

HYBRID_CANDIDATES = (
    "default", "hyb-fpr0.01", "hyb-fpr0.02", "hyb-fpr0.05", "hyb-fpr0.01-ae128-32",
    "hyb-fpr0.02-ae128-32", "hyb-fpr0.05-ae128-32",
)  # fmt: skip
"""Variants the hybrid rule (module docstring) chooses among, fixed with the rule; other
``hyb-*`` variants are diagnostics, listed after them in ``--hybrid-table``."""


def datasets_root(arg: str | None) -> Path:
    """``--datasets``, else ``$PHALANX_DATASETS``, else ``../shared/datasets``."""
    if arg:
        return Path(arg)
    env = os.environ.get("PHALANX_DATASETS")
    return Path(env) if env else Path(__file__).resolve().parents[2] / "shared" / "datasets"


def make_config(name: str, seed: int, data: Path) -> SimConfig:
    """The simulation config of variant ``name`` at ``seed``."""
    over = dict(VARIANTS[name])
    model = ModelSpec(**over.pop("model", {}))
    return SimConfig(data=str(data), seed=seed, model=model, **(BASE | over))


def split(pooled: FlowBatch, cfg: SimConfig) -> tuple[SimData, FlowBatch]:
    """``(simulation data whose test set is the selection set, unseen-name rows)``."""
    root = np.random.SeedSequence([cfg.seed, 7919])
    sel_rng, val_rng, part_rng = (np.random.default_rng(s) for s in root.spawn(3))
    unseen_mask = np.isin(pooled.label.astype(str), UNSEEN)
    unseen = pooled.take(unseen_mask)
    seen = pooled.take(~unseen_mask)
    keep, held = stratified_split(seen.label, SELECTION_FRACTION, sel_rng)
    selection = FlowBatch.concat([seen.take(held), unseen])
    rest = seen.take(keep)
    keep, held = stratified_split(rest.category, cfg.validation_fraction, val_rng)
    validation, train = rest.take(held), rest.take(keep)
    indices = parse_partition(cfg.partition)(train.category, cfg.participants, part_rng)
    parts = [train.take(np.asarray(ix)) for ix in indices]
    sim = SimData(parts, validation, selection, "selection split", parts_category_matrix(parts))
    return sim, unseen


def centralized(cfg: SimConfig, sim: SimData, transform: Any) -> Model:
    """The centralized baseline model (as ``phalanx simulate --baselines`` trains it)."""
    pooled = FlowBatch.concat(sim.parts)
    x = transform.transform(pooled)
    model = make_model(cfg.model.model_dump(mode="json"), x.shape[1], cfg.seed)
    model.partial_fit(x, category_indices(pooled), epochs=cfg.rounds * cfg.local_epochs)
    return model


def binary_score(model: Model, x: NDArray[np.float32]) -> tuple[NDArray[np.float64], float]:
    """``(attack score, default cut)``: ``1 - P(benign)`` and 0.5 for the MLP, the combined
    score and 1 (the OR rule) for the hybrid (which must be calibrated)."""
    if isinstance(model, HybridDetector):
        return np.asarray(model.attack_score(x), dtype=np.float64), 1.0
    if isinstance(model, MLPClassifier):
        return np.asarray(model.attack_score(x), dtype=np.float64), 0.5
    raise TypeError(f"tune_nslkdd scores MLP and hybrid models; found {type(model).__name__}")


def metrics(
    model: Model, transform: Any, batch: FlowBatch, threshold: float, unseen: tuple[str, ...] = ()
) -> dict[str, Any]:
    """Macro-F1, binary accuracy at the default cut and at ``threshold``, ROC-AUC, and the
    benign FPR and detection rates on seen-name and ``unseen``-name attack rows."""
    x = transform.transform(batch)
    y = category_indices(batch)
    r = evaluate(y, class_probabilities(model, x, x[:0], 0.01), CATEGORIES)
    attack = y != CATEGORY_INDEX[BENIGN]
    score, cut = binary_score(model, x)
    at_default = binary_rates(attack, score, cut)
    cal = binary_rates(attack, score, threshold)
    novel = np.isin(batch.label.astype(str), unseen)
    flagged = score > cut
    anomaly: dict[str, float] = {}
    if isinstance(model, HybridDetector):  # the autoencoder part alone, at t_a
        s_a = np.asarray(model.anomaly_score(x), dtype=np.float64)
        anomaly = {
            "anomaly_dr": float((s_a[attack] > model.threshold_).mean()) if attack.any() else 0.0,
            "anomaly_auc": roc_auc(attack, s_a),
        }
    return {
        **anomaly,
        "macro_f1": float(r["macro_f1"]),
        "bin_acc": at_default["accuracy"],
        "fpr": at_default["fpr"],
        "seen_dr": float(flagged[attack & ~novel].mean()) if (attack & ~novel).any() else None,
        "bin_acc_cal": cal["accuracy"],
        "fpr_cal": cal["fpr"],
        "auc": float(r["binary"]["roc_auc"] or float("nan")),
        "f1": {c: round(v["f1"], 4) for c, v in r["per_class"].items() if v["support"]},
    }


def unseen_detection(
    model: Model, transform: Any, unseen: FlowBatch, threshold: float | None
) -> float:
    """Share of unseen-name attack rows flagged at ``threshold`` (``None``: the default cut)."""
    score, cut = binary_score(model, transform.transform(unseen))
    return float(np.mean(score > (cut if threshold is None else threshold)))


def run_variant(
    name: str, seed: int, root: Path, tests: dict[str, FlowBatch], target_fpr: float
) -> dict[str, Any]:
    """Train variant ``name`` at ``seed``; score it on selection (and test) sets."""
    nsl = root / "nsl-kdd"
    cfg = make_config(name, seed, nsl / "KDDTrain+_20Percent.txt")
    cfg = cfg.model_copy(update={"target_fpr": target_fpr})
    pooled, _ = read_flows(cfg.data, cfg.format)
    sim, unseen = split(pooled, cfg)
    t0 = time.perf_counter()
    result = run_simulation(cfg, data=sim)
    transform = result.transform
    fed = make_model(cfg.model.model_dump(mode="json"), transform.n_features, cfg.seed)
    fed.set_weights(result.weights)
    cen = centralized(cfg, sim, transform)
    key = f"fpr={target_fpr:g}"
    out: dict[str, Any] = {"variant": name, "seed": seed, "wall_s": time.perf_counter() - t0}
    for who, model in (("fed", fed), ("cen", cen)):
        thr = calibrate(model, transform, sim.validation, target_fpr)[key]  # calibrates t_a
        sel = metrics(model, transform, sim.test, thr, UNSEEN)
        out[who] = {"threshold": thr, "selection": sel}
        sel["unseen_dr"] = unseen_detection(model, transform, unseen, None)
        sel["balanced3"] = (1.0 - sel["fpr"] + sel["seen_dr"] + sel["unseen_dr"]) / 3.0
        out[who]["selection"]["unseen_dr_cal"] = unseen_detection(model, transform, unseen, thr)
        for test_name, batch in tests.items():
            out[who][test_name] = metrics(model, transform, batch, thr)
    return out


def _median(rows: list[dict[str, Any]], *path: str) -> float:
    """Median over ``rows`` of the value at ``path`` (NaN when a row lacks it)."""
    vals = []
    for r in rows:
        v: Any = r
        for p in path:
            v = v.get(p, math.nan) if isinstance(v, dict) else math.nan
        vals.append(float(v))
    return statistics.median(vals)


def table(results: list[dict[str, Any]], tests: list[str]) -> str:
    """Markdown table of medians over seeds, one row per variant."""
    cols = [
        ("sel fed mF1", ("fed", "selection", "macro_f1")),
        ("sel cen mF1", ("cen", "selection", "macro_f1")),
        ("sel bin@.5", ("fed", "selection", "bin_acc")),
        ("sel bin@cal", ("fed", "selection", "bin_acc_cal")),
        ("unseen DR@.5", ("fed", "selection", "unseen_dr")),
        ("unseen DR@cal", ("fed", "selection", "unseen_dr_cal")),
        ("cen unseen DR@cal", ("cen", "selection", "unseen_dr_cal")),
    ]
    for t in tests:
        cols += [
            (f"{t} fed bin@.5", ("fed", t, "bin_acc")),
            (f"{t} fed bin@cal", ("fed", t, "bin_acc_cal")),
            (f"{t} fed FPR@cal", ("fed", t, "fpr_cal")),
            (f"{t} fed mF1", ("fed", t, "macro_f1")),
            (f"{t} cen mF1", ("cen", t, "macro_f1")),
            (f"{t} cen bin@cal", ("cen", t, "bin_acc_cal")),
        ]
    head = ["variant", "seeds", *(c for c, _ in cols[:2]), "sel mF1 gap (median / worst)"]
    head += [*(c for c, _ in cols[2:]), "wall s"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    names = list(dict.fromkeys(r["variant"] for r in results))
    for name in names:
        rows = [r for r in results if r["variant"] == name]
        cells = [name, ",".join(str(r["seed"]) for r in rows)]
        cells += [f"{_median(rows, *p):.4f}" for _, p in cols[:2]]
        gaps = [r["fed"]["selection"]["macro_f1"] - r["cen"]["selection"]["macro_f1"] for r in rows]
        cells.append(f"{statistics.median(gaps):+.4f} / {min(gaps):+.4f}")
        cells += [f"{_median(rows, *p):.4f}" for _, p in cols[2:]]
        cells.append(f"{statistics.median(r['wall_s'] for r in rows):.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def hybrid_table(results: list[dict[str, Any]]) -> str:
    """The hybrid rule's comparison (module docstring): medians over seeds, best first."""
    head = ["variant", "seeds", "sel bal3", "sel FPR", "seen DR", "unseen DR", "sel bin acc",
            "sel fed mF1", "sel cen mF1", "cen bal3", "fed anom DR", "cen anom DR",
            "fed anom AUC", "cen anom AUC", "wall s"]  # fmt: skip
    paths = [("fed", "selection", "balanced3"), ("fed", "selection", "fpr"),
             ("fed", "selection", "seen_dr"), ("fed", "selection", "unseen_dr"),
             ("fed", "selection", "bin_acc"), ("fed", "selection", "macro_f1"),
             ("cen", "selection", "macro_f1"), ("cen", "selection", "balanced3"),
             ("fed", "selection", "anomaly_dr"), ("cen", "selection", "anomaly_dr"),
             ("fed", "selection", "anomaly_auc"),
             ("cen", "selection", "anomaly_auc")]  # fmt: skip
    rows: list[tuple[float, float, str, list[dict[str, Any]], list[float]]] = []
    extra: list[tuple[float, float, str, list[dict[str, Any]], list[float]]] = []
    for name in dict.fromkeys(r["variant"] for r in results):
        if name not in HYBRID_CANDIDATES and not name.startswith("hyb-"):
            continue
        runs = [r for r in results if r["variant"] == name]
        vals = [_median(runs, *p) for p in paths]
        (rows if name in HYBRID_CANDIDATES else extra).append((vals[0], vals[5], name, runs, vals))
    rows.sort(key=lambda r: (-r[0], -r[1]))
    rows += [(b, m, f"{name} (diagnostic)", runs, vals) for b, m, name, runs, vals in extra]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for _, _, name, runs, vals in rows:
        cells = [name, ",".join(str(r["seed"]) for r in runs), *(f"{v:.4f}" for v in vals)]
        cells.append(f"{statistics.median(r['wall_s'] for r in runs):.0f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", default=",".join(VARIANTS))
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--datasets", default=None)
    parser.add_argument("--target-fpr", type=float, default=0.01)
    parser.add_argument("--test", action="store_true", help="also score KDDTest+ / KDDTest-21")
    parser.add_argument("--json", default=None, help="append raw results (JSON lines) here")
    parser.add_argument(
        "--hybrid-table",
        default=None,
        help="print the hybrid rule's table from the results in this JSON-lines file; no runs",
    )
    args = parser.parse_args()
    if args.hybrid_table:
        lines = Path(args.hybrid_table).read_text().splitlines()
        print(hybrid_table([json.loads(line) for line in lines if line.strip()]))
        return
    torch.set_num_threads(1)
    root = datasets_root(args.datasets)
    tests: dict[str, FlowBatch] = {}
    if args.test:
        for name in ("KDDTest+", "KDDTest-21"):
            tests[name] = read_flows(str(root / "nsl-kdd" / f"{name}.txt"), "auto")[0]
    names = [v.strip() for v in args.variants.split(",") if v.strip()]
    unknown = [n for n in names if n not in VARIANTS]
    if unknown:
        parser.error(f"unknown variant(s) {unknown}; expected some of {list(VARIANTS)}")
    results = []
    for name in names:
        for seed in (int(s) for s in args.seeds.split(",")):
            r = run_variant(name, seed, root, tests, args.target_fpr)
            results.append(r)
            sel = r["fed"]["selection"]
            print(
                f"# {name} seed {seed}: sel fed mF1 {sel['macro_f1']:.4f} cen mF1"
                f" {r['cen']['selection']['macro_f1']:.4f} unseen DR@cal"
                f" {sel['unseen_dr_cal']:.4f} ({r['wall_s']:.0f} s)",
                flush=True,
            )
            if args.json:
                with open(args.json, "a") as fh:
                    fh.write(json.dumps(r) + "\n")
    print(table(results, list(tests)))


if __name__ == "__main__":
    main()
