"""Non-linear helpers for the secure CNN, built on the MPC core: bounded comparison, clamp
(ReLU6), ReLU, pairwise max, and L2 normalisation via a secure reciprocal square root.

Bounded comparison (``ltz_bounded``)
------------------------------------
The sign of ``x`` only needs a few bits when ``|x|`` is bounded: :mod:`protocols.digits`
keeps ``bits`` bits of ``x >> drop`` (local), gets the generate/propagate bits of
``bits / w`` digits in ONE round (a 1-of-2**w table OT, the sender role rotated over the
batch so every party sends the same) and combines the digits in ``ceil(log2 D)`` AND
rounds. Two layouts (:class:`Lanes` = ``digits.Digits``):

* ``EXACT`` (``digits.CNN_EXACT``): 32 bits in 8 digits; exact for ``|x| < 2**31`` ring
  units (32768 real). 3 rounds, 3.6 words per comparison per party.
* ``FAST`` (``digits.CNN_FAST``): ``x >> 7`` in 20 bits, 4 digits of 5; the sign is right
  for ``x < 0`` and ``x >= 2**7`` ring units (2**-9) whenever ``|x| < 2**26 - 2**7`` (~1024
  real); ``0 <= x < 2**-9`` may read as negative, so a ReLU, ReLU6 or max output is off by
  at most ``2**-9`` next to its kink. 2 rounds (the table OT, then the four digits' carry in ONE
  ``tablegate`` round), 3.4 words per comparison per party.
  ``SecureModel`` uses it by default (``comparison="exact"`` to opt out).

Both then inject the bit (1 round, 1 word per party: ``b2a``) and multiply (1 round):
a ReLU / ReLU6 layer costs 4 rounds (``FAST``) or 5 (``EXACT``). Pre-activations of
EfficientNet-Lite0 stay below 100 on real images (measured), inside both bounds. A large
truncation error (a multiple of ``2**48``) vanishes mod ``2**(bits + drop)``, so the
comparison still sees the right sign.

Reciprocal square root / L2 normalisation (``l2_normalize``)
------------------------------------------------------------
``s = sum(x**2)`` -> octave one-hot ``e_j = [2**j <= s < 2**(j+1)]`` from ONE batched
comparison of ``s`` against the public thresholds ``2**j`` -> mantissa ``h = s / 2**(j+1)``
in ``[0.5, 1)`` -> ``r ~ 1/sqrt(2h)`` by a linear start (max relative error 2.3 %) and two
Newton steps ``r <- r (1.5 - h r**2)`` (relative error ~1e-6, below fixed-point
resolution) -> ``y = x r 2**(-j/2)`` with the public factor applied at 24 extra bits.
Rounds (12): ``s`` and every candidate ``s / 2**(j+1)`` come out of ONE reshare-and-truncate
(a shift per lane), ``h`` and the linear start's ``2 B h`` out of one, and the selection of
``2**(-j/2)`` is truncated in its own reshare.
Accuracy: each output component within ``4e-5 + 3e-5 / ||x||`` absolute of ``x / ||x||``
for ``2**-8 <= ||x||**2 < 2**24`` (tested; the ``1/||x||`` term is the 2**-16 input and
product rounding, amplified by the division); outside that range the output is finite
but not normalised. EfficientNet features have ``||x||`` of a few units to tens.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from . import bitmul as BM
from . import digits as D
from .arithmetic import bilinear, mul, reshare_truncate
from .rotate import padded3
from .sharing import ArithmeticShares

Lanes = D.Digits  # the layout of a bounded comparison (name kept for the layer registry)


def cat(xs: Sequence[ArithmeticShares], dim: int = 0) -> ArithmeticShares:
    """Concatenate sharings (same party and scale). Cost: local."""
    x0 = xs[0]
    for x in xs[1:]:
        if x.party is not x0.party or x.frac_bits != x0.frac_bits:
            raise ValueError("cat: sharings of different parties or scales")
    return ArithmeticShares(x0.party, torch.cat([x.lo for x in xs], dim), torch.cat([x.hi for x in xs], dim),
                            x0.frac_bits)


EXACT = D.CNN_EXACT  # 32 exact bits: |x| < 2**31 ring units (32768 real)
FAST = D.CNN_FAST  # x >> 7 in 20 bits: |x| < 2**26 - 2**7 ring units (~1024 real), see the module docstring


CHUNK = 1 << 15  # elements per local step: keeps temporaries in cache and avoids page faults


def _slices(n: int) -> list[slice]:
    return [slice(i, min(i + CHUNK, n)) for i in range(0, n, CHUNK)]


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
    """``[x < 0]`` as an integer 0/1 sharing, for ``|x| < lanes.bound`` ring units (``FAST``: see the
    module docstring for the ``[0, 2**-9)`` zone). Cost: ``lanes.rounds + 1`` rounds (4 ``FAST``, 5
    ``EXACT``); ``digits.msb_cost`` + ``digits.inject_cost`` words, the same for every party."""
    return D.ltz(x, lanes)


def clamp(x: ArithmeticShares, lo: float, hi: float, lanes: Lanes = EXACT) -> ArithmeticShares:
    """``min(max(x, lo), hi)`` (ReLU6 = clamp(x, 0, 6)). Cost: ``lanes.rounds + 1`` rounds (3 ``FAST``);
    2 bounded signs per element (one batched ``digits.msb``), then ONE round of ``bitmul.mul_and_inject``.

    With the boolean bits ``b1 = [x < lo]``, ``b2 = [x > hi]`` (exclusive for ``hi - lo >= 2**-9``),
    ``s = 1 ^ b1 ^ b2`` (local) is ``[lo <= x <= hi]`` and the result is ``s x + lo b1 + hi b2``:
    the bit product ``s x`` and the injection of ``b2`` (and ``b1`` unless ``lo = 0``) share ONE
    round, the rest is local. The injection is ``b2a``'s (its first message rides on the signs' last
    round) for layouts of 3 digits or more, else ``digits.inject``. Elements per party
    (``costs.bounded_clamp``): the signs of ``2 n``, then ``4 n`` for ``s x`` and 1 word per injected
    bit (2 with ``digits.inject``). Needs ``|x - lo|, |x - hi| < lanes.bound``;
    with ``FAST`` the output is within ``2**-9`` of the clamp.
    """
    n = x.shape[0]
    e_lo, e_hi = round(lo * 2**x.frac_bits), round(hi * 2**x.frac_bits)  # public ends at x's scale
    d = cat([x - lo, (-x) + hi])
    rng = (0 if e_lo else n, 2 * n)  # the bits to inject: b2 (and b1 when lo != 0)
    if len(lanes.widths) > 2:  # their injection by b2a: first message with the signs' last round
        bits, root, st = D.msb_early(d, lanes, rng)
        prod, b = BM.mul_and_inject(bits[:n] ^ bits[n:] ^ 1, x, None, (root, padded3(2 * n), st, rng))
    else:
        bits = D.msb(d, lanes)
        prod, b = BM.mul_and_inject(bits[:n] ^ bits[n:] ^ 1, x, bits[rng[0] : rng[1]])
    assert b is not None
    if e_lo:
        b1, b2 = b[:n], b[n:]
        ends = ArithmeticShares(x.party, b1.lo * e_lo + b2.lo * e_hi, b1.hi * e_lo + b2.hi * e_hi, x.frac_bits)
    else:
        ends = ArithmeticShares(x.party, b.lo * e_hi, b.hi * e_hi, x.frac_bits)
    return prod + ends


def relu(x: ArithmeticShares, lanes: Lanes = EXACT) -> ArithmeticShares:
    """``max(x, 0)``. Cost: ``lanes.rounds + 2`` (5 ``FAST``); 1 bounded comparison + 1 product per element.
    Needs ``|x| < lanes.bound``."""
    if BM.fuse(x.numel(), 1):
        return x - BM.bit_mul(D.msb(x, lanes), x)
    return x - mul_chunked(ltz_bounded(x, lanes), x)


def max_pairs(a: ArithmeticShares, b: ArithmeticShares, lanes: Lanes = EXACT) -> ArithmeticShares:
    """Elementwise ``max(a, b)``. Cost: ``lanes.rounds + 2`` rounds; 1 bounded comparison + 1 product per element."""
    d = b - a
    if BM.fuse(d.numel(), 1):
        return a + BM.bit_mul(D.msb(-d, lanes), d)
    return a + mul_chunked(ltz_bounded(-d, lanes), d)  # [a < b] * (b - a)


def max_last(x: ArithmeticShares, lanes: Lanes = EXACT) -> ArithmeticShares:
    """Max over the last dimension by a tournament.

    Cost: ``(lanes.rounds + 2) ceil(log2 K)`` rounds, K-1 comparisons per row.
    """
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
    """``e[j, n] = [2**j <= s_n < 2**(j+1)]`` for j in [J_MIN, J_MAX) (clamped at both ends), for
    ``-2**31 + 2**24 < s < 2**31`` (real; the 48-bit ``digits.OCTAVE`` comparison). Cost: 4 rounds."""
    js = torch.arange(J_MIN, J_MAX + 1, dtype=torch.float64)
    thr = (2.0 ** js).view(-1, 1).expand(-1, s.shape[0])
    sv = s.unsqueeze(0).expand(len(js), s.shape[0])
    c = D.ltz(sv - thr, D.OCTAVE)  # c[j] = [s < 2**j], monotone in j; exact for s < 2**31 (real)
    e = c[1:] - c[:-1]
    # s below the range: octave J_MIN; s above: the last octave.
    first = c[0:1]
    last = 1 - c[-1:]
    e = cat([e[0:1] + first, e[1:]]) if e.shape[0] > 1 else e + first
    e = cat([e[:-1], e[-1:] + last])
    return e


def _square_sums(x: ArithmeticShares) -> tuple[ArithmeticShares, ArithmeticShares]:
    """``s = sum(x**2)`` [N] and the mantissa candidates ``t_j = s / 2**(j+1)`` [L, N] (16 fractional bits) in
    ONE round: the 3-out-of-3 term ``z`` of ``s`` at 32 fractional bits, shifted left by ``-j-1`` where
    ``j < -1``, truncated by ``16`` (``s``) and ``16 + max(0, j+1)`` (``t_j``) in one reshare-and-truncate
    with a fresh zero-sharing per lane. ``t_j`` is garbage where ``s`` is not in octave ``j`` (zeroed by
    ``e_j``); in its own octave it is below 1 and the wrap chance is ``|z| / 2**63`` as for ``s``."""
    p = x.party
    z = (x.lo * (x.lo + x.hi)).sum(-1) + (x.hi * x.lo).sum(-1)
    js = torch.arange(J_MIN, J_MAX, dtype=torch.int64).view(-1, 1)
    lanes = torch.cat([z.unsqueeze(0), z.unsqueeze(0) << (-js - 1).clamp(min=0)])
    lanes = lanes + p.zero_share(lanes.shape)
    f = x.frac_bits
    bits = torch.cat([torch.zeros(1, 1, dtype=torch.int64), (js + 1).clamp(min=0)]) + f
    lo, hi = reshare_truncate(p, lanes, bits)
    return ArithmeticShares(p, lo[0], hi[0], f), ArithmeticShares(p, lo[1:], hi[1:], f)


def rsqrt_parts(s: ArithmeticShares, t: ArithmeticShares) -> tuple[ArithmeticShares, ArithmeticShares]:
    """``(r, e)`` with ``1/sqrt(s) = r * 2**(-j/2)`` for the octave one-hot ``e`` [L, N] of ``s`` [N], given the
    mantissa candidates ``t`` [L, N] of :func:`_square_sums`.

    ``r`` ~ ``1/sqrt(s / 2**j)`` in (0.707, 1]. The selection gives ``h = sum_j e_j t_j`` and ``2 B h`` (the
    linear start's slope) in ONE reshare-and-truncate. Cost: 4 + 1 + 2 * 2 = 9 rounds, O(L N) elements per
    party (L = J_MAX - J_MIN = 32).
    """
    e = _octave_onehot(s)
    p = s.party
    base = (e.lo * (t.lo + t.hi)).sum(0) + (e.hi * t.lo).sum(0)  # 3-out-of-3 term of sum_j e_j t_j, exact
    c = round(2.0 * _R0_B * 2**s.frac_bits)
    lanes = torch.stack([base << s.frac_bits, base * c])
    lanes = lanes + p.zero_share(lanes.shape)
    lo, hi = reshare_truncate(p, lanes, s.frac_bits)
    h, slope = ArithmeticShares(p, lo[0], hi[0], s.frac_bits), ArithmeticShares(p, lo[1], hi[1], s.frac_bits)
    r = (-slope) + _R0_A
    for _ in range(2):
        r = _newton(h, r)
    return r, e


def _newton(h: ArithmeticShares, r: ArithmeticShares) -> ArithmeticShares:
    """``r (1.5 - h r**2) = 1.5 r - (h r) r**2`` in 2 rounds (was 3): ``[r**2, h r]`` in ONE product
    round, then ``(h r) r**2`` with ``1.5 r`` added to the 3-out-of-3 terms before the same
    reshare-and-truncate (each party adds its own component of ``r`` times the public 1.5)."""
    n = r.shape[0]
    both = mul(cat([r, h]), cat([r, r]))
    r2, hr = both[:n], both[n:]
    c = round(1.5 * 2**r.frac_bits)
    return bilinear(hr, r2, lambda xa, xb, ysum, ya: r.lo * c - (xa * ysum + xb * ya))


def l2_normalize(x: ArithmeticShares) -> ArithmeticShares:
    """Rows of ``x`` [N, d] scaled to unit L2 norm. Cost: 12 rounds; N*33 48-bit comparisons.

    Elements sent: ``costs.l2_normalize`` (3 N d + 41 N plus the comparisons).

    See the module docstring for the steps and the accuracy.
    """
    if len(x.shape) != 2:
        raise ValueError(f"l2_normalize expects [N, d], got {tuple(x.shape)}")
    s, t = _square_sums(x)  # one truncation of the whole sum: exact to 1 ulp
    r, e = rsqrt_parts(s, t)
    z = mul(x, r.unsqueeze(-1))  # x * r, |z| <= |x|
    L = e.shape[0]
    js = torch.arange(J_MIN, J_MAX, dtype=torch.float64)
    pj = torch.round(2.0 ** (_EXTRA - js / 2)).to(torch.int64).view(L, 1, 1)
    zp = z.unsqueeze(0).expand(L, *z.shape).mul_public_int(pj)
    ea, eb = e.lo.unsqueeze(-1), e.hi.unsqueeze(-1)
    y = (ea * (zp.lo + zp.hi)).sum(0) + (eb * zp.lo).sum(0)  # sum_j e_j z 2**(EXTRA - j/2), 3-out-of-3
    lo, hi = reshare_truncate(x.party, y + x.party.zero_share(y.shape), _EXTRA)  # selection and scale: 1 round
    return ArithmeticShares(x.party, lo, hi, z.frac_bits)


def l2_comparisons(n: int) -> int:
    """Number of secure comparisons ``l2_normalize`` uses for ``n`` rows."""
    return n * (J_MAX - J_MIN + 1)
