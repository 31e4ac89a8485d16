"""The participant answers tasks from its own data only, and says clearly what it cannot do."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from phalanx.core.errors import ConfigError, ModelError
from phalanx.core.features.stats import FeatureStats, class_counts, compute_stats
from phalanx.core.features.transform import FeatureTransform
from phalanx.core.messages import Stage, Task
from phalanx.core.types import ParticipantId
from phalanx.data.synthetic import generate
from phalanx.models.federated import build_model
from phalanx.services.participant import Participant, category_indices

torch.set_num_threads(1)


def _fit_task(batch_schema_hash: str, transform: FeatureTransform, kind: str) -> Task:
    spec = {"kind": kind, "hidden": [8, 4] if kind == "autoencoder" else [16]}
    weights = build_model(spec, transform.n_features, {"seed": 1}).get_weights()
    return Task(
        round=1,
        stage=Stage.FIT,
        schema_hash=batch_schema_hash,
        weights=weights,
        config={"model": spec, "local_epochs": 1, "seed": 5, "transform": transform.to_dict()},
    )


def test_unlabelled_flows_train_an_autoencoder_and_are_refused_by_a_classifier() -> None:
    batch = generate("office", 600, np.random.default_rng(0))
    unlabelled = replace(batch, category=np.full(len(batch), "", dtype=object))
    transform = FeatureTransform.fit(compute_stats(batch))
    me = Participant(ParticipantId("org"), unlabelled)
    reply = me.handle(_fit_task(me.schema_hash, transform, "autoencoder"))
    assert reply.num_examples == len(batch)
    assert not reply.refused
    with pytest.raises(ModelError, match="needs labels"):
        me.handle(_fit_task(me.schema_hash, transform, "mlp"))
    with pytest.raises(ConfigError, match="no taxonomy category"):
        category_indices(unlabelled)


def test_a_task_for_another_schema_is_refused_not_trained() -> None:
    batch = generate("bank", 300, np.random.default_rng(1))
    transform = FeatureTransform.fit(compute_stats(batch))
    me = Participant(ParticipantId("org"), batch)
    reply = me.handle(_fit_task("0" * 64, transform, "mlp"))
    assert "schema mismatch" in reply.refused
    assert reply.arrays == []


def test_the_label_histogram_leaves_only_when_the_statistics_task_asks_for_it() -> None:
    batch = generate("office", 400, np.random.default_rng(2))
    me = Participant(ParticipantId("org"), batch)
    replies = {
        asked: me.handle(
            Task(round=0, stage=Stage.STATS, schema_hash=me.schema_hash, config=config)
        )
        for asked, config in ((False, {}), (True, {"class_counts": 1.0}))
    }
    vectors = {k: FeatureStats.from_vector(batch.schema, r.arrays[0]) for k, r in replies.items()}
    assert vectors[False].classes.tolist() == [0] * len(vectors[False].classes)
    np.testing.assert_array_equal(vectors[True].classes, class_counts(batch.category))
    assert vectors[True].classes.sum() == len(batch)
    np.testing.assert_array_equal(vectors[True].total, vectors[False].total)  # nothing else moves
