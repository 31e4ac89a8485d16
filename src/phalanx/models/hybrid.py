"""A hybrid detector: a multi-class classifier OR an autoencoder anomaly detector on benign flows.

A classifier trained on labelled attacks misses attacks unlike any it was trained on (on
NSL-KDD's KDDTest+ most missed attacks are names absent from training; Tavallaee et al., CISDA
2009). An anomaly detector trained on benign traffic only flags whatever does not look benign,
known or not. Combining a misuse (signature-like) detector with an anomaly detector is the
classic hybrid intrusion detection design (Denning, IEEE TSE 1987; survey: Buczak and Guven,
IEEE Commun. Surveys Tuts. 2016). Here both parts are neural networks:

* the classifier is :class:`~phalanx.models.mlp.MLPClassifier` (all rows, class labels);
* the anomaly part is :class:`~phalanx.models.autoencoder.AutoencoderDetector`, trained on the
  benign rows only, whose score is the reconstruction error (Hawkins et al., DaWaK 2002).

Decision rule
-------------
With the classifier score ``s_c = 1 - P(benign)``, its threshold ``t_c``
(``classifier_threshold``, 0.5 by default: the classifier's own cut) and the anomaly score
``s_a`` with its threshold ``t_a`` (``threshold_``: calibrated by :meth:`HybridDetector.calibrate`
so that a share ``anomaly_fpr`` of held-out benign flows exceed it), a flow is an **alert when
``s_c > t_c`` OR ``s_a > t_a``**. The single combined score (:meth:`HybridDetector.attack_score`)
is ``max(odds(s_c) / odds(t_c), s_a / t_a)`` with ``odds(p) = p / (1 - p)``, and the alert rule
is exactly ``score > 1``. Each part is measured in units of its own threshold, so neither scale
dominates, and a threshold ``T`` other than 1 tightens or loosens both parts together (ROC and PR
curves, ``--fpr`` thresholds). The classifier enters by its odds, not by ``s_c / t_c``: ``s_c``
is at most 1, so its ratio would stop at ``1 / t_c`` and every threshold above that would
silence the classifier. On benign traffic the OR's false positive rate is at most the
classifier's plus ``anomaly_fpr``.

The kind of an alert (:meth:`HybridDetector.predict`): the classifier's most probable attack
category when the classifier itself alerts (``s_c > t_c``), else ``other`` (an anomaly of no
known kind); no alert is ``benign``.

Federation
----------
To the federation the hybrid is one model: :meth:`HybridDetector.get_weights` is the
classifier's arrays followed by the autoencoder's, so aggregation, secure aggregation, robust
rules, the coordinator and the participants handle it unchanged. One local step
(:meth:`HybridDetector.partial_fit`) trains the classifier on all local rows and the
autoencoder on the local benign rows for the same number of epochs; FedProx references and
SCAFFOLD control variates are split the same way. A participant without benign rows leaves the
autoencoder's weights as they came (a zero update for that part). The update's example count is
the number of rows (the classifier's), so sample-weighted rules weigh both parts by it.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Self

import numpy as np
from numpy.typing import ArrayLike, NDArray

from phalanx.core.errors import ModelError
from phalanx.core.taxonomy import BENIGN, CATEGORIES, CATEGORY_INDEX, FALLBACK
from phalanx.core.types import Weights
from phalanx.models.autoencoder import AutoencoderDetector
from phalanx.models.base import Params, TrainStats
from phalanx.models.mlp import MLPClassifier

CLASSIFIER_PREFIX = "classifier."
"""Prefix of the classifier's weight names (in bundles and :meth:`HybridDetector.layer_names`)."""
AUTOENCODER_PREFIX = "autoencoder."
"""Prefix of the autoencoder's weight names."""
MIN_BENIGN_PROBABILITY = 1e-12
"""Floor of P(benign) in the classifier's odds, so that a certain attack has a finite score."""


