"""The k-nearest-neighbour search with security with abort: top-k, probe selection, oblivious fetch and
result masking built ONLY from the checked gates of :mod:`protocols.checked` and
:mod:`protocols.checked_compare` (plus local linear operations), so :func:`protocols.dzk.verify_products`
covers every message. The semi-honest :func:`protocols.search.secure_search` uses table-OT gates
(top-k, one-hot) that the proofs do not cover; this module replaces them.

* :func:`checked_topk`: the ``k`` smallest keys of each row, ascending, payloads carried along.
  A merge tree: every level merges groups of up to 4 sorted lists, keeping the first
  ``K = min(total, k)`` outputs, with ONE :func:`checked_ltz` over all comparisons of the level (all
  rows, all merges). No data-dependent indexing: in two sorted lists ``A``, ``B`` the comparison
  bits ``c_ij = [b_j < a_i]`` are monotone (non-increasing in ``j``, non-decreasing in ``i``), so
  "exactly ``t`` elements of ``B`` precede ``a_i``" is the LOCAL difference ``c_{i,t-1} - c_{i,t}``
  (likewise for ``b_j``), and only the pairs with ``i + j < K`` matter. An element's rank in the
  merge is its position plus its counts in the other lists: the one-hot of the rank is the
  convolution of the count one-hots (``ceil(log2(g - 1))`` product rounds for ``g`` lists), and
  output ``p`` is ``sum_e [rank_e = p] v_e``, one grouped checked convolution. 13 rounds per level
  that divides the lists by 4, against 11 per halving (22 per division by 4) for a merge of two.
* :func:`checked_search`: as ``secure_search`` (same results up to fixed point), every step checked.
* :func:`checked_mask_hidden`: as ``servers.query.mask_hidden``, checked.

Nothing here is verified until ``verify_products(log)`` has run; reveal nothing before it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from .checked import checked_conv2d, checked_matmul, checked_mul, checked_truncate
from .checked_compare import checked_eqz, checked_ltz
from .dzk import ProductLog
from .layout import RECORD_EXTRA, IndexShares
from .party import Party
from .sharing import ArithmeticShares, public_shares

LTZ_ROUNDS = 10  # checked_ltz
FAN_IN = 4
"""Lists merged at once by a level of :func:`checked_topk` (the last level may merge fewer)."""


def _depth(g: int) -> int:
    """Product rounds that combine the ``g - 1`` count one-hots of an element in a merge of ``g`` lists."""
    return (g - 2).bit_length() if g > 1 else 0


def onehot_rounds(n_centroids: int) -> int:
    """Rounds of the probe one-hot (:func:`_onehot_from_bits`): ``ceil(log2 L)``, ``L`` the bits of ``C - 1``."""
    return (max(1, (n_centroids - 1).bit_length()) - 1).bit_length()


def topk_rounds(n: int) -> int:
    """Rounds of :func:`checked_topk` over ``n`` keys per row (any ``k``): ``sum over levels of 11 +
    ceil(log2(g - 1))``, ``g`` the most lists one merge of the level takes (``FAN_IN = 4`` but for a
    last level of 2 or 3): 13 per level, ``ceil(log4 n)`` levels (0 rounds for ``n = 1``)."""
    rounds, lists = 0, n
    while lists > 1:
        rounds += LTZ_ROUNDS + _depth(min(FAN_IN, lists)) + 1
        lists = -(-lists // FAN_IN)
    return rounds


def search_rounds(n_centroids: int, bucket_size: int, nprobe: int) -> int:
    """Rounds of :func:`checked_search` (before ``verify_products``): ``1 + T(C) + O(C) + 1 + 1 + T(nprobe B) + 1``
    (centroid keys, top-nprobe, one-hot, fetch, record keys, top-k, truncation) with ``T`` =
    :func:`topk_rounds` and ``O`` = :func:`onehot_rounds`; ``1 + T(C B) + 1`` when ``nprobe = C``."""
    if nprobe == n_centroids:
        return 1 + topk_rounds(n_centroids * bucket_size) + 1
    return 1 + topk_rounds(n_centroids) + onehot_rounds(n_centroids) + 1 + 1 + topk_rounds(nprobe * bucket_size) + 1


def _t(v: list[int]) -> torch.Tensor:
    return torch.tensor(v, dtype=torch.int64)


@dataclass(frozen=True)
class _Round:
    """One product round of the count one-hots: ``new[tgt] += cur[u] * cur[v]``, ``new[ctgt] += cur[csrc]``."""

    size: int
    u: torch.Tensor
    v: torch.Tensor
    tgt: torch.Tensor
    csrc: torch.Tensor
    ctgt: torch.Tensor


@dataclass(frozen=True)
class _Merge:
    """A merge of sorted lists of lengths ``lens`` (stored back to back) keeping the first ``K`` of the union
    (public; indices local to the merge). Comparisons ``c = [key[ib] < key[ia]]`` (``ia`` in an earlier
    list). For every element ``e = (list l, position i)`` and every other list, the one-hot of how many
    elements of that list precede ``e`` (up to ``K - 1 - i``): LOCAL, a difference of two monotone
    comparison bits, ``H = h_const + sum h_sign c[h_src]`` at ``h_tgt``. ``rounds`` convolve an element's
    one-hots pairwise (truncated at ``K - i``) into the one-hot ``R`` of its rank minus ``i``; output
    ``p`` is ``sum_e R_e[p - i] v_e``: ``W[r_p, r_e] = R[r_src]``."""

    lens: tuple[int, ...]
    K: int
    ia: torch.Tensor
    ib: torch.Tensor
    h_size: int
    h_const: torch.Tensor
    h_tgt: torch.Tensor
    h_src: torch.Tensor
    h_sign: torch.Tensor
    rounds: tuple[_Round, ...]
    r_src: torch.Tensor
    r_p: torch.Tensor
    r_e: torch.Tensor


@functools.lru_cache(maxsize=256)
def _merge(lens: tuple[int, ...], K: int) -> _Merge:
    g = len(lens)
    offs = [sum(lens[:m]) for m in range(g)]
    cidx: dict[tuple[int, int, int, int], int] = {}
    ia: list[int] = []
    ib: list[int] = []
    for la in range(g):
        for lb in range(la + 1, g):
            for i in range(lens[la]):
                for j in range(min(lens[lb], K - i)):  # i + j <= K - 1
                    cidx[(la, lb, i, j)] = len(ia)
                    ia.append(offs[la] + i)
                    ib.append(offs[lb] + j)
    const: list[int] = []
    tgt: list[int] = []
    src: list[int] = []
    sign: list[int] = []
    vecs: dict[int, list[tuple[int, int]]] = {}
    pos: dict[int, int] = {}
    for la in range(g):
        for i in range(lens[la]):
            e = offs[la] + i
            pos[e], vecs[e] = i, []
            for lb in range(g):
                if lb == la:
                    continue
                n_t, start = min(lens[lb], K - 1 - i) + 1, len(const)
                const.extend([0] * n_t)
                for t in range(n_t):
                    # e before list lb: [count = t] = c(i, t-1) - c(i, t), c(i, -1) = 1, c(i, len) = 0;
                    # e after it: [count = t] = c(t, i) - c(t-1, i), c(-1, i) = 0, c(len, i) = 1
                    terms = ((t - 1, 1), (t, -1)) if la < lb else ((t, 1), (t - 1, -1))
                    for m, sg in terms:
                        if m == -1 and la < lb:
                            const[start + t] += sg
                        elif m == lens[lb] and la > lb:
                            const[start + t] += sg
                        elif 0 <= m < lens[lb]:
                            tgt.append(start + t)
                            src.append(cidx[(la, lb, i, m) if la < lb else (lb, la, m, i)])
                            sign.append(sg)
                vecs[e].append((start, n_t))
    rounds = []
    while any(len(v) > 1 for v in vecs.values()):
        u: list[int] = []
        v: list[int] = []
        pt: list[int] = []
        cs: list[int] = []
        ct: list[int] = []
        new = 0
        for e, vl in vecs.items():
            nv = []
            for m in range(0, len(vl), 2):
                (xs, xl) = vl[m]
                if m + 1 == len(vl):
                    cs.extend(range(xs, xs + xl))
                    ct.extend(range(new, new + xl))
                    nv.append((new, xl))
                    new += xl
                    continue
                (ys, yl) = vl[m + 1]
                n_out = min(xl + yl - 1, K - pos[e])
                for a in range(xl):
                    for b in range(min(yl, n_out - a)):
                        u.append(xs + a)
                        v.append(ys + b)
                        pt.append(new + a + b)
                nv.append((new, n_out))
                new += n_out
            vecs[e] = nv
        rounds.append(_Round(new, _t(u), _t(v), _t(pt), _t(cs), _t(ct)))
    r_src: list[int] = []
    r_p: list[int] = []
    r_e: list[int] = []
    for e, ((start, n), ) in vecs.items():
        for t in range(n):
            r_src.append(start + t)
            r_p.append(pos[e] + t)
            r_e.append(e)
    return _Merge(lens, K, _t(ia), _t(ib), len(const), _t(const), _t(tgt), _t(src), _t(sign), tuple(rounds),
                  _t(r_src), _t(r_p), _t(r_e))


@dataclass(frozen=True)
class _Level:
    """One level of :func:`checked_topk` over all merges (indices into the flat layout of the lists)."""

    lengths: tuple[int, ...]  # the new lists
    ia: torch.Tensor
    ib: torch.Tensor
    h_size: int
    h_const: torch.Tensor
    h_tgt: torch.Tensor
    h_src: torch.Tensor
    h_sign: torch.Tensor
    rounds: tuple[_Round, ...]
    groups: int  # merges of two lists or more: one convolution group each
    k_max: int
    s_max: int
    w_src: torch.Tensor  # W [groups, k_max, s_max] (flat) at w_at gets R[w_src]
    w_at: torch.Tensor
    x_src: torch.Tensor  # the convolution's input [groups, s_max] from the flat layout (n_old: zero)
    out_src: torch.Tensor  # new flat layout: from the convolution's output [groups, k_max] ...
    out_at: torch.Tensor
    pass_src: torch.Tensor  # ... or passed through from the old layout
    pass_at: torch.Tensor


def _identity_round(size: int) -> _Round:
    e = torch.empty(0, dtype=torch.int64)
    return _Round(size, e, e, e, torch.arange(size), torch.arange(size))


@functools.lru_cache(maxsize=64)
def _plan(n: int, k: int, fan_in: int) -> tuple[_Level, ...]:
    """The levels of :func:`checked_topk` for ``n`` keys, public sizes only."""
    levels = []
    lengths = (1,) * n
    while len(lengths) > 1:
        chunks = [lengths[m: m + fan_in] for m in range(0, len(lengths), fan_in)]
        merges = [_merge(c, min(sum(c), k)) if len(c) > 1 else None for c in chunks]
        depth = max(len(m.rounds) for m in merges if m is not None)
        k_max = max(m.K for m in merges if m is not None)
        s_max = max(sum(m.lens) for m in merges if m is not None)
        n_old = sum(lengths)
        ia, ib, hc, ht, hs, hg = [], [], [], [], [], []
        rparts: list[list[tuple[_Round, int, int]]] = [[] for _ in range(depth)]
        w_src, w_at, x_src, out_src, out_at, pass_src, pass_at = [], [], [], [], [], [], []
        off = noff = c_off = h_off = grp = 0
        new_lengths = []
        for chunk, m in zip(chunks, merges):
            if m is None:
                pass_src.append(torch.arange(off, off + chunk[0]))
                pass_at.append(torch.arange(noff, noff + chunk[0]))
                new_lengths.append(chunk[0])
                off += chunk[0]
                noff += chunk[0]
                continue
            ia.append(m.ia + off)
            ib.append(m.ib + off)
            hc.append(m.h_const)
            ht.append(m.h_tgt + h_off)
            hs.append(m.h_src + c_off)
            hg.append(m.h_sign)
            rounds = list(m.rounds)
            size = m.h_size
            rounds += [_identity_round(rounds[-1].size if rounds else size)] * (depth - len(rounds))
            for r, rd in enumerate(rounds):
                rparts[r].append((rd, size, rd.size))
                size = rd.size
            w_src.append(m.r_src)
            w_at.append((grp * k_max + m.r_p) * s_max + m.r_e)
            s = sum(m.lens)
            x_src.append(torch.cat([torch.arange(off, off + s), torch.full((s_max - s,), n_old)]))
            out_src.append(torch.arange(grp * k_max, grp * k_max + m.K))
            out_at.append(torch.arange(noff, noff + m.K))
            new_lengths.append(m.K)
            off += s
            noff += m.K
            c_off += len(m.ia)
            h_off += m.h_size
            grp += 1
        # the rounds' arrays are the merges' arrays back to back: shift every merge's indices
        rounds_all = []
        for r in range(depth):
            cur_off = new_off = 0
            us, vs, ts, css, cts = [], [], [], [], []
            for rd, cur, new in rparts[r]:
                us.append(rd.u + cur_off)
                vs.append(rd.v + cur_off)
                ts.append(rd.tgt + new_off)
                css.append(rd.csrc + cur_off)
                cts.append(rd.ctgt + new_off)
                cur_off += cur
                new_off += new
            rounds_all.append(_Round(new_off, *(torch.cat(x) for x in (us, vs, ts, css, cts))))
        # R (the last array) of a merge starts where the previous merges' last arrays end
        sizes = [rd[2] for rd in rparts[-1]] if depth else [len(t) for t in hc]
        w_src = [w + sum(sizes[:j]) for j, w in enumerate(w_src)]
        empty = torch.empty(0, dtype=torch.int64)
        levels.append(_Level(
            tuple(new_lengths), torch.cat(ia), torch.cat(ib), h_off, torch.cat(hc), torch.cat(ht), torch.cat(hs),
            torch.cat(hg), tuple(rounds_all), grp, k_max, s_max, torch.cat(w_src), torch.cat(w_at), torch.cat(x_src),
            torch.cat(out_src), torch.cat(out_at), torch.cat(pass_src) if pass_src else empty,
            torch.cat(pass_at) if pass_at else empty))
        lengths = tuple(new_lengths)
    return tuple(levels)


def checked_topk(keys: ArithmeticShares, payloads: list[ArithmeticShares], k: int,
                 log: ProductLog) -> tuple[ArithmeticShares, list[ArithmeticShares]]:
    """The ``k`` smallest of each row of ``keys [Q, n]``, ascending (ties: the smaller position first),
    and the matching entries of every payload ``[Q, n]`` (any scales; kept). Recorded in ``log``.

    Keys are compared by the sign of their ring difference (:func:`checked_ltz`), exact when every
    difference of two keys is below ``2^63`` in absolute value (e.g. all keys in ``[-2^62, 2^62)``, or
    all in ``[0, 2^63)``).

    Steps: a merge tree over sorted lists (first the ``n`` single keys), each level merging up to
    ``FAN_IN = 4`` consecutive lists and keeping the first ``K = min(total, k)`` of each merge
    (:class:`_Merge`): ONE :func:`checked_ltz` over the compared pairs of every row and merge (the pairs
    ``(a_i, b_j)`` of two lists with ``i + j < K``), the count one-hots from the comparison bits (local),
    ``ceil(log2(g - 1))`` rounds of ONE :func:`checked_mul` each to convolve them into rank one-hots
    (none for two lists), and ONE grouped :func:`checked_conv2d` (a group per row and merge) that
    places the ``1 + len(payloads)`` carried values: one element per output and value.

    Rounds: :func:`topk_rounds`, ``13 ceil(log4 n)`` (a last level of 2 or 3 lists: 11 or 12).
    Elements per party: per level a ``checked_ltz`` per compared pair (about 8.9), the convolution
    products, and ``(1 + len(payloads))`` per kept output. Exact (no fixed-point error).
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
    T = len(items)
    lo = torch.stack([x.lo for x in items])  # [T, Q, n]
    hi = torch.stack([x.hi for x in items])
    for lv in _plan(n, k, FAN_IN):
        key = ArithmeticShares(party, lo[0], hi[0], 0)
        c = checked_ltz(key[:, lv.ib] - key[:, lv.ia], log)  # [Q, P]: 1 where the later list's key is smaller
        h_lo, h_hi = (torch.zeros(Q, lv.h_size, dtype=torch.int64).index_add_(-1, lv.h_tgt, t[:, lv.h_src] * lv.h_sign)
                      for t in (c.lo, c.hi))
        h = ArithmeticShares(party, h_lo, h_hi, 0).add_public(lv.h_const.expand(Q, -1))
        for rd in lv.rounds:
            prod = checked_mul(h[:, rd.u], h[:, rd.v], log) if len(rd.u) else None
            nxt = []
            for side in ("lo", "hi"):
                acc = torch.zeros(Q, rd.size, dtype=torch.int64)
                if prod is not None:
                    acc.index_add_(-1, rd.tgt, getattr(prod, side))
                acc.index_add_(-1, rd.ctgt, getattr(h, side)[:, rd.csrc])
                nxt.append(acc)
            h = ArithmeticShares(party, nxt[0], nxt[1], 0)
        G, Km, Sm = lv.groups, lv.k_max, lv.s_max
        w_lo, w_hi = (torch.zeros(Q, G * Km * Sm, dtype=torch.int64).index_copy_(-1, lv.w_at, t[:, lv.w_src])
                      for t in (h.lo, h.hi))
        w = ArithmeticShares(party, w_lo.view(Q * G * Km, Sm, 1, 1), w_hi.view(Q * G * Km, Sm, 1, 1), 0)
        pad = torch.zeros(T, Q, 1, dtype=torch.int64)
        x_lo, x_hi = (torch.cat([t, pad], -1)[..., lv.x_src].reshape(T, Q * G * Sm, 1, 1) for t in (lo, hi))
        out = checked_conv2d(ArithmeticShares(party, x_lo, x_hi, 0), w, log, groups=Q * G).reshape(T, Q, G * Km)
        n_new = sum(lv.lengths)
        new = []
        for t, o in ((lo, out.lo), (hi, out.hi)):
            acc = torch.empty(T, Q, n_new, dtype=torch.int64)
            acc[..., lv.out_at] = o[..., lv.out_src]
            acc[..., lv.pass_at] = t[..., lv.pass_src]
            new.append(acc)
        lo, hi = new
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


