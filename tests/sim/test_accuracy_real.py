"""Accuracy of the federated simulation on real datasets, against honest baselines.

Slow (minutes): run with ``pytest -m slow tests/sim/test_accuracy_real.py``. The numbers and the
settings behind them are documented in ``docs/results.md``.

The issue's NSL-KDD binary goal (>= 0.82 on KDDTest+) is asserted for the NSL-KDD recipe
(docs/results.md): the hybrid detector (``--model hybrid``) with a classifier trained locally by
SGD (lr 0.05, momentum 0.9; ADR 0017) and an Adam autoencoder with ten passes per round,
averaged plainly under FedAdam (ADR 0016), and, in the full recipe, the classifier's output
rows averaged class by class (ADR 0018). Its second goal (macro-F1 within 2 points of the
centralized model) was met at seed 0 only with class-wise averaging (gap -1.2 points; -4.1 and
-7.2 at seeds 1 and 2: the ``web-attack`` class, two test rows, and ``exploit``). The current
recipe adds rare-class oversampling (ADR 0019), which meets it at 15 of 20 fresh seeds
(docs/results.md); here the seed-0 gaps and what each step changes are asserted. What holds on every
seed measured is asserted too: the federated model beats the mean local-only model, its binary
accuracy stays within 2 points of the centralized model's, and the hybrid's anomaly part raises
it above its own classifier's.

Every run: 10 participants, Dirichlet(0.5) label skew, 20 rounds of one local epoch, FedAdam
(Reddi et al., ICLR 2021) with its default server learning rate, the default MLP. The baselines
use the same model and ``rounds x local_epochs`` epochs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from phalanx.sim.config import ModelSpec, SimConfig
from phalanx.sim.runner import run_simulation

pytestmark = [pytest.mark.slow, pytest.mark.datasets]

SEED = 0


def _config(data: Path, test: Path | None = None, model: ModelSpec | None = None) -> SimConfig:
    return SimConfig(
        data=str(data),
        test=None if test is None else str(test),
        participants=10,
        partition="dirichlet:0.5",
        rounds=20,
        local_epochs=1,
        algorithm="fedadam",
        baselines=True,
        seed=SEED,
        model=model or ModelSpec(),
    )


def _summary(cfg: SimConfig) -> dict[str, Any]:
    return run_simulation(cfg).summary


def _binary_accuracy(result: dict[str, Any]) -> float:
    return float(result["binary"]["accuracy"])


@pytest.fixture(scope="module")
def nsl_kdd(datasets: Path) -> dict[str, Any]:
    root = datasets / "nsl-kdd"
    return _summary(_config(root / "KDDTrain+_20Percent.txt", root / "KDDTest+.txt"))


def test_nsl_kdd_federated_beats_local_only(nsl_kdd: dict[str, Any]) -> None:
    fed, local = nsl_kdd["federated"], nsl_kdd["local_only"]["mean"]
    assert _binary_accuracy(fed) > _binary_accuracy(local)
    assert fed["macro_f1"] > local["macro_f1"]
    assert fed["binary"]["fpr"] < local["binary"]["fpr"]


def test_nsl_kdd_federated_binary_accuracy_close_to_centralized(nsl_kdd: dict[str, Any]) -> None:
    fed, cen = nsl_kdd["federated"], nsl_kdd["centralized"]
    assert _binary_accuracy(fed) >= _binary_accuracy(cen) - 0.02
    assert fed["binary"]["roc_auc"] >= cen["binary"]["roc_auc"] - 0.03


def test_nsl_kdd_summary_reports_the_calibrated_operating_point(nsl_kdd: dict[str, Any]) -> None:
    """Beside the fixed 0.5 cut, every model is scored at the threshold calibrated at the
    target FPR on benign validation flows (``phalanx detect --fpr``), never on test flows."""
    fed = nsl_kdd["federated"]["binary_calibrated"]
    assert fed["target_fpr"] == 0.01
    assert fed["threshold"] == nsl_kdd["thresholds"]["fpr=0.01"]
    for result in (nsl_kdd["federated"], nsl_kdd["centralized"], nsl_kdd["local_only"]["mean"]):
        cal = result["binary_calibrated"]
        assert 0.0 <= cal["threshold"] <= 1.0
        assert 0.0 <= cal["fpr"] <= 1.0 and 0.0 <= cal["detection_rate"] <= 1.0
    # A lower threshold flags at least as much: detection and FPR move together with it.
    if fed["threshold"] < 0.5:
        assert fed["detection_rate"] >= nsl_kdd["federated"]["binary"]["detection_rate"]
        assert fed["fpr"] >= nsl_kdd["federated"]["binary"]["fpr"]


HYBRID_RECIPE = ModelSpec(
    kind="hybrid", anomaly_fpr=0.01, optimizer="sgd", lr=0.05, momentum=0.9,
    ae_optimizer="adam", ae_lr=1e-3, ae_epochs=10,
)  # fmt: skip
"""The NSL-KDD recipe's model (ADR 0016, 0017)."""


def _nsl_kdd_recipe(datasets: Path, classwise_head: bool) -> dict[str, Any]:
    root = datasets / "nsl-kdd"
    cfg = _config(root / "KDDTrain+_20Percent.txt", root / "KDDTest+.txt", HYBRID_RECIPE)
    return _summary(cfg.model_copy(update={"classwise_head": classwise_head}))


@pytest.fixture(scope="module")
def nsl_kdd_hybrid(datasets: Path) -> dict[str, Any]:
    return _nsl_kdd_recipe(datasets, classwise_head=False)


