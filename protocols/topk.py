"""Oblivious top-k and argmin on shared keys with payloads (along the last dimension).

Keys, ties (``id_bits``) and padding follow :mod:`protocols.sort`.

Top-k (``k << n``), default for ``k <= 64``: a tournament of sorted lists. Lists start
as singletons; each level merges groups of ``m`` lists (radices from :func:`merge_plan`,
public, sizes only): ``m = 2`` by RANKS (``_merge_keep``: ONE comparison of all cross
pairs, ONE product placing every element, ``R_lt + 1`` rounds); ``m > 2`` by
``_merge_many`` (positions as local sums of comparison bits, a 2-round small equality for
the placement one-hot, ONE product: ``R_lt + 3`` rounds). E.g. n = 1,100, k = 10: radices
[25, 4, 11], 24 rounds (the binary tournament: 11 levels, 66 rounds). The alternative
(``method="bitonic"``) bitonic-sorts lists of ``K = next_pow2(k)`` and halves them with
bitonic merges: fewer comparisons, many more rounds.

Partition stage (``KeyOrder.partition_fail > 0``, :func:`partition_plan`): for large ``n`` a
public permutation, then each group's top-``keep`` (``keep < k``) and the exact top-k of the kept;
exact unless one group holds more than ``keep`` of the true top-k (:func:`partition_fail`).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from functools import cache
from typing import overload

import torch

from . import digits as D
from .arithmetic import matmul
from .sharing import ArithmeticShares, public_shares
from .sort import (
    bitonic_sort_stages,
    cas_stage,
    check_keys,
    lex_less,
    muxed_pairs,
    next_pow2,
    pad_key,
    pad_last,
    secure_sort,
    select_pairs,
)

MERGE_MAX_K = 64


@dataclass(frozen=True)
class KeyOrder:
    """How the tournament compares: ``(key, id)`` with ``id_bits`` (any key below ``pad_key``, ``compare.ltz``),
    or the key alone on the narrow layout ``spec`` with the list padding ``pad``."""

    id_bits: int | None = None
    spec: D.Digits | None = None
    pad: int | None = None
    round_comparisons: int = 0  # the planner's exchange rate (``merge_plan``); 0: ROUND_COMPARISONS
    partition_fail: float = 0.0  # > 0: allow the partition stage (``partition_plan``) with this failure bound

    def less(self, kb: ArithmeticShares, pb: ArithmeticShares | None, ka: ArithmeticShares,
             pa: ArithmeticShares | None) -> ArithmeticShares:
        return lex_less(kb, pb, ka, pa, self.id_bits, self.spec)

    @property
    def pad_value(self) -> int:
        return pad_key(self.id_bits) if self.pad is None else self.pad

    @property
    def r_lt(self) -> int:
        return (self.spec or D.WIDE).rounds + 1


def key_layout(key_bits: int) -> D.Digits:
    """Exact comparison of differences ``|x| < 2**(key_bits - 1)``: digits of 3 bits (4 where more than 16
    digits would be needed), so the table rows are small; ``key_bits`` rounded up to a multiple of 3."""
    bits = -(-key_bits // 3) * 3
    d = min(16, bits // 3)
    return D.even(bits, d)


NARROW_ROUND_COMPARISONS = 8000
"""Planner's exchange rate for :func:`narrow_order`: a narrow comparison costs about 0.6 us of CPU per
party (measured, 300k comparisons in-process) plus its 47 bytes (0.4 us at 1 Gbit/s), so about
5000 fit in half a 10 ms round trip; 8000 leans to fewer rounds because the query's round budget
(<= 250 at n = 1M) binds: top-k of 70,400 in 54 rounds instead of 60 for 3 % more comparisons,
top-64 of 1,000 centroids in 24 instead of 34 for 55 % more (50k comparisons). (Measured on the 42-bit
layout before the partition stage; the 24-bit layout and the cheaper tables of 2026-12-02 make a
comparison cheaper, so the rate could be re-tuned upward: not done.)"""


def narrow_order(key_bits: int, partition_fail: float = 0.0) -> KeyOrder:
    """Keys in ``(-2**(key_bits - 2), 2**(key_bits - 2))`` compared alone (ties: the earlier position wins, the
    merges are stable) on :func:`key_layout`, padded with ``2**(key_bits - 2) - 1``; ``partition_fail``: see
    :func:`partition_plan` (0: exact tournament only)."""
    spec = key_layout(key_bits)
    return KeyOrder(None, spec, (1 << (spec.bits - 2)) - 1, NARROW_ROUND_COMPARISONS, partition_fail)


@overload
def secure_topk(keys: ArithmeticShares, payloads: ArithmeticShares, k: int, id_bits: int | None = ...,
                method: str = ..., order: KeyOrder | None = ...) -> tuple[ArithmeticShares, ArithmeticShares]: ...
@overload
def secure_topk(keys: ArithmeticShares, payloads: None, k: int, id_bits: int | None = ...,
                method: str = ..., order: KeyOrder | None = ...) -> tuple[ArithmeticShares, None]: ...
@overload
def secure_topk(keys: ArithmeticShares, payloads: ArithmeticShares | None, k: int, id_bits: int | None = ...,
                method: str = ..., order: KeyOrder | None = ...
                ) -> tuple[ArithmeticShares, ArithmeticShares | None]: ...


def secure_topk(keys: ArithmeticShares, payloads: ArithmeticShares | None, k: int,
                id_bits: int | None = None, method: str = "auto",
                order: KeyOrder | None = None) -> tuple[ArithmeticShares, ArithmeticShares | None]:
    """The ``k`` smallest keys (ascending) with their payloads, along the last dimension.

    ``method="merge"`` (default for ``k <= 64``): tournament of sorted lists, groups of
    ``m`` merged per level (``merge_plan``: ``R_lt + 1`` rounds for ``m = 2``, ``R_lt + 3``
    otherwise; a level costs ``m (m - 1) / 2 s**2`` comparisons per group of lists of
    size ``s``), plus ``min(m s, k)`` (or twice that) product elements per group.
    ``method="bitonic"``: tournament of bitonic-sorted lists of ``K = next_pow2(k)``
    (module docstring): ``log2 K (log2 K + 1) / 2 + ceil(log2 ceil(n / K)) (1 + log2 K)``
    stages of ``R_lt + 1`` rounds, about ``n / 2 (log2 K (log2 K + 1) / 2 + 1 + log2 K)``
    comparisons (fewer comparisons, many more rounds). Each comparison is 7.7 words
    for every party (``protocols.costs``: ``ltz``). Ties resolved by
    payload when ``id_bits`` is set. ``order`` (merge only): e.g. :func:`narrow_order` compares the
    keys alone on a narrow layout (ties by position: the merges are stable) for fewer words per
    comparison.
    E.g. k = 10, n = 1,100: 24 rounds (merge, radices [25, 4, 11]) vs 45 stages (bitonic).
    """
    check_keys(keys, payloads)
    n = keys.shape[-1]
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
    if method == "auto":
        method = "merge" if k <= MERGE_MAX_K else "bitonic"
    if method == "merge":
        return _merge_tournament(keys, payloads, k, order or KeyOrder(id_bits))
    if order is not None:
        raise ValueError("a KeyOrder is for the merge tournament")
    if method != "bitonic":
        raise ValueError(f"unknown top-k method {method!r}")
    return _bitonic_tournament(keys, payloads, k, id_bits)


def _bitonic_tournament(keys: ArithmeticShares, payloads: ArithmeticShares | None, k: int,
                        id_bits: int | None) -> tuple[ArithmeticShares, ArithmeticShares | None]:
    """Top-k by bitonic-sorted lists of ``K = next_pow2(k)`` halved by bitonic merges."""
    n = keys.shape[-1]
    K = next_pow2(k)
    if n <= K:
        sk, sp = secure_sort(keys, payloads, id_bits)
        return sk[..., :k], (sp[..., :k] if sp is not None else None)
    lead = tuple(keys.shape[:-1])
    g = -(-n // K)
    keys, payloads = pad_last(keys, payloads, g * K, pad_key(id_bits))
    keys = keys.reshape(lead + (g, K))
    payloads = payloads.reshape(lead + (g, K)) if payloads is not None else None
    for lo_idx, hi_idx in bitonic_sort_stages(K):
        keys, payloads = cas_stage(keys, payloads, lo_idx, hi_idx, id_bits)
    merge = _bitonic_merge_stages(K)
    while g > 1:
        h = g // 2
        ka, kb = keys[..., 0:2 * h:2, :], _flip(keys[..., 1:2 * h:2, :])
        pa = payloads[..., 0:2 * h:2, :] if payloads is not None else None
        pb = _flip(payloads[..., 1:2 * h:2, :]) if payloads is not None else None
        c = lex_less(kb, pb, ka, pa, id_bits)
        sel = select_pairs(c, muxed_pairs(ka, kb, pa, pb))
        mk, mp = sel[0], (sel[1] if len(sel) > 1 else None)
        for lo_idx, hi_idx in merge:
            mk, mp = cas_stage(mk, mp, lo_idx, hi_idx, id_bits)
        if g % 2:
            mk = _cat_lists(mk, keys[..., g - 1 : g, :])
            if payloads is not None and mp is not None:
                mp = _cat_lists(mp, payloads[..., g - 1 : g, :])
        keys, payloads = mk, mp
        g = h + g % 2
    keys = keys[..., 0, :k]
    return keys, (payloads[..., 0, :k] if payloads is not None else None)


def _bitonic_merge_stages(m: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Half-cleaner stages sorting a bitonic sequence of length ``m = 2**j`` ascending."""
    stages = []
    i = torch.arange(m)
    stride = m // 2
    while stride >= 1:
        first = i[(i & stride) == 0]
        stages.append((first, first | stride))
        stride //= 2
    return stages


