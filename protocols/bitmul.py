"""``b * y`` for a boolean shared bit ``b`` and an arithmetic sharing ``y`` in ONE round.

Bit injection fused with the product.

With ``t = b_r ^ b_{r+1}`` and ``c = b_{r+2}``: ``b y = (t ^ c)(y_r + y_{r+1}) + (t' ^ c') y_{r+2}``
where ``t' = b_{r+1} ^ b_{r+2}``, ``c' = b_r``. Each term is a 3-party OT like
``compare.bit_inject``: in the first, party ``r`` (knows ``t`` and ``y_r + y_{r+1}``) sends
both candidates ``(t ^ j)(y_r + y_{r+1}) - masks`` to parties ``r+1`` and ``r+2`` (who both
know the choice ``c``), each masked by pads the OTHER receiver also holds, and each
receiver sends the other the pad of its choice; the second is the same with party
``r+1`` as sender (it knows ``t'`` and ``y_{r+2}``) and parties ``r+2``, ``r`` choosing
with ``c'``. Both run in the same round; the role ``r`` rotates over three equal parts of
the batch, so every party sends the same: ``2 (4 + 1 + 1) / 3 = 4`` elements per product.
Cost: 1 round, 4 elements per element per party (inject + product: 2 rounds, 3 elements).

Security (semi-honest, one corrupted party): as ``compare.bit_inject``: a receiver sees both
candidates masked by pads of a key it lacks and one chosen pad; the outputs are masked by
two PRG components the receivers do not both hold, so every received word is uniform.
"""

from __future__ import annotations

import torch

from . import b2a as B2A
from .rotate import chunks as _chunks
from .rotate import padded3 as _padded3
from .rotate import part as _part
from .rotate import part_words
from .rotate import rotated_round as _rotated_round
from .sharing import ArithmeticShares, BooleanShares


def _ot(p, q: int, t, value, choice, nc: int):
    """One OT of the pair, relative role ``q`` (0 sender, 1 its next, 2 its prev): parts to send and a finish."""
    if q == 0:
        c0, w = p.prg_prev.int64((nc,)), p.prg_prev.int64((2, nc))
        c1, w2 = p.prg_next.int64((nc,)), p.prg_next.int64((2, nc))
        # t * value and (1 - t) * value for t in {0, 1} by masks (no emulated int64 multiply)
        if isinstance(value, int):
            pair = (t * value, (t ^ 1) * value) if value != 1 else (t, t ^ 1)
        else:
            pair = (value & -t, value & (t - 1))
        c01 = c0 + c1
        m = torch.stack((pair[0] - c01, pair[1] - c01))
        return (m + w).reshape(-1), (m + w2).reshape(-1), 0, 0, lambda a_, b_: (c0, c1)
    ch = choice.bool()
    if q == 1:
        c1, w2 = p.prg_prev.int64((nc,)), p.prg_prev.int64((2, nc))
        return torch.where(ch, w2[1], w2[0]), None, nc, 2 * nc, lambda fn_, fp_: (
            c1, torch.where(ch, fp_[nc:], fp_[:nc]) - fn_)
    c0, w = p.prg_next.int64((nc,)), p.prg_next.int64((2, nc))
    return None, torch.where(ch, w[1], w[0]), 2 * nc, nc, lambda fn_, fp_: (
        torch.where(ch, fn_[nc:], fn_[:nc]) - fp_, c0)


def bit_mul(b: BooleanShares, y: ArithmeticShares) -> ArithmeticShares:
    """``b * y`` (``b``: bit 0 of a boolean sharing, same shape as ``y``; scale of ``y``).

    Cost: 1 round, 4 elements per party per element."""
    return mul_and_inject(b, y, None)[0]


