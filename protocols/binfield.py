"""GF(2^48) for checks of boolean (XOR-shared) messages, with vectors stored as bit-planes.

The field is GF(2)[X] / (f) with the modulus of :mod:`protocols.galois` reduced mod 2
(``X^48 + X^5 + X^3 + X^2 + 1``, irreducible), so a nonzero polynomial of degree ``k`` has a
uniformly random root with probability at most ``k / 2^48`` (Schwartz-Zippel).

* A **scalar** is an int64 tensor ``[..., 1]`` holding the 48 coefficient bits.
* A **vector** of ``m`` field elements (:class:`BitVec`) is 48 bit-planes of ``m`` bits packed
  64 per int64 word (``[48, m / 64]``): plane ``k`` holds coefficient ``k`` of every element. A
  vector of BITS (a boolean share, 64 lanes per word) is then the plane-0 vector of itself, and
  ``rho * bits`` is a plane-wise AND; addition is XOR.
* :func:`inner` of two vectors is ``sum_{i,j} X^(i+j) parity(popcount(u_i & v_j))``: 48^2 popcounts
  over the packed words, i.e. 36 word operations per element; :func:`fold` multiplies a vector
  by one scalar as 48 masked XORs of planes.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import torch

from .prf import PRG

DEGREE = 48
TAPS = (0, 2, 3, 5)
_MASK = (1 << DEGREE) - 1
_MODULUS = (1 << DEGREE) | sum(1 << t for t in TAPS)


def _clmul_mod(a: int, b: int) -> int:
    """``a * b`` in GF(2^48) on Python ints."""
    r = 0
    while b:
        if b & 1:
            r ^= a
        b >>= 1
        a <<= 1
        if a >> DEGREE:
            a ^= _MODULUS
    return r


def _reduce(p: int) -> int:
    for i in range(p.bit_length() - 1, DEGREE - 1, -1):
        if (p >> i) & 1:
            p ^= _MODULUS << (i - DEGREE)
    return p


def mul(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Elementwise product of scalars ``[..., 1]`` (broadcasting; for few elements)."""
    a, b = torch.broadcast_tensors(a, b)
    out = [_clmul_mod(int(x), int(y)) for x, y in zip(a.reshape(-1).tolist(), b.reshape(-1).tolist())]
    return torch.tensor(out, dtype=torch.int64).view(a.shape)


def random(prg: PRG, *shape: int) -> torch.Tensor:
    """Uniform scalars ``[*shape, 1]``."""
    return prg.int64((*shape, 1)) & _MASK


@dataclass
class BitVec:
    """``bits`` field elements as bit-planes ``[DEGREE, words]`` (unused high bits zero)."""

    planes: torch.Tensor
    bits: int


def lift_bits(words: torch.Tensor) -> BitVec:
    """Boolean words (64 lanes each) -> the vector of their bits as field elements (plane 0)."""
    w = words.reshape(-1)
    planes = torch.zeros(DEGREE, w.numel(), dtype=torch.int64)
    planes[0] = w
    return BitVec(planes, 64 * w.numel())


def scale_bits(rho: torch.Tensor, words: torch.Tensor) -> BitVec:
    """``rho_g * bit_g`` for random planes ``rho [DEGREE, W]`` and boolean words ``[W]``."""
    w = words.reshape(-1)
    return BitVec(rho & w, 64 * w.numel())


def dot_bits(rho: torch.Tensor, words: torch.Tensor) -> torch.Tensor:
    """``sum_g rho_g bit_g`` (a scalar ``[1]``) for planes ``rho [DEGREE, W]`` and words ``[W]``."""
    counts = np.bitwise_count((rho & words.reshape(-1)).numpy().view(np.uint64)).sum(1) & 1
    return torch.tensor([int(sum(int(c) << k for k, c in enumerate(counts)))], dtype=torch.int64)


