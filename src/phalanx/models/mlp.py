"""A multi-layer perceptron flow classifier over the taxonomy's categories."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, Self

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from torch.nn import functional as F

from phalanx.core.errors import ModelError
from phalanx.core.taxonomy import BENIGN, CATEGORIES, CATEGORY_INDEX
from phalanx.core.types import Weights
from phalanx.models.base import FeedForward, TorchEstimator

ABSENT_PRIOR = 1e-6
"""Prior given by the logit adjustment to a class absent from the training call's labels."""

MAX_MIN_CLASS_ROWS = 100_000
"""Upper bound of ``min_class_rows`` (a guard against typos)."""

CLASS_WEIGHT_CLIP = (0.1, 10.0)
"""Bounds of the "balanced" class weights, so that a class seen a handful of times does not
dominate the loss (and a local dataset missing most classes stays trainable)."""


class MLPClassifier(TorchEstimator):
    """Feed-forward classifier: ``n_features -> hidden... -> n_classes`` with ReLU and dropout.

    Estimator conventions of scikit-learn: the constructor only stores parameters; fitted state
    ends in ``_`` (``net_``, ``n_seen_``, ``rng_``, ``last_stats_``).

    Parameters
    ----------
    n_features:
        Width of the feature vectors (the feature schema's output width).
    n_classes:
        Output classes; by default the taxonomy's categories, with ``benign`` at index 0.
    hidden:
        Hidden layer widths.
    dropout:
        Dropout after each hidden activation, driven by the estimator's own generator.
    lr:
        Local learning rate.
    batch_size:
        Minibatch size.
    epochs:
        Passes over the data per ``fit`` / ``partial_fit`` call.
    class_weight:
        ``"balanced"``: the loss weighs class ``c`` by ``n / (k * n_c)`` over the ``k`` classes
        present in the call's labels, clipped to :data:`CLASS_WEIGHT_CLIP`; absent classes get
        1 (they contribute no term). ``None``: unweighted.
    seed:
        Seeds initialization, shuffling and dropout (private generators, never torch's
        global one).
    optimizer:
        ``"adam"`` or ``"sgd"``. A fresh optimizer is made for each ``fit``/``partial_fit``
        call: in federated training the global weights change between calls, so stale moments
        would point the wrong way. SCAFFOLD training always uses plain SGD.
    momentum:
        SGD momentum (``optimizer="sgd"`` only).
    weight_decay:
        L2 penalty passed to the optimizer.
    logit_adjust:
        ``tau`` of the logit-adjusted loss (Menon et al., "Long-tail learning via logit
        adjustment", ICLR 2021): training minimises the cross-entropy of
        ``logits + tau * log(prior)``, where ``prior`` is the class frequency in the call's
        labels, and prediction uses the plain logits. With ``tau = 1`` this is the balanced
        softmax (Ren et al., NeurIPS 2020). A class absent from the call's labels gets a prior
        of :data:`ABSENT_PRIOR`, so local training leaves its logit almost alone instead of
        pushing it down: under label skew each participant then corrects for its own label
        distribution and the classes it never sees are not forgotten, as in FedLC (Zhang et al.,
        ICML 2022) and FedRS (Li and Zhan, KDD 2021). 0 disables it.
    label_smoothing:
        Label smoothing of the cross-entropy (Szegedy et al., CVPR 2016), in [0, 1).
    min_class_rows:
        Random oversampling of rare classes (Buda et al., "A systematic study of the class
        imbalance problem in convolutional neural networks", Neural Networks 106, 2018): in
        every training call, each row of a class with ``c < min_class_rows`` rows is presented
        ``ceil(min_class_rows / c)`` times per epoch (see :meth:`oversampled_rows`); ``c`` is
        the federation's count when the call gets ``class_totals``, else the call's own.
        The balanced class weights are computed on the presented labels, so each presentation
        weighs no more than a row did before; a class of two rows, held by the weight clip to
        a small share of the loss in one or two steps per epoch, now takes part in many steps
        (its total weight moves toward the balanced one). The reported ``examples`` (the
        federated aggregation weight) stay the distinct rows. Under label skew this lets the
        one or two participants holding a rare class teach it to the federation (ADR 0019).
        0 (or 1) turns it off. Not available under DP-SGD, whose accounting assumes each
        record is sampled once per step.
    """

    _PARAMS = (
        "n_features", "n_classes", "hidden", "dropout", "lr", "batch_size", "epochs",
        "class_weight", "seed", "optimizer", "momentum", "weight_decay", "logit_adjust",
        "label_smoothing", "min_class_rows",
    )  # fmt: skip

    def __init__(
        self,
        n_features: int,
        n_classes: int = len(CATEGORIES),
        hidden: Sequence[int] = (256, 128),
        dropout: float = 0.1,
        lr: float = 1e-3,
        batch_size: int = 256,
        epochs: int = 1,
        class_weight: str | None = "balanced",
        seed: int = 0,
        optimizer: str = "adam",
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        logit_adjust: float = 0.0,
        label_smoothing: float = 0.0,
        min_class_rows: int = 0,
    ) -> None:
        self.n_features = n_features
        self.n_classes = n_classes
        self.hidden = tuple(hidden)
        self.dropout = dropout
        self.lr = lr
        self.batch_size = batch_size
        self.epochs = epochs
        self.class_weight = class_weight
        self.seed = seed
        self.optimizer = optimizer
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.logit_adjust = logit_adjust
        self.label_smoothing = label_smoothing
        self.min_class_rows = min_class_rows

    _loss_weight: torch.Tensor | None = None
    _logit_offset: torch.Tensor | None = None
    _logit_scale: torch.Tensor | None = None
    _absent_scale: float = 1.0

    benign_index: int = CATEGORY_INDEX[BENIGN]
    """Output column of the benign class, used by :meth:`attack_score`."""

    def check_params(self) -> None:
        super().check_params()
        if int(self.n_classes) < 2:
            raise ModelError(f"n_classes must be >= 2; found {self.n_classes}")
        if self.class_weight not in ("balanced", None):
            raise ModelError(
                f"class_weight must be 'balanced' or None; found {self.class_weight!r}"
            )
        if not (math.isfinite(self.logit_adjust) and 0.0 <= self.logit_adjust <= 10.0):
            raise ModelError(f"logit_adjust must be in [0, 10]; found {self.logit_adjust}")
        if not 0.0 <= self.label_smoothing < 1.0:
            raise ModelError(f"label_smoothing must be in [0, 1); found {self.label_smoothing}")
        if not 0 <= int(self.min_class_rows) <= MAX_MIN_CLASS_ROWS:
            raise ModelError(
                f"min_class_rows must be in [0, {MAX_MIN_CLASS_ROWS}]; found {self.min_class_rows}",
                hint="0 turns oversampling off; the NSL-KDD recipe uses 32",
            )

    def _sizes(self) -> list[int]:
        return [int(self.n_features), *map(int, self.hidden), int(self.n_classes)]

    def _dropout(self) -> float:
        return float(self.dropout)

    @property
    def classes_(self) -> NDArray[np.int64]:
        """Class indices of the output columns."""
        return np.arange(int(self.n_classes), dtype=np.int64)

    # -- training ---------------------------------------------------------------------------

    def fit(self, X: ArrayLike, y: ArrayLike) -> Self:
        """Train from freshly initialized weights for ``epochs`` passes."""
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
        """Continue training from the current weights (building the network if needed).

        Parameters
        ----------
        X:
            Features, shape (n, n_features), converted to float32.
        y:
            Class indices in ``[0, n_classes)``, shape (n,).
        epochs:
            Passes over the data; ``None`` uses the ``epochs`` parameter.
        proximal_mu, reference:
            FedProx (Li et al., MLSys 2020): adds ``mu/2 * ||w - reference||^2`` to the loss.
        control:
            SCAFFOLD (Karimireddy et al., ICML 2020): ``(c, c_i)``, the server and local
            control variates in :meth:`get_weights` order. Local steps then use plain SGD with
            gradient ``g + c - c_i``, and ``last_control_`` / ``last_control_delta_`` hold the
            new ``c_i`` and ``c_i+ - c_i`` (option II). The weights at the start of the call
            are taken as the global model ``x``.
        absent_scale:
            FedRS, the restricted softmax (Li and Zhan, "FedRS: Federated Learning with
            Restricted Softmax for Label Distribution Non-IID Data", KDD 2021): during this call
            the logits of the classes absent from ``y`` are multiplied by ``absent_scale``
            (``alpha`` in [0, 1]; 1 is the plain softmax). Under label skew a participant that
            never sees a class otherwise pushes that class's output weights down on every row
            it trains on, and the few participants holding a rare class cannot outvote the rest;
            with ``alpha < 1`` those weights take a gradient scaled by ``alpha`` (none at 0).
            Prediction always uses the plain logits. Meant for federated local training only.
        class_totals:
            With ``min_class_rows``: the federation's rows per class (from the statistics
            stage), which then set how often each class's rows repeat instead of this call's own
            counts, so that the participants together present the rows a model trained on the
            pooled data would (ADR 0019). ``None``: this call's labels.

        Returns
        -------
        self
        """
        alpha = float(absent_scale)
        if not (math.isfinite(alpha) and 0.0 <= alpha <= 1.0):
            raise ModelError(
                f"absent_scale (FedRS alpha) must be in [0, 1]; found {absent_scale}",
                hint="1 turns the restricted softmax off; the FedRS paper uses about 0.5",
            )
        if not self.is_initialized():
            self.initialize()
        x = self._to_tensor(X)
        target = self._targets(y, x.shape[0])
        self._absent_scale = alpha  # for this call only: a cached model serves many callers
        try:
            self._train(
                x,
                target,
                epochs=self.epochs if epochs is None else int(epochs),
                proximal_mu=float(proximal_mu),
                reference=reference,
                control=control,
                rows=self.oversampled_rows(target.numpy(), class_totals),
            )
        finally:
            self._absent_scale = 1.0
        return self

    def _targets(self, y: ArrayLike, n: int) -> torch.Tensor:
        arr = np.asarray(y)
        if arr.shape != (n,):
            raise ModelError(f"y must have shape ({n},) to match X; found {arr.shape}")
        if n and not np.issubdtype(arr.dtype, np.integer):
            raise ModelError(f"y must hold integer class indices; found dtype {arr.dtype}")
        if n and (arr.min() < 0 or arr.max() >= self.n_classes):
            raise ModelError(
                f"y holds class indices {int(arr.min())}..{int(arr.max())}; expected "
                f"0..{self.n_classes - 1}"
            )
        return torch.from_numpy(arr.astype(np.int64))

    def oversampled_rows(
        self, y: ArrayLike, class_totals: ArrayLike | None = None
    ) -> torch.Tensor | None:
        """The row indices one training epoch presents for labels ``y`` (``min_class_rows``).

        Each row of a class with ``c < min_class_rows`` rows appears ``ceil(min_class_rows / c)``
        times, every other row once, in row order (the epoch shuffles them). ``c`` is the
        class's count in ``class_totals`` (the federation's, one per class) when given, else in
        ``y``. ``None`` when nothing is repeated: every row once.
        """
        labels = np.asarray(y, dtype=np.int64)
        k = int(self.min_class_rows)
        if k <= 1 or labels.size == 0:
            return None
        counts = np.bincount(labels, minlength=int(self.n_classes))
        if class_totals is not None:
            totals = np.asarray(class_totals, dtype=np.int64)
            if totals.shape != counts.shape:
                raise ModelError(
                    f"class_totals has shape {totals.shape}; the classifier has"
                    f" {self.n_classes} classes",
                    hint="the totals come from another taxonomy or model",
                )
            # a class present here is present in the federation: never count it below here
            counts = np.maximum(totals, counts)
        repeats = np.ones(counts.shape[0], dtype=np.int64)
        rare = (counts > 0) & (counts < k)
        if not rare.any():
            return None
        repeats[rare] = -(-k // counts[rare])
        return torch.from_numpy(np.repeat(np.arange(labels.size, dtype=np.int64), repeats[labels]))

    def class_weights(self, y: ArrayLike) -> NDArray[np.float32]:
        """The loss weights ``class_weight`` gives to labels ``y`` (ones when ``None``)."""
        counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=int(self.n_classes))
        weights = np.ones(int(self.n_classes), dtype=np.float64)
        present = counts > 0
        if self.class_weight == "balanced" and present.any():
            balanced = counts.sum() / (present.sum() * counts[present])
            weights[present] = np.clip(balanced, *CLASS_WEIGHT_CLIP)
        return weights.astype(np.float32)

    def logit_offsets(self, y: ArrayLike) -> NDArray[np.float32]:
        """``logit_adjust * log(prior)`` added to the logits in training on labels ``y``.

        The prior is the class frequency in ``y``, :data:`ABSENT_PRIOR` for an absent class
        (zeros when ``logit_adjust`` is 0 or ``y`` is empty).
        """
        counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=int(self.n_classes))
        if self.logit_adjust == 0.0 or counts.sum() == 0:
            return np.zeros(int(self.n_classes), dtype=np.float32)
        prior = np.maximum(counts / counts.sum(), ABSENT_PRIOR)
        offsets: NDArray[np.float32] = (float(self.logit_adjust) * np.log(prior)).astype(np.float32)
        return offsets

    def _prepare_loss(self, y: torch.Tensor | None) -> None:
        if y is None or self.class_weight is None:
            self._loss_weight = None
        else:
            self._loss_weight = torch.from_numpy(self.class_weights(y.numpy()))
        if y is None or self.logit_adjust == 0.0:
            self._logit_offset = None
        else:
            self._logit_offset = torch.from_numpy(self.logit_offsets(y.numpy()))
        self._logit_scale = None
        if y is not None and self._absent_scale != 1.0:
            scale = self.logit_scales(y.numpy(), self._absent_scale)
            self._logit_scale = None if bool((scale == 1.0).all()) else torch.from_numpy(scale)

    def logit_scales(self, y: ArrayLike, absent_scale: float) -> NDArray[np.float32]:
        """FedRS's per-class logit factors for training on labels ``y``: 1 for the classes
        present in ``y``, ``absent_scale`` for the others (see :meth:`partial_fit`)."""
        counts = np.bincount(np.asarray(y, dtype=np.int64), minlength=int(self.n_classes))
        return np.where(counts > 0, 1.0, float(absent_scale)).astype(np.float32)

    def _batch_loss(
        self, net: FeedForward, xb: torch.Tensor, yb: torch.Tensor | None
    ) -> torch.Tensor:
        if yb is None:
            raise ModelError("MLPClassifier needs labels to train")
        logits = net(xb, self.rng_)
        if self._logit_scale is not None:
            logits = logits * self._logit_scale
        if self._logit_offset is not None:
            logits = logits + self._logit_offset
        return F.cross_entropy(
            logits, yb, weight=self._loss_weight, label_smoothing=float(self.label_smoothing)
        )

    # -- prediction -------------------------------------------------------------------------

    def predict_proba(self, X: ArrayLike) -> NDArray[np.float32]:
        """Class probabilities, shape (n, n_classes), float32."""
        return torch.softmax(self._predict_raw(X), dim=1).numpy()

    def predict(self, X: ArrayLike) -> NDArray[np.int64]:
        """Most probable class index per row."""
        return self._predict_raw(X).argmax(dim=1).numpy().astype(np.int64)

    def attack_score(self, X: ArrayLike) -> NDArray[np.float32]:
        """``1 - P(benign)`` per row: the binary detection score."""
        proba = self.predict_proba(X)
        return (1.0 - proba[:, self.benign_index]).astype(np.float32)

    def fitted_state(self) -> dict[str, Any]:
        """Fitted scalars saved in a bundle beside the weights."""
        return {"n_seen_": int(getattr(self, "n_seen_", 0))}

    def load_fitted_state(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`fitted_state`."""
        self.n_seen_ = int(state.get("n_seen_", 0))