def _ext(c: ArithmeticShares, dim: int, first: int, last: int) -> ArithmeticShares:
    """``c`` with a public constant slice ``first`` before and ``last`` after along ``dim``."""
    shape = list(c.shape)
    shape[dim] = 1
    f = public_shares(c.party, torch.full(shape, first, dtype=torch.int64))
    e = public_shares(c.party, torch.full(shape, last, dtype=torch.int64))
    return ArithmeticShares(c.party, torch.cat([f.lo, c.lo, e.lo], dim), torch.cat([f.hi, c.hi, e.hi], dim), 0)


def _place(ind: ArithmeticShares, o: int) -> ArithmeticShares:
    """``out[..., i, p] = ind[..., i, p - i]`` for ``0 <= p - i < ind.shape[-1]``, else 0. Local."""
    m, width = ind.shape[-2], ind.shape[-1]
    i = torch.arange(m).unsqueeze(-1)
    p = torch.arange(o).unsqueeze(0)
    t = p - i
    valid = ((t >= 0) & (t < width)).to(torch.int64)
    t = t.clamp(0, width - 1).expand(tuple(ind.shape[:-2]) + (m, o))
    lo = torch.gather(ind.lo.expand(tuple(ind.shape[:-2]) + (m, width)), -1, t) * valid
    hi = torch.gather(ind.hi.expand(tuple(ind.shape[:-2]) + (m, width)), -1, t) * valid
    return ArithmeticShares(ind.party, lo, hi, 0)


