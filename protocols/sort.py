"""Oblivious compare-and-swap and bitonic sort on shared keys with payloads.

Every function works along the LAST dimension and batches over the leading ones (e.g. one
row per query). The access pattern (which positions are compared) is public and fixed by
the sizes only; which element wins is secret. Top-k and argmin, built on the same
compare-and-swap, live in :mod:`protocols.topk`.

Building block (SecSortPair): for many pairs at once, ``c = [k_b < k_a]`` with ONE
vectorised comparison, then ``min = a + c (b - a)`` for keys and payloads together with
ONE multiplication round (the max is ``a + b - min``, local).
Cost of one compare-and-swap stage: ``R_lt + 1`` rounds (``R_lt`` = rounds of
``compare.ltz``, 5, so 6 rounds) and, per pair, the comparison's words plus one ring
element per muxed value (key and payload) per party (``protocols.costs``:
``sort_pair``).

Ties: with ``id_bits`` set, payloads are integer ids in ``[-1, 2**id_bits)`` and the
comparison is lexicographic on ``(key, id)``: the local difference
``(k_b - k_a) * 2**id_bits + (p_b - p_a)`` is compared with zero, so results are
deterministic and equal to a plaintext sort by ``(key, id)``. Range: every real key
must satisfy ``|key| < 2**(KEY_TOP_BITS - id_bits)`` in ring units (``key_limit``).

Padding (to a power of two or a multiple of the list size) uses the public key
``pad_key(id_bits) = 2**(KEY_TOP_BITS - id_bits)`` (larger than every valid key) with
payload -1; padding never surfaces unless ``k`` exceeds the number of real elements.
"""

from __future__ import annotations

import math
from typing import overload

import torch

from . import compare as C
from . import digits as D
from .arithmetic import mul
from .sharing import ArithmeticShares, public_shares

KEY_TOP_BITS = 60
"""Bit width of the sort key range: ``pad_key(id_bits) = 2**(KEY_TOP_BITS - id_bits)``.

A lexicographic key ``key * 2**id_bits + id`` then stays below ``2**KEY_TOP_BITS``, so
differences of two keys stay far inside the comparison's range (``|x| < 2**63``). The
index's padding ``||x||^2`` (``protocols.layout.pad_sqnorm``) is derived from it.
"""


def pad_key(id_bits: int | None) -> int:
    """Public padding key (ring units): larger than every valid key."""
    return 1 << (KEY_TOP_BITS - (id_bits or 0))


def key_limit(id_bits: int | None) -> int:
    """Valid keys must satisfy ``|key| < key_limit(id_bits)`` (ring units)."""
    return pad_key(id_bits)


def _raw(x: ArithmeticShares) -> ArithmeticShares:
    return ArithmeticShares(x.party, x.lo, x.hi, 0)


def lex_less(kb: ArithmeticShares, pb: ArithmeticShares | None, ka: ArithmeticShares,
          pa: ArithmeticShares | None, id_bits: int | None, spec: D.Digits | None = None) -> ArithmeticShares:
    """``[(k_b, p_b) < (k_a, p_a)]`` (lexicographic when ``id_bits``). Cost: one ``ltz`` (``compare.ltz``,
    or ``digits.ltz`` with the layout ``spec`` when the differences fit it)."""
    diff = _raw(kb) - _raw(ka)
    if id_bits:
        if pa is None or pb is None:
            raise ValueError("tie-breaking by id needs payloads")
        diff = diff.mul_public_int(1 << id_bits) + (_raw(pb) - _raw(pa))
    return C.ltz(diff) if spec is None else D.ltz(diff, spec)


def select_pairs(c: ArithmeticShares, pairs: list[tuple[ArithmeticShares, ArithmeticShares]]) -> list[ArithmeticShares]:
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


def muxed_pairs(ka: ArithmeticShares, kb: ArithmeticShares, pa: ArithmeticShares | None,
                pb: ArithmeticShares | None) -> list[tuple[ArithmeticShares, ArithmeticShares]]:
    """The ``(a, b)`` pairs a compare-and-swap selects between: keys, and payloads if given."""
    if pa is None or pb is None:
        return [(ka, kb)]
    return [(ka, kb), (pa, pb)]


def _cat(parts: list[ArithmeticShares], inv: torch.Tensor) -> ArithmeticShares:
    lo = torch.cat([p.lo for p in parts], -1)[..., inv]
    hi = torch.cat([p.hi for p in parts], -1)[..., inv]
    return ArithmeticShares(parts[0].party, lo, hi, parts[0].frac_bits)