def concat(parts: list[BitVec], pad: torch.Tensor, folds: int) -> BitVec:
    """``parts`` (each a whole number of words), then the scalar ``pad``, then zeros: ``2^folds`` entries
    (``folds >= 7``: at least two words)."""
    words = 1 << (folds - 6)
    used = sum(p.planes.shape[1] for p in parts)
    if used + 1 > words:
        raise ValueError("concat: the vector does not fit")
    planes = torch.zeros(DEGREE, words, dtype=torch.int64)
    off = 0
    for p in parts:
        planes[:, off: off + p.planes.shape[1]] = p.planes
        off += p.planes.shape[1]
    planes[:, off] = (int(pad.reshape(-1)[0]) >> torch.arange(DEGREE)) & 1
    return BitVec(planes, 64 * words)


def _halves(v: BitVec) -> tuple[torch.Tensor, torch.Tensor, int]:
    half = v.bits // 2
    if half >= 64:
        w = v.planes.shape[1] // 2
        return v.planes[:, :w], v.planes[:, w:], half
    mask = (1 << half) - 1
    return v.planes & mask, (v.planes >> half) & mask, half


_GROUP = 4  # planes per group of the four-Russians tables


@lru_cache(maxsize=16)
def _times_index(r: int) -> np.ndarray:
    """``[DEGREE // _GROUP, DEGREE]``: for output plane ``k``, the ``_GROUP``-bit pattern of the input planes
    ``i`` of each group whose ``r X^i`` has bit ``k``."""
    rows = [_clmul_mod(r, 1 << i) for i in range(DEGREE)]
    out = np.zeros((DEGREE // _GROUP, DEGREE), dtype=np.int64)
    for i, row in enumerate(rows):
        for k in range(DEGREE):
            if (row >> k) & 1:
                out[i // _GROUP, k] |= 1 << (i % _GROUP)
    return out


def _times(r: torch.Tensor, planes: torch.Tensor) -> torch.Tensor:
    """``r * v`` plane-wise: output plane ``k`` is the XOR of the input planes ``i`` whose ``r X^i`` has bit
    ``k``. Four Russians: per group of 4 input planes a table of their 16 XOR combinations, then 12
    table rows per output plane (756 word XORs per word column instead of 2304)."""
    index = _times_index(int(r.reshape(-1)[0]))
    p = planes.numpy()
    out = np.zeros_like(p)
    for g in range(DEGREE // _GROUP):
        table = np.zeros((1 << _GROUP, p.shape[1]), dtype=np.int64)
        for c in range(1, 1 << _GROUP):
            low = c & -c
            table[c] = table[c ^ low] ^ p[g * _GROUP + low.bit_length() - 1]
        out ^= table[index[g]]
    return torch.from_numpy(out)


def fold(v: BitVec, r: torch.Tensor) -> BitVec:
    """``v_L + r (v_R - v_L)`` (half the entries)."""
    low, high, half = _halves(v)
    return BitVec(low ^ _times(r, low ^ high), half)


def _inner_planes(u: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
    vu = v.numpy().view(np.uint64)
    p = 0
    for i in range(DEGREE):
        parity = np.bitwise_count(u[i].numpy().view(np.uint64)[None, :] & vu).sum(1) & 1
        for j in np.flatnonzero(parity):
            p ^= 1 << (i + int(j))
    return torch.tensor([_reduce(p)], dtype=torch.int64)


def fold_polynomial(u: BitVec, v: BitVec, total: torch.Tensor | None = None) -> torch.Tensor:
    """Coefficients ``[3, 1]`` of ``h(X) = <u_L + X (u_R - u_L), v_L + X (v_R - v_L)>``; ``total = <u, v>``
    (when known) saves one of the three inner products."""
    ul, uh, _ = _halves(u)
    vl, vh, _ = _halves(v)
    c0, c2 = _inner_planes(ul, vl), _inner_planes(ul ^ uh, vl ^ vh)
    c_hi = _inner_planes(uh, vh) if total is None else total ^ c0
    return torch.stack([c0, c_hi ^ c0 ^ c2, c2])


def first(v: BitVec) -> torch.Tensor:
    """The single entry of a folded vector, as a scalar ``[1]``."""
    bits = (v.planes[:, 0] & 1).tolist()
    return torch.tensor([sum(int(b) << k for k, b in enumerate(bits))], dtype=torch.int64)
