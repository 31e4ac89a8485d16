"""L2 clipping and adaptive clipping (Andrew et al., NeurIPS 2021)."""

from __future__ import annotations

import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from phalanx.core.errors import PrivacyError
from phalanx.core.privacy import AdaptiveClip, clip_update, l2_norm

finite = st.floats(-1e6, 1e6, allow_nan=False, width=32)
layers = st.lists(
    arrays(np.float32, st.tuples(st.integers(0, 5), st.integers(1, 4)), elements=finite),
    min_size=1,
    max_size=4,
)


@settings(max_examples=200, deadline=None)
@given(update=layers, clip=st.floats(1e-4, 1e4))
def test_clipped_norm_is_at_most_c(update: list[np.ndarray], clip: float) -> None:
    clipped, norm = clip_update(update, clip)
    assert l2_norm(clipped) <= clip
    assert math.isclose(norm, l2_norm(update), rel_tol=1e-12)
    assert [c.shape for c in clipped] == [u.shape for u in update]
    if norm <= clip:  # inside the ball: unchanged
        for c, u in zip(clipped, update, strict=True):
            np.testing.assert_array_equal(c, u.astype(np.float64))
    else:  # direction kept
        ratio = clip / norm
        for c, u in zip(clipped, update, strict=True):
            np.testing.assert_allclose(c, u.astype(np.float64) * ratio, rtol=1e-9, atol=1e-12)


def test_all_zero_update_survives() -> None:
    update = [np.zeros((3, 2), dtype=np.float32), np.zeros(4, dtype=np.float32)]
    clipped, norm = clip_update(update, 1.0)
    assert norm == 0.0
    assert all(np.all(c == 0) and np.all(np.isfinite(c)) for c in clipped)


@pytest.mark.parametrize("clip", [0.0, -1.0, math.inf, math.nan])
def test_bad_clip_norm_is_refused(clip: float) -> None:
    with pytest.raises(PrivacyError, match="clipping norm"):
        clip_update([np.ones(3)], clip)


def test_non_finite_update_is_refused() -> None:
    with pytest.raises(PrivacyError, match="NaN or infinite"):
        clip_update([np.array([1.0, np.nan])], 1.0)


def test_adaptive_clip_tracks_the_target_quantile(rng: np.random.Generator) -> None:
    """Update norms ~ |N(0, 1)| * 10: the median is about 6.74; C must settle near it."""
    clip = AdaptiveClip(clip_norm=0.1, target_quantile=0.5, learning_rate=0.2, count_noise_std=1.0)
    for _ in range(400):
        norms = np.abs(rng.normal(size=100)) * 10.0
        clip.update(list(norms <= clip.clip_norm), rng)
    assert 5.5 < clip.clip_norm < 8.0


def test_adaptive_clip_noise_split_matches_theorem_1() -> None:
    clip = AdaptiveClip(clip_norm=1.0, count_noise_std=5.0)
    z_delta = clip.update_noise_multiplier(1.0, participants=100)
    # the pair (z_delta, sigma_b) composes back to the requested z
    assert math.isclose((z_delta**-2 + (2 * 5.0) ** -2) ** -0.5, 1.0, rel_tol=1e-12)
    assert z_delta > 1.0
    with pytest.raises(PrivacyError, match="spends the whole budget"):
        AdaptiveClip(clip_norm=1.0, count_noise_std=0.4).update_noise_multiplier(1.0, 10)
    with pytest.raises(PrivacyError, match="not differentially private"):
        AdaptiveClip(clip_norm=1.0).update_noise_multiplier(1.0, 10)


def test_adaptive_clip_rejects_bad_parameters() -> None:
    with pytest.raises(PrivacyError, match="target_quantile"):
        AdaptiveClip(clip_norm=1.0, target_quantile=1.0)
    with pytest.raises(PrivacyError, match="learning_rate"):
        AdaptiveClip(clip_norm=1.0, learning_rate=0.0)
