"""Noise sources for the DP mechanisms: os.urandom in the product path, a seed only for tests."""

from __future__ import annotations

import os

import numpy as np

_TWO_M53 = 2.0 ** -53


class NoiseSource:
    """Uniform and Laplace samples.

    With ``seed=None`` (the product path) every uniform comes from ``os.urandom`` (the
    kernel CSPRNG), 53 bits per double, and Laplace samples use the inverse CDF, so no
    state of a non-cryptographic PRNG can be predicted or replayed. With an integer
    ``seed`` a numpy PCG64 generator is used instead: reproducible, for tests only.
    The released values are rounded/clipped (to pixel levels or character codes), which
    limits the floating-point leaks described by Mironov (CCS 2012) but is not a proof
    against them.
    """

    def __init__(self, seed: int | None = None) -> None:
        self.seed = seed
        self._rng = None if seed is None else np.random.Generator(np.random.PCG64(seed))

    @property
    def cryptographic(self) -> bool:
        """True when samples come from os.urandom."""
        return self._rng is None

    def describe(self) -> str:
        """Name of the source, for metadata."""
        return "os.urandom" if self._rng is None else f"numpy PCG64 seed={self.seed} (test only, NOT private)"

    def uniform(self, size: int | tuple[int, ...]) -> np.ndarray:
        """Uniform doubles in the open interval (0, 1)."""
        shape = (size,) if isinstance(size, int) else tuple(size)
        n = int(np.prod(shape))
        if self._rng is not None:
            u = self._rng.random(n)
        else:
            u = (np.frombuffer(os.urandom(8 * n), dtype=np.uint64) >> np.uint64(11)).astype(np.float64) * _TWO_M53
        u = np.where(u == 0.0, _TWO_M53, u)  # open interval: avoid log(0)
        return u.reshape(shape)

    def laplace(self, scale: float | np.ndarray, size: int | tuple[int, ...]) -> np.ndarray:
        """Laplace(0, scale) samples by the inverse CDF (scale may broadcast against size)."""
        u = self.uniform(size) - 0.5
        return -np.asarray(scale, dtype=np.float64) * np.sign(u) * np.log1p(-2.0 * np.abs(u))

    def integers(self, high: int, size: int) -> np.ndarray:
        """Uniform integers in [0, high) (rejection-free via 53-bit uniforms; bias < 2^-40)."""
        return np.minimum((self.uniform(size) * high).astype(np.int64), high - 1)
