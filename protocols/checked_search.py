"""The k-nearest-neighbour search with security with abort: top-k, probe selection, oblivious fetch and
result masking built ONLY from the checked gates of :mod:`protocols.checked` and
:mod:`protocols.checked_compare` (plus local linear operations), so :func:`protocols.dzk.verify_products`
covers every message. The semi-honest :func:`protocols.search.secure_search` uses table-OT gates
(top-k, one-hot) that the proofs do not cover; this module replaces them.

* :func:`checked_topk`: the ``k`` smallest keys of each row, ascending, payloads carried along.
  A merge tree: every level merges pairs of sorted lists keeping the first ``K = min(la + lb, k)``
  outputs, with ONE :func:`checked_ltz` over all comparisons of the level (all rows, all merges)
  and ONE stacked :func:`checked_mul`. The merge needs no data-dependent indexing: in two sorted
  lists ``A``, ``B`` the comparison bits ``c_ij = [b_j < a_i]`` are monotone (non-increasing in
  ``j``, non-decreasing in ``i``), so "``a_i`` lands at output ``p``" is the LOCAL difference
  ``c_{i,p-i-1} - c_{i,p-i}`` of two of them, and likewise for ``b_j``. Summed up, output ``p`` is
  ``a_p [p < la] + b_{p-la} [p >= la] + sum_{i+j+1=p} d_ij - sum_{i+j=p} d_ij`` with
  ``d_ij = c_ij (a_i - b_j)`` (one product per compared pair and carried value): only the pairs
  with ``i + j <= K - 1`` are compared.
* :func:`checked_search`: as ``secure_search`` (same results up to fixed point), every step checked.
* :func:`checked_mask_hidden`: as ``servers.query.mask_hidden``, checked.

Nothing here is verified until ``verify_products(log)`` has run; reveal nothing before it.
"""

from __future__ import annotations

import torch

from .checked import checked_conv2d, checked_matmul, checked_mul, checked_truncate
from .checked_compare import checked_eqz, checked_ltz
from .dzk import ProductLog
from .layout import RECORD_EXTRA, IndexShares
from .party import Party
from .sharing import ArithmeticShares, public_shares

LTZ_ROUNDS = 10  # checked_ltz
EQZ_ROUNDS = 11  # checked_eqz
LEVEL_ROUNDS = LTZ_ROUNDS + 1  # one merge level: the comparisons, then the products


def topk_rounds(n: int) -> int:
    """Rounds of :func:`checked_topk` over ``n`` keys per row: ``11 ceil(log2 n)`` (0 for ``n = 1``)."""
    return LEVEL_ROUNDS * (n - 1).bit_length()


def search_rounds(n_centroids: int, bucket_size: int, nprobe: int) -> int:
    """Rounds of :func:`checked_search` (before ``verify_products``): ``1 + T(C) + 11 + 1 + 1 + T(nprobe B) + 1``
    (centroid distances, top-nprobe, one-hot, fetch, record distances, top-k, truncation) with
    ``T = topk_rounds``; ``1 + T(C B) + 1`` when ``nprobe = C`` (no top-nprobe, one-hot nor fetch)."""
    if nprobe == n_centroids:
        return 1 + topk_rounds(n_centroids * bucket_size) + 1
    return 1 + topk_rounds(n_centroids) + EQZ_ROUNDS + 1 + 1 + topk_rounds(nprobe * bucket_size) + 1


