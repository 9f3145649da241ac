"""GF(2^56) for checks of boolean (XOR-shared) messages, with vectors stored as bit-planes.

The field is GF(2)[X] / (f) with the modulus of :mod:`protocols.galois` reduced mod 2
(``X^56 + X^8 + X^3 + X^2 + 1``, irreducible), so a nonzero polynomial of degree ``k`` has a
uniformly random root with probability at most ``k / 2^56`` (Schwartz-Zippel).

* A **scalar** is an int64 tensor ``[..., 1]`` holding the 56 coefficient bits (nonnegative).
* A dense **vector** of ``m`` field elements (:class:`BitVec`) is 56 bit-planes of ``m`` bits packed
  64 per int64 word (``[56, m / 64]``): plane ``k`` holds coefficient ``k`` of every element; addition
  is XOR. :func:`inner` of two is ``sum_{i,j} X^(i+j) parity(popcount(u_i & v_j))``: 56^2 AND-XORs per
  word (:mod:`protocols.proof_kernels`); :func:`fold` (``v_L + r (v_R - v_L)``) is about 17 XORs of
  planes per plane (four planes at a time), in place.
* A proof's vector before its first fold is a :class:`Paired` (:func:`paired`), never built: parts laid
  out in halves, either scaled (``rho & left | rho & right``) or bits (``left | right``). Its first fold
  writes a dense vector of half its length straight from each ``rho`` (scaled) or gives a :class:`Combo`
  (bits); its first fold polynomial is three masked parities of each ``rho`` (3 x 56 AND-XORs per word).
* A :class:`Combo` is ``T`` bit vectors with a scalar each, plus the pad: each fold doubles the terms and
  halves their length, and its fold polynomial with a dense vector costs ``56 T`` AND-XORs per word
  instead of ``56^2``; past :data:`MAX_TERMS` terms, or below 4 words, it folds as a dense vector.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch

from . import proof_kernels as K
from .prf import KEY_BYTES, PRG, keystream_blocks

DEGREE = 56
TAPS = (0, 2, 3, 8)
_MASK = (1 << DEGREE) - 1
_MODULUS = (1 << DEGREE) | sum(1 << t for t in TAPS)


def _clmul_mod(a: int, b: int) -> int:
    """``a * b`` in GF(2^56) on Python ints."""
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


RHO_BLOCK = 1 << 14
"""Words per block of a :class:`Rho`: 56 planes x 16,384 words x 8 bytes = 7.3 MB, one buffer reused."""


@dataclass(frozen=True)
class Rho:
    """Uniform field elements as bit-planes ``[DEGREE, words]`` (a gate's challenge coefficients), never stored
    whole: an AES-128-CTR keystream under ``key`` (drawn from the challenge's PRG, so prover and verifier
    derive the same), regenerated block by block each time a kernel reads it. Block ``b`` (words
    ``b B .. b B + B - 1``, ``B`` = :data:`RHO_BLOCK`) is the stream from counter ``b * 2^64``, its planes one
    after the other; each word is ANDed with ``mask``. Drawing the planes once into memory cost more than
    twice the AES: fresh pages (7 bytes per AND lane, twice per party) that the kernel zeroes first."""

    key: bytes
    words: int
    mask: int = -1

    @staticmethod
    def draw(rng: PRG, words: int, mask: int = -1) -> Rho:
        return Rho(bytes(rng.bytes(KEY_BYTES)[:KEY_BYTES]), words, mask)

    @property
    def shape(self) -> tuple[int, int]:
        return (DEGREE, self.words)

    def blocks(self) -> Iterator[tuple[int, np.ndarray]]:
        """``(w0, planes [DEGREE, n])`` for the blocks in order (the array is reused: read it before the next)."""
        for w0, words in keystream_blocks(self.key, self.words, DEGREE, RHO_BLOCK):
            planes = words.reshape(DEGREE, -1)
            if self.mask != -1:
                planes &= self.mask
            yield w0, planes

    def dense(self) -> torch.Tensor:
        """All planes in memory (tests)."""
        out = torch.empty(DEGREE, self.words, dtype=torch.int64)
        for w0, planes in self.blocks():
            out[:, w0: w0 + planes.shape[1]] = torch.from_numpy(planes)
        return out


Planes = torch.Tensor | Rho
"""Bit-planes ``[DEGREE, W]``: in memory, or a :class:`Rho` regenerated where read."""


def _blocks(rho: Planes) -> Iterator[tuple[int, np.ndarray]]:
    if isinstance(rho, Rho):
        yield from rho.blocks()
    else:
        yield 0, rho.numpy()


def dot_bits(rho: Planes, words: torch.Tensor) -> torch.Tensor:
    """``sum_g rho_g bit_g`` (a scalar ``[1]``) for planes ``rho [DEGREE, W]`` and words ``[W]``."""
    flat = words.reshape(-1).contiguous().numpy()
    counts = np.zeros(DEGREE, dtype=bool)
    for w0, planes in _blocks(rho):
        counts ^= K.masked_parities(planes, flat[w0: w0 + planes.shape[1]])
    return torch.tensor([int(sum(int(c) << k for k, c in enumerate(counts)))], dtype=torch.int64)


@dataclass
class Pair:
    """Two parts of one claim for :func:`paired`: ``rho & left`` and ``rho & right`` for planes ``rho [DEGREE, W]``
    and boolean words ``left, right [W]`` (``rho`` None: the bits of ``left`` and ``right`` themselves)."""

    rho: Planes | None
    left: torch.Tensor
    right: torch.Tensor


@dataclass
class Paired:
    """A vector of ``128 half_words`` entries, not yet built: its low half holds the parts' left sides one after
    the other, then the scalar ``pad`` (lane 0 of the next word), then zeros; its high half the parts' right
    sides at the same places, then zeros. Its first :func:`fold` writes the folded half straight from each
    part's ``rho`` (nothing twice that size, not even the parts side by side, is ever written) and its first
    :func:`fold_polynomial` takes three masked parities of each ``rho``."""

    parts: list[Pair]
    pad: int
    half_words: int

    @property
    def bits(self) -> int:
        return 128 * self.half_words

    @property
    def scaled(self) -> bool:
        return bool(self.parts) and self.parts[0].rho is not None

    @property
    def words(self) -> int:
        """Words of parts in each half."""
        return sum(p.left.numel() for p in self.parts)


def paired(parts: list[Pair], pad: torch.Tensor, folds: int) -> Paired:
    """``parts`` laid out in halves (:class:`Paired`) in a vector of ``2^folds`` entries (``folds >= 7``). The parts
    must be all scaled or all bits (a party's vector for one proof is one or the other)."""
    if folds < 7:
        raise ValueError("paired: at least 2^7 entries")
    half_words = 1 << (folds - 7)
    parts = [Pair(p.rho, p.left.reshape(-1), p.right.reshape(-1)) for p in parts]
    scaled = [p.rho is not None for p in parts]
    if any(scaled) and not all(scaled):
        raise ValueError("paired: scaled parts and bits in one vector")
    for p in parts:
        w = p.left.numel()
        if p.right.numel() != w or (p.rho is not None and tuple(p.rho.shape) != (DEGREE, w)):
            raise ValueError("paired: a part's sides differ in size")
    v = Paired(parts, int(pad.reshape(-1)[0]), half_words)
    if v.words + 1 > half_words:
        raise ValueError("paired: the parts do not fit")
    return v


def _fold_paired(v: Paired, r: int) -> BitVec | Combo:
    """:func:`fold` of a :class:`Paired` vector: a dense vector of its half length (scaled parts) or a
    :class:`Combo` of two terms (bits)."""
    w = v.words
    if not v.scaled:  # bits: the low half plus r times the halves' difference, as two terms
        terms = torch.zeros(2, v.half_words, dtype=torch.int64)
        off = 0
        for p in v.parts:
            n = p.left.numel()
            terms[0, off: off + n] = p.left
            torch.bitwise_xor(p.left, p.right, out=terms[1, off: off + n])
            off += n
        return Combo(terms, [1, r], (64 * w, v.pad ^ _clmul_mod(r, v.pad)))
    out = torch.empty(DEGREE, v.half_words, dtype=torch.int64)
    sel, off = _select(r), 0
    for p in v.parts:
        n = p.left.numel()
        assert p.rho is not None
        left, right = p.left.numpy(), p.right.numpy()
        for w0, planes in _blocks(p.rho):
            w1 = w0 + planes.shape[1]
            K.fold_masked(planes, left[w0:w1], right[w0:w1], sel, out.numpy(), off + w0)
        off += n
    out[:, w] = ((v.pad ^ _clmul_mod(r, v.pad)) >> torch.arange(DEGREE)) & 1  # pad + r (0 - pad)
    out[:, w + 1:] = 0
    return BitVec(out, 64 * v.half_words)


def _paired_polynomial(u: Paired, v: Paired) -> torch.Tensor:
    """:func:`fold_polynomial` of a scaled and a bits :class:`Paired` vector laid out alike."""
    if v.scaled:
        u, v = v, u
    widths = [p.left.numel() for p in u.parts]
    if v.scaled or (v.parts and widths != [p.left.numel() for p in v.parts]) or u.half_words != v.half_words:
        raise ValueError("fold_polynomial: a scaled and a bits vector of one layout")
    par = np.zeros((3, DEGREE), dtype=bool)
    for a, b in zip(u.parts, v.parts):  # (both empty: the pads alone)
        assert a.rho is not None
        masks = [(a.left & b.left).numpy(), ((a.left ^ a.right) & (b.left ^ b.right)).numpy(),
                 (a.right & b.right).numpy()]
        for w0, planes in _blocks(a.rho):
            w1 = w0 + planes.shape[1]
            par ^= K.masked_parities3(planes, *(m[w0:w1] for m in masks))
    c0_rho, c2_rho, hi = (sum(int(b) << k for k, b in enumerate(row)) for row in par.tolist())
    pads = _clmul_mod(u.pad, v.pad)  # the pads meet in the low half; the high half is 0 there
    c0, c2 = c0_rho ^ pads, c2_rho ^ pads
    return torch.tensor([[c0], [hi ^ c0 ^ c2], [c2]], dtype=torch.int64)


MAX_TERMS = 32
"""Terms a :class:`Combo` keeps before it becomes dense: the fold polynomial costs ``56 T`` AND-XORs per word of a
combination of ``T`` terms against ``56^2`` for a dense vector, and a dense vector of ``w`` words is ``56 w``
words against ``2 w`` (the terms hold ``2 w`` words whatever ``T``)."""


@dataclass
class Combo:
    """``sum_j scalars[j] * planes[j] + pad``: a vector of ``64 words`` field elements as ``T`` bit vectors
    ``planes [T, words]`` with a scalar each, plus one element ``pad = (lane, element)`` (or None). A vector of
    bits folds into two terms (the low half, and the halves' difference times ``r``) and each later fold doubles
    the terms and halves their length: folds of ``2 w`` words, not of ``56 w``, until :data:`MAX_TERMS`."""

    planes: torch.Tensor
    scalars: list[int]
    pad: tuple[int, int] | None

    @property
    def bits(self) -> int:
        return 64 * self.planes.shape[1]


def _lane(planes: torch.Tensor, lane: int) -> int:
    """The field element at ``lane`` of dense ``planes``."""
    word, bit = divmod(lane, 64)
    return int(sum(int(b) << k for k, b in enumerate(((planes[:, word] >> bit) & 1).tolist())))


def combo_dense(v: Combo) -> BitVec:
    """``v`` as a dense vector (plane ``k``: the XOR of the terms whose scalar has bit ``k``)."""
    select = np.array([[(s >> k) & 1 for s in v.scalars] for k in range(DEGREE)], dtype=bool)
    base = np.zeros((DEGREE, v.planes.shape[1]), dtype=np.int64)
    planes = torch.from_numpy(K.subset_xor(v.planes.numpy(), select, base))
    if v.pad is not None:
        lane, e = v.pad
        word, bit = divmod(lane, 64)
        planes[:, word] ^= ((e >> torch.arange(DEGREE)) & 1) << bit
    return BitVec(planes, v.bits)


def _fold_combo(v: Combo, r: int) -> BitVec | Combo:
    words = v.planes.shape[1]
    if words < 4 or 2 * len(v.scalars) > MAX_TERMS:
        return fold(combo_dense(v), torch.tensor([r]))
    half = words // 2
    lo, hi = v.planes[:, :half], v.planes[:, half:]
    planes = torch.cat([lo, lo ^ hi])
    pad = None
    if v.pad is not None:
        lane, e = v.pad
        pad = (lane, e ^ _clmul_mod(r, e)) if lane < 64 * half else (lane - 64 * half, _clmul_mod(r, e))
    return Combo(planes, v.scalars + [_clmul_mod(s, r) for s in v.scalars], pad)


def _combo_polynomial(u: BitVec, v: Combo, total: torch.Tensor | None) -> torch.Tensor:
    """:func:`fold_polynomial` of a dense ``u`` and a :class:`Combo` ``v`` of at least two words per half."""
    ul, uh, half = _halves(u)
    w = v.planes.shape[1] // 2
    par0, par2 = K.cross_parities_folded(ul.numpy(), uh.numpy(), v.planes[:, :w].numpy(), v.planes[:, w:].numpy())
    weights = 1 << np.arange(DEGREE, dtype=np.int64)
    c0 = c2 = 0
    for j, s in enumerate(v.scalars):  # term j: <u half, bits_j> as the element sum_i parity_i X^i, times s_j
        c0 ^= _clmul_mod(s, int(weights[par0[:, j]].sum()))
        c2 ^= _clmul_mod(s, int(weights[par2[:, j]].sum()))
    if v.pad is not None:
        lane, e = v.pad
        if lane < half:  # v_L holds it: in <u_L, v_L> and in the halves' difference
            c0 ^= _clmul_mod(_lane(ul, lane), e)
            c2 ^= _clmul_mod(_lane(ul, lane) ^ _lane(uh, lane), e)
        else:
            c2 ^= _clmul_mod(_lane(ul, lane - half) ^ _lane(uh, lane - half), e)
    if total is None:
        hi = int(inner(BitVec(uh.contiguous(), half), combo_dense(Combo(v.planes[:, w:].contiguous(), v.scalars, (
            (v.pad[0] - half, v.pad[1]) if v.pad is not None and v.pad[0] >= half else None))))[0])
    else:
        hi = int(total.reshape(-1)[0]) ^ c0
    return torch.tensor([[c0], [hi ^ c0 ^ c2], [c2]], dtype=torch.int64)


def _halves(v: BitVec) -> tuple[torch.Tensor, torch.Tensor, int]:
    half = v.bits // 2
    if half >= 64:
        w = v.planes.shape[1] // 2
        return v.planes[:, :w], v.planes[:, w:], half
    mask = (1 << half) - 1
    return v.planes & mask, (v.planes >> half) & mask, half


def _select(r: int) -> np.ndarray:
    """``[DEGREE, DEGREE]`` bools: ``[k, i]`` is bit ``k`` of ``r X^i`` (multiplication by ``r`` over GF(2))."""
    rows = [_clmul_mod(r, 1 << i) for i in range(DEGREE)]
    return np.array([[(rows[i] >> k) & 1 for i in range(DEGREE)] for k in range(DEGREE)], dtype=bool)


def fold(v: BitVec | Paired | Combo, r: torch.Tensor) -> BitVec | Combo:
    """``v_L + r (v_R - v_L)`` (half the entries). A dense ``v`` of at least two words is folded in place: its
    planes' low half becomes the result (a view), so ``v`` must not be used after; a shorter one (halves within a
    word) into new memory."""
    rv = int(r.reshape(-1)[0])
    if isinstance(v, Paired):
        return _fold_paired(v, rv)
    if isinstance(v, Combo):
        return _fold_combo(v, rv)
    low, high, half = _halves(v)
    if half >= 64:  # word-level halves: views of v's planes, folded in place (v is consumed)
        K.fold_planes(low.numpy(), high.numpy(), _select(rv))
        return BitVec(low, half)
    lo = low.contiguous().numpy()
    return BitVec(torch.from_numpy(K.subset_xor(lo ^ high.contiguous().numpy(), _select(rv), lo)), half)


def fold_pair(a: BitVec | Paired | Combo, ra: torch.Tensor, b: BitVec | Paired | Combo,
              rb: torch.Tensor) -> tuple[BitVec | Combo, BitVec | Combo]:
    """:func:`fold` of ``a`` at ``ra`` and of ``b`` at ``rb``."""
    return fold(a, ra), fold(b, rb)


def _poly(parities: np.ndarray) -> int:
    """``sum_{i,j} parities[i, j] X^(i+j)``, reduced."""
    i, j = np.nonzero(parities)
    coef = np.zeros(2 * DEGREE, dtype=np.int64)
    np.add.at(coef, i + j, 1)
    p = 0
    for s in np.flatnonzero(coef & 1):
        p |= 1 << int(s)
    return _reduce(p)


def inner(u: BitVec, v: BitVec) -> torch.Tensor:
    """``<u, v>`` as a scalar ``[1]``."""
    return torch.tensor([_poly(K.cross_parities(u.planes.numpy(), v.planes.numpy()))], dtype=torch.int64)


def fold_polynomial(u: BitVec | Paired | Combo, v: BitVec | Paired | Combo,
                    total: torch.Tensor | None = None) -> torch.Tensor:
    """Coefficients ``[3, 1]`` of ``h(X) = <u_L + X (u_R - u_L), v_L + X (v_R - v_L)>``; ``total = <u, v>``
    (when known) saves one of the three inner products."""
    if isinstance(u, Paired) or isinstance(v, Paired):
        assert isinstance(u, Paired) and isinstance(v, Paired)
        return _paired_polynomial(u, v)
    if isinstance(u, Combo):
        u, v = v, u
    if isinstance(u, Combo):  # both (vectors of pads alone)
        u = combo_dense(u)
    if isinstance(v, Combo):
        if v.planes.shape[1] >= 2:
            return _combo_polynomial(u, v, total)
        v = combo_dense(v)
    ul, uh, _ = _halves(u)
    vl, vh, _ = _halves(v)
    par0, par2 = K.cross_parities_folded(ul.numpy(), uh.numpy(), vl.numpy(), vh.numpy())
    c0, c2 = _poly(par0), _poly(par2)
    if total is None:  # h(1) = <u_R, v_R>
        hi = _poly(K.cross_parities(uh.numpy(), vh.numpy()))
    else:  # <u, v> = h(0) + h(1)
        hi = int(total.reshape(-1)[0]) ^ c0
    return torch.tensor([[c0], [hi ^ c0 ^ c2], [c2]], dtype=torch.int64)


def first(v: BitVec | Combo) -> torch.Tensor:
    """The single entry of a folded vector, as a scalar ``[1]``."""
    return torch.tensor([_lane((combo_dense(v) if isinstance(v, Combo) else v).planes, 0)], dtype=torch.int64)
