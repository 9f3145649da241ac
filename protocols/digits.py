"""Comparisons in few rounds: digit generate/propagate by a 1-of-2**w table OT, a carry tree over digits.

``x = u + v`` with ``u = x_r + x_{r+1}`` known to ONE party (the *sender* ``r``) and ``v = x_{r+2}`` known to the
two others (the *receivers*). Dropping ``drop`` low bits locally and keeping ``bits`` bits, ``u' + v' = floor(x /
2**drop) - delta (mod 2**bits)`` with ``delta`` in {0, 1}; its top bit is the sign of ``x`` (error bound in
:class:`Digits`).

Steps of :func:`msb` (``D`` digits of widths ``w_i``, low to high):

1. ONE round: for every digit the sender knows ``u_i``, the receivers both know the choice ``v_i``. The sender
   builds, for every candidate ``j < 2**w_i``, the bits ``G_i = [u_i + j >= 2**w_i]``, ``P_i = [u_i + j = 2**w_i -
   1]`` (the top digit gives its sum's top bit with carry-in 0 and the xor with carry-in 1 instead; the lowest only
   ``G``), xors each with a fresh output mask ``a ^ b`` (``a`` from its key with receiver 2, ``b`` with receiver 1)
   and sends each receiver the whole table masked by pads that only the OTHER receiver also holds; each receiver
   gets the pad bits of its choice from the other (a 1-of-2**w 3-party OT). Result: boolean RSS ``(a, b, f ^ a ^
   b)`` of every digit's bits.
2. The carry tree ``G = G_hi ^ P_hi G_lo``, ``P = P_hi P_lo`` over digits, on bit-sliced words (64 elements per
   word): one AND round per level down to 4 groups, then the last 3-4 groups give the sign in ONE round
   (:mod:`protocols.tablegate`: a 1-of-64 table OT of ``P_top & carry``, xored with ``S0``): ``ceil(log2 D) - 1``
   rounds for ``D >= 3`` digits.

Load balance: the batch is cut in three equal parts (zero-padded); party ``r`` is the sender of part ``r``, so every
party sends the same. Cost of :func:`msb` per comparison per party (:func:`msb_cost`, tests): ``CNN_FAST`` 2 rounds,
3.4 words; ``CNN_EXACT`` 3, 3.6; ``OCTAVE`` 3, 10.9; ``FULL`` 3, 40.9; ``WIDE`` 4, 6.7; :func:`ltz` /
:func:`eqz` add the injection (1 round, 1 word: ``protocols.b2a``, its first message in the last round; 2 words for
two digits).

Security (semi-honest, one corrupted party): the sender receives nothing in step 1; a receiver sees the table masked
by pads of a key it does not hold, plus the chosen pads (uniform bits it cannot relate to the other candidates), so
the unchosen candidates stay hidden and the chosen one is masked by ``a`` or ``b`` from the key it lacks. Step 2 is
ABY3's AND (re-randomised by a zero-sharing) and the table gate (the argument of step 1). Every message a party
receives is uniform and independent of ``x``.

:func:`eqz`: ``E_i = [u_i = j]`` for ``j`` the digit of ``-v' mod 2**bits``, AND tree. :func:`inject`
(``b2a.inject``) is ``compare.bit_inject`` with the sender role rotated the same way.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cache

import numpy as np
import torch

from . import b2a as B2A
from . import tablegate as TG
from .b2a import inject, inject_cost
from .boolean import and_many
from .digit_tables import digits_u8 as _digits_u8
from .digit_tables import fields as _fields
from .digit_tables import layout as _layout
from .digit_tables import lut as _lut
from .digit_tables import pick_bits as _pick_bits
from .digit_tables import plan as _plan
from .digit_tables import sender_rows as _sender_rows
from .digit_tables import sender_rows_words as _sender_rows_words
from .digit_tables import word_tables as _word_tables
from .rotate import chunks as _chunks
from .rotate import pack as _pack
from .rotate import padded3 as _padded3
from .rotate import part as _part
from .rotate import rotated_round as _rotated_round
from .rotate import unpack as _unpack
from .sharing import ArithmeticShares, BooleanShares


@dataclass(frozen=True)
class Digits:
    """A comparison layout: keep ``bits`` bits of ``x >> drop``, cut into digits ``widths`` (low first).

    Sign error bound: exact when ``drop = 0`` and ``-2**(bits-1) <= x < 2**(bits-1)``. With
    ``drop > 0`` the sign is right for ``x < 0`` and ``x >= 2**drop`` whenever
    ``|x| < 2**(bits + drop - 1) - 2**drop`` ring units; ``0 <= x < 2**drop`` may read as
    negative. Rounds: ``1 + ceil(log2 len(widths))``.
    """

    bits: int
    drop: int
    widths: tuple[int, ...]

    def __post_init__(self) -> None:
        if sum(self.widths) != self.bits or not 0 < self.bits + self.drop <= 64:
            raise ValueError(f"digit widths {self.widths} must sum to bits={self.bits}, bits + drop <= 64")
        if any(not 1 <= w <= 12 for w in self.widths):
            raise ValueError("digit widths must be in 1..12")

    @property
    def rounds(self) -> int:  # of msb: the table round, AND levels down to 4 groups, one table-gate round
        d = len(self.widths)
        return 1 + (d > 1) + max(0, math.ceil(math.log2(d)) - 2)

    @property
    def bound(self) -> int:
        """Valid inputs satisfy ``|x| < bound`` ring units (see the class docstring)."""
        return 2 ** (self.bits - 1) if not self.drop else 2 ** (self.bits + self.drop - 1) - 2**self.drop


FULL = Digits(64, 0, (8,) * 8)  # any x in the ring: msb in 3 rounds, 40.9 words
WIDE = Digits(64, 0, (4,) * 16)  # any x in the ring, small tables: msb in 4 rounds, 6.7 words
CNN_FAST = Digits(20, 7, (5, 5, 5, 5))  # |x| < 2**26 - 128 ring units (~1024 real), sign wrong only on [0, 2**-9)
CNN_EXACT = Digits(32, 0, (4,) * 8)  # exact for |x| < 2**31 ring units (32768 real)
OCTAVE = Digits(48, 0, (6,) * 8)  # exact for |x| < 2**47 ring units (2**31 real): msb in 3 rounds, 10.9 words


def eq_spec(bound: int) -> Digits:
    """Layout for :func:`eqz` of integers ``|x| < bound``: ``bits = ceil(log2 bound)``, digits of <= 12 bits."""
    bits = max(1, (bound - 1).bit_length())
    d = -(-bits // 12)
    return even(bits, d)


def even(bits: int, d: int) -> Digits:
    """``bits`` bits (no drop) in ``d`` digits of near-equal width, the wider ones low."""
    return Digits(bits, 0, tuple(bits // d + (i < bits % d) for i in range(d)))


def _digit(t: torch.Tensor, spec: Digits, i: int) -> torch.Tensor:
    return (t >> (spec.drop + sum(spec.widths[:i]))) & ((1 << spec.widths[i]) - 1)


def _pick(table: torch.Tensor, pos: tuple[int, int], w: int, choice: torch.Tensor) -> torch.Tensor:
    """Bit ``choice`` of the row at ``pos`` of every element's table ``[T, n]`` (bool ``[n]``).

    For rows under 64 bits ``choice`` is the shift ``choice + bit`` (see ``_shifts``)."""
    word, _ = pos
    if w >= 6:
        piece = torch.gather(table[word : word + (1 << w) // 64], 0, (choice >> 6).unsqueeze(0)).squeeze(0)
        return ((piece >> (choice & 63)) & 1).bool()
    return ((table[word] >> choice) & 1).bool()


def _digit_bits(x: ArithmeticShares, spec: Digits, kind: str, early: bool = False) -> tuple[BooleanShares, list | None]:
    """Step 1 of :func:`msb` / :func:`eqz`: RSS of every table field, bit-sliced ``[F, W]`` (parts padded to 64);
    ``early`` (one field): with ``b2a.early`` for it (the per-part states returned, else ``None``)."""
    p = x.party
    fields = _fields(spec, kind)
    pos, T = _layout(spec, fields)
    F = len(fields)
    lo_all, hi_all = x.lo.reshape(-1), x.hi.reshape(-1)  # parts zero-padded to a multiple of 3 (_part)
    n3 = _padded3(lo_all.numel())

    groups = _plan(spec, kind)

    def choices(v: torch.Tensor) -> list[torch.Tensor] | np.ndarray:
        """Each field's choice: the digit, plus the row's bit offset for rows under 64 bits (with lane
        groups: the digits ``[D, nc]`` as uint8, numpy)."""
        t = -v if kind == "eq" else v
        if groups is not None:
            return _digits_u8(t, spec)
        per_digit = [_digit(t, spec, i) for i in range(len(spec.widths))]
        return [per_digit[i] if spec.widths[i] >= 6 else per_digit[i] + pos[f][1] for f, (i, _) in enumerate(fields)]

    def picked(table: torch.Tensor, ch) -> torch.Tensor:
        if groups is not None:
            return _pack(_pick_bits(groups, table, ch, F))
        return _pack(torch.stack([_pick(table, pos[f], spec.widths[i], ch[f]) for f, (i, _) in enumerate(fields)]))

    def prepare(q: int, e0: int, e1: int):
        nc = e1 - e0
        wc = -(-nc // 64)
        lo, hi = _part(lo_all, e0, e1), _part(hi_all, e0, e1)
        if q == 0:
            b, pads2 = p.prg_next.int64((F, wc)), p.prg_next.int64((T, nc))
            a, pads1 = p.prg_prev.int64((F, wc)), p.prg_prev.int64((T, nc))
            u = lo + hi
            fast: torch.Tensor | None
            if wtabs is not None:
                fast = _sender_rows_words(wtabs, u, a ^ b, nc)
            else:
                ud = [_digit(u, spec, i) for i in range(len(spec.widths))]
                fast = _sender_rows(spec, kind, ud, a ^ b, nc)
            mask = _unpack(a ^ b, nc) if fast is None else None
            rows = torch.zeros((T, nc), dtype=torch.int64) if fast is None else fast
            for f, (i, fn) in enumerate(fields if fast is None else []):
                w = spec.widths[i]
                vals = _lut(w, fn)[ud[i]].T
                full = -1 if w >= 6 else (1 << (1 << w)) - 1
                vals = vals ^ (mask[f] * full)  # type: ignore[index]
                word, bit = pos[f]
                rows[word : word + vals.shape[0]] |= vals << bit
            to1 = pads1.bitwise_xor_(rows).reshape(-1)  # in place: the pads are fresh PRG buffers
            to2 = pads2.bitwise_xor_(rows)
            return (torch.cat([to1, B2A.early(p, 0, nc, a ^ b)[0]]) if early else to1), to2, 0, 0, (
                lambda fn_, fp_: (a, b, None))
        if q == 1:
            b, pads2 = p.prg_prev.int64((F, wc)), p.prg_prev.int64((T, nc))
            ch = choices(hi)
            help2 = picked(pads2, ch)
            return help2, None, F * wc, nc * (T + early), lambda fn_, fp_: (
                b, picked(fp_[: nc * T].view(T, nc), ch) ^ fn_.view(F, wc), fp_[nc * T :] if early else None)
        a, pads1 = p.prg_next.int64((F, wc)), p.prg_next.int64((T, nc))
        ch = choices(lo)
        help1 = picked(pads1, ch)
        st = B2A.early(p, 2, nc)[2] if early else None
        return None, help1, nc * T, F * wc, lambda fn_, fp_: (picked(fn_.view(T, nc), ch) ^ fp_.view(F, wc), a, st)

    wtabs = _word_tables(spec, kind)
    if early and F != 1:
        raise ValueError("early injection needs a one-field layout")
    res = _rotated_round(p, n3, prepare)
    out = BooleanShares(p, torch.cat([r[0] for r in res], 1), torch.cat([r[1] for r in res], 1))
    return out, ([r[2] for r in res] if early else None)


def _tree(bits: BooleanShares, spec: Digits, kind: str, n: int, early: bool = False,
          rng: tuple[int, int] | None = None) -> tuple[BooleanShares, list | None]:
    """Step 2: combine the digit groups pairwise, one AND round per level, down to at most 4 groups;
    3 or 4 groups go to the root in ONE ``tablegate`` round (the last two levels at once). Returns ``[W]``."""
    fields = _fields(spec, kind)
    if kind == "eq":
        groups: list[tuple[BooleanShares, BooleanShares | None]] = [(bits[f], None) for f in range(len(fields))]
    else:
        idx = {key: f for f, key in enumerate(fields)}
        d = len(spec.widths)
        groups = [(bits[0], None)] + [(bits[idx[(i, "G")]], bits[idx[(i, "P")]]) for i in range(1, d - 1)]
        if d > 1:
            groups.append((bits[idx[(d - 1, "S0")]], bits[idx[(d - 1, "PT")]]))
    while len(groups) > (4 if len(groups) > 2 else 1):
        pairs = []
        for k in range(0, len(groups) - 1, 2):
            (g_lo, p_lo), (g_hi, p_hi) = groups[k], groups[k + 1]
            if kind == "eq":
                pairs.append((g_lo, g_hi))
                continue
            assert p_hi is not None
            pairs.append((p_hi, g_lo))
            if p_lo is not None:
                pairs.append((p_hi, p_lo))
        prods = iter(and_many(pairs))
        new: list[tuple[BooleanShares, BooleanShares | None]] = []
        for k in range(0, len(groups) - 1, 2):
            (g_lo, p_lo), (g_hi, p_hi) = groups[k], groups[k + 1]
            if kind == "eq":
                new.append((next(prods), None))
                continue
            g = g_hi ^ next(prods)
            new.append((g, next(prods) if p_lo is not None else None))
        if len(groups) % 2:
            new.append(groups[-1])
        groups = new
    if len(groups) == 1:
        return groups[0][0], None
    n3 = _padded3(n)
    if kind == "eq":
        return TG.gate([g for g, _ in groups], n3, _and_truth(len(groups)), early=early, rng=rng)
    ins = [groups[0][0]] + [b for g, pr in groups[1:-1] for b in (g, pr)] + [groups[-1][1]]
    return TG.gate([b for b in ins if b is not None], n3, _carry_truth(len(groups)), groups[-1][0], early, rng)


@cache
def _and_truth(k: int) -> tuple[bool, ...]:
    return tuple(i == (1 << k) - 1 for i in range(1 << k))


@cache
def _carry_truth(groups: int) -> tuple[bool, ...]:
    """Inputs ``G0, (G_i, P_i) for the middle groups, P_top``: ``P_top & carry into the top group``."""
    k = 2 * groups - 2
    out = []
    for i in range(1 << k):
        b = [(i >> f) & 1 for f in range(k)]
        c = b[0]
        for m in range(groups - 2):
            c = b[1 + 2 * m] ^ (b[2 + 2 * m] & c)
        out.append(bool(b[-1] & c))
    return tuple(out)


def _unslice(root: BooleanShares, n: int) -> BooleanShares:
    """Bit-sliced root of the three parts -> one word per element (bit 0), element order, first ``n``."""
    los, his, w0 = [], [], 0
    for e0, e1 in _chunks(_padded3(n)):
        wc = -(-(e1 - e0) // 64)
        los.append(_unpack(root.lo[w0 : w0 + wc].unsqueeze(0), e1 - e0)[0])
        his.append(_unpack(root.hi[w0 : w0 + wc].unsqueeze(0), e1 - e0)[0])
        w0 += wc
    return BooleanShares(root.party, torch.cat(los)[:n], torch.cat(his)[:n])


def msb(x: ArithmeticShares, spec: Digits = FULL) -> BooleanShares:
    """Boolean sharing (bit 0) of the sign of ``x`` within ``spec``'s bound.

    Cost: ``spec.rounds`` rounds (:func:`msb_cost`)."""
    return _unslice(_root(x, spec, "cmp", False)[0], x.numel()).reshape(x.shape)


def msb_early(x: ArithmeticShares, spec: Digits, rng: tuple[int, int]) -> tuple[BooleanShares, BooleanShares, list]:
    """:func:`msb` whose last round (the table gate: ``spec`` of 3 digits or more) also carries ``b2a.early``
    for the flat elements ``rng``: ``(bits like x, bit-sliced root [W], states)`` for ``b2a.late(root, n
    padded to 3, states, rng)`` one round later. Cost: :func:`msb_cost` plus ``b2a`` (1 word per element)."""
    if len(spec.widths) < 3:
        raise ValueError("msb_early needs the table gate (3 digits or more)")
    n = x.numel()
    root, st = _tree(_digit_bits(x, spec, "cmp")[0], spec, "cmp", n, True, rng)
    assert st is not None
    return _unslice(root, n).reshape(x.shape), root, st


def _root(x: ArithmeticShares, spec: Digits, kind: str, early: bool) -> tuple[BooleanShares, list | None]:
    """The bit-sliced result ``[W]``; with ``early`` and a one-field or gated layout (not 2 digits), the
    ``b2a.early`` states of its last round (else ``None``)."""
    d = len(spec.widths)
    bits, st = _digit_bits(x, spec, kind, early and d == 1)
    return (bits[0], st) if d == 1 else _tree(bits, spec, kind, x.numel(), early and d > 2)


def _injected(x: ArithmeticShares, spec: Digits, kind: str) -> ArithmeticShares:
    root, st = _root(x, spec, kind, True)
    n = x.numel()
    if st is None:  # two digits: the last round is an AND, the sender does not know its output early
        return inject(_unslice(root, n).reshape(x.shape))
    out = B2A.late(root, _padded3(n), st)
    return ArithmeticShares(x.party, out.lo[:n].view(x.shape), out.hi[:n].view(x.shape), 0)



def ltz(x: ArithmeticShares, spec: Digits = FULL) -> ArithmeticShares:
    """``[x < 0]`` as an integer 0/1 sharing. Cost: ``spec.rounds + 1`` rounds (4 for ``FULL``); the
    injection by ``b2a`` (1 word per element, its first message in the last round of :func:`msb`) except
    for two digits (:func:`inject`, 2 words); :func:`ltz_cost`."""
    return _injected(x, spec, "cmp")


def eqz(x: ArithmeticShares, spec: Digits) -> ArithmeticShares:
    """``[x == 0]`` (0/1) for ``|x| < 2**spec.bits`` (``spec.drop`` must be 0): ``x mod 2**bits``
    is 0 iff ``u'`` equals ``-v' mod 2**bits`` digit by digit (no carries). Cost:
    ``spec.rounds + 1`` rounds (1 table round, an AND tree over digits, injection as in :func:`ltz`)."""
    if spec.drop:
        raise ValueError("eqz needs drop = 0")
    return _injected(x, spec, "eq")


# ---- exact costs ----------------------------------------------------------------------


def _tree_ands(spec: Digits, kind: str) -> list[int]:
    """ANDs (in bit-sliced words per 64 elements) of every AND level of the tree (before the table gate)."""
    groups = [False] + [True] * (len(spec.widths) - 1) if kind != "eq" else [False] * len(spec.widths)
    levels = []
    while len(groups) > (4 if len(groups) > 2 else 1):
        ands, new = 0, []
        for k in range(0, len(groups) - 1, 2):
            lo_p = groups[k]
            ands += 1 if kind == "eq" else 1 + lo_p
            new.append(lo_p and kind != "eq")
        if len(groups) % 2:
            new.append(groups[-1])
        levels.append(ands)
        groups = new
    return levels


def msb_cost(n: int, spec: Digits, kind: str = "cmp") -> tuple[int, int]:
    """(rounds, int64 words sent by EACH party) of :func:`msb` (``kind="eq"``: the AND tree of :func:`eqz`)."""
    fields = _fields(spec, kind)
    nc = _padded3(n) // 3
    wc = -(-nc // 64)
    levels = _tree_ands(spec, kind)  # AND words per 64 elements, per level
    words = 2 * nc * _layout(spec, fields)[1] + 2 * len(fields) * wc + sum(levels) * 3 * wc
    if len(spec.widths) > 2:  # the table gate of the last 3 or 4 groups
        return 2 + len(levels), words + TG.gate_cost(3 * nc)[1]
    return 1 + len(levels), words


def ltz_cost(n: int, spec: Digits, kind: str = "cmp") -> tuple[int, int]:
    """(rounds, words sent by EACH party) of :func:`ltz` (``kind="eq"``: :func:`eqz`)."""
    rounds, words = msb_cost(n, spec, kind)
    extra = inject_cost(n) if len(spec.widths) == 2 else B2A.cost(n)
    return rounds + extra[0], words + extra[1]
