"""Exact fast scoring of the MLP classifier: the one-hot blocks of its input as row gathers.

The feature transform's matrix is ``[numeric | one-hot(c_1) | ... | one-hot(c_m)]`` with exactly
one 1 in each one-hot block (:class:`~phalanx.core.features.transform.FeatureTransform`). So the
first layer ``x @ W1^T + b1`` equals ``numeric @ Wn^T + b1 + E[h_1] + ... + E[h_m]``, where
``Wn`` is the numeric slice of ``W1``, ``E = W1[:, k:]^T`` (one row per one-hot column) and
``h_j`` the hot column of block ``j``: an *embedding bag* (a summed row gather, as fastText's
input layer: Joulin, Grave, Bojanowski, Mikolov, "Bag of Tricks for Efficient Text
Classification", EACL 2017). Exact up to the order of the float additions; for the NetFlow v2
schema (36 numeric columns, 208 one-hot columns, hidden 256-128) the multiply-adds per flow fall
from 96.7k to 43.5k, and the 244-wide matrix is never built.

:class:`CompactInput` is that representation (numeric block plus hot columns);
:class:`CompactScorer` scores it in cache-sized chunks (torch uses as many threads as the caller
set) and explains alerts with gradient x input of the attack log-odds, exactly as
:func:`phalanx.models.explain.attributions` does on the dense matrix (Shrikumar et al.,
arXiv:1605.01713, 2016): the one-hot block of column ``j`` contributes ``grad(h1) . E[h_j]``, the
gradient at its hot column times 1.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import torch
from numpy.typing import NDArray
from torch.nn import functional as F

from phalanx.core.errors import ModelError
from phalanx.core.features.batch import FlowBatch
from phalanx.core.features.hashing import hash_buckets
from phalanx.core.features.stats import heavy_mask, prescale
from phalanx.core.features.transform import FeatureTransform
from phalanx.models.mlp import MLPClassifier

SCORE_CHUNK = 2048
"""Rows per forward pass: the activations (2048 x 256 float32, 2 MiB) stay in cache; measured
best (1024-4096 within 10 %) with one and two threads on the bench's 244-256-128-11 model."""
_CHUNK = 1 << 14


@dataclass(frozen=True)
class CompactInput:
    """The transform's matrix without its zeros.

    Attributes
    ----------
    numeric:
        ``(n, k)`` float32, equal to the first ``k`` columns of ``transform.transform(batch)``.
    hot:
        ``(n, m)`` int64: for each categorical column, the index of its hot column counted from
        the start of the one-hot part (the dense column is ``k + hot``).
    """

    numeric: NDArray[np.float32]
    hot: NDArray[np.int64]

    def __len__(self) -> int:
        return int(self.numeric.shape[0])

    def take(self, rows: NDArray[np.intp]) -> CompactInput:
        """The selected rows."""
        return CompactInput(self.numeric[rows], self.hot[rows])

    def dense(self, n_features: int) -> NDArray[np.float32]:
        """The transform's ``(n, n_features)`` matrix these rows stand for."""
        n, k = self.numeric.shape
        out = np.zeros((n, n_features), dtype=np.float32)
        out[:, :k] = self.numeric
        rows = np.arange(n)[:, None]
        out[rows, k + self.hot] = 1.0
        return out


def compact_features(transform: FeatureTransform, batch: FlowBatch) -> CompactInput:
    """``transform.transform(batch)`` in compact form (bit for bit the same values).

    The numeric block repeats the transform's steps (signed log of heavy-tailed columns,
    standardize, impute non-finite at 0, clip); ``tests/models/test_compact.py`` checks it equals
    the transform's output exactly, so the two cannot drift apart unnoticed.
    """
    schema = transform.schema
    transform.require_schema(batch)
    numeric = np.empty((len(batch), len(schema.numeric)), dtype=np.float32)
    heavy = heavy_mask(schema)
    for start in range(0, len(batch), _CHUNK):  # chunks keep the temporaries in cache
        x = prescale(batch.numeric[start : start + _CHUNK], heavy)
        with np.errstate(over="ignore", invalid="ignore"):
            x -= transform.mean
            x /= transform.scale
        x[~np.isfinite(x)] = 0.0
        np.clip(x, -transform.clip, transform.clip, out=x)
        numeric[start : start + _CHUNK] = x
    hot = np.empty((len(batch), len(schema.categorical)), dtype=np.int64)
    offset = 0
    for j, name in enumerate(schema.categorical):
        b = schema.column(name).buckets
        hot[:, j] = offset + _buckets(batch.categorical[:, j], b)
        offset += b
    return CompactInput(numeric, hot)


