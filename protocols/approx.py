"""Non-linear helpers for the secure CNN, built on the MPC core: bounded comparison, clamp
(ReLU6), ReLU, pairwise max, and L2 normalisation via a secure reciprocal square root.

Bounded comparison (``ltz_bounded``)
------------------------------------
The sign of ``x`` only needs a few low bits when ``|x|`` is bounded: reducing every
additive component mod ``2**b`` is local and gives an additive sharing of ``x mod 2**b``,
whose top bit is the sign. Several ``b``-bit lanes are packed per int64 word, so the
boolean adder (carry-save + Kogge-Stone, lane-crossing bits masked after each shift)
handles fewer words, over 5 prefix levels instead of 6. Two layouts (:class:`Lanes`):

* ``EXACT``: two 32-bit lanes; exact for ``|x| < 2**31`` ring units (32768 real at 16
  fractional bits). About 5.5 words per element per party (``compare.ltz``: about 13).
* ``FAST``: the components are first shifted right by 6 bits (local), then three 21-bit
  lanes; the sum of the shifted components is ``floor(x / 64) - delta``, ``delta`` in
  {0, 1, 2}, so the sign is right for ``x < 0`` and ``x >= 128`` ring units (2**-9) and
  ``|x| < 2**26 - 256`` (~1024 real); ``0 <= x < 2**-9`` may read as negative. A ReLU,
  ReLU6 or max output is then off by at most ``2**-9`` next to its kink. About 3.7 words
  per element per party. ``SecureModel`` uses it by default (``comparison="exact"`` to opt out).

Both: 8 rounds (carry-save 1, generate 1, prefix 5, bit injection 1). Pre-activations of
EfficientNet-Lite0 stay below 100 on real images (measured), inside both bounds. A side
benefit: a large truncation error (a multiple of ``2**48``) vanishes mod ``2**b``, so the
comparison still sees the right sign. Local work is done in cache-sized chunks (the
bit-sliced adder on multi-million-element tensors is otherwise dominated by page faults).

Reciprocal square root / L2 normalisation (``l2_normalize``)
------------------------------------------------------------
``s = sum(x**2)`` -> octave one-hot ``e_j = [2**j <= s < 2**(j+1)]`` from ONE batched
comparison of ``s`` against the public thresholds ``2**j`` -> mantissa ``h = s / 2**(j+1)``
in ``[0.5, 1)`` -> ``r ~ 1/sqrt(2h)`` by a linear start (max relative error 2.3 %) and two
Newton steps ``r <- r (1.5 - h r**2)`` (relative error ~1e-6, below fixed-point
resolution) -> ``y = x r 2**(-j/2)`` with the public factor applied at 24 extra bits.
Accuracy: each output component within ``4e-5 + 3e-5 / ||x||`` absolute of ``x / ||x||``
for ``2**-8 <= ||x||**2 < 2**24`` (tested; the ``1/||x||`` term is the 2**-16 input and
product rounding, amplified by the division); outside that range the output is finite
but not normalised. EfficientNet features have ``||x||`` of a few units to tens.
"""

from __future__ import annotations

from typing import Sequence

import torch

from . import compare as C
from .arithmetic import _product, mul, square, truncate  # _product(x, y, f): f bilinear
from .sharing import ArithmeticShares, BooleanShares

_KS = (1, 2, 4, 8, 16)


def _signed(v: int) -> int:
    v &= (1 << 64) - 1
    return v - (1 << 64) if v >= 1 << 63 else v


class Lanes:
    """Packing of sign computations: ``lanes`` lanes of ``bits`` bits per word, after dropping ``drop`` low bits.

    Each component ``x_j`` contributes ``(x_j >> drop) mod 2**bits``; their sum is
    ``floor(x / 2**drop) - delta`` (``delta`` in {0, 1, 2}) mod ``2**bits``, whose top bit
    is the sign of ``x`` whenever ``|x| < 2**(bits + drop - 1) - 2**(drop + 2)``, except
    that ``0 <= x < 2**(drop + 1)`` may read as negative (never with ``drop = 0``).
    """

    def __init__(self, bits: int, drop: int) -> None:
        self.bits, self.drop = bits, drop
        self.lanes = 64 // bits
        self.low = (1 << bits) - 1
        self.bound = 2 ** (bits + drop - 1) - 2 ** (drop + 2) if drop else 2 ** (bits - 1)

    def mask(self, k: int) -> int:
        """Mask clearing the low ``k`` bits of every lane (bits shifted across a lane border)."""
        low = (1 << k) - 1
        m = 0
        for i in range(self.lanes):
            m |= low << (i * self.bits)
        return _signed(~m)

    def pack(self, t: torch.Tensor) -> torch.Tensor:
        """Flat int64 [lanes * m] -> [m] words (element i*m + j in lane i of word j)."""
        m = t.numel() // self.lanes
        out = (t[:m] >> self.drop) & self.low
        for i in range(1, self.lanes):
            out = out | (((t[i * m : (i + 1) * m] >> self.drop) & self.low) << (i * self.bits))
        return out


