"""Bit injection (boolean bit -> arithmetic 0/1) at one word per element, its first message riding on
the round that makes the bit.

The bit ``beta = t ^ c`` with ``t = beta_r ^ beta_{r+1}`` (the sender ``r`` of a part, see
:mod:`protocols.rotate`) and ``c = beta_{r+2}`` (both receivers); ``beta = c + (1 - 2c) t``. When the
sender knows ``t`` BEFORE the round that outputs the bit (its two components of the output are its
PRG masks ``a, b``, as in the table rounds of :mod:`protocols.digits` and :mod:`protocols.tablegate`):

* with that round (:func:`early`): the sender draws ``x_r`` from its key with ``r+2`` and sends
  ``y = t - x_r`` to ``r+1``;
* one round later (:func:`late`): ``r+2`` holds ``a' = c + (1 - 2c) x_r``, ``r+1`` holds
  ``b' = (1 - 2c) y`` (``a' + b' = beta``); with ``z, z'`` from the key of ``r+1, r+2``, ``r+2``
  sends ``a' - z - z'`` and ``r+1`` sends ``b' + z'`` to ``r``: the RSS ``(a' - z - z', b' + z', z)``.

Cost: 1 round after the bit; per party ``n`` words in all (``n / 3`` with the earlier round, ``2 n / 3``
in its own) instead of ``2 n`` for ``digits.inject``.
Security (semi-honest, one corrupted party): ``r+1`` sees ``t - x_r`` (``x_r`` from a key it lacks);
``r`` sees ``a' - z - z'`` and ``b' + z'`` (``z, z'`` from a key it lacks, so both uniform and their sum
``beta - z`` too); ``r+2`` receives nothing. Every received word is uniform whatever the bit.
"""

from __future__ import annotations

import torch

from .rotate import pad3, part_words, rotated_round, unpack
from .sharing import ArithmeticShares, BooleanShares


def early(p, q: int, nc: int, t_words: torch.Tensor | None = None):
    """This party's part of the first message (role ``q`` in a part of ``nc`` elements): ``(to_next, n_from_prev,
    state)``; the sender passes its ``t`` bit-sliced ``[1, wc]``, role 1 keeps the ``y`` it receives as state."""
    if q == 0:
        assert t_words is not None
        x_r = p.prg_prev.int64((nc,))
        return unpack(t_words, nc)[0] - x_r, 0, None
    if q == 1:
        return None, nc, None
    return None, 0, p.prg_next.int64((nc,))


def late(bits: BooleanShares, n: int, states: list) -> ArithmeticShares:
    """Arithmetic 0/1 of the bit-sliced bits ``[W]`` over ``n`` elements (a multiple of 3); ``states[r]``:
    this party's :func:`early` state in part ``r`` (``y`` for role 1, ``x_r`` for role 2). Cost: 1 round."""
    p = bits.party
    words = part_words(n)

    def prepare(q: int, e0: int, e1: int):
        nc = e1 - e0
        r = (p.id - q) % 3
        w0, wc = words[r]
        if q == 0:
            return None, None, nc, nc, lambda fn_, fp_: (fp_, fn_)
        if q == 1:
            c = unpack(bits.hi[w0 : w0 + wc].unsqueeze(0), nc)[0]
            z, zp = p.prg_next.int64((nc,)), p.prg_next.int64((nc,))
            gamma = (1 - 2 * c) * states[r] + zp
            return None, gamma, 0, 0, lambda fn_, fp_: (gamma, z)
        c = unpack(bits.lo[w0 : w0 + wc].unsqueeze(0), nc)[0]
        z, zp = p.prg_prev.int64((nc,)), p.prg_prev.int64((nc,))
        alpha = c + (1 - 2 * c) * states[r] - z - zp
        return alpha, None, 0, 0, lambda fn_, fp_: (z, alpha)

    res = rotated_round(p, n, prepare)
    return ArithmeticShares(p, torch.cat([r[0] for r in res]), torch.cat([r[1] for r in res]), 0)


def cost(n: int) -> tuple[int, int]:
    """(1 round, words sent by EACH party) of :func:`early` + :func:`late` for ``n`` elements (padded to 3)."""
    return 1, n + (-n % 3)


def inject(b: BooleanShares) -> ArithmeticShares:
    """Boolean bit (bit 0) -> arithmetic 0/1: ``compare.bit_inject`` (1 round, 3-party OT) with
    the sender role rotated over three parts of the batch: every party sends about
    ``2 n`` elements instead of ``4 n`` for party 0 and ``n`` for the others.
    """
    p = b.party
    lo_all, hi_all = pad3(b.lo), pad3(b.hi)

    def prepare(q: int, e0: int, e1: int):
        nc = e1 - e0
        lo, hi = lo_all[e0:e1], hi_all[e0:e1]
        if q == 0:
            t = (lo ^ hi) & 1
            c0, w = p.prg_prev.int64((nc,)), p.prg_prev.int64((2, nc))
            c1, w2 = p.prg_next.int64((nc,)), p.prg_next.int64((2, nc))
            m = torch.stack((t - c0 - c1, (t ^ 1) - c0 - c1))
            return m + w, m + w2, 0, 0, lambda a_, b_: (c0, c1)
        if q == 1:
            choice = (hi & 1).bool()
            c1, w2 = p.prg_prev.int64((nc,)), p.prg_prev.int64((2, nc))
            return torch.where(choice, w2[1], w2[0]), None, nc, 2 * nc, lambda fn_, fp_: (
                c1, torch.where(choice, fp_[nc:], fp_[:nc]) - fn_)
        choice = (lo & 1).bool()
        c0, w = p.prg_next.int64((nc,)), p.prg_next.int64((2, nc))
        return None, torch.where(choice, w[1], w[0]), 2 * nc, nc, lambda fn_, fp_: (
            torch.where(choice, fn_[nc:], fn_[:nc]) - fp_, c0)

    res = rotated_round(p, lo_all.numel(), prepare)
    n = b.numel()
    lo = torch.cat([r[0] for r in res])[:n].view(b.shape)
    hi = torch.cat([r[1] for r in res])[:n].view(b.shape)
    return ArithmeticShares(p, lo, hi, 0)


def inject_cost(n: int) -> tuple[int, int]:
    """(1 round, words sent by EACH party) of :func:`inject`: 4 + 1 + 1 per element of a part."""
    return 1, 2 * (n + (-n % 3))
