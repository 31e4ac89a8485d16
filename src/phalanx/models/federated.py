"""A participant's side of a training task: build the model, train locally, pack the answer.

The server algorithm (``phalanx.core.aggregation``) says what it needs through the task's
``config`` and ``extras``; :func:`local_train` turns them into the matching ``partial_fit`` call
and returns the payload of an :class:`~phalanx.core.types.Update`.

========================  ====================================================================
config key                meaning
========================  ====================================================================
``local_epochs``          local passes over the data (default: the model's ``epochs``)
``proximal_mu``           FedProx proximal strength (Li et al., MLSys 2020); 0 disables it
``scaffold``              non-zero: SCAFFOLD local steps (Karimireddy et al., ICML 2020)
``restricted_softmax``    FedRS alpha in [0, 1] (Li and Zhan, KDD 2021): the classifier's logits
                          of locally absent classes are scaled by it in training; 1 (default)
                          disables it
``class_counts``          non-zero: return the training rows' per-class counts under
                          ``extras["class_counts"]`` for class-wise averaging of the output
                          layer (:mod:`phalanx.core.aggregation.classwise`, ADR 0018)
``class_totals``          the federation's rows per class, from the statistics stage: with the
                          model's ``min_class_rows``, rare classes repeat by these counts
                          instead of the local ones (ADR 0019)
``seed``                  read by :func:`build_model`: seeds initialization, shuffling, dropout
``dp``                    ``{mode: record, noise_multiplier, clip, ...}``: record-level DP-SGD
                          (Abadi et al., CCS 2016) in :mod:`phalanx.models.dpsgd`; other modes
                          are client-level and handled outside local training
========================  ====================================================================

Other keys (``model``, ``transform`` ...) are ignored here.

SCAFFOLD needs the participant's own control variate ``c_i`` to survive between rounds: pass a
``state`` mapping the participant keeps (and persists) across rounds; it is read and updated
under :data:`SCAFFOLD_STATE_KEY`.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, MutableMapping
from typing import Any

import numpy as np
from numpy.typing import ArrayLike

from phalanx.core.aggregation.classwise import COUNTS_KEY
from phalanx.core.errors import ConfigError, ModelError
from phalanx.core.privacy.noise import secure_generator
from phalanx.core.privacy.spec import DPTaskSpec
from phalanx.core.types import Weights
from phalanx.models.autoencoder import AutoencoderDetector
from phalanx.models.dpsgd import dp_sgd_fit
from phalanx.models.hybrid import HybridDetector
from phalanx.models.mlp import MLPClassifier

SCAFFOLD_STATE_KEY = "scaffold_control"
"""Key of the participant's SCAFFOLD control variate ``c_i`` in the ``state`` mapping."""

Model = MLPClassifier | AutoencoderDetector | HybridDetector
LocalResult = tuple[Weights, int, dict[str, float], dict[str, Weights]]
"""``(new_weights, num_examples, metrics, extras)``: the payload of an ``Update``."""

MODEL_KINDS = ("mlp", "autoencoder", "hybrid")
_SPEC_KEYS = {
    "mlp": {"hidden", "dropout", "lr", "batch_size", "class_weight", "epochs", "optimizer",
            "momentum", "weight_decay", "n_classes", "logit_adjust", "label_smoothing",
            "min_class_rows"},
    "autoencoder": {"hidden", "lr", "batch_size", "epochs", "optimizer", "momentum",
                    "weight_decay", "target_fpr"},
    # the classifier's keys plus the anomaly part's (models/hybrid.py)
    "hybrid": {"hidden", "dropout", "lr", "batch_size", "class_weight", "epochs", "optimizer",
               "momentum", "weight_decay", "n_classes", "logit_adjust", "label_smoothing",
               "ae_hidden", "anomaly_fpr", "classifier_threshold", "ae_epochs", "ae_optimizer",
               "ae_lr", "min_class_rows"},
}  # fmt: skip
_IGNORED_BY_AUTOENCODER = {"dropout", "class_weight", "n_classes", "logit_adjust",
                           "label_smoothing", "min_class_rows"}  # fmt: skip
_IGNORED_BY_NON_HYBRID = {"ae_hidden", "anomaly_fpr", "classifier_threshold", "ae_epochs",
                          "ae_optimizer", "ae_lr"}  # fmt: skip


