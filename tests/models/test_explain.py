"""Explanations: top columns, and the scoring graph shared by ONNX equals the compact scorer."""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from phalanx.core.features.batch import FlowBatch
from phalanx.core.features.stats import compute_stats
from phalanx.core.features.transform import FeatureTransform
from phalanx.data.synthetic import generate_federation
from phalanx.models import MLPClassifier
from phalanx.models.compact import CompactScorer, compact_features
from phalanx.models.explain import ScoringNet, top_columns, top_features
from phalanx.services.participant import category_indices

torch.set_num_threads(1)


@given(
    arrays(
        np.float32,
        st.tuples(st.integers(0, 6), st.integers(1, 8)),
        elements=st.floats(-3, 3, width=32),
    ),
    st.integers(0, 10),
)
def test_top_columns_are_the_largest_first_and_top_features_keep_the_positive(
    attr: np.ndarray, k: int
) -> None:
    names = [f"c{j}" for j in range(attr.shape[1])]
    order, values = top_columns(attr, k)
    assert order.shape == values.shape == (attr.shape[0], min(k, attr.shape[1]))
    assert np.all(np.diff(values, axis=1) <= 0)
    for i in range(attr.shape[0]):
        kept = np.sort(attr[i])[::-1][: order.shape[1]]
        np.testing.assert_array_equal(np.take(attr[i], order[i]), kept)
    why = top_features(attr, names, k)
    assert len(why) == attr.shape[0]
    for i, row in enumerate(why):
        assert [v for _, v in row] == [v for v in values[i].tolist() if v > 0]
        assert [n for n, _ in row] == [
            names[c] for c, v in zip(order[i], values[i], strict=True) if v > 0
        ]


def test_scoring_net_of_the_onnx_export_equals_the_compact_scorer() -> None:
    data = FlowBatch.concat(generate_federation(2, 1500, seed=8))
    transform = FeatureTransform.fit(compute_stats(data))
    x = transform.transform(data)
    model = MLPClassifier(transform.n_features, hidden=(32, 16), epochs=1, seed=3)
    model.fit(x, category_indices(data))
    net = ScoringNet(model).eval()
    with torch.no_grad():
        score, proba = net(torch.from_numpy(x))
    compact = CompactScorer(model, len(transform.schema.numeric))
    got = compact.score(compact_features(transform, data)).score
    np.testing.assert_allclose(got, score.numpy(), atol=2e-6)
    np.testing.assert_allclose(
        compact.predict_proba(compact_features(transform, data)), proba.numpy(), atol=2e-6
    )