def cat(xs: Sequence[ArithmeticShares], dim: int = 0) -> ArithmeticShares:
    """Concatenate sharings (same party and scale). Cost: local."""
    x0 = xs[0]
    for x in xs[1:]:
        if x.party is not x0.party or x.frac_bits != x0.frac_bits:
            raise ValueError("cat: sharings of different parties or scales")
    return ArithmeticShares(x0.party, torch.cat([x.lo for x in xs], dim), torch.cat([x.hi for x in xs], dim),
                            x0.frac_bits)


EXACT = Lanes(32, 0)  # two exact 32-bit lanes: |x| < 2**31 ring units (32768 real)
FAST = Lanes(21, 6)  # three 21-bit lanes of x >> 6: |x| < 2**26 - 256 ring units (~1024 real), see Lanes


CHUNK = 1 << 15  # words per local step: keeps temporaries in cache and avoids page faults


def _slices(n: int) -> list[slice]:
    return [slice(i, min(i + CHUNK, n)) for i in range(0, n, CHUNK)]


def _and_round(party, n: int, local) -> tuple[torch.Tensor, torch.Tensor]:
    """One chunked AND round on packed words: ``local(sl) -> list of (xl, xh, yl, yh)`` for each AND.

    Party i computes ``z_i = (x_i & (y_i ^ y_{i+1})) ^ (x_{i+1} & y_i) ^ a_i`` (``a`` an XOR
    zero-sharing from the pairwise PRGs), chunk by chunk into one buffer, and sends it to
    party i-1 (ABY3 boolean multiplication). Returns the new ``(lo, hi)`` of all ANDs
    concatenated ([m * n]). Cost: 1 round, m * n words per party.
    """
    out = None
    m = 0
    for sl in _slices(n):
        terms = local(sl)
        if out is None:
            m = len(terms)
            out = torch.empty(m * n, dtype=torch.int64)
        w = sl.stop - sl.start
        zs = party.prg_next.int64((m * w,)) ^ party.prg_prev.int64((m * w,))
        for t, (xl, xh, yl, yh) in enumerate(terms):
            out[t * n + sl.start : t * n + sl.stop] = (xl & (yl ^ yh)) ^ (xh & yl) ^ zs[t * w : (t + 1) * w]
    got, _ = party.comm.exchange(send_prev=out, recv_next=True)
    return out, got


def _map(n: int, fn, k: int = 1) -> list[torch.Tensor]:
    """Chunked local elementwise map producing ``k`` fresh buffers of ``n`` words."""
    outs = [torch.empty(n, dtype=torch.int64) for _ in range(k)]
    for sl in _slices(n):
        res = fn(sl)
        if k == 1:
            res = (res,)
        for o, r in zip(outs, res):
            o[sl] = r
    return outs


