"""Comparison family: A2B, MSB, bit injection (B2A), less-than, ReLU, equality, multiplexer.

* ``msb`` / ``ltz``: :mod:`protocols.digits` with 4-bit digits (:data:`LAYOUT` =
  ``digits.WIDE``): ``x = (x_r + x_{r+1}) + x_{r+2}`` is a two-operand sum; the
  generate/propagate bits of its sixteen 4-bit digits come in ONE round by a 1-of-16
  3-party table OT (the sender role ``r`` rotated over the batch, so all parties send the
  same), then a carry tree over the digits (2 AND levels, then the last 4 groups in ONE
  ``tablegate`` round): MSB 4 rounds, ``ltz`` 5 (the injection by ``b2a``), 7.7 words per
  element. (8-bit digits, ``digits.FULL``, save one round but send 42.3 words and cost
  about 1.5x the CPU: top-k and top-nprobe make tens of thousands of comparisons.)
* ``eqz``: eight 8-bit digits compared by a 1-of-256 table OT and AND-reduced: 4 rounds.
* ``truncate_exact`` keeps the bitwise OT (``_generate_propagate``) and the packed carry
  tree over the 64 bit positions (6 AND rounds). ``a2b`` uses a Kogge-Stone adder.
* ``bit_inject``: a shared bit -> arithmetic share of 0/1 in ONE round with a 3-party
  oblivious-transfer trick (party 0 knows ``b0 ^ b1``; parties 1 and 2 both know ``b2``
  and help each other receive the right message).
Comparison ``x < y`` is the sign of ``x - y``: valid while ``|x - y| < 2**63`` in the ring
(``2**47`` in real terms with 16 fractional bits).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from . import digits as D
from .arithmetic import mul
from .boolean import and_many
from .sharing import ArithmeticShares, BooleanShares

_KS_SHIFTS = (1, 2, 4, 8, 16, 32)
AndMany = Callable[[list[tuple[BooleanShares, BooleanShares]]], list[BooleanShares]]
_EQ_FULL = D.Digits(64, 0, (8,) * 8)
LAYOUT = D.WIDE
"""Digit layout of the general comparison (``msb``, ``ltz``, ``lt``, ``relu``, sort, top-k)."""


def _generate_propagate(x: ArithmeticShares) -> tuple[BooleanShares, BooleanShares]:
    """Boolean sharings of ``g = u & v`` and ``p = u ^ v`` where ``x = u + v``. Cost: 1 round.

    ``u = x0 + x1`` is known to party 0 (it holds both), ``v = x2`` to parties 1 and 2, so
    ``x = u + v`` is a two-operand addition whose generate/propagate words come in ONE
    round (instead of a carry-save round and an AND round):

    * ``g``: components ``g0`` (key of parties 2,0) and ``g1`` (key of parties 0,1) are
      pseudo-random; ``g2 = (u & v) ^ g0 ^ g1`` must reach parties 1 and 2, who both know
      the choice bits ``v``. Party 0 sends each of them both candidate words
      ``m_b = (u & b) ^ g0 ^ g1`` (b = all-zeros / all-ones) masked with pads that only
      the OTHER receiver also holds; each receiver gets the pads for its choice bits from
      the other (a bitwise 3-party OT).
    * ``p``: party 0 shares ``u`` as ``(u ^ r, r, 0)`` (``r`` from the key of parties 0,1;
      party 2 receives ``u ^ r``); ``v`` is the free sharing ``(0, 0, v)``.
    Elements sent: party 0 sends 5 words, parties 1 and 2 one word each. Each party sees
    only words masked by a key it does not hold.
    """
    p = x.party
    shape = x.shape
    two = (2,) + tuple(shape)
    if p.id == 0:
        u = x.lo + x.hi
        g0 = p.prg_prev.int64(shape)
        pads1 = p.prg_prev.int64(two)  # known to party 2, used for party 1's message
        g1 = p.prg_next.int64(shape)
        r = p.prg_next.int64(shape)
        pads2 = p.prg_next.int64(two)  # known to party 1, used for party 2's message
        m0 = g0 ^ g1
        m1 = m0 ^ u
        to1 = torch.stack((m0 ^ pads1[0], m1 ^ pads1[1]))
        to2 = torch.stack((m0 ^ pads2[0], m1 ^ pads2[1], u ^ r))
        p.comm.exchange(send_next=to1, send_prev=to2)
        return BooleanShares(p, g0, g1), BooleanShares(p, u ^ r, r)
    if p.id == 1:
        v = x.hi
        g1 = p.prg_prev.int64(shape)
        r = p.prg_prev.int64(shape)
        pads2 = p.prg_prev.int64(two)
        help2 = pads2[0] ^ ((pads2[0] ^ pads2[1]) & v)
        pad_from_2, from_0 = p.comm.exchange(send_next=help2, recv_next=True, recv_prev=True)
        g2 = from_0[0] ^ ((from_0[0] ^ from_0[1]) & v) ^ pad_from_2
        return BooleanShares(p, g1, g2), BooleanShares(p, r, v)
    v = x.lo
    g0 = p.prg_next.int64(shape)
    pads1 = p.prg_next.int64(two)
    help1 = pads1[0] ^ ((pads1[0] ^ pads1[1]) & v)
    from_0, pad_from_1 = p.comm.exchange(send_prev=help1, recv_next=True, recv_prev=True)
    g2 = from_0[0] ^ ((from_0[0] ^ from_0[1]) & v) ^ pad_from_1
    return BooleanShares(p, g2, g0), BooleanShares(p, v, from_0[2])


# Masks selecting the low half of every 2**(L+1)-bit block, L = 0..5 (as signed int64).
_TREE_MASKS = [
    int.from_bytes(bytes.fromhex(h), "big", signed=True)
    for h in (
        "5555555555555555",
        "3333333333333333",
        "0f0f0f0f0f0f0f0f",
        "00ff00ff00ff00ff",
        "0000ffff0000ffff",
        "00000000ffffffff",
    )
]


def carry_out(g: BooleanShares, p: BooleanShares, ands: AndMany = and_many) -> BooleanShares:
    """Combined generate (the carry out) over all 64 positions of each word, in bit 0, for 1-D ``g``, ``p``.

    A log-depth tree whose words are packed as it goes up. Level L combines adjacent
    groups (hi, lo): ``G = G_hi ^ (P_hi & G_lo)``, ``P = P_hi & P_lo``. Each operand holds
    half the bits of a word, so the two ANDs of a level are packed into ONE AND of full
    words (``P_hi & G_lo`` in the low half of each block, ``P_hi & P_lo`` in the high half);
    the results occupy half the bits, so the second half of the array is shifted into the
    free bits of the first half: the array halves at every level and the work is
    1 + 1/2 + ... + 1/32 = 1.97 AND-words per element (sizes a multiple of 64) instead of
    11 for a full Kogge-Stone adder. Cost: 6 rounds, 1.97 words per element per party. ``ands``
    computes a list of ANDs in one round (``protocols.checked_compare`` passes checked AND gates).
    """
    g, word, offset = _carry_tree(g, p, ands, len(_TREE_MASKS))
    return BooleanShares(g.party, (g.lo[word] >> offset) & 1, (g.hi[word] >> offset) & 1)


def segment_carries(g: BooleanShares, p: BooleanShares, ands: AndMany = and_many) -> tuple[
        BooleanShares, BooleanShares]:
    """The combined generate of each 32-bit half of every word (bits 0..31 and 32..63), in bit 0 of two
    sharings ``(low halves, high halves)``: :func:`carry_out`'s tree without its last level (two values
    packed per word). Cost: 5 rounds, 1.94 AND words per WORD (0.97 per 32-bit value) per party."""
    g, word, offset = _carry_tree(g, p, ands, len(_TREE_MASKS) - 1)
    return (BooleanShares(g.party, (g.lo[word] >> offset) & 1, (g.hi[word] >> offset) & 1),
            BooleanShares(g.party, (g.lo[word] >> (offset + 32)) & 1, (g.hi[word] >> (offset + 32)) & 1))


def _carry_tree(g: BooleanShares, p: BooleanShares, ands: AndMany, levels: int) -> tuple[
        BooleanShares, torch.Tensor, torch.Tensor]:
    """The first ``levels`` levels of the packed tree; element ``e``'s groups end in packed word ``word[e]``
    at bit ``offset[e]`` (plus multiples of ``2^levels``)."""
    n = g.shape[0]
    padded = -(-n // 64) * 64
    if padded != n:
        extra = padded - n
        g = BooleanShares(g.party, F.pad(g.lo, (0, extra)), F.pad(g.hi, (0, extra)))
        p = BooleanShares(p.party, F.pad(p.lo, (0, extra)), F.pad(p.hi, (0, extra)))
    word = torch.arange(n)
    offset = torch.zeros(n, dtype=torch.int64)
    length = padded
    for level, mask in enumerate(_TREE_MASKS[:levels]):
        last = level == levels - 1
        sh = 1 << level
        g_hi = BooleanShares(g.party, (g.lo >> sh) & mask, (g.hi >> sh) & mask)
        p_hi = BooleanShares(p.party, (p.lo >> sh) & mask, (p.hi >> sh) & mask)
        g_lo = g.and_public(mask)
        if not last:
            # ONE AND of full words: p_hi & g_lo in the mask's bits, p_hi & p_lo shifted into the others
            # (the halves hold no other bits, so XOR packs them; each party packs its own shares).
            p_lo = p.and_public(mask)
            (both,) = ands([(p_hi ^ (p_hi << sh), g_lo ^ (p_lo << sh))])
            t_g = both.and_public(mask)
            p = BooleanShares(p.party, (both.lo >> sh) & mask, (both.hi >> sh) & mask)
        else:
            (t_g,) = ands([(p_hi, g_lo)])
        g = (g_hi ^ t_g).and_public(mask)
        if not last:
            half = length // 2
            g = BooleanShares(g.party, g.lo[:half] ^ (g.lo[half:] << sh), g.hi[:half] ^ (g.hi[half:] << sh))
            p = BooleanShares(p.party, p.lo[:half] ^ (p.lo[half:] << sh), p.hi[:half] ^ (p.hi[half:] << sh))
            moved = word >= half
            word = torch.where(moved, word - half, word)
            offset = offset + moved.long() * sh
            length = half
    return g, word, offset


def msb(x: ArithmeticShares) -> BooleanShares:
    """Boolean sharing of the sign bit of ``[x]`` (in bit 0 of each word), exact on the whole ring.

    ``digits.msb(x, LAYOUT)``: one table-OT round for the sixteen 4-bit digits, a 4-level
    carry tree (its last two levels in one table-gate round). Cost: 4 rounds; 6.7 words per
    element sent by EVERY party (sizes a multiple of 192; ``costs.msb``). Security: see :mod:`protocols.digits`.
    """
    return D.msb(x, LAYOUT)


def bit_inject(b: BooleanShares) -> ArithmeticShares:
    """Boolean shared bit (bit 0 of each word) -> arithmetic sharing of 0/1.

    Cost: 1 round; party 0 sends 4 elements per bit, parties 1 and 2 one each.

    Steps: party 0 knows ``t = b0 ^ b1`` and picks the output components c0 (key with party
    2) and c1 (key with party 1); the missing ``c2 = (t ^ b2) - c0 - c1`` must reach
    parties 1 and 2, who both know the choice bit ``b2``. Party 0 sends each of them both
    candidates ``m_j = (t ^ j) - c0 - c1`` masked with pads the OTHER receiver also knows;
    each receiver gets the right pad from the other one. Each party sees only values
    masked by a key it does not hold.
    """
    p = b.party
    shape = b.shape
    if p.id == 0:
        t = (b.lo ^ b.hi) & 1
        c0 = p.prg_prev.int64(shape)  # key (2,0)
        w = p.prg_prev.int64((2,) + tuple(shape))  # pads known to party 2
        c1 = p.prg_next.int64(shape)  # key (0,1)
        w2 = p.prg_next.int64((2,) + tuple(shape))  # pads known to party 1
        m0 = t - c0 - c1
        m1 = (t ^ 1) - c0 - c1
        m = torch.stack((m0, m1))
        p.comm.exchange(send_next=m + w, send_prev=m + w2)
        return ArithmeticShares(p, c0, c1, 0)
    if p.id == 1:
        choice = (b.hi & 1).bool()  # b2
        c1 = p.prg_prev.int64(shape)
        w2 = p.prg_prev.int64((2,) + tuple(shape))
        help_for_2 = torch.where(choice, w2[1], w2[0])
        from_2, from_0 = p.comm.exchange(send_next=help_for_2, recv_next=True, recv_prev=True)
        c2 = torch.where(choice, from_0[1], from_0[0]) - from_2
        return ArithmeticShares(p, c1, c2, 0)
    choice = (b.lo & 1).bool()  # b2
    c0 = p.prg_next.int64(shape)
    w = p.prg_next.int64((2,) + tuple(shape))
    help_for_1 = torch.where(choice, w[1], w[0])
    from_0, from_1 = p.comm.exchange(send_prev=help_for_1, recv_next=True, recv_prev=True)
    c2 = torch.where(choice, from_0[1], from_0[0]) - from_1
    return ArithmeticShares(p, c2, c0, 0)


def ltz(x: ArithmeticShares) -> ArithmeticShares:
    """``[x < 0]`` as an arithmetic 0/1 sharing. Cost: 5 rounds (MSB 4 + injection 1, ``digits.ltz``).

    Words sent per element: 7.7 by every party (``protocols.costs``).
    """
    return D.ltz(x, LAYOUT)


def lt(x: ArithmeticShares, y) -> ArithmeticShares:
    """``[x < y]`` (0/1). Cost: as ``ltz`` (5 rounds); needs ``|x - y| < 2**63`` in the ring."""
    return ltz(x - y)


def gt(x: ArithmeticShares, y) -> ArithmeticShares:
    """``[x > y]`` (0/1). Cost: 5 rounds."""
    if isinstance(y, ArithmeticShares):
        return ltz(y - x)
    return ltz((-x) + y)


def le(x: ArithmeticShares, y) -> ArithmeticShares:
    """``[x <= y]`` = 1 - [y < x]. Cost: 5 rounds."""
    return 1 - gt(x, y)


def mux(c: ArithmeticShares, a: ArithmeticShares, b: ArithmeticShares) -> ArithmeticShares:
    """``c ? a : b`` for a shared bit ``c`` (0/1, integer scale). Cost: 1 round."""
    if c.frac_bits:
        raise ValueError("mux: the condition must be an integer 0/1 sharing")
    return b + mul(c, a - b)


def relu(x: ArithmeticShares) -> ArithmeticShares:
    """``max(x, 0)``. Cost: 6 rounds (comparison 5 + one product); 8.7 words per element
    sent by every party."""
    return x - mul(ltz(x), x)


def eqz(x: ArithmeticShares) -> ArithmeticShares:
    """``[x == 0]`` (0/1) on the whole ring. Cost: 4 rounds (table OT 1 + AND level + table gate + injection).

    ``x = 0`` iff ``x_r + x_{r+1} = -x_{r+2}``: ``digits.eqz`` compares the eight 8-bit
    digits of both sides by a 1-of-256 table OT and AND-reduces them (``costs.eqz``:
    23.2 words per element, every party). For ``|x| < bound`` use ``digits.eqz`` with
    ``digits.eq_spec(bound)`` (fewer digits: 2 rounds for ``bound <= 4096``).
    """
    return D.eqz(x, _EQ_FULL)



def a2b(x: ArithmeticShares) -> BooleanShares:
    """Arithmetic -> boolean sharing of all 64 bits (Kogge-Stone). Cost: 7 rounds.

    Words sent per element: 17 by party 0 (5 + 2 per level), 13 by the others.
    """
    g, p = _generate_propagate(x)
    pp = p
    for k in _KS_SHIFTS:
        g_and, p_and = and_many([(pp, g << k), (pp, pp << k)])
        g, pp = g ^ g_and, p_and
    return p ^ (g << 1)


def eq(x: ArithmeticShares, y) -> ArithmeticShares:
    """``[x == y]`` (0/1). Cost: as ``eqz`` (4 rounds)."""
    return eqz(x - y)


_OFFSET_BITS = 62


def truncate_exact(x: ArithmeticShares, bits: int) -> ArithmeticShares:
    """``[x] -> [x / 2**bits]`` that is never far off: ``floor(x / 2**bits)`` or one more. Cost: 9 rounds.

    For ``|x| < 2**62`` in the ring (unlike ``arithmetic.truncate``, whose rare wrap
    gives an error of about ``2**(64 - bits)``). Steps:
      1. ``x' = x + 2**62`` is non-negative; ``x' = u + v - c * 2**64`` with ``u = x0 + x1``
         (party 0) and ``v = x2`` (parties 1, 2) read as unsigned words, ``c`` the carry out.
      2. ``U = u >>> bits`` (party 0) and ``V = v >>> bits`` (parties 1, 2) are shared with
         one message: components ``(U - r, r, V)``, ``r`` from the key of parties 0 and 1.
      3. ``c`` = combined generate of ``(u & v, u ^ v)`` over all 64 positions: the
         one-round OT step plus the packed carry tree (7 rounds), injected (1 round).
      4. ``U + V - c * 2**(64 - bits) - 2**(62 - bits) = floor(x / 2**bits) - c_low`` where
         ``c_low`` in {0, 1} is the dropped carry of the low ``bits`` bits; adding one
         public ulp gives ``floor`` or ``floor + 1``, within one ulp of ``x / 2**bits``
         (the same guarantee as ``arithmetic.truncate`` without its rare wrap).
    Elements sent: party 0 about 14 per element, parties 1 and 2 about 6. The scale
    (``frac_bits``) is unchanged, as in ``arithmetic.truncate``.
    """
    if not 0 < bits < _OFFSET_BITS:
        raise ValueError(f"truncate_exact: bits must be in 1..{_OFFSET_BITS - 1}, got {bits}")
    p = x.party
    shape = x.shape
    flat = ArithmeticShares(p, x.lo.reshape(-1), x.hi.reshape(-1), 0)
    shifted = flat.add_public(torch.tensor(1 << _OFFSET_BITS, dtype=torch.int64))
    low_mask = (1 << (64 - bits)) - 1
    # step 2: RSS of U + V
    if p.id == 0:
        u = shifted.lo + shifted.hi
        big_u = (u >> bits) & low_mask
        r = p.prg_next.int64(big_u.shape)
        p.comm.exchange(send_prev=big_u - r)
        sum_uv = ArithmeticShares(p, big_u - r, r, 0)
    elif p.id == 1:
        r = p.prg_prev.int64(shifted.shape)
        p.comm.exchange()
        sum_uv = ArithmeticShares(p, r, (shifted.hi >> bits) & low_mask, 0)
    else:
        got, _ = p.comm.exchange(recv_next=True)
        sum_uv = ArithmeticShares(p, (shifted.lo >> bits) & low_mask, got, 0)
    # step 3: carry out of u + v
    g, prop = _generate_propagate(shifted)
    carry = bit_inject(carry_out(g, prop))
    # step 4
    out = (sum_uv - carry.mul_public_int(1 << (64 - bits))).add_public(
        torch.tensor(1 - (1 << (_OFFSET_BITS - bits)), dtype=torch.int64)
    )
    return ArithmeticShares(p, out.lo.reshape(shape), out.hi.reshape(shape), x.frac_bits)
