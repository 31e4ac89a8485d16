"""The scoring graph of a detector, and why it scored a flow high (gradient x input).

:class:`ScoringNet` is the whole scoring computation as one torch module, from the transformed
feature matrix to the attack score: ``1 - P(benign)`` for the MLP classifier (with the class
probabilities as a second output), the mean squared reconstruction error for the autoencoder.
The ONNX export (:mod:`phalanx.models.onnx`) and the explanations both use it, so they explain
exactly what is scored.

Attribution is gradient x input (Shrikumar, Greenside, Shcherbina, Kundaje, "Not Just a Black
Box: Learning Important Features Through Propagating Activation Differences", arXiv:1605.01713,
2016; Simonyan, Vedaldi, Zisserman, "Deep Inside Convolutional Networks", ICLR workshop 2014)
against the training mean: the transform standardizes every numeric feature, so ``x`` is already
the flow's difference from the average training flow, and ``grad(score) * x`` is the first-order
share of each feature in the score's departure from it. One-hot buckets of a categorical column
are summed into that column, so an alert names columns a person recognises (``L4_DST_PORT``).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from numpy.typing import NDArray
from torch import nn

from phalanx.core.errors import ModelError
from phalanx.core.features.schema import FeatureSchema
from phalanx.models.autoencoder import AutoencoderDetector
from phalanx.models.base import FeedForward
from phalanx.models.hybrid import HybridDetector
from phalanx.models.mlp import MLPClassifier

Model = MLPClassifier | AutoencoderDetector


class ScoringNet(nn.Module):
    """Transformed features ``(n, d)`` -> attack score ``(n,)`` (and class probabilities).

    Parameters
    ----------
    model:
        A fitted (or loaded) detector; its network is shared, not copied.
    """

    def __init__(self, model: Model | HybridDetector) -> None:
        super().__init__()
        if isinstance(model, HybridDetector):  # two networks and an OR: no single graph
            raise ModelError(
                "a hybrid model has no single scoring graph (ONNX export is not supported)",
                hint="export the classifier from an `--model mlp` run, or score with"
                " `phalanx detect`",
            )
        net = getattr(model, "net_", None)
        if not isinstance(net, FeedForward):
            raise ModelError(f"{type(model).__name__} has no network yet", hint="fit or load it")
        self.net = net
        self.classifier = isinstance(model, MLPClassifier)
        self.benign = int(model.benign_index) if isinstance(model, MLPClassifier) else 0

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        """``(score,)`` for the autoencoder; ``(score, proba)`` for the classifier."""
        out = self.net(x)
        if self.classifier:
            proba = torch.softmax(out, dim=1)
            return 1.0 - proba[:, self.benign], proba
        return (torch.mean((out - x) ** 2, dim=1),)


def column_groups(schema: FeatureSchema) -> tuple[tuple[str, ...], list[NDArray[np.intp]]]:
    """Schema feature columns and, for each, its indices in the transformed matrix.

    The layout is :class:`~phalanx.core.features.transform.FeatureTransform`'s: numeric columns
    first, then each categorical column's one-hot buckets.
    """
    names: list[str] = list(schema.numeric)
    groups: list[NDArray[np.intp]] = [np.array([j], dtype=np.intp) for j in range(len(names))]
    offset = len(names)
    for c in schema.categorical:
        b = schema.column(c).buckets
        names.append(c)
        groups.append(np.arange(offset, offset + b, dtype=np.intp))
        offset += b
    return tuple(names), groups


def attributions(
    model: Model, x: NDArray[np.float32], groups: Sequence[NDArray[np.intp]], chunk: int = 8192
) -> NDArray[np.float32]:
    """Gradient x input of the attack score, summed per column group: ``(n, len(groups))``.

    For the classifier the attack log-odds are attributed (see :func:`_explained`).
    """
    scorer = ScoringNet(model)
    scorer.eval()
    n = x.shape[0]
    out = np.zeros((n, len(groups)), dtype=np.float32)
    index = np.zeros(x.shape[1], dtype=np.intp)
    for g, cols in enumerate(groups):
        index[cols] = g
    for start in range(0, n, chunk):
        xb = torch.from_numpy(np.ascontiguousarray(x[start : start + chunk], dtype=np.float32))
        xb.requires_grad_(True)
        (grad,) = torch.autograd.grad(_explained(scorer, xb).sum(), xb)
        contrib = (grad * xb).detach().numpy()
        summed = np.zeros((contrib.shape[0], len(groups)), dtype=np.float32)
        np.add.at(summed.T, index, contrib.T)
        out[start : start + chunk] = summed
    return out


def _explained(scorer: ScoringNet, x: torch.Tensor) -> torch.Tensor:
    """What is attributed: the classifier's attack log-odds ``log(P(attack) / P(benign))``
    (monotone in the score and, unlike ``1 - P(benign)``, not flat where the softmax saturates),
    or the autoencoder's reconstruction error."""
    if not scorer.classifier:
        score: torch.Tensor = scorer(x)[0]
        return score
    logits: torch.Tensor = scorer.net(x)
    keep = torch.ones(logits.shape[1], dtype=torch.bool)
    keep[scorer.benign] = False
    odds: torch.Tensor = torch.logsumexp(logits[:, keep], dim=1) - logits[:, scorer.benign]
    return odds


def top_columns(attr: NDArray[np.float32], k: int) -> tuple[NDArray[np.intp], NDArray[np.float32]]:
    """The ``k`` columns with the largest attributions of each row, largest first (ties: the
    first column), and their values rounded to 6 decimals: two ``(n, min(k, columns))`` arrays.
    """
    k = max(0, min(k, attr.shape[1]))
    order = np.argsort(-attr, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(attr, order, axis=1).round(6)


def top_features(
    attr: NDArray[np.float32], names: Sequence[str], k: int
) -> list[list[tuple[str, float]]]:
    """The ``k`` columns pushing each row's score up the most, largest first (positive only)."""
    if attr.shape[0] == 0 or k <= 0:
        return [[] for _ in range(attr.shape[0])]
    order, rounded = top_columns(attr, k)
    values = rounded.tolist()
    label = np.asarray(names, dtype=object)[order].tolist()
    return [
        [(n, v) for n, v in zip(row_names, row_values, strict=True) if v > 0]
        for row_names, row_values in zip(label, values, strict=True)
    ]
