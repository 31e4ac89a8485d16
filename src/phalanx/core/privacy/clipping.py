"""L2 clipping of model updates, fixed and adaptive.

An update is a list of arrays (one per layer) treated as one flat vector, as in DP-FedAvg
(McMahan et al., "Learning Differentially Private Recurrent Language Models", ICLR 2018):
clipping bounds every participant's contribution to the sum by ``clip_norm`` in L2, which is the
sensitivity the Gaussian noise is calibrated to.

:class:`AdaptiveClip` tracks a quantile of the update norms instead of fixing the clipping norm,
from Andrew, Thakkar, McMahan and Ramaswamy, "Differentially Private Learning with Adaptive
Clipping", NeurIPS 2021 (Algorithm 1 and Theorem 1).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from phalanx.core.errors import PrivacyError
from phalanx.core.privacy.noise import gaussian_noise


def l2_norm(update: Sequence[NDArray[np.floating]]) -> float:
    """The L2 norm of the update seen as one vector (accumulated in float64)."""
    total = 0.0
    for a in update:
        arr = np.asarray(a, dtype=np.float64)
        total += float(np.dot(arr.ravel(), arr.ravel()))
    return math.sqrt(total)


def check_clip_norm(clip_norm: float) -> float:
    """``clip_norm`` as a float, or :class:`PrivacyError` unless finite and > 0."""
    value = float(clip_norm)
    if not (math.isfinite(value) and value > 0):
        raise PrivacyError(
            f"clipping norm must be a finite number > 0; found {clip_norm!r}",
            hint="set dp.clip (e.g. 1.0) in the DP configuration",
        )
    return value


def clip_update(
    update: Sequence[NDArray[np.floating]], clip_norm: float
) -> tuple[list[NDArray[np.float64]], float]:
    """Scale ``update`` so its L2 norm is at most ``clip_norm``.

    ``u * min(1, C / ||u||)``: an update already inside the ball (including the all-zero
    update) is returned unchanged.

    Parameters
    ----------
    update:
        One array per layer.
    clip_norm:
        ``C`` (> 0).

    Returns
    -------
    tuple
        ``(clipped, norm)``: float64 arrays of the same shapes, and the norm before clipping.

    Raises
    ------
    PrivacyError
        When ``clip_norm`` is not a positive number or the update holds NaN or infinity.
    """
    c = check_clip_norm(clip_norm)
    norm = l2_norm(update)
    if not math.isfinite(norm):
        raise PrivacyError(
            "cannot clip an update holding NaN or infinite values",
            hint="local training diverged; lower the learning rate",
        )
    factor = 1.0 if norm <= c else c / norm
    clipped = [np.asarray(a, dtype=np.float64) * factor for a in update]
    # rounding can leave the scaled norm a hair above C; shrink by the excess so <= C holds
    if factor < 1.0:
        after = l2_norm(clipped)
        if after > c:
            clipped = [a * (c / after) * (1.0 - 1e-12) for a in clipped]
    return clipped, norm


@dataclass
class AdaptiveClip:
    """Quantile-tracking clipping norm (Andrew et al., NeurIPS 2021, Algorithm 1).

    Each round every participant reports ``b_i = 1[||Δ_i|| <= C]``. The server estimates the
    fraction of unclipped updates with Gaussian noise, ``b = (sum_i b_i + N(0, σ_b^2)) / m``,
    and moves the norm geometrically toward the ``target_quantile``::

        C <- C * exp(-learning_rate * (b - target_quantile))

    Parameters
    ----------
    clip_norm:
        The initial norm ``C_0``.
    target_quantile:
        ``γ`` in (0, 1): the share of updates that should end up unclipped (0.5: the median).
    learning_rate:
        ``η_C`` (> 0); the paper uses 0.2.
    count_noise_std:
        ``σ_b`` (>= 0), the noise on the count. The paper uses ``σ_b = m / 20``.
    """

    clip_norm: float
    target_quantile: float = 0.5
    learning_rate: float = 0.2
    count_noise_std: float = 0.0

    def __post_init__(self) -> None:
        self.clip_norm = check_clip_norm(self.clip_norm)
        if not 0.0 < self.target_quantile < 1.0:
            raise PrivacyError(
                f"adaptive clipping target_quantile must be in (0, 1); found {self.target_quantile}"
            )
        if not (math.isfinite(self.learning_rate) and self.learning_rate > 0):
            raise PrivacyError(
                f"adaptive clipping learning_rate must be > 0; found {self.learning_rate}"
            )
        if not (math.isfinite(self.count_noise_std) and self.count_noise_std >= 0):
            raise PrivacyError(
                f"adaptive clipping count_noise_std must be >= 0; found {self.count_noise_std}"
            )

    def update(self, unclipped: Sequence[bool], rng: np.random.Generator) -> float:
        """Move the norm after a round in which ``unclipped[i]`` says participant i fit in C.

        Returns the new clipping norm.
        """
        m = len(unclipped)
        if m == 0:
            raise PrivacyError("adaptive clipping needs at least one participant's indicator")
        noisy = float(sum(bool(b) for b in unclipped)) + float(
            gaussian_noise((), self.count_noise_std, rng)
        )
        fraction = noisy / m
        self.clip_norm = float(
            self.clip_norm * math.exp(-self.learning_rate * (fraction - self.target_quantile))
        )
        return self.clip_norm

    def update_noise_multiplier(self, noise_multiplier: float, participants: int) -> float:
        """The noise multiplier left for the update sum so the pair costs ``noise_multiplier``.

        Theorem 1 of Andrew et al.: releasing the clipped sum with multiplier ``z_Δ`` and the
        count with std ``σ_b`` together is as private as one Gaussian mechanism with
        ``z = (z_Δ^-2 + (2 σ_b)^-2)^(-1/2)``, hence ``z_Δ = (z^-2 - (2 σ_b)^-2)^(-1/2)``.

        Raises
        ------
        PrivacyError
            When the count noise alone costs more than ``noise_multiplier`` allows.
        """
        del participants  # the formula is per participant; kept for a clear call site
        if self.count_noise_std == 0.0:
            raise PrivacyError(
                "adaptive clipping with count_noise_std = 0 releases the clipped count"
                " without noise, which is not differentially private",
                hint="set count_noise_std > 0 (Andrew et al. use participants / 20)",
            )
        rest = noise_multiplier**-2 - (2.0 * self.count_noise_std) ** -2
        if rest <= 0:
            raise PrivacyError(
                f"the clipped-count noise (std {self.count_noise_std}) spends the whole budget"
                f" of noise multiplier {noise_multiplier}",
                hint="raise count_noise_std or the noise multiplier",
            )
        return float(rest**-0.5)