def mul_and_inject(b: BooleanShares, y: ArithmeticShares, c: BooleanShares | None,
                   late: tuple[BooleanShares, int, list, tuple[int, int]] | None = None
                   ) -> tuple[ArithmeticShares, ArithmeticShares | None]:
    """``(b * y, [c])``: :func:`bit_mul` and the injection of the bits ``c`` (any size; ``compare.bit_inject``,
    one OT with the value 1: an integer 0/1 sharing) in ONE round. Or, with ``late = (root, n, states, rng)``
    from ``digits.msb_early``, the second round of ``b2a`` for the elements ``rng`` in the same round.

    Cost: 1 round; elements per party :func:`bit_mul_cost` of ``y`` plus ``digits.inject_cost`` of ``c``
    (or ``2/3`` word per element of ``rng``: with the earlier third, ``b2a.cost``)."""
    p = b.party
    blo, bhi, ylo, yhi = (b.lo & 1).reshape(-1), (b.hi & 1).reshape(-1), y.lo.reshape(-1), y.hi.reshape(-1)
    clo = (c.lo & 1).reshape(-1) if c is not None else None
    chi = (c.hi & 1).reshape(-1) if c is not None else None
    cparts = _chunks(_padded3(clo.numel())) if clo is not None else []

    def prepare(q: int, e0: int, e1: int):
        nc = e1 - e0
        bl, bh, yl, yh = _part(blo, e0, e1), _part(bhi, e0, e1), _part(ylo, e0, e1), _part(yhi, e0, e1)
        # OT 1: sender = role-0 party: t = b_r ^ b_{r+1} (its lo ^ hi), value y_r + y_{r+1}; choice b_{r+2}.
        first = _ot(p, q, bl ^ bh, yl + yh, bh if q == 1 else bl, nc)
        # OT 2: sender = role-1 party: t' = b_{r+1} ^ b_{r+2}, value y_{r+2} (its hi); choice b_r.
        q2 = (q - 1) % 3
        second = _ot(p, q2, bl ^ bh, yh, bh if q2 == 1 else bl, nc)
        parts = [first, second]
        if clo is not None and chi is not None:
            f0, f1 = cparts[(p.id - q) % 3]
            cl, ch = _part(clo, f0, f1), _part(chi, f0, f1)
            parts.append(_ot(p, q, cl ^ ch, 1, ch if q == 1 else cl, f1 - f0))
        elif late is not None:
            root, n2, states, rng = late
            r = (p.id - q) % 3
            w0, wc = part_words(n2)[r]
            f0, f1 = _chunks(n2)[r]
            parts.append(B2A.late_part(p, q, f1 - f0, root.lo[w0 : w0 + wc], root.hi[w0 : w0 + wc], states[r],
                                       B2A.span(f0, f1, rng)))
        to_next = [x[0] for x in parts if x[0] is not None]
        to_prev = [x[1] for x in parts if x[1] is not None]

        def finish(fn_, fp_):
            outs, on, op = [], 0, 0
            for _, _, a_, c_, fin in parts:
                outs.append(fin(fn_[on : on + a_] if a_ else None, fp_[op : op + c_] if c_ else None))
                on, op = on + a_, op + c_
            inj = outs[2] if len(outs) > 2 else (None, None)
            return outs[0][0] + outs[1][0], outs[0][1] + outs[1][1], inj[0], inj[1]

        return (torch.cat(to_next) if to_next else None, torch.cat(to_prev) if to_prev else None,
                sum(x[2] for x in parts), sum(x[3] for x in parts), finish)

    res = _rotated_round(p, _padded3(blo.numel()), prepare)
    n = y.numel()
    lo = torch.cat([r[0] for r in res])[:n].view(y.shape)
    hi = torch.cat([r[1] for r in res])[:n].view(y.shape)
    if c is None and late is None:
        return ArithmeticShares(p, lo, hi, y.frac_bits), None
    m = c.numel() if c is not None else late[3][1] - late[3][0]  # type: ignore[index]
    injected = ArithmeticShares(p, torch.cat([r[2] for r in res])[:m], torch.cat([r[3] for r in res])[:m], 0)
    return ArithmeticShares(p, lo, hi, y.frac_bits), injected.reshape(*c.shape) if c is not None else injected


def bit_mul_cost(n: int) -> tuple[int, int]:
    """(1 round, elements sent by EACH party) of :func:`bit_mul`."""
    return 1, 4 * _padded3(n)


FUSE_MAX_BYTES = 625_000
"""A layer fuses its bit injection into the product (one round less, more bytes) when the
extra bytes per party stay below what one round costs on the target WAN: half of a 10 ms
round trip at 1 Gbit/s (``benchmarks.cost_model``). A public rule on sizes only."""


def fuse(n: int, extra_words: int) -> bool:
    """Whether ``n`` products costing ``extra_words`` more words each should use :func:`bit_mul`."""
    return 8 * extra_words * n <= FUSE_MAX_BYTES
