"""Detection: score flows with a model bundle, pick the calibrated threshold, write ECS alerts.

Pure of I/O: :class:`Detector` takes :class:`FlowBatch` chunks and returns an
:class:`~phalanx.services.alerts.AlertBatch` (the alerts column-wise, rendered to ECS JSON lines by
:meth:`~phalanx.services.alerts.AlertBatch.to_jsonl`); the CLI (``phalanx detect``) reads the
input, verifies the model's signature, writes the lines and prints the summary. An alert is a flow
whose attack score exceeds the threshold:

* MLP classifier: score ``1 - P(benign)``; the alert's category is the most probable attack
  category.
* Autoencoder: score = reconstruction error; the category is ``other`` (an anomaly, no kind).
* Hybrid (:class:`~phalanx.models.hybrid.HybridDetector`): the combined score, above 1 when the
  classifier or the anomaly part fires; the category is the classifier's when it fires, else
  ``other``. A classifier alert is explained by gradient x input on the classifier, an
  anomaly-only alert by each column's share of the squared reconstruction error.

After scoring, an optional :class:`~phalanx.services.correlation.AlertCorrelator` relabels
volumetric alerts by their shape across flows (floods against scans, ADR 0011); a relabelled
alert keeps the model's category under ``phalanx.model_category`` and the rule's counts under
``phalanx.correlation``.

The classifier is scored through :class:`~phalanx.models.compact.CompactScorer` (its first layer
as numeric part plus gathered one-hot rows, in cache-sized chunks, on as many torch threads as the
caller set): the same scores as ``MLPClassifier.predict_proba`` to float rounding, at about twice
the speed, and the 244-wide one-hot matrix is never built. Every alert is explained (gradient x
input, top columns), in chunks, only for the alerting rows.

Thresholds come from the bundle's ``thresholds`` metadata, calibrated on benign validation flows
when the model was trained (``default`` and ``fpr=<rate>`` entries), or from ``--threshold``.
Alert documents use Elastic Common Schema field names (ECS 8.x: ``@timestamp``, ``event.*``,
``source.*``, ``destination.*``, ``network.*``, ``rule.*``, ``threat.*``); Phalanx's own fields
(score, threshold, model id and version, top contributing features) sit under ``phalanx.*``.
Threat tactics follow MITRE ATT&CK (Strom et al., "MITRE ATT&CK: Design and Philosophy", 2018);
the table is :data:`phalanx.services.alerts.TACTICS`.
"""

from __future__ import annotations

import dataclasses
import json
import math
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Self, TypeVar

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from phalanx.core.errors import ConfigError, ModelError
from phalanx.core.features.batch import FlowBatch
from phalanx.core.features.transform import FeatureTransform
from phalanx.core.taxonomy import CATEGORIES, FALLBACK
from phalanx.models.compact import (
    SCORE_CHUNK,
    CompactInput,
    CompactScorer,
    Scored,
    compact_features,
)
from phalanx.models.explain import Model, attributions, column_groups, top_columns
from phalanx.models.hybrid import HybridDetector
from phalanx.models.mlp import MLPClassifier
from phalanx.services.alerts import TACTICS, AlertBatch, FlowFields
from phalanx.services.correlation import AlertCorrelator

R = TypeVar("R")
Scoreable = Model | HybridDetector
"""What :class:`Detector` scores: the classifier, the autoencoder or the hybrid of both."""
RENDER_SLICE = 4096
"""Fewest alerts worth rendering on another thread."""


def stored_fprs(thresholds: dict[str, float]) -> list[str]:
    """The ``fpr=<rate>`` keys of a bundle's thresholds, e.g. ``["fpr=0.001", "fpr=0.01"]``."""
    return sorted(k for k in thresholds if k.startswith("fpr="))