def cas_stage(keys: ArithmeticShares, pays: ArithmeticShares | None, lo_idx: torch.Tensor,
               hi_idx: torch.Tensor, id_bits: int | None) -> tuple[ArithmeticShares, ArithmeticShares | None]:
    """Compare-and-swap positions ``lo_idx[j]``/``hi_idx[j]`` (min goes to ``lo_idx``).

    Cost: ``R_lt + 1`` rounds; per pair one comparison plus 1-2 muxed elements per party.
    """
    n = keys.shape[-1]
    ka, kb = keys[..., lo_idx], keys[..., hi_idx]
    pa = pb = None
    if pays is not None:
        pa, pb = pays[..., lo_idx], pays[..., hi_idx]
    c = lex_less(kb, pb, ka, pa, id_bits)
    mins = select_pairs(c, muxed_pairs(ka, kb, pa, pb))
    used = torch.cat([lo_idx, hi_idx])
    mask = torch.ones(n, dtype=torch.bool)
    mask[used] = False
    rest = torch.nonzero(mask).flatten()
    inv = torch.argsort(torch.cat([lo_idx, hi_idx, rest]))
    mk = mins[0]
    new_keys = _cat([mk, ka + kb - mk, keys[..., rest]], inv)
    if pays is None or pa is None or pb is None:
        return new_keys, None
    mp = mins[1]
    return new_keys, _cat([mp, pa + pb - mp, pays[..., rest]], inv)


def bitonic_sort_stages(m: int, descending: bool = False) -> list[tuple[torch.Tensor, torch.Tensor]]:
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


def pad_last(keys: ArithmeticShares, pays: ArithmeticShares | None, total: int, key_value: int):
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


def check_keys(keys: ArithmeticShares, payloads: ArithmeticShares | None) -> None:
    if payloads is not None:
        if tuple(payloads.shape) != tuple(keys.shape):
            raise ValueError(f"payload shape {tuple(payloads.shape)} != key shape {tuple(keys.shape)}")
        if payloads.party is not keys.party:
            raise ValueError("keys and payloads belong to different parties/sessions")
    if len(keys.shape) == 0:
        raise ValueError("keys must have at least one dimension")


def next_pow2(n: int) -> int:
    return 1 << max(0, math.ceil(math.log2(n))) if n > 1 else 1


def secure_sort_pair(ka: ArithmeticShares, pa: ArithmeticShares | None, kb: ArithmeticShares,
                     pb: ArithmeticShares | None, id_bits: int | None = None):
    """SecSortPair: elementwise oblivious compare-and-swap of pairs ``(ka, pa)``, ``(kb, pb)``.

    Returns ``((k_min, p_min), (k_max, p_max))`` (payloads ``None`` if not given),
    vectorised over any shape. Cost: ``R_lt + 1`` = 6 rounds; per pair one comparison
    (``ltz``: 7.7 words for every party) plus one element per muxed
    value (1 or 2) per party (``protocols.costs``: ``sort_pair``).
    """
    if (pa is None) != (pb is None):
        raise ValueError("give payloads for both sides or neither")
    c = lex_less(kb, pb, ka, pa, id_bits)
    mins = select_pairs(c, muxed_pairs(ka, kb, pa, pb))
    kmin = mins[0]
    kmax = ka + kb - kmin
    if pa is None or pb is None:
        return (kmin, None), (kmax, None)
    pmin = mins[1]
    return (kmin, pmin), (kmax, pa + pb - pmin)


@overload
def secure_sort(keys: ArithmeticShares, payloads: ArithmeticShares, id_bits: int | None = ...,
                descending: bool = ...) -> tuple[ArithmeticShares, ArithmeticShares]: ...
@overload
def secure_sort(keys: ArithmeticShares, payloads: None = ..., id_bits: int | None = ...,
                descending: bool = ...) -> tuple[ArithmeticShares, None]: ...
@overload
def secure_sort(keys: ArithmeticShares, payloads: ArithmeticShares | None = ..., id_bits: int | None = ...,
                descending: bool = ...) -> tuple[ArithmeticShares, ArithmeticShares | None]: ...


def secure_sort(keys: ArithmeticShares, payloads: ArithmeticShares | None = None, id_bits: int | None = None,
                descending: bool = False) -> tuple[ArithmeticShares, ArithmeticShares | None]:
    """Oblivious bitonic sort of ``keys`` (with ``payloads``) along the last dimension.

    ``n`` is padded to ``m = 2**ceil(log2 n)`` with ``pad_key`` (``-pad_key`` when
    descending), which ends up past the real elements and is cut off.
    Cost: ``log2 m (log2 m + 1) / 2`` stages of ``R_lt + 1`` rounds; ``m / 2`` comparisons
    per stage (per batch row), each a comparison plus 1-2 muxed elements per party.
    """
    check_keys(keys, payloads)
    n = keys.shape[-1]
    m = next_pow2(n)
    keys, payloads = pad_last(keys, payloads, m, -pad_key(id_bits) if descending else pad_key(id_bits))
    for lo_idx, hi_idx in bitonic_sort_stages(m, descending):
        keys, payloads = cas_stage(keys, payloads, lo_idx, hi_idx, id_bits)
    keys = keys[..., :n]
    return keys, (payloads[..., :n] if payloads is not None else None)
