"""Fixed-point encoding of real vectors into the ring Z_{2^b}, where masked sums are exact.

Secure aggregation (Bonawitz et al., CCS 2017; Bell et al., CCS 2020) masks integer vectors with
pseudo-random words that cancel only under exact modular addition, so real-valued updates are
first encoded as fixed-point integers modulo ``2^b``. Two encodings are used:

* :class:`FixedPoint` for model updates: ``q = round(x * scale)`` in the ring ``Z_{2^32}``
  (uint32 words, as compact on the wire as float32; see ``docs/adr`` on the choice of ring).
  Rounding is stochastic (unbiased: ``E[q] = x * scale``; Gupta et al., "Deep Learning with
  Limited Numerical Precision", ICML 2015) or to the nearest integer. Each value is at most one
  step ``1 / scale`` away after decoding. The sum of ``n`` encodings decodes exactly to the sum
  of the quantized values as long as ``n * (bound * scale + 1 + noise_bound) < 2^(b-1)``: the
  signed sum never wraps. :meth:`FixedPoint.check_capacity` enforces this at configuration time.
* :func:`encode_wide` / :func:`decode_wide_sum` for the federated feature statistics, whose sums
  of squares span many orders of magnitude: ``round(x * 2^24)`` as a 128-bit two's-complement
  integer cut into four 32-bit limbs, each carried in a uint64 word of the ring ``Z_{2^64}``.
  Limb sums of up to ``2^32`` participants never wrap, and the decoder recombines them exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from numpy.typing import NDArray

from phalanx.core.errors import ConfigError, SecAggError

WIDE_FRACTION_BITS = 24
WIDE_LIMBS = 4
_LIMB = 32
_WIDE_BITS = WIDE_LIMBS * _LIMB


def word_dtype(bits: int) -> np.dtype[np.unsignedinteger]:
    """The numpy word type of the ring ``Z_{2^bits}`` (32 or 64)."""
    if bits == 32:
        return np.dtype(np.uint32)
    if bits == 64:
        return np.dtype(np.uint64)
    raise ConfigError(f"ring size 2^{bits} is not supported: expected 2^32 or 2^64")


@dataclass(frozen=True)
class FixedPoint:
    """Fixed-point encoding of values in ``[-bound, bound]`` into ``Z_{2^bits}``.

    Attributes
    ----------
    scale:
        Integer steps per unit (a step is ``1 / scale``).
    bound:
        Largest absolute value an input may take (the clipping range).
    bits:
        Ring size exponent, 32 or 64.
    """

    scale: float
    bound: float
    bits: int = 32

    def __post_init__(self) -> None:
        word_dtype(self.bits)
        if not (math.isfinite(self.scale) and self.scale > 0):
            raise ConfigError(f"fixed-point scale must be a positive number, found {self.scale}")
        if not (math.isfinite(self.bound) and self.bound > 0):
            raise ConfigError(f"fixed-point bound must be a positive number, found {self.bound}")

    @classmethod
    def fitting(
        cls, n_participants: int, bound: float, bits: int = 32, noise_bound: float = 0.0
    ) -> FixedPoint:
        """The finest power-of-two scale for which ``n_participants`` sums cannot overflow."""
        room = 2.0 ** (bits - 1) / max(1, n_participants) - 1.0 - noise_bound
        if room <= bound:
            raise ConfigError(
                f"no fixed-point scale fits {n_participants} participants with values up to"
                f" {bound} in the ring 2^{bits}",
                hint="lower the clipping bound or use smaller buckets",
            )
        scale = 2.0 ** math.floor(math.log2(room / bound))
        enc = cls(scale=scale, bound=bound, bits=bits)
        enc.check_capacity(n_participants, noise_bound)
        return enc

    def check_capacity(self, n_participants: int, noise_bound: float = 0.0) -> None:
        """Raise :class:`ConfigError` unless a sum of ``n_participants`` encodings cannot wrap.

        Parameters
        ----------
        n_participants:
            Most participants whose encodings are summed (the largest bucket).
        noise_bound:
            Largest absolute integer noise one participant may add to a word (distributed
            differential privacy), in encoded units.
        """
        per = self.bound * self.scale + 1.0 + noise_bound
        limit = 2.0 ** (self.bits - 1)
        if n_participants * per >= limit:
            raise ConfigError(
                f"secure aggregation would overflow: {n_participants} participants x (clip"
                f" range {self.bound} x scale {self.scale:g} + 1 + noise bound {noise_bound:g})"
                f" = {n_participants * per:.4g} reaches the ring's signed range 2^{self.bits - 1}"
                f" = {limit:.4g}",
                hint="lower the scale, the clipping bound or the bucket size",
            )

    @property
    def step(self) -> float:
        """The quantization step ``1 / scale``."""
        return 1.0 / self.scale

    def encode(
        self, values: NDArray[np.floating], rng: np.random.Generator | None = None
    ) -> NDArray[np.int64]:
        """Quantize ``values`` to signed integers (stochastic rounding with ``rng``, else nearest).

        Raises
        ------
        SecAggError
            When a value is not finite or exceeds the bound (the caller must clip first).
        """
        x = np.asarray(values, dtype=np.float64)
        if x.size and not np.all(np.isfinite(x)):
            raise SecAggError("cannot encode NaN or infinite values for secure aggregation")
        worst = float(np.max(np.abs(x))) if x.size else 0.0
        if worst > self.bound * (1 + 1e-9):
            raise SecAggError(
                f"a value of magnitude {worst:.6g} exceeds the encoding bound {self.bound}",
                hint="clip updates to the configured bound before encoding",
            )
        scaled = x * self.scale
        if rng is None:
            return np.rint(scaled).astype(np.int64)
        low = np.floor(scaled)
        return (low + (rng.random(scaled.shape) < (scaled - low))).astype(np.int64)

    def to_ring(self, quantized: NDArray[np.int64]) -> NDArray[np.unsignedinteger]:
        """Signed integers as ring words (two's complement modulo ``2^bits``)."""
        q = np.asarray(quantized, dtype=np.int64)
        if self.bits == 64:
            return q.view(np.uint64).copy()
        return (q & 0xFFFFFFFF).astype(np.uint32)

    def decode_sum(self, total: NDArray[np.unsignedinteger]) -> NDArray[np.float64]:
        """The real sum behind a ring sum of encodings (signed interpretation, then ``/scale``)."""
        words = np.asarray(total)
        if self.bits == 64:
            signed = words.astype(np.uint64).view(np.int64)
        else:
            signed = words.astype(np.int64)
            signed = np.where(signed >= 1 << 31, signed - (1 << 32), signed)
        return signed.astype(np.float64) / self.scale


def encode_wide(values: NDArray[np.floating], max_participants: int) -> NDArray[np.uint64]:
    """Encode ``values`` as 32-bit limbs of 128-bit fixed point (``2^-24`` steps) in uint64 words.

    The result has ``4 * len(values)`` words: limb ``j`` of every value, then limb ``j + 1``.

    Raises
    ------
    SecAggError
        When a value is not finite or too large for ``max_participants`` sums to fit.
    """
    x = np.asarray(values, dtype=np.float64).ravel()
    if x.size and not np.all(np.isfinite(x)):
        raise SecAggError("cannot encode NaN or infinite statistics for secure aggregation")
    limit = 2.0 ** (_WIDE_BITS - 1 - WIDE_FRACTION_BITS) / max(1, max_participants)
    worst = float(np.max(np.abs(x))) if x.size else 0.0
    if worst >= limit:
        raise SecAggError(
            f"a statistic of magnitude {worst:.4g} is too large to sum {max_participants}"
            f" times in 128-bit fixed point (limit {limit:.4g})",
            hint="the feature's values are implausibly large; check the data",
        )
    out = np.zeros((WIDE_LIMBS, x.size), dtype=np.uint64)
    mask = (1 << _WIDE_BITS) - 1
    for i, v in enumerate(x.tolist()):
        q = round(math.ldexp(v, WIDE_FRACTION_BITS)) & mask
        for j in range(WIDE_LIMBS):
            out[j, i] = (q >> (_LIMB * j)) & 0xFFFFFFFF
    return out.ravel()


def decode_wide_sum(total: NDArray[np.uint64], length: int) -> NDArray[np.float64]:
    """The real sums behind a ring sum of :func:`encode_wide` words for ``length`` values."""
    words = np.asarray(total, dtype=np.uint64)
    if words.size != WIDE_LIMBS * length:
        raise SecAggError(
            f"a wide sum has {words.size} words, expected {WIDE_LIMBS * length} for {length} values"
        )
    limbs = words.reshape(WIDE_LIMBS, length)
    mask = (1 << _WIDE_BITS) - 1
    out = np.empty(length, dtype=np.float64)
    cols = [limbs[j].tolist() for j in range(WIDE_LIMBS)]
    for i in range(length):
        q = sum(int(cols[j][i]) << (_LIMB * j) for j in range(WIDE_LIMBS)) & mask
        if q >= 1 << (_WIDE_BITS - 1):
            q -= 1 << _WIDE_BITS
        out[i] = q / (1 << WIDE_FRACTION_BITS)
    return out
