"""Record-level DP-SGD for a participant's local training.

Abadi et al., "Deep Learning with Differential Privacy", CCS 2016 (Algorithm 1), with Poisson
sampling of each step's batch so the accountant may use amplification by subsampling (Mironov,
Talwar and Zhang, 2019): every step

1. samples each local example independently with probability ``q``; for a classifier with
   ``class_weight="balanced"`` and ``class_balance > 0``, with its class's rate ``q_c <= q``
   instead (:func:`phalanx.core.privacy.spec.class_inclusion_rates`: *class-balanced Poisson
   sampling*, the rarest class at ``q``, commoner ones less often). A classifier's loss
   carries no class weights under DP-SGD: per-example clipping undoes their up-scaling of
   rare examples' gradients, and they would make the loss depend on the label histogram
   (``docs/privacy.md``, "Class balance under DP");
2. computes each sampled example's gradient (``torch.func``: ``functional_call``, ``vmap``,
   ``grad``, as Opacus' functorch mode does), and clips it to L2 norm ``max_grad_norm``;
3. sums the clipped gradients, adds Gaussian noise ``N(0, (z * max_grad_norm)^2)`` and divides
   by the *expected* batch size ``q * n`` (a fixed denominator, so one example moves the
   gradient by at most ``max_grad_norm / (q n)``);
4. hands that gradient to the model's optimizer (Adam or SGD: post-processing).

The noise and the batch sampling come from the generator the caller passes: in production
:func:`phalanx.core.privacy.secure_generator` (an adversary who knows which examples were sampled
would void the amplification). Dropout is off in DP-SGD (it would draw one mask per batch under
``vmap``); the noise regularizes instead. The schedule (``q`` and the number of steps) is
:func:`phalanx.core.privacy.record_schedule`, the same function the participant's accountant
charges, so what is spent is what is run.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import cast

import numpy as np
import torch
from numpy.typing import ArrayLike
from torch.func import functional_call, grad, vmap
from torch.nn import functional as F

from phalanx.core.errors import ConfigError, ModelError
from phalanx.core.privacy.spec import class_inclusion_rates, record_schedule
from phalanx.core.types import Weights
from phalanx.models.autoencoder import AutoencoderDetector
from phalanx.models.base import TrainStats, divergence_error
from phalanx.models.mlp import CLASS_WEIGHT_CLIP, MLPClassifier

Model = MLPClassifier | AutoencoderDetector


@dataclass(frozen=True)
class DPSGDStats:
    """What one DP-SGD call ran (the participant checks it against what it charged)."""

    sampling_rate: float
    steps: int
    noise_multiplier: float
    max_grad_norm: float
    clipped_fraction: float
    """Share of per-example gradients that the clipping norm shrank (a tuning aid)."""
    class_rates: tuple[float, ...] = ()
    """Per-class inclusion rates of class-balanced sampling (empty: every example at
    ``sampling_rate``); each is at most ``sampling_rate``, the rate the accountant charges."""


def dp_sgd_fit(
    model: Model,
    X: ArrayLike,
    y: ArrayLike | None,
    *,
    epochs: int,
    noise_multiplier: float,
    max_grad_norm: float,
    rng: np.random.Generator,
    proximal_mu: float = 0.0,
    reference: Weights | None = None,
    class_balance: float = 0.0,
) -> DPSGDStats:
    """Train ``model`` in place with DP-SGD for ``epochs`` expected passes over the data.

    Parameters
    ----------
    model:
        An initialized :class:`MLPClassifier` (needs ``y``) or :class:`AutoencoderDetector`
        (trains on benign rows only); its ``batch_size`` is the expected batch size.
    X, y:
        Local data.
    epochs:
        Expected passes; the step count is ``epochs * ceil(n / batch_size)``.
    noise_multiplier:
        ``z`` (> 0): the noise std over ``max_grad_norm``.
    max_grad_norm:
        Per-example clipping norm ``C`` (> 0).
    rng:
        Source of the batch sampling and the noise (secure in production).
    proximal_mu, reference:
        FedProx term, added to the noisy gradient (it depends on no example).
    class_balance:
        For a classifier with ``class_weight="balanced"``: the exponent of class-balanced
        sampling (0, the default, uniform at ``q``; 1 fully balanced; see
        :func:`~phalanx.core.privacy.spec.class_inclusion_rates`). The loss carries no class
        weights in either case. Ignored for other models.

    Returns
    -------
    DPSGDStats
        The schedule actually run; ``model.last_stats_`` is set as by ``partial_fit``.

    Raises
    ------
    ConfigError
        On a noise multiplier or clipping norm that is not a positive number, or a model that
        oversamples rare classes (``min_class_rows``).
    ModelError
        When there is nothing to train on or the data does not fit the model.
    """
    if not (math.isfinite(noise_multiplier) and noise_multiplier > 0):
        raise ConfigError(f"DP-SGD noise_multiplier must be > 0; found {noise_multiplier}")
    if not (math.isfinite(max_grad_norm) and max_grad_norm > 0):
        raise ConfigError(f"DP-SGD max_grad_norm must be > 0; found {max_grad_norm}")
    oversample = int(getattr(model, "min_class_rows", 0))
    if oversample > 1:
        raise ConfigError(
            f"DP-SGD cannot train a model with min_class_rows = {oversample}: its"
            " accounting samples each record once per step, and oversampling repeats records",
            hint="set min_class_rows to 0; class_balance gives DP-SGD its own class-balanced"
            " sampling",
        )
    net = model._require_net()
    if isinstance(model, AutoencoderDetector):
        x = model._to_tensor(model.benign_rows(X, y))
        target: torch.Tensor | None = None
        weight = None
    else:
        if y is None:
            raise ModelError("MLPClassifier needs labels (y) for DP-SGD")
        x = model._to_tensor(X)
        target = model._targets(y, x.shape[0])
        model._prepare_loss(target)
        weight = model._loss_weight
    n = int(x.shape[0])
    if n == 0:
        raise ModelError("no local training examples for DP-SGD")
    q, steps = record_schedule(n, int(model.batch_size), int(epochs))
    class_rates: tuple[float, ...] = ()
    rate: float | np.ndarray = q
    if target is not None and isinstance(model, MLPClassifier) and model.class_weight:
        counts = np.bincount(target.numpy(), minlength=int(model.n_classes))
        rates = class_inclusion_rates(
            counts, q, weight_bounds=CLASS_WEIGHT_CLIP, balance=class_balance
        )
        class_rates = tuple(float(r) for r in rates)
        rate = rates[target.numpy()]  # per example; the sampling replaces the loss weights
        weight = None
    names = list(net.state_dict().keys())
    params = dict(net.named_parameters())
    ordered = [params[k] for k in names]
    ref = model._tensors(reference, "reference") if proximal_mu > 0 else None
    opt: torch.optim.Optimizer
    if model.optimizer == "sgd":
        opt = torch.optim.SGD(
            ordered, lr=model.lr, momentum=model.momentum, weight_decay=model.weight_decay
        )
    else:
        opt = torch.optim.Adam(ordered, lr=model.lr, weight_decay=model.weight_decay)
    offset: torch.Tensor | None = getattr(model, "_logit_offset", None)
    smoothing = float(getattr(model, "label_smoothing", 0.0))
    example_grads = _example_grads(
        net, weight, offset, smoothing=smoothing, autoencoder=target is None
    )
    expected = q * n
    std = noise_multiplier * max_grad_norm
    clipped = seen = 0
    total_loss, loss_rows = 0.0, 0
    net.eval()  # no dropout: see the module docstring
    for _ in range(steps):
        idx = poisson_sample(rate, n, rng)
        summed = [torch.zeros_like(p) for p in ordered]
        if idx.size:
            sel = torch.from_numpy(idx)
            xb = x.index_select(0, sel)
            yb = None if target is None else target.index_select(0, sel)
            detached = {k: params[k].detach() for k in names}
            grads, losses = example_grads(detached, xb, yb)
            squares = [grads[k].reshape(idx.size, -1).pow(2).sum(dim=1) for k in names]
            norms = torch.stack(squares).sum(dim=0).sqrt()
            factor = torch.clamp(max_grad_norm / (norms + 1e-12), max=1.0)
            clipped += int((norms > max_grad_norm).sum())
            seen += int(idx.size)
            summed = [torch.tensordot(factor, grads[k], dims=1) for k in names]
            total_loss += float(losses.sum())
            loss_rows += int(idx.size)
        with torch.no_grad():
            for k, (p, s) in enumerate(zip(ordered, summed, strict=True)):
                noise = torch.from_numpy(
                    rng.normal(0.0, std, size=tuple(p.shape)).astype(np.float32)
                )
                p.grad = (s + noise) / expected
                if ref is not None:
                    p.grad.add_(p - ref[k], alpha=proximal_mu)
        opt.step()
        opt.zero_grad(set_to_none=True)
    if loss_rows and not math.isfinite(total_loss):
        raise divergence_error(
            f"the mean loss of the DP-SGD run ({steps} steps)", total_loss / loss_rows, opt,
            expected, n,
        )  # fmt: skip
    model.n_seen_ = getattr(model, "n_seen_", 0) + (n if epochs > 0 else 0)
    model.last_stats_ = TrainStats(
        loss=total_loss / loss_rows if loss_rows else math.nan, steps=steps, examples=n
    )
    return DPSGDStats(
        sampling_rate=q,
        steps=steps,
        noise_multiplier=float(noise_multiplier),
        max_grad_norm=float(max_grad_norm),
        clipped_fraction=clipped / seen if seen else 0.0,
        class_rates=class_rates,
    )


def poisson_sample(rate: float | np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    """Indices of one Poisson sample: example ``i`` is included independently with
    probability ``rate`` (a scalar, or one rate per example)."""
    return np.flatnonzero(rng.random(n) < rate)


GradFn = Callable[
    [dict[str, torch.Tensor], torch.Tensor, torch.Tensor | None],
    tuple[dict[str, torch.Tensor], torch.Tensor],
]


def _example_grads(
    net: torch.nn.Module,
    weight: torch.Tensor | None,
    offset: torch.Tensor | None,
    *,
    smoothing: float,
    autoencoder: bool,
) -> GradFn:
    """Per-example gradients and losses of a batch, by ``vmap`` over ``grad``.

    The classifier's per-example loss is the model's own training loss for one example: the
    cross-entropy of ``logits + offset`` (logit adjustment, when the model uses it) with label
    smoothing, times the example's class weight (``reduction="sum"``: a one-example *mean*
    would divide the weight out again).
    """

    def logits_of(p: dict[str, torch.Tensor], xb: torch.Tensor) -> torch.Tensor:
        out = cast(torch.Tensor, functional_call(net, p, (xb,)))
        return out if offset is None else out + offset

    def loss_ae(p: dict[str, torch.Tensor], xi: torch.Tensor) -> torch.Tensor:
        xb = xi.unsqueeze(0)
        out = cast(torch.Tensor, functional_call(net, p, (xb,)))
        return torch.mean((out - xb) ** 2)

    def loss_clf(p: dict[str, torch.Tensor], xi: torch.Tensor, yi: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(
            logits_of(p, xi.unsqueeze(0)),
            yi.unsqueeze(0),
            weight=weight,
            reduction="sum",
            label_smoothing=smoothing,
        )

    def run(
        p: dict[str, torch.Tensor], xb: torch.Tensor, yb: torch.Tensor | None
    ) -> tuple[dict[str, torch.Tensor], torch.Tensor]:
        if autoencoder:
            g_ae = vmap(grad(loss_ae, has_aux=False), in_dims=(None, 0))(p, xb)
            with torch.no_grad():
                losses = torch.mean((net(xb) - xb) ** 2, dim=1)
            return cast(dict[str, torch.Tensor], g_ae), losses
        if yb is None:
            raise ModelError("a classifier needs labels for DP-SGD")
        g = vmap(grad(loss_clf), in_dims=(None, 0, 0))(p, xb, yb)
        with torch.no_grad():
            logits = net(xb) if offset is None else net(xb) + offset
            losses = F.cross_entropy(
                logits, yb, weight=weight, reduction="none", label_smoothing=smoothing
            )
        return cast(dict[str, torch.Tensor], g), losses

    return run
