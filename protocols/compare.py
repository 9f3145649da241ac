"""Comparison family: A2B, MSB, bit injection (B2A), less-than, ReLU, equality, multiplexer.

* ``msb``: arithmetic -> boolean with a carry-save step (x0 + x1 + x2 -> s + c, one AND
  round), the generate word (one AND round) and a Kogge-Stone parallel-prefix carry over
  63 bit positions (log2(64) = 6 AND rounds), all 64 bits packed in one word.
* ``bit_inject``: a shared bit -> arithmetic share of 0/1 in ONE round with a 3-party
  oblivious-transfer trick (party 0 knows ``b0 ^ b1``; parties 1 and 2 both know ``b2``
  and help each other receive the right message).
Comparison ``x < y`` is the sign of ``x - y``: valid while ``|x - y| < 2**63`` in the ring
(``2**47`` in real terms with 16 fractional bits).
"""

from __future__ import annotations

import torch

from .arithmetic import mul
from .boolean import and_, and_many
from .sharing import ArithmeticShares, BooleanShares

_KS_SHIFTS = (1, 2, 4, 8, 16, 32)


def _components_as_boolean(x: ArithmeticShares) -> tuple[BooleanShares, BooleanShares, BooleanShares]:
    """The three additive components x0, x1, x2 as boolean sharings. Cost: local.

    Component j is known to parties j-1 and j; its boolean sharing is (x_j, 0, 0) rotated
    so that exactly those two parties hold it.
    """
    p = x.party
    zero = torch.zeros_like(x.lo)
    comps = []
    for j in range(3):
        if p.id == j:  # we hold x_j as lo
            comps.append(BooleanShares(p, x.lo, zero))
        elif p.id == (j - 1) % 3:  # we hold x_j as hi
            comps.append(BooleanShares(p, zero, x.hi))
        else:
            comps.append(BooleanShares(p, zero, zero))
    # comps[j] has value x_j; rotate so that the boolean component index equals j.
    return comps[0], comps[1], comps[2]


def _carry_save(x: ArithmeticShares) -> tuple[BooleanShares, BooleanShares]:
    """Two boolean sharings ``s, c`` with ``s + c = x (mod 2**64)``. Cost: 1 round, 1 word/party."""
    a, b, c = _components_as_boolean(x)
    s = a ^ b ^ c
    maj = and_(a ^ c, b ^ c) ^ c  # majority(a, b, c): the carries
    return s, maj << 1


def msb(x: ArithmeticShares) -> BooleanShares:
    """Boolean sharing of the sign bit of ``[x]`` (in bit 0 of each word).

    Cost: 8 rounds (1 carry-save, 1 generate, 6 Kogge-Stone levels), 13 words per element per party.
    """
    s, c = _carry_save(x)
    p = s ^ c  # propagate
    g = s & c  # generate: 1 round
    pp = p
    for k in _KS_SHIFTS:
        if k == _KS_SHIFTS[-1]:
            g = g ^ and_(pp, g << k)
        else:
            g_and, p_and = and_many([(pp, g << k), (pp, pp << k)])
            g, pp = g ^ g_and, p_and
    # carry into bit 63 is the prefix generate over bits 0..62 = bit 62 of g.
    top = p.rshift_logical(63) ^ g.rshift_logical(62)
    return top.and_public(1)


