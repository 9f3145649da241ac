"""Exact products in the ring Z_2^64 on floating-point BLAS: the local work of shared matrix products.

Every secure product ends with local cross terms over 64-bit shares (``x_i (y_i + y_{i+1}) + x_{i+1} y_i``).
``torch``'s int64 ``matmul`` is a plain loop, and without AVX-512 the 64-bit multiply is emulated: on a
2-core AVX2 server a ``[64, 1000] @ [1000, 2200]`` int64 product takes ~0.65 s. :func:`ring_matmul`
computes the same product EXACTLY (mod 2^64) from float64 matrix products of limbs:

* each operand is cut into three unsigned limbs of 22, 21 and 21 bits at offsets 0, 22 and 43;
* the limb pairs ``(i, j)`` with ``offset_i + offset_j < 64`` (six of the nine) are float64 matrix
  products; the others only touch bits >= 2^64 and vanish in the ring;
* a product of limbs is below ``2^22 * 2^22 = 2^44``, so a sum over at most :data:`CHUNK` = 512 of them
  is below ``2^53`` and float64 holds it exactly whatever order BLAS adds in; longer inner
  dimensions are cut into chunks of 512 and summed in int64;
* each exact integer is converted back to int64 and shifted by ``offset_i + offset_j`` (wrap-around).

Result: bit-identical to ``a @ b`` on int64 (tests compare on random and extreme operands). Cost: six
float64 products of the same shapes (about 4x less CPU than the int64 loop here). Local: no message.
"""

from __future__ import annotations

import torch

OFFSETS = (0, 22, 43)
WIDTHS = (22, 21, 21)
CHUNK = 512
"""Longest inner dimension of one float64 product: ``512 * (2**22 - 1)**2 < 2**53``."""
_PAIRS = tuple((i, j) for i in range(3) for j in range(3) if OFFSETS[i] + OFFSETS[j] < 64)

assert CHUNK * ((1 << max(WIDTHS)) - 1) ** 2 < 1 << 53


def limbs(t: torch.Tensor) -> list[torch.Tensor]:
    """The three unsigned limbs of an int64 tensor as float64 (``t = sum limb_i << OFFSETS[i]`` mod 2^64)."""
    return [((t >> o) & ((1 << w) - 1)).to(torch.float64) for o, w in zip(OFFSETS, WIDTHS)]


def ring_matmul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``a @ b`` in Z_2^64 for int64 ``a [..., M, K]`` and ``b [K, N]`` (or ``[..., K, N]``), exact.

    Six float64 products per chunk of :data:`CHUNK` along ``K`` (module docstring)."""
    if a.dtype != torch.int64 or b.dtype != torch.int64:
        raise TypeError("ring_matmul takes int64 tensors")
    K = a.shape[-1]
    if b.shape[-2] != K:
        raise ValueError(f"inner dimensions differ: {tuple(a.shape)} @ {tuple(b.shape)}")
    out: torch.Tensor | None = None
    for k0 in range(0, max(K, 1), CHUNK):
        al, bl = limbs(a[..., k0 : k0 + CHUNK]), limbs(b[..., k0 : k0 + CHUNK, :])
        for i, j in _PAIRS:
            term = (al[i] @ bl[j]).to(torch.int64) << (OFFSETS[i] + OFFSETS[j])
            out = term if out is None else out.add_(term)
    assert out is not None
    return out