def msb_bounded(x: ArithmeticShares, lanes: Lanes = EXACT) -> BooleanShares:
    """Boolean sharing (bit 0 of each word, shape of ``x``) of ``[x < 0]`` for ``|x| < 2**31`` ring units.

    Steps: pack the components mod 2**32 two per word; carry-save the three components
    (1 AND round) into ``s + c``; generate ``g = s & c`` (1 round); Kogge-Stone prefix over
    32-bit lanes (5 rounds, lane-crossing bits masked); sign = ``p_31 ^ carry_31``.
    Cost: 7 rounds; per element 5.5 words sent per party. Local work is chunked.
    """
    pt = x.party
    pid = pt.id
    shape = x.shape
    n = x.numel()
    lo, hi = x.lo.reshape(-1), x.hi.reshape(-1)
    if n % lanes.lanes:
        z1 = torch.zeros(lanes.lanes - n % lanes.lanes, dtype=torch.int64)
        lo, hi = torch.cat([lo, z1]), torch.cat([hi, z1])
    plo, phi = lanes.pack(lo), lanes.pack(hi)  # s = (plo, phi): XOR of the three components
    W = plo.numel()
    m1 = lanes.mask(1)

    # components a, b, c (values x0, x1, x2): comp j has lo = plo iff pid == j, hi = phi iff pid == j - 1
    def comps(sl):
        zero = torch.zeros(sl.stop - sl.start, dtype=torch.int64)
        cl = [plo[sl] if pid == j else zero for j in range(3)]
        ch = [phi[sl] if pid == (j - 1) % 3 else zero for j in range(3)]
        return cl, ch

    def cs_local(sl):
        cl, ch = comps(sl)
        return [(cl[0] ^ cl[2], ch[0] ^ ch[2], cl[1] ^ cl[2], ch[1] ^ ch[2])]

    mz, mg = _and_round(pt, W, cs_local)

    def carry_fn(sl):
        cl, ch = comps(sl)
        return ((mz[sl] ^ cl[2]) << 1) & m1, ((mg[sl] ^ ch[2]) << 1) & m1

    clo, chi = _map(W, carry_fn, 2)
    p_lo, p_hi = _map(W, lambda sl: (plo[sl] ^ clo[sl], phi[sl] ^ chi[sl]), 2)
    glo, ghi = _and_round(pt, W, lambda sl: [(plo[sl], phi[sl], clo[sl], chi[sl])])
    qlo, qhi = p_lo, p_hi
    for k in _KS:
        mk = lanes.mask(k)
        last = k == _KS[-1]

        def lvl(sl, k=k, mk=mk, last=last, glo=glo, ghi=ghi, qlo=qlo, qhi=qhi):
            gl, gh, ql, qh = glo[sl], ghi[sl], qlo[sl], qhi[sl]
            terms = [(ql, qh, (gl << k) & mk, (gh << k) & mk)]
            if not last:
                terms.append((ql, qh, (ql << k) & mk, (qh << k) & mk))
            return terms

        zl, zh = _and_round(pt, W, lvl)
        glo, ghi = _map(W, lambda sl, glo=glo, ghi=ghi, zl=zl, zh=zh: (glo[sl] ^ zl[sl], ghi[sl] ^ zh[sl]), 2)
        if not last:
            qlo, qhi = zl[W:], zh[W:]

    def top(pl, gl):
        b = lanes.bits
        return torch.cat([((pl >> (i * b + b - 1)) ^ (gl >> (i * b + b - 2))) & 1 for i in range(lanes.lanes)])

    bits_lo = top(p_lo, glo)[:n].view(shape)
    bits_hi = top(p_hi, ghi)[:n].view(shape)
    return BooleanShares(pt, bits_lo, bits_hi)


def bit_inject_chunked(b: BooleanShares) -> ArithmeticShares:
    """Boolean shared bit (bit 0) -> arithmetic 0/1 sharing: the core's ``compare.bit_inject``
    protocol (3-party OT, 1 round; party 0 sends 4 elements, parties 1 and 2 one each),
    with the local work and PRG draws done in cache-sized chunks (the unchunked version
    is dominated by page faults on multi-million-element tensors).
    """
    p = b.party
    shape = b.shape
    blo, bhi = b.lo.reshape(-1), b.hi.reshape(-1)
    n = blo.numel()
    sls = _slices(n)
    if p.id == 0:
        c0 = torch.empty(n, dtype=torch.int64)
        c1 = torch.empty(n, dtype=torch.int64)
        to1 = torch.empty(2 * n, dtype=torch.int64)
        to2 = torch.empty(2 * n, dtype=torch.int64)
        for sl in sls:
            k = sl.stop - sl.start
            t = (blo[sl] ^ bhi[sl]) & 1
            a0 = p.prg_prev.int64((k,))  # key (2,0)
            w = p.prg_prev.int64((2, k))  # pads known to party 2
            a1 = p.prg_next.int64((k,))  # key (0,1)
            w2 = p.prg_next.int64((2, k))  # pads known to party 1
            m0 = t - a0 - a1
            m1 = (t ^ 1) - a0 - a1
            c0[sl], c1[sl] = a0, a1
            to1[sl], to1[n + sl.start : n + sl.stop] = m0 + w[0], m1 + w[1]
            to2[sl], to2[n + sl.start : n + sl.stop] = m0 + w2[0], m1 + w2[1]
        p.comm.exchange(send_next=to1, send_prev=to2)
        return ArithmeticShares(p, c0.view(shape), c1.view(shape), 0)
    prg = p.prg_prev if p.id == 1 else p.prg_next  # the key shared with party 0
    mine = torch.empty(n, dtype=torch.int64)
    helps = torch.empty(n, dtype=torch.int64)
    choices = []
    for sl in sls:
        k = sl.stop - sl.start
        choice = ((bhi[sl] if p.id == 1 else blo[sl]) & 1).bool()  # b2
        mine[sl] = prg.int64((k,))
        w = prg.int64((2, k))
        helps[sl] = torch.where(choice, w[1], w[0])
        choices.append(choice)
    if p.id == 1:
        from_other, from_0 = p.comm.exchange(send_next=helps, recv_next=True, recv_prev=True)
    else:
        from_0, from_other = p.comm.exchange(send_prev=helps, recv_next=True, recv_prev=True)
    c2 = torch.empty(n, dtype=torch.int64)
    for sl, choice in zip(sls, choices):
        c2[sl] = torch.where(choice, from_0[n + sl.start : n + sl.stop], from_0[sl]) - from_other[sl]
    if p.id == 1:
        return ArithmeticShares(p, mine.view(shape), c2.view(shape), 0)
    return ArithmeticShares(p, c2.view(shape), mine.view(shape), 0)


