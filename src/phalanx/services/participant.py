"""The participant: answers the coordinator's tasks using only its own data.

Raw flows never leave this object: a ``STATS`` reply carries additive feature statistics, a
``FIT`` reply carries model weights, an ``EVALUATE`` reply carries scalar metrics. Cross-cutting
concerns (logging what was sent, clipping, masking, privacy accounting) wrap :meth:`handle` as
middleware ``(task, call_next) -> Reply``.
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from numpy.typing import NDArray

from phalanx.core.aggregation.classwise import COUNTS_KEY
from phalanx.core.errors import ConfigError
from phalanx.core.features.batch import FlowBatch
from phalanx.core.features.stats import compute_stats
from phalanx.core.features.transform import FeatureTransform
from phalanx.core.messages import Reply, Stage, Task
from phalanx.core.metrics import evaluate
from phalanx.core.taxonomy import CATEGORIES, CATEGORY_INDEX
from phalanx.core.types import ParticipantId
from phalanx.models.federated import Model, build_model, local_train
from phalanx.models.mlp import MLPClassifier

Handler = Callable[[Task], Reply]
Middleware = Callable[[Task, Handler], Reply]

log = logging.getLogger("phalanx.participant")


def category_indices(batch: FlowBatch) -> NDArray[np.int64]:
    """Class indices of a batch's taxonomy categories.

    Raises
    ------
    ConfigError
        When some flows carry no taxonomy category (an unlabelled file): a classifier cannot
        train or be scored on them.
    """
    if not len(batch):
        return np.zeros(0, dtype=np.int64)
    values, inverse = np.unique(batch.category.astype(str), return_inverse=True)
    unknown = [v for v in values.tolist() if v not in CATEGORY_INDEX]
    if unknown:
        raise ConfigError(
            f"{int(np.isin(values[inverse], unknown).sum())} flows of schema"
            f" {batch.schema.source!r} have no taxonomy category (found {unknown[:5]});"
            f" expected one of {', '.join(CATEGORIES)}",
            hint="train the classifier on labelled flows, or use the autoencoder model",
        )
    table = np.array([CATEGORY_INDEX[v] for v in values.tolist()], dtype=np.int64)
    return table[inverse]


class ModelCache:
    """Model objects to train in, reused across tasks and participants of one process.

    A task only needs a network of the right shape: its weights are replaced by the task's and
    its random streams reseeded from the task's seed, so a reused model trains exactly like a
    fresh one (tested) without drawing initial weights that would be thrown away. One cache per
    process keeps memory flat however many participants a simulation hosts.
    """

    def __init__(self) -> None:
        self._models: dict[tuple[str, int, Any], Model] = {}
        self._transform: tuple[dict[str, Any], str, FeatureTransform] | None = None

    def transform(self, spec: dict[str, Any]) -> tuple[str, FeatureTransform, dict[str, Any]]:
        """The feature transform of a task's ``transform`` document, a key naming it, and one
        copy of the document that every participant of this process can keep.

        Every participant of a round gets the same document; parsing it once per process
        instead of once per participant (an equality check finds the last one) spares a
        simulation's first round about a millisecond per participant, and keeping one copy
        instead of one per participant spares tens of megabytes with a thousand of them.
        """
        last = self._transform
        if last is not None and last[0] == spec:
            return last[1], last[2], last[0]
        key = hashlib.sha256(repr(sorted(spec.items())).encode()).hexdigest()
        transform = FeatureTransform.from_dict(spec)
        self._transform = (copy.deepcopy(spec), key, transform)  # a task may edit its own
        return key, transform, self._transform[0]

    def get(self, config: dict[str, Any], n_features: int) -> Model:
        """A model for ``config`` (its ``model`` spec, ``local_epochs`` and ``seed``)."""
        spec = config.get("model", {})
        key = (json.dumps(spec, sort_keys=True), n_features, config.get("local_epochs"))
        cached = self._models.get(key)
        if cached is None:
            cached = build_model(spec, n_features, config)
            self._models = {key: cached}
            return cached
        return cached.reseed(int(config.get("seed", 0)))


@dataclass
class _Prepared:
    spec: dict[str, Any]
    transform_key: str
    x_train: NDArray[np.float32]
    y_train: NDArray[np.int64] | None
    """``None`` for unlabelled flows (an autoencoder then treats every flow as benign)."""
    x_val: NDArray[np.float32] | None
    y_val: NDArray[np.int64] | None


class Participant:
    """One organization's side of the federation.

    Parameters
    ----------
    participant_id:
        Its identity (in a deployment: the name in its certificate).
    train:
        Its local training flows.
    validation:
        Optional local validation flows for the ``EVALUATE`` stage.
    middleware:
        Wrappers around the task handler, outermost first.
    models:
        Where training models come from; participants of one simulation share one cache.
    """

    def __init__(
        self,
        participant_id: ParticipantId,
        train: FlowBatch,
        *,
        validation: FlowBatch | None = None,
        middleware: Sequence[Middleware] = (),
        models: ModelCache | None = None,
    ) -> None:
        self.participant_id = participant_id
        self.train = train
        self.validation = validation
        self.schema_hash = train.schema.hash()
        self._prepared: _Prepared | None = None
        self._algo_state: dict[str, list[NDArray[np.float32]]] = {}
        self._models = models if models is not None else ModelCache()
        handler: Handler = self._dispatch
        for mw in reversed(middleware):
            handler = _bind(mw, handler)
        self.handle: Handler = handler

    def _dispatch(self, task: Task) -> Reply:
        if task.schema_hash != self.schema_hash:
            return self._reply(
                task,
                refused=f"schema mismatch: my data is in schema {self.schema_hash[:12]},"
                f" the task asks for {task.schema_hash[:12]}",
            )
        if task.stage is Stage.STATS:
            # rows per class only when asked (rare-class oversampling, ADR 0019)
            stats = compute_stats(self.train, classes=bool(task.config.get(COUNTS_KEY)))
            return self._reply(task, arrays=[stats.to_vector()], num_examples=len(self.train))
        if task.stage is Stage.FIT:
            return self._fit(task)
        if task.stage is Stage.EVALUATE:
            return self._evaluate(task)
        return self._reply(task, refused=f"unsupported stage {task.stage.value!r}")

    def _fit(self, task: Task) -> Reply:
        prep = self._prepare(task.config)
        model = self._models.get(task.config, prep.x_train.shape[1])
        model.set_weights(task.weights)
        weights, n, metrics, extras = local_train(
            model, prep.x_train, prep.y_train, task.config, task.extras, state=self._algo_state
        )
        return self._reply(task, arrays=weights, num_examples=n, metrics=metrics, extras=extras)

    def _evaluate(self, task: Task) -> Reply:
        prep = self._prepare(task.config)
        if prep.x_val is None or prep.y_val is None or len(prep.y_val) == 0:
            return self._reply(task, refused="no local validation data")
        model = build_model(task.config.get("model", {}), prep.x_val.shape[1], task.config)
        if not isinstance(model, MLPClassifier):
            return self._reply(task, refused="federated evaluation needs a classifier model")
        model.set_weights(task.weights)
        result = evaluate(prep.y_val, model.predict_proba(prep.x_val), CATEGORIES)
        metrics = {
            "accuracy": float(result["accuracy"]),
            "macro_f1": float(result["macro_f1"]),
        }
        return self._reply(task, num_examples=len(prep.y_val), metrics=metrics)

    def _prepare(self, config: dict[str, Any]) -> _Prepared:
        key, transform, spec = self._models.transform(config["transform"])
        if self._prepared is None or self._prepared.transform_key != key:
            val = self.validation
            self._prepared = _Prepared(
                spec=spec,
                transform_key=key,
                x_train=transform.transform(self.train),
                y_train=_labels_or_none(self.train),
                x_val=transform.transform(val) if val is not None else None,
                y_val=category_indices(val) if val is not None else None,
            )
        return self._prepared

    def _reply(self, task: Task, **kw: Any) -> Reply:
        return Reply(
            participant=self.participant_id,
            round=task.round,
            stage=task.stage,
            schema_hash=self.schema_hash,
            **kw,
        )


def _labels_or_none(batch: FlowBatch) -> NDArray[np.int64] | None:
    """Class indices, or ``None`` when no flow is labelled (a classifier then refuses the task)."""
    if len(batch) and not np.isin(batch.category.astype(str), CATEGORIES).any():
        return None
    return category_indices(batch)


def _bind(mw: Middleware, nxt: Handler) -> Handler:
    def handler(task: Task) -> Reply:
        return mw(task, nxt)

    return handler


def log_sent(task: Task, call_next: Handler) -> Reply:
    """Middleware: log what leaves the organization (sizes and hashes, never data)."""
    reply = call_next(task)
    digest = hashlib.sha256()
    size = 0
    for a in reply.arrays:
        digest.update(np.ascontiguousarray(a).tobytes())
        size += a.nbytes
    log.info(
        "%s round %d %s: sent %d arrays, %d bytes, sha256 %s%s",
        reply.participant,
        reply.round,
        reply.stage.value,
        len(reply.arrays),
        size,
        digest.hexdigest()[:16],
        f", refused: {reply.refused}" if reply.refused else "",
    )
    return reply
