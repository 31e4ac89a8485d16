"""The participant answers tasks from its own data only, and says clearly what it cannot do."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from phalanx.core.errors import ConfigError, ModelError
from phalanx.core.features.stats import compute_stats
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