def _onehot_from_bits(bits: list[ArithmeticShares], C: int, log: ProductLog) -> ArithmeticShares:
    """``[R, C]`` one-hot of the numbers whose 0/1 bits (least significant first, ``[R]`` each) are ``bits``.
    A tree: the one-hot of bit ``j`` is ``[1 - b_j, b_j]`` (local); a node's one-hot is the outer product
    of its halves' (``ceil(log2 L)`` rounds of ONE :func:`checked_mul` each; the last one only for the
    numbers below ``C``). Elements per party: at most ``C + 2^(L/2 + 1) + ...`` per row, about
    ``1.3 C`` at ``C = 1000``. Exact."""
    party = bits[0].party
    nodes = [ArithmeticShares(party, torch.stack([-b.lo, b.lo], 1), torch.stack([-b.hi, b.hi], 1), 0).add_public(
        torch.tensor([1, 0], dtype=torch.int64)) for b in bits]
    while len(nodes) > 1:
        pairs = [(nodes[m], nodes[m + 1]) for m in range(0, len(nodes) - 1, 2)]
        last = len(nodes) == 2
        lefts, rights, widths = [], [], []
        for low, high in pairs:
            R, wl, wh = low.shape[0], low.shape[1], high.shape[1]
            width = min(wl * wh, C) if last else wl * wh
            lefts.append((high.lo.unsqueeze(2).expand(R, wh, wl).reshape(R, -1)[:, :width],
                          high.hi.unsqueeze(2).expand(R, wh, wl).reshape(R, -1)[:, :width]))
            rights.append((low.lo.unsqueeze(1).expand(R, wh, wl).reshape(R, -1)[:, :width],
                           low.hi.unsqueeze(1).expand(R, wh, wl).reshape(R, -1)[:, :width]))
            widths.append(width)
        a = ArithmeticShares(party, torch.cat([t[0] for t in lefts], 1), torch.cat([t[1] for t in lefts], 1), 0)
        b = ArithmeticShares(party, torch.cat([t[0] for t in rights], 1), torch.cat([t[1] for t in rights], 1), 0)
        prod = checked_mul(a, b, log)
        out, off = [], 0
        for width in widths:
            out.append(prod[:, off: off + width])
            off += width
        if len(nodes) % 2:
            out.append(nodes[-1])
        nodes = out
    return nodes[0][:, :C]


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
    2. Top-nprobe by :func:`checked_topk` with the ``L`` bits of the centroid numbers as payloads.
    3. One-hot ``[Q nprobe, C]`` from those bits (:func:`_onehot_from_bits`, ``ceil(log2 L)`` rounds,
       about ``1.3 C`` elements per probe): cheaper than ``checked_eqz(probe - c)`` (11 rounds,
       two ``checked_ltz`` per centroid and probe) for the price of ``L`` payloads in the top-nprobe.
    4. Fetch by ``checked_matmul(one-hot, rows [C, B (d + 2)])`` (1 round, ``Q nprobe B (d + 2)``).
    5. Record keys as in 1 (1 round, ``Q M``).
    6. :func:`checked_topk` of the keys with payloads ``(id, ||x||^2)``.
    7. ``dist = trunc(key - 2^f ||x||^2, f) + ||x||^2`` by :func:`checked_truncate` on the ``Q k``
       outputs only (1 round): the comparisons see the exact keys, and the truncated value is
       ``||q||^2 - 2 q . x``, not the padding's huge distance (the truncation's rare large error,
       probability ``|z| / 2^63``, stays that of ``secure_search``).

    ``nprobe = C``: steps 1-4 are skipped, every record is a candidate (bucket order).

    Rounds (:func:`search_rounds`): ``1 + T(C) + ceil(log2 L) + 1 + 1 + T(nprobe B) + 1``, ``T`` =
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
        numbers = torch.arange(C, dtype=torch.int64)
        bits = [public_shares(party, ((numbers >> j) & 1).expand(Q, C).contiguous())
                for j in range(max(1, (C - 1).bit_length()))]
        _, probe_bits = checked_topk(ckeys, bits, nprobe, log)  # L x [Q, nprobe]
        onehot = _onehot_from_bits([b.reshape(Q * nprobe) for b in probe_bits], C, log)  # [Q nprobe, C]
        fetched = checked_matmul(onehot, rows, log).reshape(Q, nprobe * B, W)
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