def _merge_plan(lengths: list[int], k: int) -> tuple[list[int], dict[str, torch.Tensor]]:
    """One level of the merge tree over lists of ``lengths`` stored back to back (public sizes only).

    Returns the new lengths and index tensors into the flat old/new layouts: ``src`` (the base
    term of every new position), ``ia``/``ib`` (the compared ``a_i``/``b_j``), ``lo_at`` (the new
    position ``i + j`` of every pair, which gets ``-d``), ``hi_at``/``hi_pair`` (the pairs with
    ``i + j + 1 < K`` and their new position ``i + j + 1``, which gets ``+d``)."""
    src: list[torch.Tensor] = []
    ia: list[torch.Tensor] = []
    ib: list[torch.Tensor] = []
    lo_at: list[torch.Tensor] = []
    hi_mask: list[torch.Tensor] = []
    new: list[int] = []
    off = noff = 0
    for m in range(0, len(lengths), 2):
        if m + 1 == len(lengths):  # the odd list out passes through
            la = lengths[m]
            src.append(torch.arange(off, off + la))
            new.append(la)
            break
        la, lb = lengths[m], lengths[m + 1]
        K = min(la + lb, k)
        p = torch.arange(K)
        src.append(torch.where(p < la, off + p, off + la + p - la))
        i, j = torch.meshgrid(torch.arange(la), torch.arange(lb), indexing="ij")
        keep = (i + j) <= K - 1
        i, j = i[keep], j[keep]
        ia.append(off + i)
        ib.append(off + la + j)
        lo_at.append(noff + i + j)
        hi_mask.append(i + j + 1 < K)
        new.append(K)
        off += la + lb
        noff += K
    cat = torch.cat
    mask = cat(hi_mask)
    lo = cat(lo_at)
    return new, {"src": cat(src), "ia": cat(ia), "ib": cat(ib), "lo_at": lo, "hi_at": lo[mask] + 1,
                 "hi_pair": torch.nonzero(mask).view(-1)}


def checked_topk(keys: ArithmeticShares, payloads: list[ArithmeticShares], k: int,
                 log: ProductLog) -> tuple[ArithmeticShares, list[ArithmeticShares]]:
    """The ``k`` smallest of each row of ``keys [Q, n]``, ascending (ties: the smaller position first),
    and the matching entries of every payload ``[Q, n]`` (any scales; kept). Recorded in ``log``.

    Keys are compared by the sign of their ring difference (:func:`checked_ltz`), exact when every
    difference of two keys is below ``2^63`` in absolute value (e.g. all keys in ``[-2^62, 2^62)``, or
    all in ``[0, 2^63)``). Steps: ``ceil(log2 n)`` merge levels (module docstring), each ONE
    ``checked_ltz`` over the ``P`` compared pairs of all rows and merges and ONE ``checked_mul`` of
    the ``P`` bits by the ``1 + len(payloads)`` carried differences.

    Rounds: ``11 ceil(log2 n)`` (:func:`topk_rounds`). Elements per party: per compared pair one
    ``checked_ltz`` (about 8.9) and ``1 + len(payloads)``; a merge of two lists of ``k`` compares the
    ``k (k + 1) / 2`` pairs with ``i + j < k``, about ``n k / 2`` pairs in all over the levels.
    Exact (no fixed-point error).
    """
    party = keys.party
    if len(keys.shape) != 2:
        raise ValueError(f"checked_topk: keys must be [Q, n], got {tuple(keys.shape)}")
    Q, n = keys.shape
    if not 1 <= k <= n:
        raise ValueError(f"checked_topk: need 1 <= k <= n = {n}, got {k}")
    for p in payloads:
        if tuple(p.shape) != (Q, n) or p.party is not party:
            raise ValueError(f"checked_topk: payload {tuple(p.shape)} does not match keys {(Q, n)}")
    items = [keys, *payloads]
    lo = torch.stack([x.lo for x in items])  # [T, Q, n]
    hi = torch.stack([x.hi for x in items])
    lengths = [1] * n
    while len(lengths) > 1:
        lengths, ix = _merge_plan(lengths, k)
        a = ArithmeticShares(party, lo[..., ix["ia"]], hi[..., ix["ia"]], 0)  # [T, Q, P]
        b = ArithmeticShares(party, lo[..., ix["ib"]], hi[..., ix["ib"]], 0)
        c = checked_ltz(b[0] - a[0], log)  # [Q, P]: 1 where b_j < a_i
        d = checked_mul(c.unsqueeze(0), a - b, log)  # [T, Q, P]
        lo, hi = lo[..., ix["src"]], hi[..., ix["src"]]
        for acc, t in ((lo, d.lo), (hi, d.hi)):
            acc.index_add_(-1, ix["lo_at"], -t)
            acc.index_add_(-1, ix["hi_at"], t[..., ix["hi_pair"]])
    res = [ArithmeticShares(party, lo[j, :, :k], hi[j, :, :k], x.frac_bits) for j, x in enumerate(items)]
    return res[0], res[1:]