def build_model(
    spec: Mapping[str, Any], n_features: int, config: Mapping[str, Any] | None = None
) -> Model:
    """Create an initialized estimator from a model spec (e.g. ``ModelSpec.model_dump()``).

    Parameters
    ----------
    spec:
        ``{"kind": "mlp" | "autoencoder" | "hybrid", "hidden": [...], "lr": ..., ...}``:
        constructor parameters of :class:`MLPClassifier`, :class:`AutoencoderDetector` or
        :class:`~phalanx.models.hybrid.HybridDetector`.
        ``class_weight: "none"`` means no weighting. For the autoencoder, ``dropout``,
        ``class_weight`` and ``n_classes`` are ignored.
    n_features:
        Width of the transformed feature vectors.
    config:
        Task config; its ``seed`` (default 0) seeds the model, ``local_epochs`` sets ``epochs``.

    Returns
    -------
    MLPClassifier, AutoencoderDetector or HybridDetector
        Initialized from the seed, so ``get_weights()`` works at once.

    Raises
    ------
    ConfigError
        On an unknown kind or key, or a parameter out of range.
    """
    params = dict(spec)
    kind = str(params.pop("kind", "mlp"))
    if kind not in MODEL_KINDS:
        raise ConfigError(f"unknown model kind {kind!r}; expected one of: {', '.join(MODEL_KINDS)}")
    ignored = _IGNORED_BY_AUTOENCODER | _IGNORED_BY_NON_HYBRID
    unknown = sorted(set(params) - _SPEC_KEYS[kind] - ignored)
    if unknown:
        raise ConfigError(
            f"unknown {kind} model parameter(s): {', '.join(unknown)}; expected some of: "
            f"{', '.join(sorted(_SPEC_KEYS[kind]))}"
        )
    cfg = config or {}
    params["seed"] = int(cfg.get("seed", params.get("seed", 0)))
    if cfg.get("local_epochs") is not None:
        params["epochs"] = _whole(cfg["local_epochs"], "local_epochs")
    for key in ("hidden", "ae_hidden"):
        if key in params:
            params[key] = tuple(int(h) for h in params[key])
    try:
        model: Model
        if kind == "hybrid":
            if params.get("class_weight") == "none":
                params["class_weight"] = None
            model = HybridDetector(int(n_features), **params)
        elif kind == "mlp":
            for key in _IGNORED_BY_NON_HYBRID:
                params.pop(key, None)
            if params.get("class_weight") == "none":
                params["class_weight"] = None
            model = MLPClassifier(int(n_features), **params)
        else:
            for key in _IGNORED_BY_AUTOENCODER | _IGNORED_BY_NON_HYBRID:
                params.pop(key, None)
            model = AutoencoderDetector(int(n_features), **params)
        return model.initialize()
    except (TypeError, ValueError, ModelError) as err:
        raise ConfigError(f"invalid {kind} model spec: {err}") from err


