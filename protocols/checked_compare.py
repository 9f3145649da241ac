"""Comparisons with security with abort: MSB, bit injection, ReLU, multiplexer, argmin, built ONLY from
the checked gates of :mod:`protocols.checked`, so :func:`protocols.dzk.verify_products` covers every message.

The semi-honest comparisons (:mod:`protocols.compare`) use table-OT gates whose messages are
not products; these use AND gates and products instead:

* :func:`checked_msb`: the boolean sharings of the three components ``x_0, x_1, x_2`` are free
  (each component is held by two parties, who place it in the slot they share); a carry-save
  step (1 AND: ``maj(a, b, c) = ((a ^ c) & (b ^ c)) ^ c``, 1 round) leaves two addends, and the carry
  into the sign bit comes from one generate word (1 AND) and the packed carry tree of
  :func:`protocols.compare.carry_out` (6 rounds, 1.97 AND words). 8 rounds, 3.97 AND words per element
  per party (asserted in tests/unit/test_checked_compare.py).
* :func:`checked_bit_to_arith`: the three XOR components of a bit, each free as an arithmetic
  sharing, combined by ``a ^ b = a + b - 2 a b`` twice: 2 rounds, 2 elements.
* :func:`checked_ltz` (10 rounds), :func:`checked_eqz` (11), :func:`checked_relu` (11), :func:`checked_mux` (1 round,
  1 element), :func:`checked_argmin` (a tournament: ``ceil(log2 n)`` levels of ltz and two muxes),
  :func:`checked_nearest` (squared distances by checked matrix products, then argmin).

Against the semi-honest ``ltz`` (5 rounds, 7.7 words): 2x the rounds and about 0.8x the
words (3.97 AND words + 2 for the injection), plus the proof. Exact on the whole ring (the
sign of the ring value).
"""

from __future__ import annotations

import torch

from .approx import cat
from .checked import checked_and, checked_matmul, checked_mul
from .compare import carry_out, segment_carries
from .dzk import ProductLog
from .sharing import ArithmeticShares, BooleanShares, public_shares


def _and_many(pairs: list[tuple[BooleanShares, BooleanShares]], log: ProductLog) -> list[BooleanShares]:
    """Several checked ANDs in ONE round (flattened, stacked, split)."""
    party = pairs[0][0].party
    shapes = [x.shape for x, _ in pairs]

    def flat(ts: list[BooleanShares]) -> BooleanShares:
        lo, hi = (torch.cat([getattr(t, side).reshape(-1) for t in ts]) for side in ("lo", "hi"))
        return BooleanShares(party, lo, hi)

    xs, ys = flat([x for x, _ in pairs]), flat([y for _, y in pairs])
    z = checked_and(xs, ys, log)
    out, off = [], 0
    for shape in shapes:
        n = int(torch.Size(shape).numel())
        out.append(BooleanShares(party, z.lo[off: off + n].view(shape), z.hi[off: off + n].view(shape)))
        off += n
    return out