def _merge_keep(ka: ArithmeticShares, pa: ArithmeticShares | None, kb: ArithmeticShares,
                pb: ArithmeticShares | None, o: int, order: KeyOrder):
    """Merge sorted lists ``A [..., a]`` and ``B [..., b]``, keeping the ``o`` smallest.

    Steps: ONE comparison of all ``a b`` pairs, ``beta_ij = [B_j < A_i]``. As both lists
    are sorted, row ``i`` of ``beta`` is 1..10..0 and column ``j`` is 0..01..1, so
    ``A_i`` lands at ``i + c_i`` (``c_i`` = ones in row i) and ``B_j`` at ``j + d_j``
    (``d_j`` = zeros in column j); the indicator ``[c_i = t]`` is the LOCAL difference
    ``beta_{i,t-1} - beta_{i,t}`` (``[d_j = t] = beta_{t,j} - beta_{t-1,j}``), with
    public 1/0 borders. The output is ``Ind^T @ [values]`` for keys and payloads in ONE
    multiplication round (a stable merge: ties keep A first).
    Cost: ``R_lt + 1`` rounds; ``a b`` comparisons and ``o`` (or ``2 o``) elements per party.
    """
    a, b = ka.shape[-1], kb.shape[-1]
    lead = tuple(ka.shape[:-1])
    KA, KB = ka.unsqueeze(-1).expand(lead + (a, b)), kb.unsqueeze(-2).expand(lead + (a, b))
    PA = pa.unsqueeze(-1).expand(lead + (a, b)) if pa is not None else None
    PB = pb.unsqueeze(-2).expand(lead + (a, b)) if pb is not None else None
    beta = order.less(KB, PB, KA, PA)  # [..., a, b]
    ea = _ext(beta, -1, 1, 0)  # [..., a, b + 2]
    ind_a = ArithmeticShares(beta.party, ea.lo[..., :-1] - ea.lo[..., 1:], ea.hi[..., :-1] - ea.hi[..., 1:], 0)
    eb = _ext(beta, -2, 0, 1)  # [..., a + 2, b]
    ind_b = ArithmeticShares(beta.party, eb.lo[..., 1:, :] - eb.lo[..., :-1, :],
                             eb.hi[..., 1:, :] - eb.hi[..., :-1, :], 0).transpose(-1, -2)  # [..., b, a + 1]
    pos_a, pos_b = _place(ind_a, o), _place(ind_b, o)
    ind = ArithmeticShares(beta.party, torch.cat([pos_a.lo, pos_b.lo], -2), torch.cat([pos_a.hi, pos_b.hi], -2), 0)
    vals = [torch.cat([ka.lo, kb.lo], -1)], [torch.cat([ka.hi, kb.hi], -1)]
    if pa is not None and pb is not None:
        vals[0].append(torch.cat([pa.lo, pb.lo], -1))
        vals[1].append(torch.cat([pa.hi, pb.hi], -1))
    v = ArithmeticShares(beta.party, torch.stack(vals[0], -1), torch.stack(vals[1], -1), 0)  # [..., a+b, t]
    out = matmul(ind.transpose(-1, -2), v)  # [..., o, t]
    keys = ArithmeticShares(ka.party, out.lo[..., 0], out.hi[..., 0], ka.frac_bits)
    pays = None
    if pa is not None:
        pays = ArithmeticShares(pa.party, out.lo[..., 1], out.hi[..., 1], pa.frac_bits)
    return keys, pays


