"""The ring Z_2^64 (torch.int64 with wrap-around) and fixed-point encoding.

Fixed point: a real ``x`` is stored as ``round(x * 2**f)`` in Z_2^64, ``f = 16`` by
default (precision 2**-16 ~= 1.5e-5).

Documented range: ``encode`` accepts ``|x| < 2**31`` (``MAX_ABS``) and refuses anything
larger or non-finite. Two limits then apply inside protocols:

* a product of two encoded values is held at scale ``2**(2f)`` before truncation, so
  ``|x * y|`` must stay below ``2**(63 - 2f) = 2**31``;
* comparison computes the sign of ``x - y`` and needs ``|x - y| * 2**f < 2**63``.

Truncation (``arithmetic.truncate``) is probabilistic (SecureML / ABY3 style): the result
is ``floor(z / 2**f)`` or that plus one ulp, except with probability at most
``|z| / 2**63`` per element (``z`` the ring value before truncation), when it is off by
about ``2**(64 - f)``. For ``|x*y| <= 2**10`` that is ``<= 2**-21`` per element.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

RING_BITS = 64
DTYPE = torch.int64


class RingError(ValueError):
    """Input that cannot be represented in the ring or the fixed-point encoding."""


def as_ring(t: torch.Tensor | np.ndarray, what: str = "tensor") -> torch.Tensor:
    """Check that ``t`` is an int64 tensor (ring elements) and return it as torch."""
    if isinstance(t, np.ndarray):
        t = torch.from_numpy(t)
    if not isinstance(t, torch.Tensor):
        raise TypeError(f"{what} must be a torch.Tensor of int64 ring elements, got {type(t).__name__}")
    if t.dtype != DTYPE:
        raise TypeError(f"{what} must have dtype torch.int64 (ring Z_2^64), got {t.dtype}")
    return t


@dataclass(frozen=True)
class FixedPoint:
    """Fixed-point codec with ``frac_bits`` fractional bits."""

    frac_bits: int = 16

    @property
    def scale(self) -> int:
        return 1 << self.frac_bits

    @property
    def max_abs(self) -> float:
        """Largest magnitude ``encode`` accepts (exclusive)."""
        return float(2 ** (63 - 2 * self.frac_bits))

    @property
    def resolution(self) -> float:
        return 1.0 / self.scale

    def encode(self, x: torch.Tensor | np.ndarray | float) -> torch.Tensor:
        """Real values -> ring elements ``round(x * 2**f)``; raises RingError out of range."""
        t = torch.as_tensor(x)
        if t.dtype == DTYPE:
            t = t.to(torch.float64)
        if not torch.is_floating_point(t):
            t = t.to(torch.float64)
        t = t.to(torch.float64)
        if t.numel() and not bool(torch.isfinite(t).all()):
            raise RingError("fixed-point encode: input has NaN or infinite values")
        if t.numel() and float(t.abs().max()) >= self.max_abs:
            n_bad = int((t.abs() >= self.max_abs).sum())
            raise RingError(  # counts only: the values themselves may be secret
                f"fixed-point encode: |x| must be < {self.max_abs:.0f} with {self.frac_bits} "
                f"fractional bits; {n_bad} of {t.numel()} values are out of range"
            )
        return torch.round(t * self.scale).to(DTYPE)

    def decode(self, t: torch.Tensor) -> torch.Tensor:
        """Ring elements -> float64 reals (two's-complement signed)."""
        t = as_ring(t)
        return t.to(torch.float64) / self.scale


DEFAULT_FP = FixedPoint(16)
