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

:func:`inject` (re-exported as ``digits.inject``) is the one-round OT injection for bits whose sender
does not hold its output components early (e.g. the AND of a two-digit comparison): ``compare.bit_inject``
with the sender role rotated, 2 words per element per party.
"""

from __future__ import annotations

import torch

from .rotate import padded3, part, part_words, rotated_round, unpack
from .sharing import ArithmeticShares, BooleanShares


def span(e0: int, e1: int, rng: tuple[int, int] | None) -> tuple[int, int]:
    """The elements of ``rng`` (all when ``None``) inside the part ``[e0, e1)``, as offsets into the part."""
    if rng is None:
        return 0, e1 - e0
    s0, s1 = max(e0, rng[0]), min(e1, rng[1])
    return (s0 - e0, s1 - e0) if s1 > s0 else (0, 0)


def early(p, q: int, nc: int, t_words: torch.Tensor | None = None, sub: tuple[int, int] | None = None):
    """This party's part of the first message (role ``q`` in a part of ``nc`` elements, for its elements
    ``sub``): ``(to_next, n_from_prev, state)``; the sender passes its ``t`` bit-sliced ``[1, wc]``, role 1
    keeps the ``y`` it receives as state."""
    s0, s1 = sub or (0, nc)
    if q == 0:
        assert t_words is not None
        x_r = p.prg_prev.int64((s1 - s0,))
        return unpack(t_words, nc)[0][s0:s1] - x_r, 0, None
    if q == 1:
        return None, s1 - s0, None
    return None, 0, p.prg_next.int64((s1 - s0,))


def late_part(p, q: int, nc: int, lo: torch.Tensor, hi: torch.Tensor, state, sub: tuple[int, int] | None = None):
    """Role ``q``'s message of :func:`late` in one part (bit-sliced words ``lo, hi`` of the part): the
    ``(to_next, to_prev, n_from_next, n_from_prev, finish)`` of ``rotate.rotated_round``."""
    s0, s1 = sub or (0, nc)
    m = s1 - s0
    if not m:  # nothing of this part to inject: no message (an empty one would not be expected)
        empty = torch.zeros(0, dtype=torch.int64)
        return None, None, 0, 0, lambda fn_, fp_: (empty, empty)
    if q == 0:
        return None, None, m, m, lambda fn_, fp_: (fp_, fn_)
    if q == 1:
        c = unpack(hi.unsqueeze(0), nc)[0][s0:s1]
        z, zp = p.prg_next.int64((m,)), p.prg_next.int64((m,))
        gamma = (state ^ -c) + c + zp  # (1 - 2c) * state for c in {0, 1}, without an int64 multiply
        return None, gamma, 0, 0, lambda fn_, fp_: (gamma, z)
    c = unpack(lo.unsqueeze(0), nc)[0][s0:s1]
    z, zp = p.prg_prev.int64((m,)), p.prg_prev.int64((m,))
    alpha = c + ((state ^ -c) + c) - z - zp
    return alpha, None, 0, 0, lambda fn_, fp_: (z, alpha)


def late(bits: BooleanShares, n: int, states: list, rng: tuple[int, int] | None = None) -> ArithmeticShares:
    """Arithmetic 0/1 of the bit-sliced bits ``[W]`` over ``n`` elements (a multiple of 3), or of the elements
    ``rng`` only; ``states[r]``: this party's :func:`early` state in part ``r`` (``y`` for role 1, ``x_r`` for
    role 2). Cost: 1 round; with :func:`early`, one word per injected element per party."""
    p = bits.party
    words = part_words(n)

    def prepare(q: int, e0: int, e1: int):
        r = (p.id - q) % 3
        w0, wc = words[r]
        return late_part(p, q, e1 - e0, bits.lo[w0 : w0 + wc], bits.hi[w0 : w0 + wc], states[r], span(e0, e1, rng))

    res = rotated_round(p, n, prepare)
    return ArithmeticShares(p, torch.cat([r[0] for r in res]), torch.cat([r[1] for r in res]), 0)


def cost(n: int) -> tuple[int, int]:
    """(1 round, words sent by EACH party) of :func:`early` + :func:`late` for ``n`` elements (padded to 3)."""
    return 1, padded3(n)


def inject(b: BooleanShares) -> ArithmeticShares:
    """Boolean bit (bit 0) -> arithmetic 0/1: ``compare.bit_inject`` (1 round, 3-party OT) with
    the sender role rotated over three parts of the batch: every party sends about
    ``2 n`` elements instead of ``4 n`` for party 0 and ``n`` for the others.
    """
    p = b.party
    lo_all, hi_all = b.lo.reshape(-1), b.hi.reshape(-1)

    def prepare(q: int, e0: int, e1: int):
        nc = e1 - e0
        lo, hi = part(lo_all, e0, e1), part(hi_all, e0, e1)
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

    res = rotated_round(p, padded3(lo_all.numel()), prepare)
    n = b.numel()
    lo = torch.cat([r[0] for r in res])[:n].view(b.shape)
    hi = torch.cat([r[1] for r in res])[:n].view(b.shape)
    return ArithmeticShares(p, lo, hi, 0)


def inject_cost(n: int) -> tuple[int, int]:
    """(1 round, words sent by EACH party) of :func:`inject`: 4 + 1 + 1 per element of a part."""
    return 1, 2 * padded3(n)