def choose_threshold(
    thresholds: dict[str, float], *, fpr: float | None = None, threshold: float | None = None
) -> tuple[float, str]:
    """The alert threshold and where it came from.

    Parameters
    ----------
    thresholds:
        The bundle's calibrated thresholds.
    fpr:
        Use the threshold stored for this false-positive rate.
    threshold:
        Use this value (overrides the stored ones).

    Raises
    ------
    ConfigError
        When both are given, the threshold is not finite, or no threshold is stored for ``fpr``
        (the message lists the stored ones).
    """
    if fpr is not None and threshold is not None:
        raise ConfigError("give --fpr or --threshold, not both")
    if threshold is not None:
        if not math.isfinite(threshold):
            raise ConfigError(f"--threshold must be a finite number, found {threshold}")
        return float(threshold), "--threshold"
    if fpr is not None:
        key = f"fpr={fpr:g}"
        if key not in thresholds:
            stored = ", ".join(k.removeprefix("fpr=") for k in stored_fprs(thresholds))
            raise ConfigError(
                f"the model stores no threshold calibrated at FPR {fpr:g}",
                hint=f"stored FPRs: {stored or 'none'}; or pass --threshold",
            )
        return float(thresholds[key]), f"calibrated at FPR {fpr:g}"
    if "default" in thresholds:
        return float(thresholds["default"]), "model default"
    raise ConfigError(
        "the model stores no default threshold",
        hint=f"pass --fpr (stored: {', '.join(stored_fprs(thresholds)) or 'none'}) or --threshold",
    )


@dataclass
class Summary:
    """Counts of one detection run."""

    flows: int = 0
    alerts: int = 0
    by_category: dict[str, int] = field(default_factory=dict)

    def add(self, flows: int, categories: NDArray[np.object_]) -> None:
        """Count ``flows`` scored and the categories of the alerts raised among them."""
        self.flows += flows
        self.alerts += len(categories)
        if len(categories):
            names, counts = np.unique(np.asarray(categories).astype(str), return_counts=True)
            for c, k in zip(names.tolist(), counts.tolist(), strict=True):
                self.by_category[c] = self.by_category.get(c, 0) + k


