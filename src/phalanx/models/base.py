"""Shared machinery of the torch estimators: the network, the training loop, weights in and out.

This package is the only place where torch tensors and numpy arrays meet. Nothing here touches
torch's global state: initialization draws from a private ``torch.Generator`` and shuffling and
dropout from a numpy ``Generator`` (``rng_``), both derived from the estimator's ``seed`` through
a ``SeedSequence``; thread counts are left to the composition roots.

Weight order
------------
:meth:`TorchEstimator.get_weights` returns one float32 array per entry of the network's
``state_dict()``, in its order: ``layers.0.weight, layers.0.bias, layers.1.weight, ...``
(weight matrices are ``(out_features, in_features)``). The networks have no buffers, so this is
also the order of ``named_parameters()``.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Self, cast

import numpy as np
import torch
from numpy.typing import ArrayLike, NDArray
from torch import nn

from phalanx.core.errors import ModelError
from phalanx.core.types import Weights


def divergence_error(
    what: str, loss: float, opt: torch.optim.Optimizer, batch: float, rows: int
) -> ModelError:
    """The error for training whose loss (``what`` it is, ``loss``) is no longer finite: it
    names the optimizer, its learning rate and the batch size, and what to change."""
    sgd = isinstance(opt, torch.optim.SGD)
    lr = float(opt.param_groups[0]["lr"])
    return ModelError(
        f"training diverged: {what} is {loss} ({'SGD' if sgd else 'Adam'}, lr {lr:g}, batch"
        f" size {batch:g}, {rows} rows); the weights it left are not usable",
        hint="lower the learning rate (--lr; --ae-lr for a hybrid's autoencoder) or raise the"
        " batch size (--batch-size)" + (", or train with --optimizer adam" if sgd else ""),
    )


class FeedForward(nn.Module):
    """Linear layers with ReLU between them and generator-driven (inverted) dropout.

    Parameters
    ----------
    sizes:
        Layer widths from input to output, e.g. ``(122, 256, 128, 11)``.
    dropout:
        Dropout probability after each hidden activation (0 disables it).
    """

    def __init__(self, sizes: Sequence[int], dropout: float = 0.0) -> None:
        super().__init__()
        self.dropout = float(dropout)
        self.layers = nn.ModuleList(
            nn.Linear(a, b, device="meta") for a, b in itertools.pairwise(sizes)
        )

    def reset(self, generator: torch.Generator) -> None:
        """Materialize on CPU and initialize as ``nn.Linear`` does, from ``generator`` only."""
        self.to_empty(device="cpu")
        with torch.no_grad():
            for module in self.layers:
                layer = cast(nn.Linear, module)
                nn.init.kaiming_uniform_(layer.weight, a=math.sqrt(5), generator=generator)
                bound = 1.0 / math.sqrt(layer.in_features)
                layer.bias.uniform_(-bound, bound, generator=generator)

    def forward(self, x: torch.Tensor, rng: np.random.Generator | None = None) -> torch.Tensor:
        """Logits (or reconstructions); dropout applies in training mode when ``rng`` is given."""
        last = len(self.layers) - 1
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < last:
                x = torch.relu(x)
                if self.training and self.dropout > 0.0 and rng is not None:
                    x = x * dropout_mask(rng, tuple(x.shape), self.dropout)
        return x


def dropout_mask(rng: np.random.Generator, shape: tuple[int, ...], p: float) -> torch.Tensor:
    """Inverted-dropout mask: 0 with probability ``p`` (to 1/65536), else ``1 / (1 - p)``.

    Drawn as raw 16-bit integers from a numpy ``Generator``: several times cheaper than torch's
    generator-driven ``bernoulli_``, and it leaves torch's global generator alone.
    """
    size = int(np.prod(shape))
    bits = np.frombuffer(rng.bytes(2 * size), dtype=np.uint16).reshape(shape)
    threshold = np.uint16(min(round(p * 65536), 65535))
    mask = (bits >= threshold).astype(np.float32)
    mask *= np.float32(1.0 / (1.0 - p))
    return torch.from_numpy(mask)


@dataclass
class TrainStats:
    """What one call of the training loop did."""

    loss: float
    """Mean training loss over the last epoch (the objective without the proximal term)."""
    steps: int
    """Optimizer steps taken (the K of SCAFFOLD's option II)."""
    examples: int
    """Rows trained on (each counted once, whatever the number of epochs)."""


class Params:
    """Constructor-parameter plumbing in the scikit-learn style: ``_PARAMS`` names them."""

    _PARAMS: tuple[str, ...] = ()

    def get_params(self) -> dict[str, Any]:
        """Constructor parameters (JSON-ready: tuples become lists)."""
        out: dict[str, Any] = {}
        for name in self._PARAMS:
            value = getattr(self, name)
            out[name] = list(value) if isinstance(value, tuple) else value
        return out

    def __repr__(self) -> str:
        params = ", ".join(f"{k}={v!r}" for k, v in self.get_params().items())
        return f"{type(self).__name__}({params})"


class TorchEstimator(Params):
    """Base of the estimators: parameter handling, lazy network, training loop, weights API.

    Subclasses define ``_PARAMS`` (constructor parameter names), :meth:`_sizes`, and
    :meth:`_batch_loss`.
    """

    n_features: int
    hidden: tuple[int, ...]
    dropout: float
    lr: float
    batch_size: int
    epochs: int
    seed: int
    optimizer: str
    momentum: float
    weight_decay: float

    net_: FeedForward
    rng_: np.random.Generator
    n_seen_: int
    last_stats_: TrainStats
    last_control_: Weights
    last_control_delta_: Weights

    # -- parameters -------------------------------------------------------------------------

    def check_params(self) -> None:
        """Raise :class:`ModelError` when a constructor parameter is out of range."""
        if int(self.n_features) < 1:
            raise ModelError(f"n_features must be >= 1; found {self.n_features}")
        if any(int(h) < 1 for h in self.hidden):
            raise ModelError(f"hidden layer sizes must be >= 1; found {self.hidden}")
        if not 0.0 <= self.dropout < 1.0:
            raise ModelError(f"dropout must be in [0, 1); found {self.dropout}")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ModelError(f"lr must be > 0; found {self.lr}")
        if int(self.batch_size) < 1 or int(self.epochs) < 0:
            raise ModelError(
                f"batch_size must be >= 1 and epochs >= 0; found {self.batch_size}, {self.epochs}"
            )
        if self.optimizer not in ("adam", "sgd"):
            raise ModelError(f"optimizer must be 'adam' or 'sgd'; found {self.optimizer!r}")

    # -- network ----------------------------------------------------------------------------

    def _sizes(self) -> list[int]:
        raise NotImplementedError

    def _dropout(self) -> float:
        return 0.0

    def initialize(self) -> Self:
        """(Re)build the network with fresh weights drawn from ``seed``; forget training."""
        self.check_params()
        seeds = np.random.SeedSequence(int(self.seed)).generate_state(2)
        init = torch.Generator().manual_seed(int(seeds[0]))
        self.rng_ = np.random.default_rng(int(seeds[1]))
        net = FeedForward(self._sizes(), self._dropout())
        net.reset(init)
        self.net_ = net
        self.n_seen_ = 0
        return self

    def reseed(self, seed: int) -> Self:
        """Take the random streams a fresh model of ``seed`` would train with, keeping the network.

        For a model whose weights are about to be replaced (:meth:`set_weights`): training then
        draws exactly what it would after ``initialize()`` with ``seed``, without the cost of
        drawing initial weights that are thrown away.
        """
        self.seed = int(seed)
        seeds = np.random.SeedSequence(int(self.seed)).generate_state(2)
        self.rng_ = np.random.default_rng(int(seeds[1]))
        self.n_seen_ = 0
        return self

    def is_initialized(self) -> bool:
        """Whether the network exists (after :meth:`initialize`, ``fit`` or ``set_weights``)."""
        return hasattr(self, "net_")

    def _require_net(self) -> FeedForward:
        if not self.is_initialized():
            raise ModelError(
                f"{type(self).__name__} has no weights yet",
                hint="call fit(), partial_fit(), initialize() or set_weights() first",
            )
        return self.net_

    # -- weights ----------------------------------------------------------------------------

    def layer_names(self) -> list[str]:
        """Names of the arrays :meth:`get_weights` returns, in order."""
        return list(self._require_net().state_dict().keys())

    def layer_shapes(self) -> list[tuple[int, ...]]:
        """Shapes of the arrays :meth:`get_weights` returns, in order."""
        return [tuple(t.shape) for t in self._require_net().state_dict().values()]

    def expected_layers(self) -> list[tuple[str, tuple[int, ...]]]:
        """``(name, shape)`` of every weight array the parameters describe, without building
        the network (so an absurd architecture can be refused before any allocation)."""
        out: list[tuple[str, tuple[int, ...]]] = []
        for i, (a, b) in enumerate(itertools.pairwise(self._sizes())):
            out += [(f"layers.{i}.weight", (b, a)), (f"layers.{i}.bias", (b,))]
        return out

    def get_weights(self) -> Weights:
        """A copy of the weights as float32 arrays, in ``state_dict`` order (see module doc)."""
        return [
            t.detach().numpy().astype(np.float32, copy=True)
            for t in self._require_net().state_dict().values()
        ]

    def set_weights(self, weights: Sequence[NDArray[Any]]) -> Self:
        """Load weights (creating the network when needed); validated before anything changes.

        Raises
        ------
        ModelError
            When the number of arrays, a shape or a dtype (float32 expected) differs, or a
            value is NaN/infinite; the message names the layer.
        """
        if not self.is_initialized():
            self.initialize()
        state = self.net_.state_dict()
        names = list(state.keys())
        if len(weights) != len(names):
            raise ModelError(
                f"{type(self).__name__} has {len(names)} weight arrays; found {len(weights)}",
                hint="the weights were made for another architecture (hidden sizes, classes)",
            )
        for i, (name, w) in enumerate(zip(names, weights, strict=True)):
            arr = np.asarray(w)
            expected = tuple(state[name].shape)
            if arr.shape != expected:
                raise ModelError(
                    f"layer {i} ({name}): expected shape {expected}; found {arr.shape}",
                    hint="the weights were made for another architecture or feature schema",
                )
            if arr.dtype != np.float32:
                raise ModelError(f"layer {i} ({name}): expected dtype float32; found {arr.dtype}")
            if not np.all(np.isfinite(arr)):
                raise ModelError(f"layer {i} ({name}) contains NaN or infinite values")
        with torch.no_grad():
            for name, w in zip(names, weights, strict=True):
                state[name].copy_(torch.from_numpy(np.array(w, dtype=np.float32, copy=True)))
        return self

    # -- data -------------------------------------------------------------------------------

    def _to_tensor(self, X: ArrayLike) -> torch.Tensor:
        arr = np.asarray(X)
        if arr.ndim != 2 or arr.shape[1] != self.n_features:
            raise ModelError(
                f"X must have shape (n, {self.n_features}); found {arr.shape}",
                hint="the data was transformed with another feature schema",
            )
        arr = np.ascontiguousarray(arr, dtype=np.float32)
        if not arr.flags.writeable:
            arr = arr.copy()
        if not np.isfinite(arr).all():
            bad = int(np.flatnonzero(~np.isfinite(arr).all(axis=1))[0])
            raise ModelError(f"X contains NaN or infinite values (first at row {bad})")
        return torch.from_numpy(arr)

    def _predict_raw(self, X: ArrayLike, chunk: int = 65536) -> torch.Tensor:
        net = self._require_net()
        x = self._to_tensor(X)
        net.eval()
        with torch.inference_mode():
            parts = [net(x[i : i + chunk]) for i in range(0, x.shape[0], chunk)]
        if not parts:
            return torch.zeros((0, self._sizes()[-1]), dtype=torch.float32)
        return torch.cat(parts)

    # -- training ---------------------------------------------------------------------------

    def _batch_loss(
        self, net: FeedForward, xb: torch.Tensor, yb: torch.Tensor | None
    ) -> torch.Tensor:
        raise NotImplementedError

    def _prepare_loss(self, y: torch.Tensor | None) -> None:
        """Hook run once per training call with the targets (class weights, ...)."""

    def _train(
        self,
        x: torch.Tensor,
        y: torch.Tensor | None,
        *,
        epochs: int,
        proximal_mu: float = 0.0,
        reference: Weights | None = None,
        control: tuple[Weights, Weights] | None = None,
        rows: torch.Tensor | None = None,
    ) -> TrainStats:
        """The training loop shared by every estimator.

        ``rows`` lists the row indices one epoch presents, in any order (each epoch shuffles
        them); ``None`` presents every row once. Oversampling repeats some rows there; the loss
        hook (:meth:`_prepare_loss`) then sees the presented labels, and the returned
        ``examples`` stays the number of distinct rows.

        ``proximal_mu`` with ``reference`` adds the FedProx gradient ``mu * (w - w_ref)``
        (Li et al., 2020). ``control = (c, c_i)`` adds SCAFFOLD's correction ``c - c_i`` to
        every gradient and forces plain SGD (Karimireddy et al., 2020); after training,
        ``last_control_`` holds the new ``c_i`` and ``last_control_delta_`` the difference,
        by option II: ``c_i+ = c_i - c + (x - y_i) / (K * lr)``.
        """
        net = self._require_net()
        if proximal_mu < 0 or not math.isfinite(proximal_mu):
            raise ModelError(f"proximal_mu must be >= 0; found {proximal_mu}")
        names = list(net.state_dict().keys())
        params = dict(net.named_parameters())
        ordered = [params[n] for n in names]
        ref = self._tensors(reference, "reference") if proximal_mu > 0 else None
        if proximal_mu > 0 and ref is None:
            raise ModelError("proximal_mu > 0 needs the reference (global) weights")
        correction: list[torch.Tensor] | None = None
        start: list[torch.Tensor] = []
        if control is not None:
            c = self._tensors(control[0], "control") or []
            c_i = self._tensors(control[1], "local control") or []
            correction = [a - b for a, b in zip(c, c_i, strict=True)]
            start = [p.detach().clone() for p in ordered]
        n = x.shape[0]
        presented = n if rows is None else int(rows.numel())
        self._prepare_loss(y if y is None or rows is None else y.index_select(0, rows))
        opt: torch.optim.Optimizer
        if control is not None or self.optimizer == "sgd":
            momentum = 0.0 if control is not None else self.momentum
            opt = torch.optim.SGD(
                ordered,
                lr=self.lr,
                momentum=momentum,
                weight_decay=0.0 if control is not None else self.weight_decay,
            )
        else:
            opt = torch.optim.Adam(ordered, lr=self.lr, weight_decay=self.weight_decay, fused=True)
        bs = int(self.batch_size)
        steps, epoch_loss = 0, math.nan
        net.train()
        for epoch in range(epochs):
            perm = torch.from_numpy(self.rng_.permutation(presented))
            total = torch.zeros((), dtype=torch.float64)
            for i in range(0, presented, bs):
                idx = perm[i : i + bs] if rows is None else rows.index_select(0, perm[i : i + bs])
                xb = x.index_select(0, idx)
                yb = None if y is None else y.index_select(0, idx)
                loss = self._batch_loss(net, xb, yb)
                opt.zero_grad(set_to_none=False)
                loss.backward()  # type: ignore[no-untyped-call]
                with torch.no_grad():
                    if ref is not None:
                        for p, r in zip(ordered, ref, strict=True):
                            p.grad.add_(p - r, alpha=proximal_mu)  # type: ignore[union-attr]
                    if correction is not None:
                        for p, corr in zip(ordered, correction, strict=True):
                            p.grad.add_(corr)  # type: ignore[union-attr]
                opt.step()
                total += loss.detach() * idx.numel()
                steps += 1
            epoch_loss = float(total) / presented if presented else math.nan
            if presented and not math.isfinite(epoch_loss):
                net.eval()
                raise divergence_error(
                    f"the mean loss of epoch {epoch + 1} of {epochs}", epoch_loss, opt, bs, n
                )
        net.eval()
        if control is not None:
            self._finish_scaffold(control, start, ordered, steps)
        self.n_seen_ = getattr(self, "n_seen_", 0) + (n if epochs > 0 else 0)
        stats = TrainStats(loss=epoch_loss, steps=steps, examples=n)
        self.last_stats_ = stats
        return stats

    def _finish_scaffold(
        self,
        control: tuple[Weights, Weights],
        start: list[torch.Tensor],
        end: list[torch.nn.Parameter],
        steps: int,
    ) -> None:
        c, c_i = control
        new_c: Weights = []
        delta: Weights = []
        for k, (x0, y_end) in enumerate(zip(start, end, strict=True)):
            if steps > 0:
                drift = (x0 - y_end.detach()).numpy().astype(np.float64) / (steps * self.lr)
                ci_new = c_i[k].astype(np.float64) - c[k].astype(np.float64) + drift
            else:
                ci_new = c_i[k].astype(np.float64)
            new_c.append(ci_new.astype(np.float32))
            delta.append((ci_new - c_i[k].astype(np.float64)).astype(np.float32))
        self.last_control_ = new_c
        self.last_control_delta_ = delta

    def _tensors(self, weights: Weights | None, what: str) -> list[torch.Tensor] | None:
        if weights is None:
            return None
        shapes = self.layer_shapes()
        if len(weights) != len(shapes):
            raise ModelError(f"{what} has {len(weights)} arrays; expected {len(shapes)}")
        out = []
        for i, (w, shape) in enumerate(zip(weights, shapes, strict=True)):
            if np.shape(w) != shape:
                raise ModelError(f"{what} layer {i}: expected shape {shape}; found {np.shape(w)}")
            out.append(torch.from_numpy(np.array(w, dtype=np.float32, copy=True)))
        return out
