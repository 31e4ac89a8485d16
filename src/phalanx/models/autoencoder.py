"""An autoencoder anomaly detector for participants that have benign traffic but no labels."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Self

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray

from phalanx.core.errors import ConfigError, ModelError
from phalanx.core.metrics import threshold_at_fpr
from phalanx.core.taxonomy import BENIGN, CATEGORY_INDEX
from phalanx.core.types import Weights
from phalanx.models.base import FeedForward, TorchEstimator


class AutoencoderDetector(TorchEstimator):
    """Reconstruction-error anomaly detector: ``d -> hidden... -> reversed(hidden) -> d``.

    Trained to reconstruct benign flows; a flow's anomaly score is its mean squared
    reconstruction error over the features, and it is flagged when ``score > threshold_``.
    :meth:`calibrate` sets ``threshold_`` on held-out benign flows for a target false-positive
    rate.

    Parameters
    ----------
    n_features:
        Width of the feature vectors.
    hidden:
        Encoder widths, the last one being the bottleneck; the decoder mirrors them.
        ``(64, 16)`` gives ``d -> 64 -> 16 -> 64 -> d``.
    lr, batch_size, epochs, seed, optimizer, momentum, weight_decay:
        As for :class:`~phalanx.models.mlp.MLPClassifier` (no dropout, no class weights).
    target_fpr:
        Default false-positive rate for :meth:`calibrate`.
    """

    _PARAMS = (
        "n_features", "hidden", "lr", "batch_size", "epochs", "seed", "optimizer", "momentum",
        "weight_decay", "target_fpr",
    )  # fmt: skip

    threshold_: float
    benign_index: int = CATEGORY_INDEX[BENIGN]
    """Label of benign flows: when labels are given to ``fit``, only these rows are used."""

    def __init__(
        self,
        n_features: int,
        hidden: Sequence[int] = (64, 16),
        lr: float = 1e-3,
        batch_size: int = 256,
        epochs: int = 1,
        seed: int = 0,
        optimizer: str = "adam",
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        target_fpr: float = 0.01,
    ) -> None:
        self.n_features = n_features
        self.hidden = tuple(hidden)
        self.lr = lr
        self.batch_size = batch_size
        self.epochs = epochs
        self.seed = seed
        self.optimizer = optimizer
        self.momentum = momentum
        self.weight_decay = weight_decay
        self.target_fpr = target_fpr
        self.dropout = 0.0

    def check_params(self) -> None:
        super().check_params()
        if not self.hidden:
            raise ModelError("hidden must name at least the bottleneck width; found ()")
        if not 0.0 <= self.target_fpr < 1.0:
            raise ModelError(f"target_fpr must be in [0, 1); found {self.target_fpr}")

    def _sizes(self) -> list[int]:
        enc = [int(h) for h in self.hidden]
        return [int(self.n_features), *enc, *reversed(enc[:-1]), int(self.n_features)]

    # -- training ---------------------------------------------------------------------------

    def fit(self, X: ArrayLike, y: ArrayLike | None = None) -> Self:
        """Train from fresh weights; see :meth:`partial_fit` for ``y``."""
        self.initialize()
        return self.partial_fit(X, y)

    def partial_fit(
        self,
        X: ArrayLike,
        y: ArrayLike | None = None,
        *,
        epochs: int | None = None,
        proximal_mu: float = 0.0,
        reference: Weights | None = None,
        control: tuple[Weights, Weights] | None = None,
    ) -> Self:
        """Continue training on benign flows.

        Parameters
        ----------
        X:
            Flows assumed benign when ``y`` is None.
        y:
            Optional class indices; only rows labelled benign (index 0) are used.
        epochs, proximal_mu, reference, control:
            As for :meth:`MLPClassifier.partial_fit <phalanx.models.mlp.MLPClassifier.partial_fit>`
            (FedProx and SCAFFOLD hooks).
        """
        if not self.is_initialized():
            self.initialize()
        x = self._to_tensor(self.benign_rows(X, y))
        self._train(
            x,
            None,
            epochs=self.epochs if epochs is None else int(epochs),
            proximal_mu=float(proximal_mu),
            reference=reference,
            control=control,
        )
        return self

    def benign_rows(self, X: ArrayLike, y: ArrayLike | None) -> NDArray[Any]:
        """``X`` itself when ``y`` is None, else its rows labelled benign."""
        arr = np.asarray(X)
        if y is None:
            return arr
        labels = np.asarray(y)
        if labels.shape != (arr.shape[0],):
            raise ModelError(
                f"y must have shape ({arr.shape[0]},) to match X; found {labels.shape}"
            )
        rows: NDArray[Any] = arr[labels == self.benign_index]
        return rows

    def _batch_loss(
        self, net: FeedForward, xb: torch.Tensor, yb: torch.Tensor | None
    ) -> torch.Tensor:
        return torch.mean((net(xb) - xb) ** 2)

    # -- scoring ----------------------------------------------------------------------------

    def score(self, X: ArrayLike) -> NDArray[np.float32]:
        """Anomaly score per row: mean squared reconstruction error (higher = stranger)."""
        x = self._to_tensor(X)
        recon = self._predict_raw(x.numpy())
        return torch.mean((recon - x) ** 2, dim=1).numpy().astype(np.float32)

    def attack_score(self, X: ArrayLike) -> NDArray[np.float32]:
        """Alias of :meth:`score`, so detectors share one scoring name."""
        return self.score(X)

    def calibrate(self, X_benign_val: ArrayLike, target_fpr: float | None = None) -> Self:
        """Set ``threshold_`` so that at most ``target_fpr`` of these benign flows exceed it.

        Use benign flows held out from training: on training flows the errors are optimistic
        and the real false-positive rate would come out higher.

        Raises
        ------
        ModelError
            On no flows or a target outside [0, 1).
        """
        fpr = self.target_fpr if target_fpr is None else float(target_fpr)
        try:
            self.threshold_ = threshold_at_fpr(self.score(X_benign_val), fpr)
        except ConfigError as err:
            raise ModelError(f"cannot calibrate the detector: {err.message}") from err
        return self

    def predict(self, X: ArrayLike) -> NDArray[np.int64]:
        """1 for flows scored above ``threshold_`` (anomalous), else 0."""
        if not hasattr(self, "threshold_"):
            raise ModelError(
                "AutoencoderDetector has no threshold_", hint="call calibrate() on benign flows"
            )
        return (self.score(X) > self.threshold_).astype(np.int64)

    def fitted_state(self) -> dict[str, Any]:
        """Fitted scalars saved in a bundle beside the weights."""
        state: dict[str, Any] = {"n_seen_": int(getattr(self, "n_seen_", 0))}
        if hasattr(self, "threshold_"):
            state["threshold_"] = float(self.threshold_)
        return state

    def load_fitted_state(self, state: dict[str, Any]) -> None:
        """Inverse of :meth:`fitted_state`."""
        self.n_seen_ = int(state.get("n_seen_", 0))
        if state.get("threshold_") is not None:
            self.threshold_ = float(state["threshold_"])