class Detector:
    """Scores flow batches with one model and turns high scores into ECS alerts.

    Parameters
    ----------
    model, transform:
        The detector and the feature transform it was trained with.
    threshold:
        Alert when the attack score is above it.
    model_id, model_version:
        Written into every alert (``phalanx.model``).
    top_k:
        How many contributing features each alert names.
    correlator:
        Relabels volumetric alerts by fan-in and volume (``None``: the model's categories stand).
    threads:
        Threads scoring and explaining the classifier's flows, each on its own rows (give torch
        one intra-op thread then: row slices on separate threads keep scaling on a loaded
        machine, where torch's own parallel loops wait at every operation for a descheduled
        thread). Close the detector (or use it in a ``with`` block) to stop them.
    """

    def __init__(
        self,
        model: Scoreable,
        transform: FeatureTransform,
        *,
        threshold: float,
        model_id: str,
        model_version: str,
        top_k: int = 3,
        threads: int = 1,
        correlator: AlertCorrelator | None = None,
    ) -> None:
        if model.n_features != transform.n_features:
            raise ModelError(
                f"model takes {model.n_features} features, its transform makes"
                f" {transform.n_features}",
                hint="the bundle's metadata and weights come from different models",
            )
        if top_k < 0:
            raise ConfigError(f"--top-k must be at least 0, found {top_k}")
        if threads < 1:
            raise ConfigError(f"--threads must be at least 1, found {threads}")
        self.model = model
        self.transform = transform
        self.threshold = float(threshold)
        self.model_id = model_id
        self.model_version = model_version
        self.top_k = int(top_k)
        self.kind = (
            "mlp"
            if isinstance(model, MLPClassifier)
            else "hybrid"
            if isinstance(model, HybridDetector)
            else "autoencoder"
        )
        self.correlator = correlator
        self.names, self.groups = column_groups(transform.schema)
        self.summary = Summary()
        self.scorer: CompactScorer | None = None
        if isinstance(model, MLPClassifier):
            self.scorer = CompactScorer(model, len(transform.schema.numeric))
        self.threads = int(threads)
        self._pool = ThreadPoolExecutor(threads, "phalanx-score") if threads > 1 else None

    def close(self) -> None:
        """Stop the scoring threads."""
        if self._pool is not None:
            self._pool.shutdown()
            self._pool = None

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, err: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    def _split(self, fn: Callable[[CompactInput], R], x: CompactInput) -> list[tuple[int, R]]:
        """``fn`` of contiguous row slices of ``x`` (one per thread) with their first rows, in
        row order. Slices are whole scoring chunks, so the results do not depend on threads."""
        n = len(x)
        if self._pool is None or n < 2 * SCORE_CHUNK:
            return [(0, fn(x))]
        step = math.ceil(n / self.threads / SCORE_CHUNK) * SCORE_CHUNK
        starts = list(range(0, n, step))
        parts = [CompactInput(x.numeric[s : s + step], x.hot[s : s + step]) for s in starts]
        return list(zip(starts, self._pool.map(fn, parts), strict=True))

    def render(self, alerts: AlertBatch) -> list[memoryview]:
        """``alerts`` rendered as JSON lines, in slices rendered on the scoring threads (arrow's
        kernels run without the GIL); write them in order."""
        n = len(alerts)
        if self._pool is None or n < 2 * RENDER_SLICE:
            return [alerts.render()]
        step = max(RENDER_SLICE, math.ceil(n / self.threads))
        parts = [alerts.slice(s, s + step) for s in range(0, n, step)]
        return list(self._pool.map(AlertBatch.render, parts))

    def score(self, x: NDArray[np.float32]) -> tuple[NDArray[np.float32], NDArray[np.object_]]:
        """Attack scores and the category each flow would be alerted as, from model inputs."""
        if isinstance(self.model, MLPClassifier):
            return self._categorize(self.model.predict_proba(x))
        if isinstance(self.model, HybridDetector):
            combined, kind = self.model.decide(x)
            return combined, _CATEGORIES[kind]
        score = self.model.score(x)
        return score, np.full(len(score), FALLBACK, dtype=object)

    def score_compact(self, x: CompactInput) -> tuple[NDArray[np.float32], NDArray[np.object_]]:
        """:meth:`score` of the classifier from the compact form of its inputs."""
        if self.scorer is None:
            raise ModelError("only the classifier scores compact inputs", hint="use score()")
        parts = [p for _, p in self._split(self.scorer.score, x)]
        score = np.concatenate([p.score for p in parts])
        return score, _CATEGORIES[np.concatenate([p.best for p in parts])]

    def score_batch(self, batch: FlowBatch) -> tuple[NDArray[np.float32], NDArray[np.object_]]:
        """Attack scores and categories of the flows of ``batch``."""
        if self.scorer is not None:
            return self.score_compact(compact_features(self.transform, batch))
        return self.score(self.transform.transform(batch))

    def _categorize(
        self, proba: NDArray[np.float32]
    ) -> tuple[NDArray[np.float32], NDArray[np.object_]]:
        benign = self.model.benign_index if isinstance(self.model, MLPClassifier) else 0
        score = (1.0 - proba[:, benign]).astype(np.float32)
        attack = proba.copy()
        attack[:, benign] = -1.0
        return score, _CATEGORIES[attack.argmax(axis=1)]

    def detect(self, batch: FlowBatch, *, source: str = "", offset: int = 0) -> AlertBatch:
        """The alerts among the flows of ``batch`` (those scored above the threshold).

        ``source`` and ``offset`` (the index of the batch's first flow in its source) locate each
        alerting flow: ``phalanx.input.path`` and ``phalanx.input.row``. Write the result with
        :meth:`AlertBatch.to_jsonl`.
        """
        if self.scorer is not None:
            scorer, threshold, k = self.scorer, self.threshold, self.top_k

            def work(part: CompactInput) -> tuple[Scored, NDArray[np.intp], NDArray[np.float32]]:
                scored = scorer.score(part, explain_above=threshold)
                return scored, *top_columns(scored.attributions, k)

            parts = self._split(work, compact_features(self.transform, batch))
            score = np.concatenate([p.score for _, (p, _, _) in parts])
            cats = _CATEGORIES[np.concatenate([p.best for _, (p, _, _) in parts])]
            hit = np.concatenate([p.explained + s for s, (p, _, _) in parts])
            columns = np.concatenate([c for _, (_, c, _) in parts])
            values = np.concatenate([v for _, (_, _, v) in parts])
        else:
            x = self.transform.transform(batch)
            score, cats = self.score(x)
            hit = np.flatnonzero(score > self.threshold)
            columns, values = top_columns(self._attributions(x[hit], cats[hit]), self.top_k)
        alerts = AlertBatch(
            rows=hit,
            offset=offset,
            score=score[hit],
            category=cats[hit],
            top_columns=columns,
            top_values=values,
            names=self.names,
            fields=FlowFields.of(batch, hit),
            source=source,
            created=datetime.now(UTC).isoformat(),
            threshold=self.threshold,
            kind=self.kind,
            model_id=self.model_id,
            model_version=self.model_version,
        )
        if self.correlator is not None and len(alerts):
            alerts = self._correlate(alerts, self.correlator)
        self.summary.add(len(batch), alerts.category)
        return alerts

    def _attributions(
        self, x: NDArray[np.float32], cats: NDArray[np.object_]
    ) -> NDArray[np.float32]:
        """Per-column contributions of the alerting rows ``x`` (dense path)."""
        if not isinstance(self.model, HybridDetector):
            return attributions(self.model, x, self.groups)
        out = np.zeros((x.shape[0], len(self.groups)), dtype=np.float32)
        anomaly = cats == FALLBACK
        if (~anomaly).any():
            out[~anomaly] = attributions(self.model.classifier_, x[~anomaly], self.groups)
        if anomaly.any():
            err = self.model.anomaly_contributions(x[anomaly])
            for g, cols in enumerate(self.groups):
                out[anomaly, g] = err[:, cols].sum(axis=1)
        return out

    def _correlate(self, alerts: AlertBatch, correlator: AlertCorrelator) -> AlertBatch:
        """``alerts`` with volumetric categories relabelled by the correlator (ADR 0011)."""
        f = alerts.fields

        def known(a: pa.Array) -> pa.Array | None:
            return None if a.null_count == len(a) else a

        start = None
        if f.start_ms.null_count < len(f.start_ms):
            start = pc.cast(f.start_ms, pa.float64()).to_numpy(zero_copy_only=False)
        rules = correlator.rules
        result = correlator.correlate(
            alerts.category,
            known(f.src_ip),
            known(f.dst_ip),
            known(f.dst_port),
            start_ms=start,
            rows=(alerts.rows + alerts.offset).astype(np.int64),
        )
        changed = np.flatnonzero(result.rule != "")
        if changed.size == 0:
            return alerts
        window = (
            f'"window_s":{rules.window_s:g}'
            if start is not None
            else (f'"window_rows":{rules.window_rows}')
        )
        extra = np.full(len(alerts), "", dtype=object)
        for i in changed.tolist():
            extra[i] = (
                f',"model_category":{json.dumps(str(alerts.category[i]))},"correlation":'
                f'{{"rule":"{result.rule[i]}","sources":{int(result.sources[i])},'
                f'"flows":{int(result.flows[i])},{window}}}'
            )
        merged = pa.array(extra.tolist(), pa.string())
        if alerts.extra is not None:
            merged = pc.binary_join_element_wise(alerts.extra, merged, "")
        return dataclasses.replace(alerts, category=result.category, extra=merged)


_CATEGORIES = np.array(CATEGORIES, dtype=object)

__all__ = ["TACTICS", "Detector", "Scoreable", "Summary", "choose_threshold", "stored_fprs"]
