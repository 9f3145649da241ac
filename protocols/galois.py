"""The Galois ring GR(2^64, 56) = Z_2^64[X] / (f(X)): the extension where checks get soundness.

A check over Z_2^64 itself is weak: a random coefficient ``r`` kills the error ``2^63``
whenever ``r`` is even (probability 1/2). In the degree-``DEGREE`` extension, a nonzero
polynomial of degree ``k`` has a uniformly random root with probability at most
``k / 2^DEGREE`` (write it as ``2^v g`` with ``g`` nonzero mod 2: a root reduces to a root
of ``g mod 2`` over GF(2^56), which has at most ``k``; Abspoel et al., "Fast secure
multiparty computation over arbitrary rings", TCC 2019).

``f(X) = X^56 + X^8 + X^3 + X^2 + 1`` is irreducible over GF(2) (Rabin's test,
tests/unit/test_galois.py), so any monic lift of it defines GR(2^64, 56); ring arithmetic in
the coefficients is int64 arithmetic, wrapping mod 2^64.

Elements are int64 tensors whose LAST dimension holds the ``DEGREE`` coefficients
(``[..., 56]``, coefficient of ``X^i`` at index ``i``). Cost: a product of two elements is
``56^2`` word multiplications; a Z_2^64 scalar times an element is 56. The degree is 56 (not
48) so that a whole query's proofs, in memory-bounded batches, stay below 2^-40 together
(:func:`protocols.dzk.call_soundness_bits`: up to 65,536 proof rounds summed).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import torch

from . import proof_kernels as K
from .prf import KEY_BYTES, PRG, keystream_blocks

DEGREE = 56
TAPS = (0, 2, 3, 8)
"""``f(X) = X^DEGREE + sum(X^t for t in TAPS)``, so ``X^DEGREE = -sum(X^t)`` in the ring."""


def zeros(*shape: int) -> torch.Tensor:
    """``shape`` zero elements (``[*shape, DEGREE]``)."""
    return torch.zeros(*shape, DEGREE, dtype=torch.int64)


def one() -> torch.Tensor:
    out = zeros()
    out[0] = 1
    return out


def lift(x: torch.Tensor) -> torch.Tensor:
    """Z_2^64 values ``[...]`` -> the constant elements ``[..., DEGREE]``."""
    out = torch.zeros(*x.shape, DEGREE, dtype=torch.int64)
    out[..., 0] = x
    return out


def random(prg: PRG, *shape: int) -> torch.Tensor:
    """Uniform elements ``[*shape, DEGREE]`` from ``prg``."""
    return prg.int64((*shape, DEGREE))


LAZY_BLOCK = 1 << 14
"""Elements per block of a :class:`LazyRandom`: 16,384 x 56 words = 7.3 MB, one buffer reused."""


@dataclass(frozen=True)
class LazyRandom:
    """``n`` uniform elements ``[n, DEGREE]`` (a gate's challenge coefficients) never stored whole: an AES-128-CTR
    keystream under ``key`` (drawn from the challenge's PRG, so every holder derives the same), regenerated
    block by block where read; block ``b`` (elements ``b B .. b B + B - 1``, ``B`` = :data:`LAZY_BLOCK`) is the
    stream from counter ``b * 2^64``. Drawing them into memory (448 bytes per product, for each role of each
    party) was the largest item of a search proof's CPU: fresh pages the kernel zeroes first."""

    key: bytes
    n: int

    @staticmethod
    def draw(prg: PRG, n: int) -> LazyRandom:
        return LazyRandom(bytes(prg.bytes(KEY_BYTES)[:KEY_BYTES]), n)

    def blocks(self) -> Iterator[tuple[int, torch.Tensor]]:
        """``(g0, elements [m, DEGREE])`` for the blocks in order (the tensor is reused: read it before the next)."""
        for g0, words in keystream_blocks(self.key, self.n, DEGREE, LAZY_BLOCK):
            yield g0, torch.from_numpy(words.reshape(-1, DEGREE))

    def dense(self) -> torch.Tensor:
        """All elements in memory (tests)."""
        out = torch.empty(self.n, DEGREE, dtype=torch.int64)
        for g0, block in self.blocks():
            out[g0: g0 + block.shape[0]] = block
        return out


def is_unit(a: torch.Tensor) -> torch.Tensor:
    """Invertible iff nonzero mod 2 (the ring is local with maximal ideal (2)). ``[...]`` bool."""
    return (a & 1).any(-1)


def _powers() -> torch.Tensor:
    """``[2 DEGREE - 1, DEGREE]``: row ``k`` holds ``X^k mod f``."""
    rows = [torch.zeros(DEGREE, dtype=torch.int64) for _ in range(DEGREE)]
    for k in range(DEGREE):
        rows[k][k] = 1
    for _ in range(DEGREE - 1):
        prev = rows[-1]
        nxt = torch.cat([torch.zeros(1, dtype=torch.int64), prev[:-1]])  # times X
        for t in TAPS:  # the X^DEGREE term becomes -sum X^t
            nxt[t] -= prev[-1]
        rows.append(nxt)
    return torch.stack(rows)


_POWERS = _powers()
_PRODUCT = _POWERS[torch.arange(DEGREE).view(-1, 1) + torch.arange(DEGREE).view(1, -1)].reshape(DEGREE * DEGREE, DEGREE)
"""``[DEGREE^2, DEGREE]``: row ``i DEGREE + j`` is ``X^(i+j) mod f``; ``(a outer b).flatten() @ _PRODUCT = a b``."""


def mul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Elementwise product (broadcasting over the leading dimensions). Cost: ``DEGREE^3`` word products
    per element (one matmul; meant for few elements: use :func:`mul_matrix` or :func:`inner` for many)."""
    outer = a.unsqueeze(-1) * b.unsqueeze(-2)
    return outer.reshape(*outer.shape[:-2], DEGREE * DEGREE) @ _PRODUCT


def mul_matrix(r: torch.Tensor) -> torch.Tensor:
    """The ``[DEGREE, DEGREE]`` matrix ``M`` with ``a @ M = r * a`` for every ``a`` (``r`` one element):
    row ``i`` is ``r X^i``. Multiplying many elements by one ``r`` is then one int64 matmul."""
    return torch.einsum("j,jik->ik", r, _PRODUCT.view(DEGREE, DEGREE, DEGREE))


def inner(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    """``sum_g u_g v_g`` for ``u, v [m, DEGREE]`` -> one element. Cost: ``m DEGREE^2`` word products (one matmul)."""
    if u.shape != v.shape or u.dim() != 2:
        raise ValueError(f"inner: need two [m, {DEGREE}] tensors, got {tuple(u.shape)} and {tuple(v.shape)}")
    outer = torch.from_numpy(K.ring_cross(u.numpy(), v.numpy()))  # [D, D]: sum_g u[g, i] v[g, j], of X^(i + j)
    return outer.reshape(-1) @ _PRODUCT


def weighted(a: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """``sum_j a[i, j] t_j`` for Z_2^64 values ``a [m, k]`` and elements ``t [k, DEGREE]`` -> ``[m, DEGREE]``
    (``a @ t`` on int64, compiled: :func:`protocols.proof_kernels.ring_weight`). ``m k DEGREE`` word products."""
    return torch.from_numpy(K.ring_weight(a.numpy(), t.numpy()))


def weighted_t(a: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    """``sum_i a[..., i, j] s[..., i]`` for values ``a [k, m]`` and elements ``s [k, DEGREE]`` -> ``[m, DEGREE]``,
    or batched over one leading dimension (``a [G, k, m]``, ``s [G, k, DEGREE]`` -> ``[G, m, DEGREE]``)."""
    if a.dim() == 2:
        return torch.from_numpy(K.ring_weight_t(a.numpy()[None], s.numpy()[None])[0])
    return torch.from_numpy(K.ring_weight_t(a.numpy(), s.numpy()))


def fold_inplace(vec: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
    """``low + r (high - low)`` for the two halves of a contiguous vector ``[2 m, DEGREE]``, written over the low
    half, which is returned (a view). Cost: ``m DEGREE^2`` word products, no allocation."""
    K.ring_fold_inplace(vec.numpy(), mul_matrix(r).numpy())
    return vec[: vec.shape[0] // 2]


def fold_products(u: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``(<u_L, v_L>, <u_R - u_L, v_R - v_L>)`` for contiguous vectors ``[2 m, DEGREE]`` split in halves: the
    ``X^0`` and ``X^2`` coefficients of a fold's polynomial, in one pass. Cost: ``2 m DEGREE^2`` word products."""
    low, diff = K.ring_cross_folded(u.numpy(), v.numpy())
    return torch.from_numpy(low).reshape(-1) @ _PRODUCT, torch.from_numpy(diff).reshape(-1) @ _PRODUCT
