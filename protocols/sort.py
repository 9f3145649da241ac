"""Oblivious compare-and-swap, bitonic sort, top-k and argmin on shared keys with payloads.

Every function works along the LAST dimension and batches over the leading ones (e.g. one
row per query). The access pattern (which positions are compared) is public and fixed by
the sizes only; which element wins is secret.

Building block (SecSortPair): for many pairs at once, ``c = [k_b < k_a]`` with ONE
vectorised comparison, then ``min = a + c (b - a)`` for keys and payloads together with
ONE multiplication round (the max is ``a + b - min``, local).
Cost of one compare-and-swap stage: ``R_lt + 1`` rounds (``R_lt`` = rounds of
``compare.ltz``, 8 today) and, per pair, the comparison's words plus one ring element
per muxed value (key and payload) per party.

Ties: with ``id_bits`` set, payloads are integer ids in ``[-1, 2**id_bits)`` and the
comparison is lexicographic on ``(key, id)``: the local difference
``(k_b - k_a) * 2**id_bits + (p_b - p_a)`` is compared with zero, so results are
deterministic and equal to a plaintext sort by ``(key, id)``. Range: every real key
must satisfy ``|key| < 2**(60 - id_bits)`` in ring units (``key_limit``).

Padding (to a power of two or a multiple of the list size) uses the public key
``pad_key(id_bits) = 2**(60 - id_bits)`` (larger than every valid key) with payload -1;
padding never surfaces unless ``k`` exceeds the number of real elements.

Top-k (``k << n``), default for ``k <= 64``: a tournament of sorted lists merged by
RANKS (``_merge_keep``). Lists start as singletons; each level merges pairs of lists
with ONE comparison of all cross pairs and ONE product round that places every element
at its rank (the rank indicators are local differences of the comparison bits because
both lists are sorted), keeping the ``k`` smallest. ``ceil(log2 n)`` levels of
``R_lt + 1`` rounds, about ``1.5 n k`` comparisons. The alternative
(``method="bitonic"``) bitonic-sorts lists of ``K = next_pow2(k)`` and halves them with
bitonic merges: fewer comparisons but ``log2 K (log2 K + 1) / 2 + ceil(log2(n/K))
(1 + log2 K)`` stages of ``R_lt + 1`` rounds (45 stages vs 11 levels for k = 10,
n = 1100).
"""

from __future__ import annotations

import math

import torch

from . import compare as C
from .arithmetic import matmul, mul
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


MERGE_MAX_K = 64


def secure_topk(keys: ArithmeticShares, payloads: ArithmeticShares | None, k: int,
                id_bits: int | None = None, method: str = "auto") -> tuple[ArithmeticShares, ArithmeticShares | None]:
    """The ``k`` smallest keys (ascending) with their payloads, along the last dimension.

    ``method="merge"`` (default for ``k <= 64``): tournament of sorted lists merged by
    ranks (:func:`_merge_keep`), ``ceil(log2 n)`` levels of ``R_lt + 1`` rounds each;
    about ``n (1.5 k)`` comparisons in all (a level merging lists of size ``s`` costs
    ``s**2`` comparisons per merge) plus ``2 min(2s, k)`` elements per merge.
    ``method="bitonic"``: tournament of bitonic-sorted lists of ``K = next_pow2(k)``
    (module docstring): ``log2 K (log2 K + 1) / 2 + ceil(log2 ceil(n / K)) (1 + log2 K)``
    stages of ``R_lt + 1`` rounds, about ``n / 2 (log2 K (log2 K + 1) / 2 + 1 + log2 K)``
    comparisons (fewer comparisons, many more rounds). Each comparison is 7-10 words
    per party. Ties resolved by payload when ``id_bits`` is set.
    E.g. k = 10, n = 1,100: 11 levels (merge) vs 45 stages (bitonic).
    """
    _check(keys, payloads)
    n = keys.shape[-1]
    if not 1 <= k <= n:
        raise ValueError(f"need 1 <= k <= n, got k={k}, n={n}")
    if method == "auto":
        method = "merge" if k <= MERGE_MAX_K else "bitonic"
    if method == "merge":
        return _merge_tournament(keys, payloads, k, id_bits)
    if method != "bitonic":
        raise ValueError(f"unknown top-k method {method!r}")
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