def _component(party_id: int, k: int, lo: torch.Tensor, hi: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """This party's pair of the sharing whose only nonzero component is ``x_k`` (party ``k`` holds it as
    its lo, party ``k - 1`` as its hi), from this party's pair ``lo``/``hi`` of ``x``."""
    zero = torch.zeros_like(lo)
    return (lo if k == party_id else zero), (hi if k == (party_id + 1) % 3 else zero)


def _component_bits(x: ArithmeticShares) -> list[BooleanShares]:
    """Boolean sharings of ``x_0``, ``x_1``, ``x_2`` (as 64-bit words). Local."""
    p = x.party
    return [BooleanShares(p, *_component(p.id, k, x.lo, x.hi)) for k in range(3)]


def checked_msb(x: ArithmeticShares, log: ProductLog) -> BooleanShares:
    """Boolean sharing of the sign bit of ``x`` in bit 0 of each word (``x`` flattened). Cost: 8 rounds,
    3.97 AND words per element per party (sizes a multiple of 64; 2 + 63/32).

    ``x_0 + x_1 + x_2 = s + k`` by a carry-save step (``k = maj << 1``, 1 AND); the sign bit is
    ``s_63 ^ k_63 ^ c`` with ``c`` the carry into bit 63: the combined generate of ``(s & k, s ^ k)``
    over bits 0..62, i.e. the carry out of the words shifted up by one
    (:func:`protocols.compare.carry_out`, its packed tree: 6 rounds, 1.97 words)."""
    a, b, c = _component_bits(x.reshape(-1))
    (m,) = _and_many([(a ^ c, b ^ c)], log)
    s, k = a ^ b ^ c, (m ^ c) << 1  # a + b + c = s + k: maj(a, b, c) = ((a ^ c) & (b ^ c)) ^ c
    (g,) = _and_many([(s, k)], log)
    p = s ^ k
    carry = carry_out(g << 1, p << 1, lambda pairs: _and_many(pairs, log))
    return p.rshift_logical(63) ^ carry


_SEGMENT_STARTS = (1 << 32) | 1  # bits 0 and 32: where no carry may enter a 32-bit half


def checked_msb32(x: ArithmeticShares, log: ProductLog) -> BooleanShares:
    """The sign bit of ``x`` in bit 0 of each word, for ``|x| < 2^31`` ring units (then bit 31 of ``x mod 2^32``
    is the sign; a larger ``x`` gets the sign of ``x mod 2^32`` read as 32-bit signed). Two values per word:
    the low 32 bits of each component, values ``2j`` and ``2j + 1`` in the low and high halves; the same
    carry-save step with no carry across the halves, then the carries into bit 31 of both halves from
    :func:`protocols.compare.segment_carries` (one level less than the 64-bit tree). Cost: 7 rounds, 1.97
    AND words per element per party (2 + 31/16 per word of two values, sizes a multiple of 128), half of
    :func:`checked_msb`'s."""
    flat = x.reshape(-1)
    n = flat.shape[0]
    if n % 2:
        flat = cat([flat, ArithmeticShares(x.party, flat.lo[:1] * 0, flat.hi[:1] * 0, x.frac_bits)])

    def packed(t: BooleanShares) -> BooleanShares:
        lo, hi = (getattr(t, side) & 0xFFFFFFFF for side in ("lo", "hi"))
        return BooleanShares(t.party, lo[0::2] | (lo[1::2] << 32), hi[0::2] | (hi[1::2] << 32))

    a, b, c = (packed(t) for t in _component_bits(flat))
    (m,) = _and_many([(a ^ c, b ^ c)], log)
    s, k = a ^ b ^ c, ((m ^ c) << 1).and_public(~_SEGMENT_STARTS)  # a + b + c = s + k in each half
    (g,) = _and_many([(s, k)], log)
    p = s ^ k
    low, high = segment_carries((g << 1).and_public(~_SEGMENT_STARTS), (p << 1).and_public(~_SEGMENT_STARTS),
                                lambda pairs: _and_many(pairs, log))
    sign_low, sign_high = p.rshift_logical(31) ^ low, p.rshift_logical(63) ^ high
    bits = torch.stack([sign_low.lo & 1, sign_high.lo & 1], 1).reshape(-1)[:n]
    bits_hi = torch.stack([sign_low.hi & 1, sign_high.hi & 1], 1).reshape(-1)[:n]
    return BooleanShares(x.party, bits, bits_hi)


_ONLY = tuple(frozenset({k}) for k in range(3))
_ALL = frozenset(range(3))


def checked_bit_to_arith(bit: BooleanShares, log: ProductLog) -> ArithmeticShares:
    """The bit in lane 0 of ``bit`` as an arithmetic 0/1 sharing. Cost: 2 rounds, 2 elements. Proof: 3 ring
    entries per bit over the three provers (``c0 c1``: party 0's one cross term; ``t c2``: one each for
    parties 1 and 2; :func:`protocols.checked.checked_mul`'s ``components``), not 12."""
    p = bit.party
    lo, hi = bit.lo & 1, bit.hi & 1
    c0, c1, c2 = (ArithmeticShares(p, *_component(p.id, k, lo, hi)) for k in range(3))
    t = c0 + c1 - checked_mul(c0, c1, log, components=(_ONLY[0], _ONLY[1])).mul_public_int(2)
    return t + c2 - checked_mul(t, c2, log, components=(_ALL, _ONLY[2])).mul_public_int(2)


def checked_ltz(x: ArithmeticShares, log: ProductLog, bits: int = 64) -> ArithmeticShares:
    """``[x < 0]`` as an arithmetic 0/1 sharing (shape of ``x``). Cost: 10 rounds; with ``bits = 32`` (exact
    for ``|x| < 2^31`` ring units, :func:`checked_msb32`) 9 rounds and half the AND gates."""
    if bits not in (32, 64):
        raise ValueError(f"checked_ltz: bits must be 32 or 64, got {bits}")
    msb = checked_msb32(x, log) if bits == 32 else checked_msb(x, log)
    return checked_bit_to_arith(msb, log).reshape(x.shape)


def checked_eqz(x: ArithmeticShares, log: ProductLog) -> ArithmeticShares:
    """``[x == 0]`` as an arithmetic 0/1 sharing: ``(1 - [x < 0]) (1 - [-x < 0])``, both signs in one
    :func:`checked_ltz` call (``-2^63`` is its own negation and negative: not zero, right). Cost: 11 rounds."""
    both = checked_ltz(ArithmeticShares(x.party, torch.stack([x.lo, -x.lo]), torch.stack([x.hi, -x.hi]), 0), log)
    neg, pos = both[0], both[1]
    return 1 - neg - pos + checked_mul(neg, pos, log)


def checked_relu(x: ArithmeticShares, log: ProductLog, bits: int = 64) -> ArithmeticShares:
    """``max(x, 0)`` (same scale as ``x``). Cost: 11 rounds (10 with ``bits = 32``: :func:`checked_ltz`)."""
    return x - checked_mul(x, checked_ltz(x, log, bits), log)


def checked_mux(c: ArithmeticShares, a: ArithmeticShares, b: ArithmeticShares, log: ProductLog) -> ArithmeticShares:
    """``a`` where the 0/1 sharing ``c`` is 1, else ``b``. Cost: 1 round, 1 element."""
    return b + checked_mul(c, a - b, log)


def checked_argmin(d: ArithmeticShares, log: ProductLog) -> tuple[ArithmeticShares, ArithmeticShares]:
    """``(index, value)`` of the smallest of ``d [n]`` (the first on ties at a pairing). A tournament:
    ``ceil(log2 n)`` levels of :func:`checked_ltz` and one stacked mux. Cost: 11 rounds per level."""
    party = d.party
    idx = public_shares(party, torch.arange(d.shape[0], dtype=torch.int64))
    while d.shape[0] > 1:
        half = d.shape[0] // 2
        left, right = d[: 2 * half: 2], d[1: 2 * half: 2]
        il, ir = idx[: 2 * half: 2], idx[1: 2 * half: 2]
        c = checked_ltz(right - left, log)  # 1 where right < left
        both = checked_mux(_stack([c, c]), _stack([right, ir]), _stack([left, il]), log)
        nd = ArithmeticShares(party, both.lo[0], both.hi[0], d.frac_bits)
        ni = ArithmeticShares(party, both.lo[1], both.hi[1], 0)
        if d.shape[0] % 2:
            nd, ni = cat([nd, d[-1:]]), cat([ni, idx[-1:]])
        d, idx = nd, ni
    return idx[0], d[0]


def checked_nearest(q: ArithmeticShares, rows: ArithmeticShares, row_sqnorms: ArithmeticShares,
                    log: ProductLog) -> tuple[ArithmeticShares, ArithmeticShares]:
    """``(index, squared distance)`` of the row of ``rows [n, d]`` nearest to ``q [1, d]`` (both at ``f``
    fractional bits; ``row_sqnorms [n]`` = ``||x||^2`` at ``2f``). The distances stay at scale ``2^(2f)``:
    comparing needs no truncation. Cost: 1 round (two checked matrix products) + :func:`checked_argmin`."""
    party = q.party
    cross, qq = checked_matmul(q, rows.T, log)[0], checked_matmul(q, q.T, log)[0]
    qq_n = ArithmeticShares(party, qq.lo.expand(cross.shape), qq.hi.expand(cross.shape), cross.frac_bits)
    return checked_argmin(row_sqnorms - cross.mul_public_int(2) + qq_n, log)


def _stack(xs: list[ArithmeticShares]) -> ArithmeticShares:
    """Stacked ring values (the scale tag is dropped: a mux by a 0/1 bit keeps every lane's scale)."""
    return ArithmeticShares(xs[0].party, torch.stack([x.lo for x in xs]), torch.stack([x.hi for x in xs]), 0)
