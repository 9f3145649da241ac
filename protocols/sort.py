"""Oblivious compare-and-swap, bitonic sort, top-k and argmin on shared keys with payloads.

Every function works along the LAST dimension and batches over the leading ones (e.g. one
row per query). The access pattern (which positions are compared) is public and fixed by
the sizes only; which element wins is secret.

Building block (SecSortPair): for many pairs at once, ``c = [k_b < k_a]`` with ONE
vectorised comparison, then ``min = a + c (b - a)`` for keys and payloads together with
ONE multiplication round (the max is ``a + b - min``, local).
Cost of one compare-and-swap stage: ``R_lt + 1`` rounds (``R_lt`` = rounds of
``compare.ltz``, 9 today) and, per pair, the comparison's words plus one ring element
per muxed value (key and payload) per party.

Ties: with ``id_bits`` set, payloads are integer ids in ``[-1, 2**id_bits)`` and the
comparison is lexicographic on ``(key, id)``: the local difference
``(k_b - k_a) * 2**id_bits + (p_b - p_a)`` is compared with zero, so results are
deterministic and equal to a plaintext sort by ``(key, id)``. Range: every real key
must satisfy ``|key| < 2**(60 - id_bits)`` in ring units (``key_limit``).

Padding (to a power of two or a multiple of the list size) uses the public key
``pad_key(id_bits) = 2**(60 - id_bits)`` (larger than every valid key) with payload -1;
padding never surfaces unless ``k`` exceeds the number of real elements.

Top-k (``k << n``): tournament of sorted lists. Pad ``n`` to ``g * K`` (``K`` = next
power of two >= k), bitonic-sort the ``g`` lists of ``K`` in parallel, then halve the
number of lists per level: list ``A`` and reversed list ``B`` give ``min(A_i, B_{K-1-i})``,
the ``K`` smallest of both as a bitonic sequence (1 stage, min only), which a bitonic
merge sorts (``log2 K`` stages). Comparisons ~``n (log2 K (log2 K + 1) / 4 + 1 + log2 K)``,
stages ``log2 K (log2 K + 1) / 2 + ceil(log2 g) (1 + log2 K)``, each ``R_lt + 1`` rounds.
"""

from __future__ import annotations

import math

import torch

from . import compare as C
from .arithmetic import mul
from .party import Party
from .sharing import ArithmeticShares

_KEY_TOP = 60  # pad key = 2**(60 - id_bits); valid keys stay below it


def pad_key(id_bits: int | None) -> int:
    """Public padding key (ring units): larger than every valid key."""
    return 1 << (_KEY_TOP - (id_bits or 0))


def key_limit(id_bits: int | None) -> int:
    """Valid keys must satisfy ``|key| < key_limit(id_bits)`` (ring units)."""
    return pad_key(id_bits)


def public_shares(party: Party, value: torch.Tensor, frac_bits: int = 0) -> ArithmeticShares:
    """Shares of a PUBLIC ring tensor (component x0 = value, x1 = x2 = 0). Cost: local."""
    value = value.to(torch.int64)
    zero = torch.zeros_like(value)
    if party.id == 0:
        return ArithmeticShares(party, value, zero, frac_bits)
    if party.id == 2:
        return ArithmeticShares(party, zero, value, frac_bits)
    return ArithmeticShares(party, zero, zero.clone(), frac_bits)


def _raw(x: ArithmeticShares) -> ArithmeticShares:
    return ArithmeticShares(x.party, x.lo, x.hi, 0)


def _less(kb: ArithmeticShares, pb: ArithmeticShares | None, ka: ArithmeticShares,
          pa: ArithmeticShares | None, id_bits: int | None) -> ArithmeticShares:
    """``[(k_b, p_b) < (k_a, p_a)]`` (lexicographic when ``id_bits``). Cost: one ``ltz``."""
    diff = _raw(kb) - _raw(ka)
    if id_bits:
        if pa is None or pb is None:
            raise ValueError("tie-breaking by id needs payloads")
        diff = diff.mul_public_int(1 << id_bits) + (_raw(pb) - _raw(pa))
    return C.ltz(diff)


def _select(c: ArithmeticShares, pairs: list[tuple[ArithmeticShares, ArithmeticShares]]) -> list[ArithmeticShares]:
    """``a + c (b - a)`` for every ``(a, b)``, all in ONE multiplication round.

    Cost: 1 round, one ring element per selected element per party.
    """
    d_lo = torch.stack([b.lo - a.lo for a, b in pairs])
    d_hi = torch.stack([b.hi - a.hi for a, b in pairs])
    prod = mul(c.unsqueeze(0), ArithmeticShares(c.party, d_lo, d_hi, 0))
    return [
        ArithmeticShares(a.party, a.lo + prod.lo[i], a.hi + prod.hi[i], a.frac_bits)
        for i, (a, _) in enumerate(pairs)
    ]


def _gather(x: ArithmeticShares | None, idx: torch.Tensor) -> ArithmeticShares | None:
    return None if x is None else x[..., idx]