def _buckets(values: NDArray[np.generic], buckets: int) -> NDArray[np.int64]:
    """:func:`hash_buckets` of a column, its distinct strings found by arrow's hash table."""
    try:
        encoded = pc.dictionary_encode(pa.array(values, pa.string()))
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return hash_buckets(values, buckets)
    if encoded.null_count:
        return hash_buckets(values, buckets)
    table = hash_buckets(encoded.dictionary.to_numpy(zero_copy_only=False), buckets)
    buckets_of_rows: NDArray[np.int64] = table[encoded.indices.to_numpy()]
    return buckets_of_rows


class CompactScorer:
    """The classifier's attack score, category and explanation from :class:`CompactInput`.

    A snapshot of the model's weights at construction: build a new scorer after the weights
    change.

    Parameters
    ----------
    model:
        A fitted (or loaded) classifier.
    n_numeric:
        ``k``, the width of the numeric block (the schema's numeric columns).
    """

    def __init__(self, model: MLPClassifier, n_numeric: int) -> None:
        net = model._require_net()
        layers = [layer for layer in net.layers if isinstance(layer, torch.nn.Linear)]
        if not layers or not 0 <= n_numeric <= layers[0].in_features:
            raise ModelError(
                f"a compact scorer needs {n_numeric} numeric inputs within the model's"
                f" {layers[0].in_features if layers else 0}",
                hint="the model and the feature transform come from different runs",
            )
        with torch.no_grad():
            w1 = layers[0].weight.detach()
            self.numeric_weight = w1[:, :n_numeric].t().contiguous()
            self.table = w1[:, n_numeric:].t().contiguous()
            self.bias = layers[0].bias.detach().clone()
            self.rest = [
                (lay.weight.detach().clone(), lay.bias.detach().clone()) for lay in layers[1:]
            ]
        self.n_numeric = int(n_numeric)
        self.benign = int(model.benign_index)
        self.n_classes = int(layers[-1].out_features)
        # The output layer is run padded with zero rows to a multiple of 8 outputs (11 -> 16):
        # the matrix kernels take twice as long for 11 columns as for 16. The padded logits are
        # dropped before the softmax; the backward pass uses the layer as it is.
        self.forward_layers = list(self.rest)
        if self.rest and self.n_classes % 8:
            weight, bias = self.rest[-1]
            width = -(-self.n_classes // 8) * 8
            padded = torch.zeros((width, weight.shape[1]), dtype=weight.dtype)
            padded[: self.n_classes] = weight
            padded_bias = torch.zeros(width, dtype=bias.dtype)
            padded_bias[: self.n_classes] = bias
            self.forward_layers[-1] = (padded, padded_bias)

    def _first(self, num: torch.Tensor, hot: torch.Tensor) -> torch.Tensor:
        h = torch.addmm(self.bias, num, self.numeric_weight)
        return h + F.embedding_bag(hot, self.table, mode="sum")

    def _forward(self, num: torch.Tensor, hot: torch.Tensor) -> list[torch.Tensor]:
        """The pre-activations of every layer; the last one is the logits."""
        pre = [self._first(num, hot)]
        for weight, bias in self.forward_layers:
            pre.append(F.linear(torch.relu(pre[-1]), weight, bias))
        pre[-1] = pre[-1][:, : self.n_classes]
        return pre

    @staticmethod
    def _softmax(logits: torch.Tensor) -> torch.Tensor:
        """Row softmax (five times faster than ``torch.softmax`` over 11 columns)."""
        e = (logits - logits.amax(dim=1, keepdim=True)).exp_()
        return e.div_(e.sum(dim=1, keepdim=True))

    def _tensors(self, x: CompactInput, start: int, stop: int) -> tuple[torch.Tensor, torch.Tensor]:
        if x.numeric.shape[1] != self.n_numeric:
            raise ModelError(
                f"compact input has {x.numeric.shape[1]} numeric columns; the scorer expects"
                f" {self.n_numeric}",
                hint="build the input with the model's own feature transform",
            )
        num = torch.from_numpy(np.ascontiguousarray(x.numeric[start:stop], dtype=np.float32))
        return num, torch.from_numpy(np.ascontiguousarray(x.hot[start:stop], dtype=np.int64))

    def predict_proba(self, x: CompactInput, chunk: int = SCORE_CHUNK) -> NDArray[np.float32]:
        """Class probabilities ``(n, n_classes)``, as :meth:`MLPClassifier.predict_proba`."""
        out = np.empty((len(x), self.n_classes), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(x), chunk):
                logits = self._forward(*self._tensors(x, start, start + chunk))[-1]
                out[start : start + chunk] = self._softmax(logits).numpy()
        return out

    def score(
        self, x: CompactInput, chunk: int = SCORE_CHUNK, *, explain_above: float | None = None
    ) -> Scored:
        """Attack score ``1 - P(benign)`` and the most probable attack class of every row, and
        the attributions of the rows scored above ``explain_above`` (none when ``None``).

        The class is the argmax of the probabilities with the benign column masked (the first
        one on ties), as the detector has always chosen it. Explaining the high rows here reuses
        their forward pass, still in cache.
        """
        n, width = len(x), self.n_numeric + x.hot.shape[1]
        score = np.empty(n, dtype=np.float32)
        best = np.empty(n, dtype=np.int64)
        rows: list[NDArray[np.intp]] = [np.zeros(0, dtype=np.intp)]
        attr: list[NDArray[np.float32]] = [np.zeros((0, width), dtype=np.float32)]
        with torch.inference_mode():
            for start in range(0, n, chunk):
                num, hot = self._tensors(x, start, start + chunk)
                pre = self._forward(num, hot)
                proba = self._softmax(pre[-1])
                part = (1.0 - proba[:, self.benign]).numpy()
                score[start : start + chunk] = part
                proba[:, self.benign] = -1.0
                best[start : start + chunk] = proba.argmax(dim=1).numpy()
                if explain_above is None:
                    continue
                high = np.flatnonzero(part > explain_above)
                if high.size:
                    pick = torch.from_numpy(high)
                    chosen = [p.index_select(0, pick) for p in pre]
                    attr.append(self._explain(chosen, num[pick], hot[pick]).numpy())
                    rows.append(high + start)
        return Scored(score, best, np.concatenate(rows), np.concatenate(attr))

    def attributions(self, x: CompactInput, chunk: int = SCORE_CHUNK) -> NDArray[np.float32]:
        """Gradient x input of the attack log-odds per schema column: ``(n, k + m)``.

        Columns in :func:`phalanx.models.explain.column_groups` order (numeric, then each
        categorical column); equal, up to float summation order, to
        :func:`phalanx.models.explain.attributions` on the dense matrix.
        """
        out = np.empty((len(x), self.n_numeric + x.hot.shape[1]), dtype=np.float32)
        with torch.inference_mode():
            for start in range(0, len(x), chunk):
                num, hot = self._tensors(x, start, start + chunk)
                out[start : start + num.shape[0]] = self._explain(
                    self._forward(num, hot), num, hot
                ).numpy()
        return out

    def _explain(
        self, pre: list[torch.Tensor], num: torch.Tensor, hot: torch.Tensor
    ) -> torch.Tensor:
        """Gradient x input per schema column, from the pre-activations of the rows.

        The gradient is taken by hand (backpropagation through the ReLU layers: Rumelhart,
        Hinton, Williams, Nature 323, 1986): two matrix products per layer, no autograd graph.
        The derivative of ``logsumexp(attack logits) - benign logit`` with respect to the logits
        is the softmax over the attack classes, and -1 at the benign class.
        """
        masked = pre[-1].clone()
        masked[:, self.benign] = -torch.inf
        g = self._softmax(masked)
        g[:, self.benign] = -1.0
        for (weight, _), z in zip(reversed(self.rest), reversed(pre[:-1]), strict=True):
            g = (g @ weight).mul_(z > 0)
        out = torch.empty((num.shape[0], self.n_numeric + hot.shape[1]), dtype=torch.float32)
        out[:, : self.n_numeric] = (g @ self.numeric_weight.t()).mul_(num)
        for j in range(hot.shape[1]):
            out[:, self.n_numeric + j] = (F.embedding(hot[:, j], self.table) * g).sum(dim=1)
        return out


@dataclass(frozen=True)
class Scored:
    """What :meth:`CompactScorer.score` returns.

    Attributes
    ----------
    score, best:
        ``(n,)`` attack score and most probable attack class of every row.
    explained, attributions:
        The rows scored above the explanation threshold (ascending) and their
        ``(len(explained), k + m)`` attributions.
    """

    score: NDArray[np.float32]
    best: NDArray[np.int64]
    explained: NDArray[np.intp]
    attributions: NDArray[np.float32]


__all__ = ["SCORE_CHUNK", "CompactInput", "CompactScorer", "Scored", "compact_features"]