def bit_inject(b: BooleanShares) -> ArithmeticShares:
    """Boolean shared bit (bit 0 of each word) -> arithmetic sharing of 0/1. Cost: 1 round; party 0 sends 4 elements, parties 1 and 2 one each.

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
    """``[x < 0]`` as an arithmetic 0/1 sharing. Cost: 9 rounds (MSB 8 + injection 1), 14-17 words/party."""
    return bit_inject(msb(x))


def lt(x: ArithmeticShares, y) -> ArithmeticShares:
    """``[x < y]`` (0/1). Cost: 9 rounds, 14-17 words/party; needs ``|x - y| < 2**63`` in the ring."""
    return ltz(x - y)


def gt(x: ArithmeticShares, y) -> ArithmeticShares:
    """``[x > y]`` (0/1). Cost: 9 rounds."""
    if isinstance(y, ArithmeticShares):
        return ltz(y - x)
    return ltz((-x) + y)


def le(x: ArithmeticShares, y) -> ArithmeticShares:
    """``[x <= y]`` = 1 - [y < x]. Cost: 9 rounds."""
    return 1 - gt(x, y)


def mux(c: ArithmeticShares, a: ArithmeticShares, b: ArithmeticShares) -> ArithmeticShares:
    """``c ? a : b`` for a shared bit ``c`` (0/1, integer scale). Cost: 1 round."""
    if c.frac_bits:
        raise ValueError("mux: the condition must be an integer 0/1 sharing")
    return b + mul(c, a - b)


def relu(x: ArithmeticShares) -> ArithmeticShares:
    """``max(x, 0)``. Cost: 10 rounds (comparison 9 + one product), 15-18 words/party."""
    return x - mul(ltz(x), x)


def _input_boolean_from_p0(x: ArithmeticShares, u: torch.Tensor | None) -> BooleanShares:
    """Boolean sharing of a value ``u`` known to party 0 only. Cost: 1 round, party 0 sends 1 word.

    Components ``(u ^ r, r, 0)`` with ``r`` from the key of parties 0 and 1; party 2 gets
    ``u ^ r`` (uniform to it).
    """
    p = x.party
    shape = x.shape
    zero = torch.zeros(shape, dtype=torch.int64)
    if p.id == 0:
        r = p.prg_next.int64(shape)
        u0 = u ^ r
        p.comm.exchange(send_prev=u0)
        return BooleanShares(p, u0, r)
    if p.id == 1:
        r = p.prg_prev.int64(shape)
        p.comm.exchange()
        return BooleanShares(p, r, zero)
    u0, _ = p.comm.exchange(recv_next=True)
    return BooleanShares(p, zero, u0)


def eqz(x: ArithmeticShares) -> ArithmeticShares:
    """``[x == 0]`` (0/1). Cost: 8 rounds (1 input + 6 AND-tree + 1 injection), 8 words/party.

    ``x = 0`` iff ``x0 + x1 = -x2``. Party 0 knows ``u = x0 + x1`` and inputs it as a
    boolean sharing; ``-x2`` is known to parties 1 and 2 (a free boolean sharing). The 64
    bits of ``~(u ^ -x2)`` are AND-reduced in a log-depth tree, then injected.
    """
    p = x.party
    u = x.lo + x.hi if p.id == 0 else None
    bu = _input_boolean_from_p0(x, u)
    zero = torch.zeros_like(x.lo)
    if p.id == 0:
        bv = BooleanShares(p, zero, zero)
    elif p.id == 1:
        bv = BooleanShares(p, zero, -x.hi)
    else:
        bv = BooleanShares(p, -x.lo, zero)
    v = ~(bu ^ bv)
    for k in (32, 16, 8, 4, 2, 1):
        v = and_(v, v.rshift_logical(k))
    return bit_inject(v.and_public(1))


def _add_boolean(a: BooleanShares, b: BooleanShares) -> BooleanShares:
    """Boolean sharing of ``a + b mod 2**64``. Cost: 7 rounds (1 + 6 Kogge-Stone)."""
    p = a ^ b
    g = a & b
    pp = p
    for k in _KS_SHIFTS:
        g_and, p_and = and_many([(pp, g << k), (pp, pp << k)])
        g, pp = g ^ g_and, p_and
    return p ^ (g << 1)


def a2b(x: ArithmeticShares) -> BooleanShares:
    """Arithmetic -> boolean sharing of all 64 bits. Cost: 8 rounds, 14 words/party."""
    s, c = _carry_save(x)
    return _add_boolean(s, c)


def eq(x: ArithmeticShares, y) -> ArithmeticShares:
    """``[x == y]`` (0/1). Cost: 8 rounds."""
    return eqz(x - y)