def mul_chunked(a: ArithmeticShares, d: ArithmeticShares) -> ArithmeticShares:
    """Elementwise ``[a] * [d]`` for an integer 0/1 sharing ``a`` and same-shape ``d``: 1 round,
    1 element per party, no truncation (ABY3 product + reshare), local work chunked."""
    p = a.party
    if a.frac_bits:
        raise ValueError("mul_chunked: the first operand must be an integer sharing")
    alo, ahi = a.lo.reshape(-1), a.hi.reshape(-1)
    dlo, dhi = d.lo.reshape(-1), d.hi.reshape(-1)
    n = alo.numel()
    z = torch.empty(n, dtype=torch.int64)
    for sl in _slices(n):
        k = sl.stop - sl.start
        z[sl] = alo[sl] * (dlo[sl] + dhi[sl]) + ahi[sl] * dlo[sl] + (p.prg_next.int64((k,)) - p.prg_prev.int64((k,)))
    got, _ = p.comm.exchange(send_prev=z, recv_next=True)
    return ArithmeticShares(p, z.view(d.shape), got.view(d.shape), d.frac_bits)


def ltz_bounded(x: ArithmeticShares, lanes: Lanes = EXACT) -> ArithmeticShares:
    """``[x < 0]`` as an integer 0/1 sharing, for ``|x| < lanes.bound`` ring units. Cost: 8 rounds, ~5.5 (EXACT) or ~3.7 (FAST) words + injection per element per party."""
    return bit_inject_chunked(msb_bounded(x, lanes))


def clamp(x: ArithmeticShares, lo: float, hi: float, lanes: Lanes = EXACT) -> ArithmeticShares:
    """``min(max(x, lo), hi)`` (ReLU6 = clamp(x, 0, 6)). Cost: 9 rounds; 2 bounded comparisons + 2 products per element.

    Both comparisons run in ONE batched ``ltz_bounded`` on ``[x - lo, hi - x]``; with the
    bits ``b1 = [x < lo]``, ``b2 = [x > hi]`` the result is ``x - b1 (x - lo) + b2 (hi - x)``,
    both products in one round. Needs ``|x - lo|, |x - hi| < 32768``.
    """
    d = cat([x - lo, (-x) + hi])
    b = ltz_bounded(d, lanes)
    prod = mul_chunked(b, d)
    n = x.shape[0]
    return x - prod[:n] + prod[n:]


def relu(x: ArithmeticShares, lanes: Lanes = EXACT) -> ArithmeticShares:
    """``max(x, 0)``. Cost: 9 rounds; 1 bounded comparison + 1 product per element. Needs ``|x| < lanes.bound``."""
    return x - mul_chunked(ltz_bounded(x, lanes), x)


def max_pairs(a: ArithmeticShares, b: ArithmeticShares, lanes: Lanes = EXACT) -> ArithmeticShares:
    """Elementwise ``max(a, b)``. Cost: 9 rounds; 1 bounded comparison + 1 product per element."""
    d = b - a
    return a + mul_chunked(ltz_bounded(-d, lanes), d)  # [a < b] * (b - a)