def test_nsl_kdd_hybrid_catches_what_its_classifier_misses(
    nsl_kdd_hybrid: dict[str, Any],
) -> None:
    """The anomaly part flags attacks the classifier lets through (KDDTest+'s novel names):
    the federated hybrid's binary accuracy rises above its own classifier's (0.826 -> 0.846 at
    seed 0) and reaches the issue's 0.82."""
    fed = nsl_kdd_hybrid["federated"]
    classifier = fed["parts"]["classifier"]["binary"]
    assert _binary_accuracy(fed) >= classifier["accuracy"] + 0.01
    assert fed["binary"]["detection_rate"] > classifier["detection_rate"] + 0.03
    assert _binary_accuracy(fed) >= 0.82
    assert nsl_kdd_hybrid["thresholds"]["anomaly_fpr"] == 0.01


@pytest.fixture(scope="module")
def nsl_kdd_recipe(datasets: Path) -> dict[str, Any]:
    """The full NSL-KDD recipe: the hybrid above plus class-wise output averaging (ADR 0018)."""
    return _nsl_kdd_recipe(datasets, classwise_head=True)


def test_nsl_kdd_classwise_averaging_narrows_the_macro_f1_gap(
    nsl_kdd_hybrid: dict[str, Any], nsl_kdd_recipe: dict[str, Any]
) -> None:
    """Same seed, same centralized model: averaging the output rows class by class narrows the
    federated-centralized macro-F1 gap (-3.7 -> -1.2 points at seed 0; at seeds 1-2 it is
    still -4.1 and -7.2, docs/results.md) and keeps the binary goal."""
    cen = nsl_kdd_recipe["centralized"]["macro_f1"]
    assert cen == nsl_kdd_hybrid["centralized"]["macro_f1"]
    gap = nsl_kdd_recipe["federated"]["macro_f1"] - cen
    assert gap > nsl_kdd_hybrid["federated"]["macro_f1"] - cen
    assert gap >= -0.02
    assert _binary_accuracy(nsl_kdd_recipe["federated"]) >= 0.82
    assert (
        nsl_kdd_recipe["federated"]["macro_f1"] > nsl_kdd_recipe["local_only"]["mean"]["macro_f1"]
    )


@pytest.fixture(scope="module")
def nsl_kdd_oversampled(datasets: Path) -> dict[str, Any]:
    """The current NSL-KDD recipe: the full recipe above plus rare classes oversampled by the
    federation's counts (``min_class_rows = 32``, ADR 0019)."""
    root = datasets / "nsl-kdd"
    model = HYBRID_RECIPE.model_copy(update={"min_class_rows": 32})
    cfg = _config(root / "KDDTrain+_20Percent.txt", root / "KDDTest+.txt", model)
    return _summary(cfg.model_copy(update={"classwise_head": True}))


def test_nsl_kdd_oversampling_teaches_the_federation_the_two_row_class(
    nsl_kdd_recipe: dict[str, Any], nsl_kdd_oversampled: dict[str, Any]
) -> None:
    """``web-attack`` is two training rows at two participants. Without oversampling the
    federated model never predicts it at seed 0 (F1 0); repeated by the federation's count, it
    finds one of the two test rows (F1 0.67, the centralized model 0.40). The recipe keeps the
    issue's goals at seed 0: binary accuracy 0.840, macro-F1 gap -1.6 points, above the
    local-only mean (docs/results.md: within 2 points at 15 of 20 fresh seeds, not every one)."""
    web = "web-attack"
    assert nsl_kdd_recipe["federated"]["per_class"][web]["f1"] == 0.0
    fed, cen = nsl_kdd_oversampled["federated"], nsl_kdd_oversampled["centralized"]
    assert fed["per_class"][web]["f1"] > 0.5
    assert fed["macro_f1"] - cen["macro_f1"] >= -0.02
    assert _binary_accuracy(fed) >= 0.82
    local = nsl_kdd_oversampled["local_only"]["mean"]
    assert fed["macro_f1"] > local["macro_f1"]
    assert _binary_accuracy(fed) > _binary_accuracy(local)


def test_nsl_kdd_hybrid_federated_beats_local_only(nsl_kdd_hybrid: dict[str, Any]) -> None:
    fed, local = nsl_kdd_hybrid["federated"], nsl_kdd_hybrid["local_only"]["mean"]
    cen = nsl_kdd_hybrid["centralized"]
    assert _binary_accuracy(fed) > _binary_accuracy(local)
    assert fed["macro_f1"] > local["macro_f1"]
    assert fed["binary"]["fpr"] < local["binary"]["fpr"]
    assert _binary_accuracy(fed) >= _binary_accuracy(cen) - 0.02  # +0.001 at seed 0


@pytest.mark.parametrize(
    ("relpath", "macro_f1_gap"),
    [
        # Federated macro-F1 0.74 against 0.94 centralized at seed 0 (rare classes; 257 benign
        # test rows, FPR 0.30 against 0.05): documented, not a target. Slowest case (~4-8 min).
        ("netflow-v2/NF-BoT-IoT-v2_reduced.csv.gz", 0.25),
        ("cic-ids2017/CICIDS2017_kmeans_grouped_sample.csv.gz", 0.10),
    ],
)
def test_federated_close_to_centralized_on_seeded_split(
    datasets: Path, relpath: str, macro_f1_gap: float
) -> None:
    s = _summary(_config(datasets / relpath))
    fed, cen, local = s["federated"], s["centralized"], s["local_only"]["mean"]
    assert _binary_accuracy(fed) >= _binary_accuracy(cen) - 0.02
    assert _binary_accuracy(fed) > _binary_accuracy(local)
    assert fed["macro_f1"] >= cen["macro_f1"] - macro_f1_gap
    assert fed["macro_f1"] > local["macro_f1"]