def _keys(query: ArithmeticShares, X: ArithmeticShares, sq: ArithmeticShares, log: ProductLog) -> ArithmeticShares:
    """Squared distances ``[Q, M]`` at scale ``2^(2f)`` (not truncated) from ``query [Q, d]`` to the rows
    ``X`` (``[M, d]`` or ``[Q, M, d]``, at ``f``) with ``sq = ||x||^2`` (``[M]`` or ``[Q, M]``, at ``f``):
    ``q . (q - 2 x) + 2^f sq``, ONE checked grouped convolution (a matrix-vector product per query,
    groups = Q). Cost: 1 round, ``Q M`` elements per party; exact up to the rounding of ``sq``."""
    party, f = query.party, query.frac_bits
    Q, d = query.shape
    M = X.shape[-2]
    y_lo = query.lo.unsqueeze(1) - 2 * X.lo  # [Q, M, d] (broadcast)
    y_hi = query.hi.unsqueeze(1) - 2 * X.hi
    y_lo, y_hi = (t.expand(Q, M, d).permute(0, 2, 1).reshape(1, Q * d, M, 1) for t in (y_lo, y_hi))
    y = ArithmeticShares(party, y_lo, y_hi, f)
    w = query.reshape(Q, d, 1, 1)
    cross = checked_conv2d(y, w, log, groups=Q).reshape(Q, M)  # [Q, M] at 2f
    sq_lo, sq_hi = (t.expand(Q, M) << f for t in (sq.lo, sq.hi))
    return cross + ArithmeticShares(party, sq_lo, sq_hi, 2 * f)


def checked_search(party: Party, query: ArithmeticShares, index: IndexShares, k: int, nprobe: int,
                   log: ProductLog) -> tuple[ArithmeticShares, ArithmeticShares]:
    """Shares of the ``k`` nearest ids ``[Q, k]`` (integer) and squared distances ``[Q, k]`` (at the index's
    ``f`` fractional bits) of ``query [Q, d]`` (or ``[d]``: 1-D results) at ``f`` fractional bits, as
    :func:`protocols.search.secure_search` (IVF over the ``nprobe`` nearest buckets; ties: the
    earlier candidate; padding records, id -1, come last with distance ``||q||^2 + pad_sqnorm``),
    every message recorded in ``log``. Nothing is revealed; run ``verify_products(log)`` before any
    result leaves the servers.

    Steps (``C`` centroids, ``B`` records per bucket, ``M = nprobe B`` candidates):

    1. Centroid keys ``q . (q - 2 c) + ||c||^2`` at ``2^(2f)`` (:func:`_keys`, 1 round, ``Q C``).
    2. Top-nprobe by :func:`checked_topk` with the centroid numbers as payload.
    3. One-hot ``[Q nprobe, C]`` by :func:`checked_eqz` of ``probe - c`` (11 rounds).
    4. Fetch by ``checked_matmul(one-hot, rows [C, B (d + 2)])`` (1 round, ``Q nprobe B (d + 2)``).
    5. Record keys as in 1 (1 round, ``Q M``).
    6. :func:`checked_topk` of the keys with payloads ``(id, ||x||^2)``.
    7. ``dist = trunc(key - 2^f ||x||^2, f) + ||x||^2`` by :func:`checked_truncate` on the ``Q k``
       outputs only (1 round): the comparisons see the exact keys, and the truncated value is
       ``||q||^2 - 2 q . x``, not the padding's huge distance (the truncation's rare large error,
       probability ``|z| / 2^63``, stays that of ``secure_search``).

    ``nprobe = C``: steps 1-4 are skipped, every record is a candidate (bucket order).

    Rounds (:func:`search_rounds`): ``1 + T(C) + 11 + 1 + 1 + T(nprobe B) + 1``, ``T`` =
    :func:`topk_rounds`; ``1 + T(C B) + 1`` for ``nprobe = C``. Key range (for ``checked_topk``):
    every key lies in ``[-2^(f-1), (||q||^2 + pad_sqnorm) 2^(2f)]``, below ``1.125 * 2^62`` for queries
    within ``layout.max_sqnorm`` (``pad_sqnorm <= 2^30``, ``f <= 16``): differences do not wrap.
    Error: distances within one ulp (``2^-f``) of the exact fixed-point value, ids exact for the
    fixed-point distances (exact integer keys).
    """
    if index.party_id != party.id:
        raise ValueError(f"index shares of server {index.party_id} given to party {party.id}")
    if query.party is not party or log.party is not party:
        raise ValueError("query shares or log of another party/session")
    squeeze = len(query.shape) == 1
    if squeeze:
        query = query.unsqueeze(0)
    f, C, B, d = index.frac_bits, index.n_centroids, index.bucket_size, index.dim
    if len(query.shape) != 2 or query.shape[-1] != d or query.frac_bits != f:
        raise ValueError(f"query must be [Q, {d}] at {f} fractional bits")
    if not 1 <= nprobe <= C:
        raise ValueError(f"need 1 <= nprobe <= C = {C}")
    if not 1 <= k <= nprobe * B:
        raise ValueError(f"need 1 <= k <= nprobe * B = {nprobe * B}")
    Q, W = query.shape[0], d + RECORD_EXTRA
    rows = ArithmeticShares(party, *index.rows, 0)  # [C, B W]
    if nprobe < C:
        cent = ArithmeticShares(party, *index.centroids, f)
        csq = ArithmeticShares(party, *index.centroid_sqnorm, f)
        ckeys = _keys(query, cent, csq, log)  # [Q, C]
        cid = public_shares(party, torch.arange(C, dtype=torch.int64).expand(Q, C).contiguous())
        _, (probe,) = checked_topk(ckeys, [cid], nprobe, log)  # [Q, nprobe]
        onehot = checked_eqz(probe.unsqueeze(-1) - torch.arange(C, dtype=torch.int64), log)  # [Q, nprobe, C]
        fetched = checked_matmul(onehot.reshape(Q * nprobe, C), rows, log).reshape(Q, nprobe * B, W)
    else:
        fetched = rows.reshape(1, C * B, W)
    X = ArithmeticShares(party, fetched.lo[..., :d], fetched.hi[..., :d], f)
    sq = ArithmeticShares(party, fetched.lo[..., d], fetched.hi[..., d], f)
    ids = ArithmeticShares(party, fetched.lo[..., d + 1], fetched.hi[..., d + 1], 0)
    M = X.shape[-2]
    keys = _keys(query, X, sq, log)  # [Q, M] at 2f
    ids, sq = ids.expand(Q, M), sq.expand(Q, M)
    kk, (ik, sk) = checked_topk(keys, [ids, sq], k, log)
    cross = kk - ArithmeticShares(party, sk.lo << f, sk.hi << f, 2 * f)  # ||q||^2 - 2 q.x at 2f
    t = checked_truncate(cross, f, log)
    dist = ArithmeticShares(party, t.lo, t.hi, f) + sk
    if squeeze:
        return ik[0], dist[0]
    return ik, dist


