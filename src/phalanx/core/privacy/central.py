"""Client-level DP-FedAvg with noise added by the coordinator (central DP).

McMahan, Ramage, Talwar and Zhang, "Learning Differentially Private Recurrent Language Models",
ICLR 2018 (DP-FedAvg): every participant's model delta ``Δ_k = w_k - x`` is clipped to L2 norm
``C``; the server releases

    x + (sum_k clip(Δ_k) + N(0, (z C)^2 I)) / W

with a fixed denominator ``W`` (the expected number of participants per round, so that one
participant changes the numerator by at most ``C``). The noisy mean delta is handed to any inner
server algorithm as a single pseudo-update, so FedAvgM or FedAdam run on top of it unchanged
(DP is closed under post-processing). Participants clip their own delta before sending
(``phalanx.services.privacy``); the server clips again so a participant that does not clip
cannot break the sensitivity bound.

With :class:`~phalanx.core.privacy.clipping.AdaptiveClip`, ``C`` follows a quantile of the
update norms (Andrew et al., NeurIPS 2021) and the delta noise is raised so that the update and
the noisy clipped count together cost the stated noise multiplier.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from phalanx.core.aggregation.base import ServerAlgorithm, check_compatible
from phalanx.core.errors import PrivacyError
from phalanx.core.privacy.clipping import AdaptiveClip, check_clip_norm, clip_update
from phalanx.core.privacy.noise import gaussian_noise, noise_generator, secure_generator
from phalanx.core.types import ParticipantId, Update, Weights

UNCLIPPED_METRIC = "dp_unclipped"
"""Metric a participant reports: 1.0 when its delta was within the clipping norm, else 0.0."""

CLIP_CONFIG_KEY = "dp_clip"
"""Task config key carrying the round's clipping norm (it changes under adaptive clipping)."""


class DPFedAvg:
    """Central client-level DP around any server algorithm (McMahan et al., ICLR 2018).

    Parameters
    ----------
    inner:
        The server algorithm that turns the noisy mean into the next global model (FedAvg,
        FedAvgM, FedAdam, FedYogi, FedProx). SCAFFOLD is refused: its control variates would be
        released without noise.
    clip_norm:
        ``C``, the initial clipping norm of a participant's delta.
    noise_multiplier:
        ``z``: the noise std over ``C`` of the released sum.
    expected_participants:
        The fixed denominator ``W``; ``None`` uses the number of updates of each round.
    adaptive:
        Quantile-tracking clipping; ``clip_norm`` is then its initial value.
    noise_seed:
        ``None`` in production (noise from the OS CSPRNG each round); a seed makes the noise
        reproducible, removes the guarantee and warns.
    """

    def __init__(
        self,
        inner: ServerAlgorithm,
        *,
        clip_norm: float,
        noise_multiplier: float,
        expected_participants: int | None = None,
        adaptive: AdaptiveClip | None = None,
        noise_seed: int | None = None,
    ) -> None:
        if inner.name == "scaffold":
            raise PrivacyError(
                "client-level DP cannot wrap SCAFFOLD: its control variates would leave without"
                " noise",
                hint="use fedavg, fedprox, fedavgm, fedadam or fedyogi with DP",
            )
        if not (np.isfinite(noise_multiplier) and noise_multiplier > 0):
            raise PrivacyError(f"noise_multiplier must be > 0; found {noise_multiplier}")
        if expected_participants is not None and expected_participants < 1:
            raise PrivacyError(f"expected_participants must be >= 1; found {expected_participants}")
        self.inner = inner
        self.name = f"dp-{inner.name}"
        self.clip_norm = check_clip_norm(clip_norm)
        self.noise_multiplier = float(noise_multiplier)
        self.expected_participants = expected_participants
        self.adaptive = adaptive
        if adaptive is not None:
            adaptive.clip_norm = self.clip_norm
        self._rng = None if noise_seed is None else noise_generator(noise_seed)

    def _noise_rng(self) -> np.random.Generator:
        return self._rng if self._rng is not None else secure_generator()

    def task_config(self) -> dict[str, float]:
        """The inner algorithm's scalars plus this round's clipping norm."""
        return {**self.inner.task_config(), CLIP_CONFIG_KEY: self.clip_norm}

    def task_extras(self) -> dict[str, Weights]:
        """The inner algorithm's arrays."""
        return self.inner.task_extras()

    def aggregate(self, global_weights: Weights, updates: Sequence[Update]) -> Weights:
        """Clip, sum, add noise, divide by ``W``; let the inner algorithm apply the mean."""
        names = [str(u.participant) for u in updates]
        check_compatible([u.weights for u in updates], names, reference=global_weights)
        c = self.clip_norm
        sums = [np.zeros(np.shape(w), dtype=np.float64) for w in global_weights]
        unclipped: list[bool] = []
        for u in sorted(updates, key=lambda u: str(u.participant)):
            delta = [
                np.asarray(w, dtype=np.float64) - np.asarray(g, dtype=np.float64)
                for w, g in zip(u.weights, global_weights, strict=True)
            ]
            clipped, norm = clip_update(delta, c)
            reported = u.metrics.get(UNCLIPPED_METRIC)
            unclipped.append(bool(reported >= 0.5) if reported is not None else norm <= c)
            for acc, d in zip(sums, clipped, strict=True):
                acc += d
        z = self.noise_multiplier
        if self.adaptive is not None:
            z = self.adaptive.update_noise_multiplier(z, len(updates))
        rng = self._noise_rng()
        denom = float(self.expected_participants or len(updates))
        mean = [(s + gaussian_noise(s.shape, z * c, rng)) / denom for s in sums]
        pseudo = Update(
            participant=ParticipantId("dp-aggregate"),
            round=updates[0].round,
            weights=[
                (np.asarray(g, dtype=np.float64) + m).astype(np.float32)
                for g, m in zip(global_weights, mean, strict=True)
            ],
            num_examples=1,
            schema_hash=updates[0].schema_hash,
        )
        out = self.inner.aggregate(global_weights, [pseudo])
        if self.adaptive is not None:
            self.clip_norm = self.adaptive.update(unclipped, rng)
        return out

    def state(self) -> dict[str, Weights]:
        """The inner state (keys prefixed ``inner:``) and the current clipping norm."""
        out = {f"inner:{k}": v for k, v in self.inner.state().items()}
        out["dp_clip"] = [np.array([self.clip_norm], dtype=np.float32)]
        return out

    def load_state(self, state: Mapping[str, Weights]) -> None:
        """Restore :meth:`state`."""
        self.inner.load_state({k[6:]: v for k, v in state.items() if k.startswith("inner:")})
        if "dp_clip" in state:
            self.clip_norm = check_clip_norm(float(state["dp_clip"][0].ravel()[0]))
            if self.adaptive is not None:
                self.adaptive.clip_norm = self.clip_norm

    def __repr__(self) -> str:
        return (
            f"DPFedAvg(inner={self.inner!r}, clip_norm={self.clip_norm},"
            f" noise_multiplier={self.noise_multiplier},"
            f" expected_participants={self.expected_participants})"
        )