def _cat(parts: list[ArithmeticShares], inv: torch.Tensor) -> ArithmeticShares:
    lo = torch.cat([p.lo for p in parts], -1)[..., inv]
    hi = torch.cat([p.hi for p in parts], -1)[..., inv]
    return ArithmeticShares(parts[0].party, lo, hi, parts[0].frac_bits)


def _cas_stage(keys: ArithmeticShares, pays: ArithmeticShares | None, lo_idx: torch.Tensor,
               hi_idx: torch.Tensor, id_bits: int | None) -> tuple[ArithmeticShares, ArithmeticShares | None]:
    """Compare-and-swap positions ``lo_idx[j]``/``hi_idx[j]`` (min goes to ``lo_idx``).

    Cost: ``R_lt + 1`` rounds; per pair one comparison plus 1-2 muxed elements per party.
    """
    n = keys.shape[-1]
    ka, kb = keys[..., lo_idx], keys[..., hi_idx]
    pa, pb = _gather(pays, lo_idx), _gather(pays, hi_idx)
    c = _less(kb, pb, ka, pa, id_bits)
    sel = [(ka, kb)] + ([(pa, pb)] if pays is not None else [])
    mins = _select(c, sel)
    used = torch.cat([lo_idx, hi_idx])
    mask = torch.ones(n, dtype=torch.bool)
    mask[used] = False
    rest = torch.nonzero(mask).flatten()
    inv = torch.argsort(torch.cat([lo_idx, hi_idx, rest]))
    mk = mins[0]
    new_keys = _cat([mk, ka + kb - mk, keys[..., rest]], inv)
    new_pays = None
    if pays is not None:
        mp = mins[1]
        new_pays = _cat([mp, pa + pb - mp, pays[..., rest]], inv)
    return new_keys, new_pays