def max_last(x: ArithmeticShares, lanes: Lanes = EXACT) -> ArithmeticShares:
    """Max over the last dimension by a tournament. Cost: 9 ceil(log2 K) rounds, K-1 comparisons per row."""
    while x.shape[-1] > 1:
        k = x.shape[-1]
        h = k // 2
        m = max_pairs(x[..., :h], x[..., h : 2 * h], lanes)
        x = cat([m, x[..., 2 * h :]], dim=-1) if k % 2 else m
    return x[..., 0]


# ---- reciprocal square root and L2 normalisation ------------------------------------

J_MIN, J_MAX = -8, 24  # octaves of ||x||**2 handled exactly: [2**J_MIN, 2**J_MAX)
_R0_A, _R0_B = 1.265, 0.287  # 1/sqrt(m) ~ A - B m on [1, 2], max relative error 2.3 %
_EXTRA = 24  # extra bits carried when applying 2**(-j/2)


def _octave_onehot(s: ArithmeticShares) -> ArithmeticShares:
    """``e[j, n] = [2**j <= s_n < 2**(j+1)]`` for j in [J_MIN, J_MAX) (clamped at both ends). Cost: 8 rounds."""
    js = torch.arange(J_MIN, J_MAX + 1, dtype=torch.float64)
    thr = (2.0 ** js).view(-1, 1).expand(-1, s.shape[0])
    sv = s.unsqueeze(0).expand(len(js), s.shape[0])
    c = C.ltz(sv - thr)  # c[j] = [s < 2**j], monotone in j; 64-bit comparison (s may exceed 32768)
    e = c[1:] - c[:-1]
    # s below the range: octave J_MIN; s above: the last octave.
    first = c[0:1]
    last = 1 - c[-1:]
    e = cat([e[0:1] + first, e[1:]]) if e.shape[0] > 1 else e + first
    e = cat([e[:-1], e[-1:] + last])
    return e


def rsqrt_parts(s: ArithmeticShares) -> tuple[ArithmeticShares, ArithmeticShares]:
    """``(r, e)`` with ``1/sqrt(s) = r * 2**(-j/2)`` for the octave one-hot ``e`` [L, N] of ``s`` [N].

    ``r`` ~ ``1/sqrt(s / 2**j)`` in (0.707, 1]. Cost: 8 + 1 + 1 + 1 + 2 * 3 = 17 rounds,
    O(L N) elements per party (L = J_MAX - J_MIN = 32).
    """
    e = _octave_onehot(s)
    L = e.shape[0]
    js = torch.arange(J_MIN, J_MAX, dtype=torch.int64)
    # T_j = s / 2**(j+1) for every j (garbage where s is not in octave j: zeroed by e_j).
    shift = torch.tensor([1 << int(J_MAX - j - 1) for j in js], dtype=torch.int64).view(L, 1)
    t = s.unsqueeze(0).expand(L, s.shape[0]).mul_public_int(shift)
    t = truncate(t, J_MAX)
    h = _product(e, t, lambda a, b: (a * b).sum(0))  # [N], in [0.5, 1): exact selection, no truncation
    r = (h * (-2.0 * _R0_B)) + _R0_A
    for _ in range(2):
        r = mul(r, (-mul(h, square(r))) + 1.5)
    return r, e


def l2_normalize(x: ArithmeticShares) -> ArithmeticShares:
    """Rows of ``x`` [N, d] scaled to unit L2 norm. Cost: 24 rounds; N*33 64-bit comparisons; O(N d + 32 N) elements.

    See the module docstring for the steps and the accuracy.
    """
    if len(x.shape) != 2:
        raise ValueError(f"l2_normalize expects [N, d], got {tuple(x.shape)}")
    s = _product(x, x, lambda a, b: (a * b).sum(-1))  # one truncation of the whole sum: exact to 1 ulp
    r, e = rsqrt_parts(s)
    z = mul(x, r.unsqueeze(-1))  # x * r, |z| <= |x|
    L = e.shape[0]
    js = torch.arange(J_MIN, J_MAX, dtype=torch.float64)
    pj = torch.round(2.0 ** (_EXTRA - js / 2)).to(torch.int64).view(L, 1, 1)
    zp = z.unsqueeze(0).expand(L, *z.shape).mul_public_int(pj)
    y = _product(e.unsqueeze(-1), zp, lambda a, b: (a * b).sum(0))
    return truncate(y, _EXTRA)


def l2_comparisons(n: int) -> int:
    """Number of secure comparisons ``l2_normalize`` uses for ``n`` rows."""
    return n * (J_MAX - J_MIN + 1)