ROUND_COMPARISONS = 2500
"""Planner's exchange rate: one round is worth this many comparisons (half a 10 ms round trip vs
the CPU of a 64-bit comparison, ~2 us per party on the 2-core benchmark machine, which also
covers its ~70 bytes at 1 Gbit/s, ``costs.ltz``); sizes only, so the plan is public."""


def merge_plan(n: int, k: int, r_lt: int = D.WIDE.rounds + 1, round_comparisons: int = 0) -> list[int]:
    """Radices of the merge tournament for ``n`` keys, minimising ``rounds + comparisons / ROUND_COMPARISONS``.

    A level merging ``m`` lists of ``s`` costs ``r_lt + 1`` rounds for ``m = 2`` (rank
    merge) and ``r_lt + 3`` for ``m > 2`` (:func:`_merge_many`), and ``m (m - 1) / 2 s**2``
    comparisons per group. Dynamic programming over the number of lists left. ``round_comparisons``:
    the exchange rate (default :data:`ROUND_COMPARISONS`).
    """
    rate = round_comparisons or ROUND_COMPARISONS
    plan, g, s = [], n, 1
    while g > 1:
        m = _best_step(g, s, k, r_lt, rate)[1]
        plan.append(m)
        g, s = -(-g // m), min(m * s, k)
    return plan


@cache
def _best_step(g: int, s: int, k: int, r_lt: int, rate: int) -> tuple[float, int]:
    """:func:`merge_plan`'s dynamic programme: (cost, first radix) for ``g`` lists of ``s``, cached across
    calls (:func:`partition_plan`'s candidate plans share their states)."""
    if g == 1:
        return 0.0, 0
    best = (math.inf, 0)
    for m in range(2, min(g, 32) + 1):
        groups = -(-g // m)
        cost = (r_lt + (1 if m == 2 else 3)) + groups * m * (m - 1) // 2 * s * s / rate \
            + _best_step(groups, min(m * s, k), k, r_lt, rate)[0]
        if cost < best[0]:
            best = (cost, m)
    return best


PARTITION_FAIL = 1e-6
"""Failure bound of the search's top-k partition stage (``search.distance_order``): per query, the
probability that one of the true top-k is not returned (the result is then the exact top-k of what
the groups kept)."""


def partition_fail(n: int, groups: int, keep: int, k: int) -> float:
    """Exact probability that some group holds more than ``keep`` of ``k`` positions drawn uniformly
    without replacement from ``n`` slots cut into ``groups`` consecutive groups of ``ceil(n / groups)``
    (the last one shorter): ``1 - [x^k] prod_g sum_{j <= keep} C(s_g, j) x^j / C(n, k)``."""
    size = -(-n // groups)
    full, rest = divmod(n, size)

    def times(a: list[int], b: list[int]) -> list[int]:  # product truncated at degree k
        out = [0] * min(len(a) + len(b) - 1, k + 1)
        for i, x in enumerate(a):
            for j, y in enumerate(b[: k + 1 - i]):
                out[i + j] += x * y
        return out

    def group(s_g: int) -> list[int]:
        return [math.comb(s_g, j) for j in range(min(keep, s_g) + 1)]

    poly, base, e = group(rest) if rest else [1], group(size), full
    while e:  # poly * base**full by squaring
        if e & 1:
            poly = times(poly, base)
        base, e = times(base, base), e >> 1
    ok = poly[k] if len(poly) > k else 0
    return float(1 - Fraction(ok, math.comb(n, k)))


@cache
def _plan_cost(n: int, k: int, r_lt: int, rate: int) -> tuple[float, int, int]:
    """(planner cost, rounds, comparisons) of :func:`merge_plan`'s tournament."""
    g, s, rounds, comparisons = n, 1, 0, 0
    for m in merge_plan(n, k, r_lt, rate):
        groups = -(-g // m)
        comparisons += groups * m * (m - 1) // 2 * s * s
        rounds += r_lt + (1 if m == 2 else 3)
        g, s = groups, min(m * s, k)
    return rounds + comparisons / (rate or ROUND_COMPARISONS), rounds, comparisons


@cache
def partition_plan(n: int, k: int, r_lt: int, round_comparisons: int, fail: float) -> tuple[int, int] | None:
    """``(groups, keep)`` of the partition stage, or ``None`` when the plain tournament is cheaper.

    The partition stage: a public pseudo-random permutation of the ``n`` positions
    (:func:`public_permutation`, fixed by ``n``: sizes only), consecutive groups of
    ``ceil(n / groups)``, each group's exact top-``keep`` by the tournament (all groups in the same
    rounds), then the exact top-``k`` of the ``groups * keep`` kept. It returns the exact top-k
    unless some group holds more than ``keep`` of the true top-k, which happens with probability
    :func:`partition_fail` ``<= fail`` for keys not chosen against the (public) permutation: the
    true top-k's positions are then a uniform ``k``-subset. Chosen to minimise the planner's
    ``rounds + comparisons / rate`` (both stages) over ``keep < k`` and group
    counts (powers of two). E.g. n = 70,400, k = 10: 1,024 groups keep 3, 40 rounds and 0.60M comparisons instead of
    54 and 1.01M (:func:`partition_fail` 1.9e-7).
    """
    if k < 2 or n < 4 * k:
        return None
    best, _, _ = _plan_cost(n, k, r_lt, round_comparisons)
    choice = None
    grid = [2**e for e in range(2, int(math.log2(n)) + 1)]
    for keep in range(1, k):
        for groups in grid:
            if groups * keep <= k or groups * keep >= n or -(-n // groups) <= keep:
                continue
            _, r1, c1 = _plan_cost(-(-n // groups), keep, r_lt, round_comparisons)
            _, r2, c2 = _plan_cost(groups * keep, k, r_lt, round_comparisons)
            cost = r1 + r2 + (groups * c1 + c2) / (round_comparisons or ROUND_COMPARISONS)
            if cost < best and partition_fail(n, groups, keep, k) <= fail:
                best, choice = cost, (groups, keep)
    return choice


@cache
def public_permutation(n: int) -> torch.Tensor:
    """The partition stage's public permutation of ``n`` positions (seeded by ``n`` alone)."""
    return torch.randperm(n, generator=torch.Generator().manual_seed(0x7A11 + n))


def _merge_tournament(keys: ArithmeticShares, payloads: ArithmeticShares | None, k: int,
                      order: KeyOrder) -> tuple[ArithmeticShares, ArithmeticShares | None]:
    """Top-k by merging sorted lists (singletons first), ``merge_plan`` radices, keeping ``min(m s, k)``;
    with ``order.partition_fail``, first the groups' top-``keep`` of :func:`partition_plan`."""
    n = keys.shape[-1]
    part = partition_plan(n, k, order.r_lt, order.round_comparisons, order.partition_fail) \
        if order.partition_fail > 0 else None
    if part is not None:
        groups, keep = part
        size = -(-n // groups)
        perm = public_permutation(n)
        lead = tuple(keys.shape[:-1])
        keys = ArithmeticShares(keys.party, keys.lo[..., perm], keys.hi[..., perm], keys.frac_bits)
        payloads = None if payloads is None else ArithmeticShares(
            payloads.party, payloads.lo[..., perm], payloads.hi[..., perm], payloads.frac_bits)
        keys, payloads = pad_last(keys, payloads, groups * size, order.pad_value)
        grouped = None if payloads is None else payloads.reshape(lead + (groups, size))
        keys, payloads = _merge_lists(keys.reshape(lead + (groups, size)), grouped, keep, order)
        keys = keys.reshape(lead + (groups * keep,))
        payloads = None if payloads is None else payloads.reshape(lead + (groups * keep,))
    return _merge_lists(keys, payloads, k, order)


def _merge_lists(keys: ArithmeticShares, payloads: ArithmeticShares | None, k: int,
                 order: KeyOrder) -> tuple[ArithmeticShares, ArithmeticShares | None]:
    """The exact tournament of :func:`_merge_tournament` along the last dimension."""
    K = keys.unsqueeze(-1)  # [..., g, 1]
    P = payloads.unsqueeze(-1) if payloads is not None else None
    s = 1
    for m in merge_plan(keys.shape[-1], k, order.r_lt, order.round_comparisons):
        while K.shape[-2] % m:
            K, P = _pad_lists(K, P, order.pad_value)
        o = min(m * s, k)
        if m == 2:
            A, B = K[..., 0::2, :], K[..., 1::2, :]
            PA = P[..., 0::2, :] if P is not None else None
            PB = P[..., 1::2, :] if P is not None else None
            K, P = _merge_keep(A, PA, B, PB, o, order)
        else:
            K, P = _merge_many(K, P, m, o, order)
        s = o
    return K[..., 0, :k], (P[..., 0, :k] if P is not None else None)


def _merge_many(K: ArithmeticShares, P: ArithmeticShares | None, m: int, o: int, order: KeyOrder):
    """Merge every ``m`` consecutive sorted lists of ``K [..., g, s]`` keeping the ``o`` smallest.

    Steps: ONE comparison of all cross pairs of the ``m`` lists (``beta = [B_j < A_i]`` for
    list A before B); the output position of ``A_i`` is ``i + #{B_j < A_i : B after A} +
    #{B_j <= A_i : B before A}``, a LOCAL sum of comparison bits (a stable merge: ties
    keep the earlier list first); the placement one-hot ``[pos = t]`` (``t < o``) by ONE
    bounded equality (``digits.eqz``, 2 rounds); the output ``one-hot^T @ values`` in
    ONE product round. Cost: ``R_lt + 3`` rounds; ``m (m - 1) / 2 s**2`` comparisons,
    ``m s o`` small equalities and ``o`` (or ``2 o``) product elements per group.
    Security: only secure sub-protocols (``ltz``, ``digits.eqz``, a product) on shares; which
    positions meet depends on the public sizes only.
    """
    lead, g, s = tuple(K.shape[:-2]), K.shape[-2], K.shape[-1]
    G = g // m
    K = K.reshape(lead + (G, m, s))
    P = P.reshape(lead + (G, m, s)) if P is not None else None
    ia, ib = torch.triu_indices(m, m, 1)
    shape = lead + (G, len(ia), s, s)
    KA, KB = K[..., ia, :].unsqueeze(-1).expand(shape), K[..., ib, :].unsqueeze(-2).expand(shape)
    PA = P[..., ia, :].unsqueeze(-1).expand(shape) if P is not None else None
    PB = P[..., ib, :].unsqueeze(-2).expand(shape) if P is not None else None
    beta = order.less(KB, PB, KA, PA)  # [..., G, pairs, s (A), s (B)]
    pos = []
    for part in ("lo", "hi"):
        t = getattr(beta, part)
        acc = torch.zeros(lead + (G, m, s), dtype=torch.int64)
        acc.index_add_(len(lead) + 1, ia, t.sum(-1))
        acc.index_add_(len(lead) + 1, ib, -t.sum(-2))
        pos.append(acc)
    offset = torch.arange(s).view(1, s) + s * torch.arange(m).view(m, 1)  # i, and "+ s" per earlier list B
    position = ArithmeticShares(K.party, pos[0], pos[1], 0).add_public(offset)
    flat = position.reshape(lead + (G, m * s)).unsqueeze(-1)
    onehot = D.eqz(flat - torch.arange(o), D.eq_spec(m * s + o))  # [..., G, m s, o]
    vals = [K.reshape(lead + (G, m * s))] + ([P.reshape(lead + (G, m * s))] if P is not None else [])
    v = ArithmeticShares(K.party, torch.stack([x.lo for x in vals], -1), torch.stack([x.hi for x in vals], -1), 0)
    out = matmul(onehot.transpose(-1, -2), v)  # [..., G, o, channels]
    keys = ArithmeticShares(K.party, out.lo[..., 0], out.hi[..., 0], K.frac_bits)
    pays = ArithmeticShares(K.party, out.lo[..., 1], out.hi[..., 1], P.frac_bits) if P is not None else None
    return keys, pays


def _pad_lists(K: ArithmeticShares, P: ArithmeticShares | None, pad: int):
    """Append one list of padding (key ``pad``, payload -1) along dim -2."""
    shape = tuple(K.shape[:-2]) + (1, K.shape[-1])
    pk = public_shares(K.party, torch.full(shape, pad, dtype=torch.int64), K.frac_bits)
    K = _cat_lists(K, pk)
    if P is not None:
        P = _cat_lists(P, public_shares(P.party, torch.full(shape, -1, dtype=torch.int64), P.frac_bits))
    return K, P


def _flip(a: ArithmeticShares) -> ArithmeticShares:
    return ArithmeticShares(a.party, a.lo.flip(-1), a.hi.flip(-1), a.frac_bits)


def _cat_lists(a: ArithmeticShares, b: ArithmeticShares) -> ArithmeticShares:
    return ArithmeticShares(a.party, torch.cat([a.lo, b.lo], -2), torch.cat([a.hi, b.hi], -2), a.frac_bits)


def secure_argmin(keys: ArithmeticShares, payloads: ArithmeticShares | None = None,
                  id_bits: int | None = None) -> tuple[ArithmeticShares, ArithmeticShares]:
    """Smallest key along the last dimension and its payload (default: its index, shared).

    Without payloads the index ``0..n-1`` is the payload and ties go to the smallest
    index. Cost: as ``secure_topk`` with ``k = 1`` (``merge_plan(n, 1)``: n = 1,000 in two
    levels of 32, 18 rounds).
    """
    n = keys.shape[-1]
    if payloads is None:
        idx = torch.arange(n, dtype=torch.int64).expand(keys.shape).contiguous()
        payloads = public_shares(keys.party, idx)
        id_bits = id_bits or max(1, (n - 1).bit_length() + 1)
    k, p = secure_topk(keys, payloads, 1, id_bits)
    return k[..., 0], p[..., 0]