def local_train(
    model: Model,
    X: ArrayLike,
    y: ArrayLike | None,
    config: Mapping[str, Any],
    extras: Mapping[str, Weights],
    *,
    state: MutableMapping[str, Weights] | None = None,
    noise_rng: np.random.Generator | None = None,
) -> LocalResult:
    """Train ``model`` (already holding the global weights) as the task says.

    Parameters
    ----------
    model:
        The participant's estimator, with the task's global weights loaded by ``set_weights``.
        Those weights are the FedProx reference and SCAFFOLD's ``x``.
    X, y:
        Local features and labels. An :class:`AutoencoderDetector` accepts ``y=None`` (all
        rows benign) or uses only the benign rows; an :class:`MLPClassifier` needs ``y``.
    config:
        The task config (see the module docstring for the keys read here).
    extras:
        Task arrays: SCAFFOLD's server control variate under ``"control"`` (zero when absent,
        as before the first aggregation).
    state:
        Participant state kept across rounds; required for SCAFFOLD.
    noise_rng:
        Source of DP-SGD's sampling and noise; ``None`` (production) draws a fresh generator
        from the OS CSPRNG. Pass a seeded one only in tests.

    Returns
    -------
    tuple
        ``(weights, num_examples, metrics, extras_out)``: the new local weights, the rows
        trained on, ``{"loss", "steps", "epochs"}`` (plus ``dp_sampling_rate``, ``dp_steps``,
        ``dp_noise_multiplier``, ``dp_clipped_fraction`` under record-level DP), and for
        SCAFFOLD ``{"control_delta": c_i+ - c_i}`` (else ``{}``).

    Raises
    ------
    ConfigError
        On a bad ``proximal_mu`` or ``local_epochs``, or SCAFFOLD without ``state``.
    ModelError
        When the model has no weights, the data does not fit it, or there is nothing to train
        on.
    """
    epochs = (
        model.epochs
        if config.get("local_epochs") is None
        else _whole(config["local_epochs"], "local_epochs")
    )
    mu = float(config.get("proximal_mu", 0.0))
    if not (math.isfinite(mu) and mu >= 0):
        raise ConfigError(f"task config proximal_mu must be >= 0; found {mu}")
    alpha = float(config.get("restricted_softmax", 1.0))
    if not (math.isfinite(alpha) and 0.0 <= alpha <= 1.0):
        raise ConfigError(
            f"task config restricted_softmax (FedRS alpha) must be in [0, 1]; found {alpha}",
            hint="1 turns it off; about 0.5 is the FedRS paper's setting",
        )
    global_weights = model.get_weights()
    dp = DPTaskSpec.from_config(config)
    counts_wanted = float(config.get(COUNTS_KEY, 0.0)) != 0.0
    if counts_wanted and (dp is not None or isinstance(model, AutoencoderDetector)):
        raise ConfigError(
            "task config class_counts (class-wise averaging) cannot run "
            + ("with differential privacy: the counts would leave the organization without"
               " noise" if dp is not None else "with an autoencoder, which has no classes"),
            hint="drop classwise_head from the federation's training settings",
        )  # fmt: skip
    if dp is not None and dp.mode == "record" and alpha != 1.0:
        raise ConfigError(
            "task config restricted_softmax (FedRS) cannot run with record-level DP-SGD",
            hint="DP-SGD trains with the plain softmax; drop restricted_softmax",
        )
    totals = _class_totals(config, model)
    if dp is not None and dp.mode == "record":
        return _record_dp_train(model, X, y, config, dp, epochs, mu, global_weights, noise_rng)
    control: tuple[Weights, Weights] | None = None
    if float(config.get("scaffold", 0.0)) != 0.0:
        if state is None:
            raise ConfigError(
                "SCAFFOLD needs the participant's control variate to persist between rounds",
                hint="pass local_train a state mapping the participant keeps across rounds",
            )
        zeros = [np.zeros_like(w) for w in global_weights]
        control = (
            list(extras.get("control", zeros)),
            list(state.get(SCAFFOLD_STATE_KEY, zeros)),
        )
    if isinstance(model, AutoencoderDetector):
        if model.benign_rows(X, y).shape[0] == 0:
            raise ModelError(
                "no benign rows to train the autoencoder on in this task",
                hint="an autoencoder trains on benign flows only; check the labels",
            )
        model.partial_fit(X, y, epochs=epochs, proximal_mu=mu, reference=global_weights,
                          control=control)  # fmt: skip
    else:
        if y is None:
            raise ModelError("MLPClassifier needs labels (y) for local training")
        if np.asarray(X).shape[0] == 0:
            raise ModelError("no local training examples for this task")
        model.partial_fit(X, y, epochs=epochs, proximal_mu=mu, reference=global_weights,
                          control=control, absent_scale=alpha, class_totals=totals)  # fmt: skip
    stats = model.last_stats_
    metrics = {"loss": stats.loss, "steps": float(stats.steps), "epochs": float(epochs)}
    if isinstance(model, HybridDetector) and model.last_anomaly_stats_.examples:
        metrics["anomaly_loss"] = model.last_anomaly_stats_.loss  # absent: no benign rows
    extras_out: dict[str, Weights] = {}
    if control is not None and state is not None:
        state[SCAFFOLD_STATE_KEY] = model.last_control_
        extras_out["control_delta"] = model.last_control_delta_
    if counts_wanted and not isinstance(model, AutoencoderDetector):  # refused above
        labels = np.asarray(y, dtype=np.int64)
        counts = np.bincount(labels, minlength=int(model.n_classes))
        extras_out[COUNTS_KEY] = [counts.astype(np.float32)]
    return model.get_weights(), stats.examples, metrics, extras_out


def _record_dp_train(
    model: Model,
    X: ArrayLike,
    y: ArrayLike | None,
    config: Mapping[str, Any],
    dp: DPTaskSpec,
    epochs: int,
    mu: float,
    global_weights: Weights,
    noise_rng: np.random.Generator | None,
) -> LocalResult:
    """Local training with record-level DP-SGD (:func:`phalanx.models.dpsgd.dp_sgd_fit`)."""
    if float(config.get("scaffold", 0.0)) != 0.0:
        raise ConfigError(
            "record-level DP cannot run with SCAFFOLD: the control variates would leave the"
            " organization without noise",
            hint="use fedavg, fedprox, fedavgm, fedadam or fedyogi with DP",
        )
    if isinstance(model, HybridDetector):
        raise ConfigError(
            "record-level DP (DP-SGD) is not supported for the hybrid model: its two networks"
            " would need one privacy accounting over both",
            hint="use --model mlp with --dp record, or client-level DP with the hybrid model",
        )
    if dp.noise_multiplier is None:
        raise ConfigError(
            "record-level DP task has no noise_multiplier",
            hint="the participant's privacy middleware calibrates it from target_epsilon",
        )
    if isinstance(model, MLPClassifier) and y is None:
        raise ModelError("MLPClassifier needs labels (y) for local training")
    rng = noise_rng if noise_rng is not None else secure_generator()
    run = dp_sgd_fit(
        model,
        X,
        y,
        epochs=epochs,
        noise_multiplier=dp.noise_multiplier,
        max_grad_norm=dp.clip,
        rng=rng,
        proximal_mu=mu,
        reference=global_weights,
        class_balance=dp.class_balance,
    )
    stats = model.last_stats_
    metrics = {
        "loss": stats.loss,
        "steps": float(stats.steps),
        "epochs": float(epochs),
        "dp_sampling_rate": run.sampling_rate,
        "dp_steps": float(run.steps),
        "dp_noise_multiplier": run.noise_multiplier,
        "dp_clipped_fraction": run.clipped_fraction,
        "dp_max_class_rate": max(run.class_rates, default=run.sampling_rate),
    }
    return model.get_weights(), stats.examples, metrics, {}


