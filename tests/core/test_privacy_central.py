"""Central DP-FedAvg (McMahan et al., ICLR 2018) around any server algorithm."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from phalanx.core.aggregation import FedAdam, FedAvg, Scaffold
from phalanx.core.errors import PrivacyError
from phalanx.core.privacy import (
    CLIP_CONFIG_KEY,
    UNCLIPPED_METRIC,
    AdaptiveClip,
    DPFedAvg,
    SeededNoiseWarning,
    l2_norm,
)
from phalanx.core.types import ParticipantId, Update, Weights

pytestmark = pytest.mark.filterwarnings("ignore::phalanx.core.privacy.SeededNoiseWarning")


def _update(name: str, weights: Weights, metrics: dict[str, float] | None = None) -> Update:
    return Update(ParticipantId(name), 1, weights, 10, "h", metrics or {})


def _global() -> Weights:
    return [np.zeros((3, 2), dtype=np.float32), np.zeros(2, dtype=np.float32)]


def _shifted(scale: float, rng: np.random.Generator) -> Weights:
    return [
        (rng.normal(size=(3, 2)) * scale).astype(np.float32),
        (rng.normal(size=2) * scale).astype(np.float32),
    ]


@settings(max_examples=50, deadline=None)
@given(big=st.floats(1.0, 1e5), seed=st.integers(0, 2**32))
def test_one_participant_moves_the_release_by_at_most_c_over_w(big: float, seed: int) -> None:
    """Neighbouring rounds (one update replaced by anything) differ by <= C / W before noise:
    with the same noise draw, the releases differ by at most that."""
    rng = np.random.default_rng(seed)
    others = [_update(f"p{i}", _shifted(0.3, rng)) for i in range(4)]
    a = _update("z", _shifted(big, rng))
    b = _update("z", _shifted(0.01, rng))
    outs = []
    for last in (a, b):
        algo = DPFedAvg(FedAvg(), clip_norm=0.5, noise_multiplier=1.0, noise_seed=seed)
        outs.append(algo.aggregate(_global(), [*others, last]))
    diff = [x.astype(np.float64) - y for x, y in zip(outs[0], outs[1], strict=True)]
    assert l2_norm(diff) <= 2 * 0.5 / 5 + 1e-5  # replace-one: two clipped vectors apart


def test_noise_has_std_z_c_over_w(rng: np.random.Generator) -> None:
    g = _global()
    updates = [_update(f"p{i}", [w.copy() for w in g]) for i in range(10)]  # zero deltas
    algo = DPFedAvg(FedAvg(), clip_norm=2.0, noise_multiplier=1.5, expected_participants=10)
    draws = np.concatenate(
        [np.concatenate([w.ravel() for w in algo.aggregate(g, updates)]) for _ in range(3000)]
    )
    assert abs(draws.std() - 1.5 * 2.0 / 10) < 0.01


def test_small_noise_gives_the_mean_of_clipped_deltas(rng: np.random.Generator) -> None:
    g = _global()
    deltas = [_shifted(1.0, rng) for _ in range(3)]
    updates = [_update(f"p{i}", d) for i, d in enumerate(deltas)]
    algo = DPFedAvg(FedAvg(), clip_norm=100.0, noise_multiplier=1e-9, noise_seed=1)
    out = algo.aggregate(g, updates)
    for k in range(2):
        np.testing.assert_allclose(out[k], np.mean([d[k] for d in deltas], axis=0), atol=1e-6)


def test_wraps_adaptive_server_optimizers_and_keeps_their_state(
    rng: np.random.Generator,
) -> None:
    algo = DPFedAvg(FedAdam(server_lr=0.1), clip_norm=1.0, noise_multiplier=0.5, noise_seed=3)
    g = _global()
    out = algo.aggregate(g, [_update("a", _shifted(1.0, rng))])
    state = algo.state()
    assert set(state) == {"inner:m", "inner:v", "dp_clip"}
    again = DPFedAvg(FedAdam(server_lr=0.1), clip_norm=9.0, noise_multiplier=0.5)
    again.load_state(state)
    assert again.clip_norm == 1.0
    assert algo.name == "dp-fedadam"
    assert algo.task_config()[CLIP_CONFIG_KEY] == 1.0
    assert [w.shape for w in out] == [w.shape for w in g]


def test_scaffold_is_refused() -> None:
    with pytest.raises(PrivacyError, match="SCAFFOLD"):
        DPFedAvg(Scaffold(), clip_norm=1.0, noise_multiplier=1.0)


def test_adaptive_clip_moves_the_norm_each_round(rng: np.random.Generator) -> None:
    adaptive = AdaptiveClip(1.0, target_quantile=0.5, count_noise_std=1.0)
    algo = DPFedAvg(FedAvg(), clip_norm=1.0, noise_multiplier=1.0, adaptive=adaptive, noise_seed=2)
    g = _global()
    updates = [_update(f"p{i}", _shifted(0.01, rng), {UNCLIPPED_METRIC: 1.0}) for i in range(20)]
    algo.aggregate(g, updates)
    assert algo.clip_norm < 1.0  # every update fit: the norm shrinks toward the median
    assert algo.task_config()[CLIP_CONFIG_KEY] == algo.clip_norm


def test_seeded_noise_warns() -> None:
    with (
        pytest.warns(SeededNoiseWarning),
        np.errstate(all="ignore"),
    ):
        DPFedAvg(FedAvg(), clip_norm=1.0, noise_multiplier=1.0, noise_seed=5)