def _ext(c: ArithmeticShares, dim: int, first: int, last: int) -> ArithmeticShares:
    """``c`` with a public constant slice ``first`` before and ``last`` after along ``dim``."""
    shape = list(c.shape)
    shape[dim] = 1
    f = public_shares(c.party, torch.full(shape, first, dtype=torch.int64))
    e = public_shares(c.party, torch.full(shape, last, dtype=torch.int64))
    return ArithmeticShares(c.party, torch.cat([f.lo, c.lo, e.lo], dim), torch.cat([f.hi, c.hi, e.hi], dim), 0)


def _place(ind: ArithmeticShares, offset_dim_len: int, o: int) -> ArithmeticShares:
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
                pb: ArithmeticShares | None, o: int, id_bits: int | None):
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
    beta = _less(KB, PB, KA, PA, id_bits)  # [..., a, b]
    ea = _ext(beta, -1, 1, 0)  # [..., a, b + 2]
    ind_a = ArithmeticShares(beta.party, ea.lo[..., :-1] - ea.lo[..., 1:], ea.hi[..., :-1] - ea.hi[..., 1:], 0)
    eb = _ext(beta, -2, 0, 1)  # [..., a + 2, b]
    ind_b = ArithmeticShares(beta.party, eb.lo[..., 1:, :] - eb.lo[..., :-1, :],
                             eb.hi[..., 1:, :] - eb.hi[..., :-1, :], 0).transpose(-1, -2)  # [..., b, a + 1]
    pos_a, pos_b = _place(ind_a, b + 1, o), _place(ind_b, a + 1, o)
    ind = ArithmeticShares(beta.party, torch.cat([pos_a.lo, pos_b.lo], -2), torch.cat([pos_a.hi, pos_b.hi], -2), 0)
    vals = [torch.cat([ka.lo, kb.lo], -1)], [torch.cat([ka.hi, kb.hi], -1)]
    if pa is not None:
        vals[0].append(torch.cat([pa.lo, pb.lo], -1))
        vals[1].append(torch.cat([pa.hi, pb.hi], -1))
    v = ArithmeticShares(beta.party, torch.stack(vals[0], -1), torch.stack(vals[1], -1), 0)  # [..., a+b, t]
    out = matmul(ind.transpose(-1, -2), v)  # [..., o, t]
    keys = ArithmeticShares(ka.party, out.lo[..., 0], out.hi[..., 0], ka.frac_bits)
    pays = None
    if pa is not None:
        pays = ArithmeticShares(pa.party, out.lo[..., 1], out.hi[..., 1], pa.frac_bits)
    return keys, pays


def _merge_tournament(keys: ArithmeticShares, payloads: ArithmeticShares | None, k: int,
                      id_bits: int | None) -> tuple[ArithmeticShares, ArithmeticShares | None]:
    """Top-k by rank merging: singletons, then pairwise merges keeping ``min(2s, k)``."""
    K = keys.unsqueeze(-1)  # [..., g, 1]
    P = payloads.unsqueeze(-1) if payloads is not None else None
    g, s = keys.shape[-1], 1
    while g > 1:
        if g % 2:
            K, P = _pad_lists(K, P, id_bits)
            g += 1
        o = min(2 * s, k)
        A, B = K[..., 0::2, :], K[..., 1::2, :]
        PA = P[..., 0::2, :] if P is not None else None
        PB = P[..., 1::2, :] if P is not None else None
        K, P = _merge_keep(A, PA, B, PB, o, id_bits)
        g, s = g // 2, o
    return K[..., 0, :k], (P[..., 0, :k] if P is not None else None)


def _pad_lists(K: ArithmeticShares, P: ArithmeticShares | None, id_bits: int | None):
    """Append one list of padding (``pad_key``, payload -1) along dim -2."""
    shape = tuple(K.shape[:-2]) + (1, K.shape[-1])
    pk = public_shares(K.party, torch.full(shape, pad_key(id_bits), dtype=torch.int64), K.frac_bits)
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