def _class_totals(config: Mapping[str, Any], model: Model) -> np.ndarray | None:
    """The task's ``class_totals`` as one non-negative count per class of ``model``."""
    raw = config.get("class_totals")
    if raw is None or isinstance(model, AutoencoderDetector):
        return None
    try:
        totals = np.asarray(raw, dtype=np.float64)
    except (TypeError, ValueError):
        totals = np.full(1, np.nan)
    n_classes = int(model.n_classes)
    if (
        totals.shape != (n_classes,)
        or not np.isfinite(totals).all()
        or (totals < 0).any()
        or (totals != np.rint(totals)).any()
    ):
        raise ConfigError(
            f"task config class_totals must be {n_classes} non-negative whole counts, one per"
            f" class; found {str(raw)[:80]}",
            hint="the coordinator sends the federation's class counts; run one Phalanx version",
        )
    return totals.astype(np.int64)


def _whole(value: Any, key: str) -> int:
    try:
        as_float = float(value)
    except (TypeError, ValueError):
        as_float = math.nan
    if not (math.isfinite(as_float) and as_float == int(as_float) and as_float >= 0):
        raise ConfigError(f"task config {key} must be a whole number >= 0; found {value!r}")
    return int(as_float)


ADAPTIVE_ALGORITHMS = ("fedadam", "fedyogi")
"""Server optimizers whose adaptive step :func:`server_params` limits to a hybrid's classifier."""


CLASSWISE_ALGORITHMS = ("fedavg", "fedprox", "fedavgm", "fedadam", "fedyogi")
"""Server algorithms that can average the output layer class by class (ADR 0018)."""


def server_params(
    spec: Mapping[str, Any],
    algorithm: str,
    params: Mapping[str, float],
    *,
    classwise_head: bool = False,
) -> dict[str, float]:
    """The server algorithm's parameters for a model spec: ``params``, plus

    * for a hybrid detector under FedAdam or FedYogi, ``adaptive_layers`` = its classifier's
      array count, so the autoencoder part is averaged plainly (ADR 0016);
    * with ``classwise_head``, ``classwise_layer`` = the index of the classifier's output
      weight array, whose rows are then averaged class by class (ADR 0018).

    Explicit ``adaptive_layers`` or ``classwise_layer`` entries in ``params`` win.

    Raises
    ------
    ConfigError
        When ``classwise_head`` is asked for an autoencoder or an algorithm outside
        :data:`CLASSWISE_ALGORITHMS`.
    """
    out = dict(params)
    kind = spec.get("kind", "mlp")
    hidden = tuple(spec["hidden"]) if "hidden" in spec else MLPClassifier(1).hidden
    # the classifier's arrays come first (hybrid) or alone (MLP); counts depend on widths only
    classifier_arrays = (
        HybridDetector(1, hidden=hidden).classifier_layer_count()
        if kind == "hybrid"
        else len(MLPClassifier(1, hidden=hidden).expected_layers())
    )
    if kind == "hybrid" and algorithm in ADAPTIVE_ALGORITHMS:
        out.setdefault("adaptive_layers", float(classifier_arrays))
    if classwise_head:
        if kind not in ("mlp", "hybrid"):
            raise ConfigError(
                f"class-wise averaging of the output layer needs a classifier; model kind"
                f" {kind!r} has no classes",
                hint='use kind "mlp" or "hybrid", or drop classwise_head',
            )
        if algorithm not in CLASSWISE_ALGORITHMS:
            raise ConfigError(
                f"class-wise averaging of the output layer does not apply to algorithm"
                f" {algorithm!r}; it works with {', '.join(CLASSWISE_ALGORITHMS)}",
                hint="SCAFFOLD's control variates and the robust rules' medians and scores"
                " assume every update counts the same for every row",
            )
        out.setdefault("classwise_layer", float(classifier_arrays - 2))
    return out