def checked_mask_hidden(ids: ArithmeticShares, dist: ArithmeticShares, hidden: list[int],
                        log: ProductLog) -> tuple[ArithmeticShares, ArithmeticShares]:
    """:func:`servers.query.mask_hidden`, checked: result ids in the public list ``hidden`` become -1 with
    distance 0, obliviously. ``bad = sum_j [id - h_j == 0]`` (ONE :func:`checked_eqz` over all results
    and hidden ids), then ``id' = (1 - bad)(id + 1) - 1`` and ``dist' = (1 - bad) dist`` (ONE stacked
    :func:`checked_mul`). Rounds: 12 (none when ``hidden`` is empty); elements per party: a
    ``checked_eqz`` per (result, hidden id) and two per result. Exact."""
    h = torch.tensor(sorted(set(int(v) for v in hidden)), dtype=torch.int64)
    if len(h) == 0:
        return ids, dist
    if tuple(ids.shape) != tuple(dist.shape) or ids.frac_bits:
        raise ValueError("checked_mask_hidden: integer ids and distances of one shape")
    party = ids.party
    diff = ids.unsqueeze(-1).expand(*ids.shape, len(h)) - h
    hits = checked_eqz(diff, log)
    bad = ArithmeticShares(party, hits.lo.sum(-1), hits.hi.sum(-1), 0)
    ok = 1 - bad
    vals = ArithmeticShares(party, torch.stack([ids.add_public(1).lo, dist.lo]),
                            torch.stack([ids.add_public(1).hi, dist.hi]), 0)
    both = checked_mul(ok.unsqueeze(0), vals, log)
    return (ArithmeticShares(party, both.lo[0], both.hi[0], 0).add_public(-1),
            ArithmeticShares(party, both.lo[1], both.hi[1], dist.frac_bits))