def _bitonic_sort_stages(m: int, descending: bool = False) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Public (min-position, max-position) index pairs of a bitonic sorting network on ``m = 2**j``."""
    stages = []
    i = torch.arange(m)
    size = 2
    while size <= m:
        stride = size // 2
        while stride >= 1:
            first = i[(i & stride) == 0]
            second = first | stride
            asc = (first & size) == 0
            if descending:
                asc = ~asc
            stages.append((torch.where(asc, first, second), torch.where(asc, second, first)))
            stride //= 2
        size *= 2
    return stages


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


def _pad_last(keys: ArithmeticShares, pays: ArithmeticShares | None, total: int, key_value: int):
    n = keys.shape[-1]
    if total == n:
        return keys, pays
    shape = tuple(keys.shape[:-1]) + (total - n,)
    pk = public_shares(keys.party, torch.full(shape, key_value, dtype=torch.int64), keys.frac_bits)
    keys = ArithmeticShares(keys.party, torch.cat([keys.lo, pk.lo], -1), torch.cat([keys.hi, pk.hi], -1),
                            keys.frac_bits)
    if pays is not None:
        pp = public_shares(pays.party, torch.full(shape, -1, dtype=torch.int64), pays.frac_bits)
        pays = ArithmeticShares(pays.party, torch.cat([pays.lo, pp.lo], -1), torch.cat([pays.hi, pp.hi], -1),
                                pays.frac_bits)
    return keys, pays


def _check(keys: ArithmeticShares, payloads: ArithmeticShares | None) -> None:
    if payloads is not None:
        if tuple(payloads.shape) != tuple(keys.shape):
            raise ValueError(f"payload shape {tuple(payloads.shape)} != key shape {tuple(keys.shape)}")
        if payloads.party is not keys.party:
            raise ValueError("keys and payloads belong to different parties/sessions")
    if len(keys.shape) == 0:
        raise ValueError("keys must have at least one dimension")


def _next_pow2(n: int) -> int:
    return 1 << max(0, math.ceil(math.log2(n))) if n > 1 else 1


def secure_sort_pair(ka: ArithmeticShares, pa: ArithmeticShares | None, kb: ArithmeticShares,
                     pb: ArithmeticShares | None, id_bits: int | None = None):
    """SecSortPair: elementwise oblivious compare-and-swap of pairs ``(ka, pa)``, ``(kb, pb)``.

    Returns ``((k_min, p_min), (k_max, p_max))`` (payloads ``None`` if not given),
    vectorised over any shape. Cost: ``R_lt + 1`` rounds (10 today); per pair one
    comparison (7-10 words) plus one element per muxed value (1 or 2) per party.
    """
    if (pa is None) != (pb is None):
        raise ValueError("give payloads for both sides or neither")
    c = _less(kb, pb, ka, pa, id_bits)
    sel = [(ka, kb)] + ([(pa, pb)] if pa is not None else [])
    mins = _select(c, sel)
    kmin = mins[0]
    kmax = ka + kb - kmin
    if pa is None:
        return (kmin, None), (kmax, None)
    pmin = mins[1]
    return (kmin, pmin), (kmax, pa + pb - pmin)


def secure_sort(keys: ArithmeticShares, payloads: ArithmeticShares | None = None, id_bits: int | None = None,
                descending: bool = False) -> tuple[ArithmeticShares, ArithmeticShares | None]:
    """Oblivious bitonic sort of ``keys`` (with ``payloads``) along the last dimension.

    ``n`` is padded to ``m = 2**ceil(log2 n)`` with ``pad_key`` (``-pad_key`` when
    descending), which ends up past the real elements and is cut off.
    Cost: ``log2 m (log2 m + 1) / 2`` stages of ``R_lt + 1`` rounds; ``m / 2`` comparisons
    per stage (per batch row), each a comparison plus 1-2 muxed elements per party.
    """
    _check(keys, payloads)
    n = keys.shape[-1]
    m = _next_pow2(n)
    keys, payloads = _pad_last(keys, payloads, m, -pad_key(id_bits) if descending else pad_key(id_bits))
    for lo_idx, hi_idx in _bitonic_sort_stages(m, descending):
        keys, payloads = _cas_stage(keys, payloads, lo_idx, hi_idx, id_bits)
    keys = keys[..., :n]
    return keys, (payloads[..., :n] if payloads is not None else None)


def secure_topk(keys: ArithmeticShares, payloads: ArithmeticShares | None, k: int,
                id_bits: int | None = None) -> tuple[ArithmeticShares, ArithmeticShares | None]:
    """The ``k`` smallest keys (ascending) with their payloads, along the last dimension.

    Tournament of sorted lists of ``K = next_pow2(k)`` (see the module docstring); for
    ``n <= K`` a full bitonic sort. Ties resolved by payload when ``id_bits`` is set.
    Cost for ``n`` keys, ``g = ceil(n / K)``: ``log2 K (log2 K + 1) / 2 + ceil(log2 g)
    (1 + log2 K)`` stages of ``R_lt + 1`` rounds; about ``n/2 * (log2 K (log2 K + 1) / 2)
    + n/2 * (1 + log2 K)`` comparisons (each 7-10 words per party) and one or two muxed
    elements per comparison. E.g. k = 10, n = 10,000: 60 stages.
    """
    _check(keys, payloads)
    n = keys.shape[-1]
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
    K = _next_pow2(k)
    if n <= K:
        sk, sp = secure_sort(keys, payloads, id_bits)
        return sk[..., :k], (sp[..., :k] if sp is not None else None)
    lead = tuple(keys.shape[:-1])
    g = -(-n // K)
    keys, payloads = _pad_last(keys, payloads, g * K, pad_key(id_bits))
    keys = keys.reshape(lead + (g, K))
    payloads = payloads.reshape(lead + (g, K)) if payloads is not None else None
    for lo_idx, hi_idx in _bitonic_sort_stages(K):
        keys, payloads = _cas_stage(keys, payloads, lo_idx, hi_idx, id_bits)
    merge = _bitonic_merge_stages(K)
    while g > 1:
        h = g // 2
        ka, kb = keys[..., 0:2 * h:2, :], _flip(keys[..., 1:2 * h:2, :])
        pa = payloads[..., 0:2 * h:2, :] if payloads is not None else None
        pb = _flip(payloads[..., 1:2 * h:2, :]) if payloads is not None else None
        c = _less(kb, pb, ka, pa, id_bits)
        sel = _select(c, [(ka, kb)] + ([(pa, pb)] if payloads is not None else []))
        mk, mp = sel[0], (sel[1] if payloads is not None else None)
        for lo_idx, hi_idx in merge:
            mk, mp = _cas_stage(mk, mp, lo_idx, hi_idx, id_bits)
        if g % 2:
            mk = _cat_lists(mk, keys[..., g - 1 : g, :])
            if payloads is not None:
                mp = _cat_lists(mp, payloads[..., g - 1 : g, :])
        keys, payloads = mk, mp
        g = h + g % 2
    keys = keys[..., 0, :k]
    return keys, (payloads[..., 0, :k] if payloads is not None else None)


def _flip(a: ArithmeticShares) -> ArithmeticShares:
    return ArithmeticShares(a.party, a.lo.flip(-1), a.hi.flip(-1), a.frac_bits)


def _cat_lists(a: ArithmeticShares, b: ArithmeticShares) -> ArithmeticShares:
    return ArithmeticShares(a.party, torch.cat([a.lo, b.lo], -2), torch.cat([a.hi, b.hi], -2), a.frac_bits)


def secure_argmin(keys: ArithmeticShares, payloads: ArithmeticShares | None = None,
                  id_bits: int | None = None) -> tuple[ArithmeticShares, ArithmeticShares]:
    """Smallest key along the last dimension and its payload (default: its index, shared).

    Without payloads the index ``0..n-1`` is the payload and ties go to the smallest
    index. Cost: ``ceil(log2 n)`` stages of ``R_lt + 1`` rounds, ``n - 1`` comparisons in
    all (per batch row), each with 2 muxed elements.
    """
    n = keys.shape[-1]
    if payloads is None:
        idx = torch.arange(n, dtype=torch.int64).expand(keys.shape).contiguous()
        payloads = public_shares(keys.party, idx)
        id_bits = id_bits or max(1, (n - 1).bit_length() + 1)
    k, p = secure_topk(keys, payloads, 1, id_bits)
    return k[..., 0], p[..., 0]