_SHARED = ("lr", "batch_size", "epochs", "optimizer", "momentum", "weight_decay")
_CLASSIFIER_ONLY = ("n_classes", "hidden", "dropout", "class_weight", "logit_adjust",
                    "label_smoothing", "min_class_rows")  # fmt: skip


def autoencoder_seed(seed: int) -> int:
    """The autoencoder's seed, derived from the hybrid's so the two parts draw independently."""
    return int(np.random.SeedSequence([int(seed), 0x4145]).generate_state(1)[0])


class HybridDetector(Params):
    """Classifier OR autoencoder anomaly detector, trained and exchanged as one model.

    The constructor only stores parameters; the two networks (``classifier_`` and
    ``autoencoder_``) are built by :meth:`initialize`, ``fit``, ``partial_fit`` or
    ``set_weights``. See the module docstring for the decision rule.

    Parameters
    ----------
    n_features:
        Width of the feature vectors.
    n_classes:
        Classifier outputs (the taxonomy's categories by default; benign at index 0).
    hidden, dropout, class_weight, logit_adjust, label_smoothing, min_class_rows:
        The classifier's, as for :class:`~phalanx.models.mlp.MLPClassifier`.
    lr, batch_size, epochs, optimizer, momentum, weight_decay:
        Shared by both parts' local training.
    seed:
        Seeds the classifier; the autoencoder's seed is :func:`autoencoder_seed` of it.
    ae_hidden:
        The autoencoder's encoder widths, the last one the bottleneck (decoder mirrored).
    anomaly_fpr:
        Share of held-out benign flows the anomaly part may flag: :meth:`calibrate` sets
        ``t_a`` there (1 %: chosen on validation data, ``bench/tune_nslkdd.py``).
    classifier_threshold:
        ``t_c``: the classifier alerts when ``1 - P(benign) > t_c``.
    ae_epochs:
        Passes of the autoencoder over the benign rows per classifier epoch. The autoencoder
        trains on a share of the rows only and needs many more steps than the classifier to
        reconstruct benign traffic closely; its steps are cheap (benign rows, a small network).
    ae_optimizer, ae_lr:
        The autoencoder's local optimizer (``"adam"`` or ``"sgd"``, without momentum) and
        learning rate; ``None``: the classifier's ``optimizer``, ``momentum`` and ``lr``. A
        classifier trained with SGD keeps an Adam-trained autoencoder this way.
    """

    _PARAMS = (
        "n_features", "n_classes", "hidden", "dropout", "lr", "batch_size", "class_weight",
        "epochs", "seed", "optimizer", "momentum", "weight_decay", "logit_adjust",
        "label_smoothing", "ae_hidden", "anomaly_fpr", "classifier_threshold", "ae_epochs",
        "ae_optimizer", "ae_lr", "min_class_rows",
    )  # fmt: skip

    benign_index: int = CATEGORY_INDEX[BENIGN]
    anomaly_index: int = CATEGORY_INDEX[FALLBACK]
    """Category given to alerts raised by the anomaly part alone."""

    classifier_: MLPClassifier
    autoencoder_: AutoencoderDetector
    last_stats_: TrainStats
    last_anomaly_stats_: TrainStats
    last_control_: Weights
    last_control_delta_: Weights

    def __init__(
        self,
        n_features: int,
        n_classes: int = len(CATEGORIES),
        hidden: Sequence[int] = (256, 128),
        dropout: float = 0.1,
        lr: float = 1e-3,
        batch_size: int = 256,
        class_weight: str | None = "balanced",
        epochs: int = 1,
        seed: int = 0,
        optimizer: str = "adam",
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        logit_adjust: float = 0.0,
        label_smoothing: float = 0.0,
        ae_hidden: Sequence[int] = (64, 16),
        anomaly_fpr: float = 0.01,
        classifier_threshold: float = 0.5,
        ae_epochs: int = 1,
        ae_optimizer: str | None = None,
        ae_lr: float | None = None,
        min_class_rows: int = 0,
    ) -> None:
        self.n_features = n_features
        self.n_classes = n_classes
        self.hidden = tuple(hidden)
        self.dropout = dropout
        self.lr = lr
        self.batch_size = batch_size
        self.class_weight = class_weight
        self.epochs = epochs
        self.seed = seed
        self.optimizer = optimizer
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.logit_adjust = logit_adjust
        self.label_smoothing = label_smoothing
        self.ae_hidden = tuple(ae_hidden)
        self.anomaly_fpr = anomaly_fpr
        self.classifier_threshold = classifier_threshold
        self.ae_epochs = ae_epochs
        self.ae_optimizer = ae_optimizer
        self.ae_lr = ae_lr
        self.min_class_rows = min_class_rows

    # -- parameters -------------------------------------------------------------------------

    def _parts(self) -> tuple[MLPClassifier, AutoencoderDetector]:
        """Both parts as the parameters describe them (not initialized)."""
        shared: dict[str, Any] = {k: getattr(self, k) for k in _SHARED}
        mlp = {k: getattr(self, k) for k in _CLASSIFIER_ONLY}
        classifier = MLPClassifier(self.n_features, seed=int(self.seed), **mlp, **shared)
        if self.ae_optimizer is not None:  # the autoencoder's own optimizer (plain Adam steps)
            shared.update(optimizer=self.ae_optimizer, momentum=0.0)
        if self.ae_lr is not None:
            shared["lr"] = self.ae_lr
        autoencoder = AutoencoderDetector(
            self.n_features, hidden=self.ae_hidden, seed=autoencoder_seed(int(self.seed)),
            target_fpr=self.anomaly_fpr, **shared,
        )  # fmt: skip
        return classifier, autoencoder

    def check_params(self) -> None:
        """Raise :class:`ModelError` when a constructor parameter is out of range."""
        classifier, autoencoder = self._parts()
        classifier.check_params()
        try:
            autoencoder.check_params()
        except ModelError as err:
            raise ModelError(f"autoencoder part: {err.message}", hint=err.hint) from err
        if not 0.0 < float(self.anomaly_fpr) < 1.0:
            raise ModelError(
                f"anomaly_fpr must be in (0, 1); found {self.anomaly_fpr}",
                hint="it is the share of benign flows the anomaly part may flag, e.g. 0.02",
            )
        t_c = float(self.classifier_threshold)
        if not (math.isfinite(t_c) and 0.0 < t_c < 1.0):
            raise ModelError(f"classifier_threshold must be in (0, 1); found {t_c}")
        if isinstance(self.ae_epochs, bool) or int(self.ae_epochs) != self.ae_epochs:
            raise ModelError(f"ae_epochs must be a whole number; found {self.ae_epochs!r}")
        if not 1 <= int(self.ae_epochs) <= 1000:
            raise ModelError(
                f"ae_epochs must be in [1, 1000]; found {self.ae_epochs}",
                hint="it multiplies the local epochs for the autoencoder part, e.g. 5",
            )

    # -- networks ---------------------------------------------------------------------------

    def initialize(self) -> Self:
        """(Re)build both networks with fresh weights from ``seed``; forget training."""
        self.check_params()
        classifier, autoencoder = self._parts()
        self.classifier_ = classifier.initialize()
        self.autoencoder_ = autoencoder.initialize()
        return self

    def reseed(self, seed: int) -> Self:
        """Take the random streams a fresh model of ``seed`` would train with (both parts)."""
        self.seed = int(seed)
        self._require()
        self.classifier_.reseed(int(seed))
        self.autoencoder_.reseed(autoencoder_seed(int(seed)))
        return self

    def is_initialized(self) -> bool:
        """Whether both networks exist."""
        return hasattr(self, "classifier_") and hasattr(self, "autoencoder_")

    def _require(self) -> tuple[MLPClassifier, AutoencoderDetector]:
        if not self.is_initialized():
            raise ModelError(
                "HybridDetector has no weights yet",
                hint="call fit(), partial_fit(), initialize() or set_weights() first",
            )
        return self.classifier_, self.autoencoder_

    # -- weights ----------------------------------------------------------------------------

    def layer_names(self) -> list[str]:
        """Names of the arrays :meth:`get_weights` returns: the prefixed parts, in order."""
        classifier, autoencoder = self._require()
        return [CLASSIFIER_PREFIX + n for n in classifier.layer_names()] + [
            AUTOENCODER_PREFIX + n for n in autoencoder.layer_names()
        ]

    def layer_shapes(self) -> list[tuple[int, ...]]:
        """Shapes of the arrays :meth:`get_weights` returns, in order."""
        classifier, autoencoder = self._require()
        return classifier.layer_shapes() + autoencoder.layer_shapes()

    def expected_layers(self) -> list[tuple[str, tuple[int, ...]]]:
        """``(name, shape)`` of every weight array, from the parameters alone."""
        classifier, autoencoder = self._parts()
        return [(CLASSIFIER_PREFIX + n, s) for n, s in classifier.expected_layers()] + [
            (AUTOENCODER_PREFIX + n, s) for n, s in autoencoder.expected_layers()
        ]

    def get_weights(self) -> Weights:
        """The classifier's float32 arrays followed by the autoencoder's (copies)."""
        classifier, autoencoder = self._require()
        return classifier.get_weights() + autoencoder.get_weights()

    def classifier_layer_count(self) -> int:
        """How many of :meth:`get_weights`'s arrays are the classifier's (they come first)."""
        return len(self._parts()[0].expected_layers())

    def _split(self, weights: Sequence[Any], what: str) -> tuple[list[Any], list[Any]]:
        k = self.classifier_layer_count()
        total = len(self.expected_layers())
        if len(weights) != total:
            raise ModelError(
                f"HybridDetector {what} has {len(weights)} arrays; expected {total}"
                f" ({k} classifier + {total - k} autoencoder)",
                hint="the weights were made for another model kind or architecture",
            )
        return list(weights[:k]), list(weights[k:])

    def set_weights(self, weights: Sequence[NDArray[Any]]) -> Self:
        """Load both parts' weights (creating the networks when needed); nothing changes when
        either part refuses its arrays.

        Raises
        ------
        ModelError
            When the number of arrays, a shape or a dtype differs, or a value is not finite;
            the message names the part and the layer.
        """
        if not self.is_initialized():
            self.initialize()
        ws_c, ws_a = self._split(weights, "weights")
        before = self.classifier_.get_weights()
        try:
            self.classifier_.set_weights(ws_c)
        except ModelError as err:
            raise ModelError(f"classifier {err.message}", hint=err.hint) from err
        try:
            self.autoencoder_.set_weights(ws_a)
        except ModelError as err:
            self.classifier_.set_weights(before)
            raise ModelError(f"autoencoder {err.message}", hint=err.hint) from err
        return self

    # -- training ---------------------------------------------------------------------------

    def fit(self, X: ArrayLike, y: ArrayLike) -> Self:
        """Train both parts from fresh weights for ``epochs`` passes."""
        self.initialize()
        return self.partial_fit(X, y)

    def partial_fit(
        self,
        X: ArrayLike,
        y: ArrayLike,
        *,
        epochs: int | None = None,
        proximal_mu: float = 0.0,
        reference: Weights | None = None,
        control: tuple[Weights, Weights] | None = None,
        absent_scale: float = 1.0,
        class_totals: ArrayLike | None = None,
    ) -> Self:
        """One local step: the classifier on all rows, the autoencoder on the benign rows.

        ``epochs`` (``None``: the parameter) applies to both; ``absent_scale`` (FedRS) and
        ``class_totals`` (the federation's class counts for ``min_class_rows``) to the
        classifier only (:meth:`MLPClassifier.partial_fit`). ``reference`` (FedProx, Li et al.,
        MLSys 2020) and ``control = (c, c_i)`` (SCAFFOLD, Karimireddy et al., ICML 2020) are in
        :meth:`get_weights` order and split between the parts; afterwards ``last_control_`` and
        ``last_control_delta_`` hold both parts'. Labels are required.
        """
        if y is None:
            raise ModelError(
                "HybridDetector needs labels (y) to train its classifier",
                hint="for unlabelled flows use the autoencoder model",
            )
        if not self.is_initialized():
            self.initialize()
        classifier, autoencoder = self._require()
        ref_c: Weights | None = None
        ref_a: Weights | None = None
        if reference is not None:
            ref_c, ref_a = self._split(reference, "reference")
        ctl_c: tuple[Weights, Weights] | None = None
        ctl_a: tuple[Weights, Weights] | None = None
        if control is not None:
            c_c, c_a = self._split(control[0], "control")
            ci_c, ci_a = self._split(control[1], "local control")
            ctl_c, ctl_a = (c_c, ci_c), (c_a, ci_a)
        n_epochs = self.epochs if epochs is None else int(epochs)
        classifier.partial_fit(X, y, epochs=n_epochs, proximal_mu=proximal_mu, reference=ref_c,
                               control=ctl_c, absent_scale=absent_scale,
                               class_totals=class_totals)  # fmt: skip
        # no benign rows: the autoencoder takes no step and its weights stay as they came
        autoencoder.partial_fit(X, y, epochs=n_epochs * int(self.ae_epochs),
                                proximal_mu=proximal_mu, reference=ref_a,
                                control=ctl_a)  # fmt: skip
        self.last_stats_ = classifier.last_stats_
        self.last_anomaly_stats_ = autoencoder.last_stats_
        if control is not None:
            self.last_control_ = classifier.last_control_ + autoencoder.last_control_
            self.last_control_delta_ = (
                classifier.last_control_delta_ + autoencoder.last_control_delta_
            )
        return self

    # -- scoring ----------------------------------------------------------------------------

    def predict_proba(self, X: ArrayLike) -> NDArray[np.float32]:
        """The classifier's class probabilities, shape (n, n_classes)."""
        return self._require()[0].predict_proba(X)

    def classifier_score(self, X: ArrayLike) -> NDArray[np.float32]:
        """``s_c = 1 - P(benign)`` per row (the classifier's own attack score)."""
        return self._require()[0].attack_score(X)

    def anomaly_score(self, X: ArrayLike) -> NDArray[np.float32]:
        """``s_a``: the autoencoder's mean squared reconstruction error per row."""
        return self._require()[1].score(X)

    def anomaly_contributions(self, X: ArrayLike) -> NDArray[np.float32]:
        """Per-feature squared reconstruction error, shape (n, n_features): what makes a flow
        anomalous (the explanation of an anomaly-only alert); its row mean is ``s_a``."""
        autoencoder = self._require()[1]
        x = autoencoder._to_tensor(X)
        recon = autoencoder._predict_raw(x.numpy())
        return ((recon - x) ** 2).numpy().astype(np.float32)

    @property
    def threshold_(self) -> float:
        """``t_a``, the anomaly threshold set by :meth:`calibrate` (or a loaded bundle)."""
        autoencoder = self._require()[1]
        if not hasattr(autoencoder, "threshold_"):
            raise ModelError(
                "HybridDetector's anomaly threshold is not calibrated",
                hint="call calibrate() with held-out benign flows (or set_anomaly_threshold())",
            )
        return float(autoencoder.threshold_)

    def is_calibrated(self) -> bool:
        """Whether the anomaly threshold ``t_a`` is set."""
        return self.is_initialized() and hasattr(self.autoencoder_, "threshold_")

    def calibrate(self, X_benign_val: ArrayLike, anomaly_fpr: float | None = None) -> Self:
        """Set ``t_a`` so that at most ``anomaly_fpr`` of these benign flows exceed it.

        Use benign flows held out from training (training errors are optimistic).
        """
        fpr = self.anomaly_fpr if anomaly_fpr is None else float(anomaly_fpr)
        self._require()[1].calibrate(X_benign_val, fpr)
        return self

    def set_anomaly_threshold(self, threshold: float) -> Self:
        """Set ``t_a`` directly (e.g. from a bundle's thresholds); must be finite and > 0."""
        t = float(threshold)
        if not (math.isfinite(t) and t > 0.0):
            raise ModelError(f"anomaly threshold must be finite and > 0; found {threshold!r}")
        self._require()[1].threshold_ = t
        return self

    def part_scores(
        self, X: ArrayLike
    ) -> tuple[NDArray[np.float64], NDArray[np.float64], NDArray[np.float64]]:
        """One pass over both nets: ``(class probabilities, odds(s_c) / odds(t_c), s_a / t_a)``;
        each ratio is above 1 exactly when its part alerts."""
        t_a = max(self.threshold_, 1e-12)
        t_c = float(self.classifier_threshold)
        proba = np.asarray(self.predict_proba(X), dtype=np.float64)
        p_benign = proba[:, self.benign_index]
        odds = (1.0 - p_benign) / np.maximum(p_benign, MIN_BENIGN_PROBABILITY)
        s_a = np.asarray(self.anomaly_score(X), dtype=np.float64)
        return proba, odds / (t_c / (1.0 - t_c)), s_a / t_a

    def attack_score(self, X: ArrayLike) -> NDArray[np.float32]:
        """Combined binary score ``max(odds(s_c) / odds(t_c), s_a / t_a)``: alert above 1."""
        return self.decide(X)[0]

    def predict(self, X: ArrayLike) -> NDArray[np.int64]:
        """Category per row: benign without an alert; the classifier's top attack category
        when the classifier alerts; ``other`` when only the anomaly part does."""
        return self.decide(X)[1]

    def decide(self, X: ArrayLike) -> tuple[NDArray[np.float32], NDArray[np.int64]]:
        """``(combined score, category)`` per row in one pass (what ``phalanx detect`` needs)."""
        proba, c, a = self.part_scores(X)
        return np.maximum(c, a).astype(np.float32), self.kinds(proba, c, a)

    def kinds(
        self, proba: NDArray[Any], c: NDArray[np.float64], a: NDArray[np.float64]
    ) -> NDArray[np.int64]:
        """Categories from :meth:`part_scores`' three arrays (see :meth:`predict`)."""
        attack_proba = np.array(proba, dtype=np.float64, copy=True)
        attack_proba[:, self.benign_index] = -np.inf
        kind = attack_proba.argmax(axis=1).astype(np.int64) if len(c) else np.zeros(0, np.int64)
        kind = np.where(c > 1.0, kind, self.anomaly_index)
        return np.where(np.maximum(c, a) > 1.0, kind, self.benign_index).astype(np.int64)

    # -- bundle state -----------------------------------------------------------------------

    def fitted_state(self) -> dict[str, Any]:
        """Fitted scalars saved in a bundle: both parts' (with ``t_a``) and ``t_c``."""
        classifier, autoencoder = self._require()
        return {
            "classifier": classifier.fitted_state(),
            "autoencoder": autoencoder.fitted_state(),
            "classifier_threshold": float(self.classifier_threshold),
        }

    def load_fitted_state(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`fitted_state`."""
        classifier, autoencoder = self._require()
        parts = (state.get("classifier", {}), state.get("autoencoder", {}))
        if not all(isinstance(p, dict) for p in parts):
            raise ModelError("hybrid fitted state: 'classifier' and 'autoencoder' must be objects")
        classifier.load_fitted_state(parts[0])
        autoencoder.load_fitted_state(parts[1])
        if getattr(autoencoder, "threshold_", None) is not None:
            self.set_anomaly_threshold(autoencoder.threshold_)
