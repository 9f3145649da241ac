"""Any boolean function of up to 6 shared bits in ONE round: a 1-of-2**k table OT.

Inputs are boolean RSS bits, bit-sliced as in :mod:`protocols.rotate` (``[W]`` words of the
three parts of a batch). In the part whose sender is party ``r``, every input bit is
``s ^ c`` with ``s = b_r ^ b_{r+1}`` known to the sender and ``c = b_{r+2}`` known to both
receivers. The sender builds, for every element, the row ``f(s ^ j)`` over all ``2**k``
candidates ``j`` (one word for ``k <= 6``), xors it with a fresh output mask ``a ^ b``
(``a`` from its key with party ``r+2``, ``b`` with party ``r+1``) and sends it to each
receiver masked by pads that only the OTHER receiver also holds; each receiver gets the
pad bit of its choice ``c`` from the other (as step 1 of :mod:`protocols.digits`). Result:
the RSS ``(a, b, f ^ a ^ b)``.

Cost (:func:`gate_cost`): 1 round; per party ``2 n / 3`` words (its part's rows, one word
per element to each receiver) plus two bit-sliced words per 64 elements (the pad bits).
Used by :mod:`protocols.digits` to replace the last two AND levels of a carry tree (4 digit
groups -> the sign) by one round.

Security (semi-honest, one corrupted party): the sender receives nothing; a receiver sees
the row masked by pads of a key it lacks, and the other receiver's pad bit for its own
choice, a uniform bit it cannot relate to the other candidates; the chosen bit is masked
by ``a`` or ``b`` from the key it lacks. Every received word is uniform whatever the inputs.
"""

from __future__ import annotations

from functools import cache

import numpy as np
import torch

from . import b2a as B2A
from .rotate import pack, padded3, part_words, rotated_round
from .sharing import BooleanShares

MAX_INPUTS = 6


@cache
def _rows(truth: tuple[bool, ...]) -> np.ndarray:
    """``[2 * 2**k]`` words: row ``s`` has bit ``j`` = ``truth[s ^ j]``; row ``s + 2**k`` is row ``s`` with its
    ``2**k`` bits flipped (the sender's output mask bit set)."""
    size = len(truth)
    t = torch.tensor(truth, dtype=torch.int64)
    s, j = torch.arange(size).view(-1, 1), torch.arange(size).view(1, -1)
    rows = (t[s ^ j] << j).sum(-1)
    full = -1 if size == 64 else (1 << size) - 1
    return torch.cat([rows, rows ^ full]).numpy()


def _index(bits: torch.Tensor, nc: int) -> np.ndarray:
    """Bit-sliced ``[k, wc]`` (``k <= 7``) -> per-element index ``sum_f bit_f << f`` ``[nc]`` (uint8, numpy)."""
    raw = np.ascontiguousarray(bits.numpy()).view(np.uint8)
    u = np.unpackbits(raw, axis=1, count=nc, bitorder="little")
    idx = u[0].copy()
    for f in range(1, u.shape[0]):
        idx |= u[f] << f
    return idx


def gate(inputs: list[BooleanShares], n: int, truth: tuple[bool, ...], xor_in: BooleanShares | None = None,
         early: bool = False, rng: tuple[int, int] | None = None) -> tuple[BooleanShares, list | None]:
    """RSS of ``truth[sum_f x_f << f] ^ xor_in`` for bit-sliced inputs ``x_f`` ``[W]`` over ``n`` elements
    (``n`` a multiple of 3, the parts of :mod:`protocols.rotate`). Cost: :func:`gate_cost`. With ``early``
    the round also carries :func:`protocols.b2a.early` for the output elements ``rng`` (default all; its
    per-part states are returned for ``b2a.late``), else ``None``."""
    k = len(inputs)
    if not 1 <= k <= MAX_INPUTS or len(truth) != 1 << k:
        raise ValueError(f"gate: 1..{MAX_INPUTS} inputs and a truth table of 2**k entries")
    p = inputs[0].party
    lo_all = torch.stack([x.lo for x in inputs])
    hi_all = torch.stack([x.hi for x in inputs])
    rows = _rows(tuple(bool(v) for v in truth))
    words = part_words(n)

    def picked(table: torch.Tensor, c: np.ndarray) -> torch.Tensor:
        return pack(((table.numpy() >> c) & 1).reshape(1, -1))

    def prepare(q: int, e0: int, e1: int):
        nc = e1 - e0
        w0, wc = words[3 * e0 // n]
        lo, hi = lo_all[:, w0 : w0 + wc], hi_all[:, w0 : w0 + wc]
        if q == 0:
            b, pads2 = p.prg_next.int64((1, wc)), p.prg_next.int64((nc,))
            a, pads1 = p.prg_prev.int64((1, wc)), p.prg_prev.int64((nc,))
            row = torch.from_numpy(rows[_index(torch.cat([lo ^ hi, a ^ b]), nc)])  # the mask bit as input k
            to1 = pads1.bitwise_xor_(row)  # in place: the pads are fresh PRG buffers
            if early:
                t = a ^ b if xor_in is None else a ^ b ^ (xor_in.lo ^ xor_in.hi)[w0 : w0 + wc].view(1, wc)
                to1 = torch.cat([to1, B2A.early(p, 0, nc, t, B2A.span(e0, e1, rng))[0]])
            return to1, pads2.bitwise_xor_(row), 0, 0, lambda fn_, fp_: (a, b, None)
        if q == 1:
            b, pads2 = p.prg_prev.int64((1, wc)), p.prg_prev.int64((nc,))
            c = _index(hi, nc)
            m = B2A.early(p, 1, nc, None, B2A.span(e0, e1, rng))[1] if early else 0
            return picked(pads2, c), None, wc, nc + m, lambda fn_, fp_: (
                b, picked(fp_[:nc], c) ^ fn_.view(1, wc), fp_[nc:] if early else None)
        a, pads1 = p.prg_next.int64((1, wc)), p.prg_next.int64((nc,))
        c = _index(lo, nc)
        st = B2A.early(p, 2, nc, None, B2A.span(e0, e1, rng))[2] if early else None
        return None, picked(pads1, c), nc, wc, lambda fn_, fp_: (picked(fn_, c) ^ fp_.view(1, wc), a, st)

    res = rotated_round(p, n, prepare)
    out = BooleanShares(p, torch.cat([r[0] for r in res], 1)[0], torch.cat([r[1] for r in res], 1)[0])
    return (out if xor_in is None else out ^ xor_in), ([r[2] for r in res] if early else None)


def gate_cost(n: int, early: bool = False) -> tuple[int, int]:
    """(1 round, words sent by EACH party) of :func:`gate` on ``n`` elements (padded to a multiple of 3);
    ``early``: with the first message of ``b2a`` (``n / 3`` words more)."""
    nc = padded3(n) // 3
    return 1, 2 * nc + 2 * -(-nc // 64) + nc * early
