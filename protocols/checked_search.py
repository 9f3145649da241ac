"""The k-nearest-neighbour search with security with abort: top-k, probe selection, oblivious fetch and
result masking built ONLY from the checked gates of :mod:`protocols.checked` and
:mod:`protocols.checked_compare` (plus local linear operations), so :func:`protocols.dzk.verify_products`
covers every message. The semi-honest :func:`protocols.search.secure_search` uses table-OT gates
(top-k, one-hot) that the proofs do not cover; this module replaces them.

* :func:`checked_topk`: the ``k`` smallest keys of each row, ascending, payloads carried along.
  A merge tree: every level merges groups of up to :data:`FAN_IN` (2) sorted lists, keeping the first
  ``K = min(total, k)`` outputs, with ONE :func:`checked_ltz` over all comparisons of the level (all
  rows, all merges). No data-dependent indexing: in two sorted lists ``A``, ``B`` the comparison
  bits ``c_ij = [b_j < a_i]`` are monotone (non-increasing in ``j``, non-decreasing in ``i``), so
  "exactly ``t`` elements of ``B`` precede ``a_i``" is the LOCAL difference ``c_{i,t-1} - c_{i,t}``
  (likewise for ``b_j``), and only the pairs with ``i + j < K`` matter. An element's rank in the
  merge is its position plus its counts in the other lists: the one-hot of the rank is the
  convolution of the count one-hots, and output ``p`` is ``sum_e [rank_e = p] v_e``. A tree of
  products computes it, its root one grouped checked convolution: 12 rounds per level that divides
  the lists by 4 when the carried values join the tree as a leaf (at most 3 values), 13 when they
  join at the root, against 11 per halving (22 per division by 4) for merges of two lists (the
  default: fewer products to prove; see :data:`FAN_IN`).
* :func:`checked_search`: as ``secure_search`` (same results up to fixed point), every step checked.
* :func:`checked_mask_hidden`: as ``servers.query.mask_hidden``, checked.

Nothing here is verified until ``verify_products(log)`` has run; reveal nothing before it.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass

import torch

from .approx import cat
from .checked import checked_conv2d, checked_matmul, checked_mul, checked_truncate
from .checked_compare import checked_eqz, checked_ltz
from .dzk import ProductLog
from .layout import RECORD_EXTRA, IndexShares, pad_sqnorm
from .party import Party
from .sharing import ArithmeticShares, public_shares

LTZ_ROUNDS = 10  # checked_ltz
FAN_IN = 2
"""Lists merged at once by a level of :func:`checked_topk` (the last level may merge fewer). 4 halves the
merge tree's rounds (12-13 per division by 4 against 22) for about 1.5x the comparisons and 4x the rank
one-hots' products, which the proof pays in CPU. Measured (``benchmarks.security`` search_modes, n =
100,000, nprobe 64, k 10, three in-process parties on an idle 2-core EPYC, 2026-12-03): fan-in 2 takes
46.7 s, 347 rounds and 44.0 MB per party, fan-in 4 130.1 s, 327 rounds and 69.8 MB (the 20 rounds fan-in 4
saves are worth 2 s at a 200 ms round trip); at n = 5,000: 11.0 s, 281 rounds, 9.6 MB against 15.7 s, 196
rounds, 14.6 MB, even at a 100 ms round trip (cost model: 25.8 against 26.7 s)."""
LEAF_VALUES = 3
"""Up to this many carried values (key and payloads) join the merge tree as a leaf: one round less per
level of 4 lists, for ``T (K - i)`` products per element instead of a second convolution of count
one-hots (about ``(K - i)^2 / 2``): fewer products too when ``T <= K / 3``, e.g. the search's record
top-k (key, id, ``||x||^2``) at ``k = 10``; more values (the top-nprobe's bits) join at the root."""


DIGIT_BITS = 5
"""The centroid numbers travel through the top-nprobe as the one-hots of their digits of at most this
many bits (32 payloads per digit): ``D = ceil(L / 5)`` digits for ``L`` bits, and the probe one-hot
is their outer product (``ceil(log2 D)`` rounds; 1 at C = 1000)."""


def _digits(n_centroids: int) -> list[tuple[int, int]]:
    """``(shift, bits)`` of the digits of the centroid numbers, least significant first (near-equal widths)."""
    L = max(1, (n_centroids - 1).bit_length())
    D = -(-L // DIGIT_BITS)
    widths = [L // D + (1 if j < L % D else 0) for j in range(D)]
    return [(sum(widths[:j]), w) for j, w in enumerate(widths)]


def onehot_rounds(n_centroids: int) -> int:
    """Rounds of the probe one-hot (:func:`_onehot_from_digits`): ``ceil(log2 D)``, ``D`` the digits."""
    return (len(_digits(n_centroids)) - 1).bit_length()


def _digit_values(n_centroids: int) -> int:
    """Payloads of the top-nprobe: ``sum over digits of 2^bits`` (64 at C = 1000)."""
    return sum(1 << w for _, w in _digits(n_centroids))


def topk_rounds(n: int, values: int = 1) -> int:
    """Rounds of :func:`checked_topk` over ``n`` keys per row carrying ``values = 1 + len(payloads)`` (any
    ``k``): ``sum over levels of 11 + D``, ``D`` the product rounds of the level's tree for its largest
    merge of ``g`` lists: ``ceil(log2 g) - 1`` when the values join the tree as a leaf (at most
    :data:`LEAF_VALUES` of them), else ``ceil(log2(g - 1))``. With ``FAN_IN = 2`` (the default): 11 per
    level, ``ceil(log2 n)`` levels; with 4: 12 or 13 per level (11 for a last level of 2 lists),
    ``ceil(log4 n)`` levels; 0 for ``n = 1``."""
    rounds, lists = 0, n
    while lists > 1:
        g = min(FAN_IN, lists)
        rounds += LTZ_ROUNDS + 1 + ((g - 1).bit_length() - 1 if values <= LEAF_VALUES else (g - 2).bit_length())
        lists = -(-lists // FAN_IN)
    return rounds


def search_rounds(n_centroids: int, bucket_size: int, nprobe: int, dim: int) -> int:
    """Rounds of :func:`checked_search` (before ``verify_products``; any ``k`` and number of queries):
    ``1 + T(C, 1 + V) + O(C) + 1 + T(nprobe B, 3) + 1`` when :func:`keys_first` (all keys, top-nprobe
    carrying the ``V`` digit one-hot values of the centroid numbers, one-hot, fetch of the probed keys,
    top-k carrying id and ``||x||^2``, truncation), one more otherwise (centroid keys, fetch of the rows,
    their keys), with ``T`` = :func:`topk_rounds` and ``O`` = :func:`onehot_rounds`; ``1 + T(C B, 3) + 1``
    when ``nprobe = C``. At C = 1000, nprobe = 8, B = 100, d = 128 (keys first):
    ``1 + 110 + 1 + 1 + 110 + 1 = 224``."""
    if nprobe == n_centroids:
        return 1 + topk_rounds(n_centroids * bucket_size, 3) + 1
    fetch = 1 if keys_first(n_centroids, nprobe, dim) else 2
    return (1 + topk_rounds(n_centroids, 1 + _digit_values(n_centroids)) + onehot_rounds(n_centroids) + fetch
            + topk_rounds(nprobe * bucket_size, 3) + 1)


def _t(v: list[int]) -> torch.Tensor:
    return torch.tensor(v, dtype=torch.int64)


_EMPTY = torch.empty(0, dtype=torch.int64)


@dataclass(frozen=True)
class _Round:
    """One product round of the tree: ``new[tgt] += cur[u] * cur[v]``, ``new[ctgt] += cur[csrc]``."""

    size: int
    u: torch.Tensor
    v: torch.Tensor
    tgt: torch.Tensor
    csrc: torch.Tensor
    ctgt: torch.Tensor


@dataclass(frozen=True)
class _Merge:
    """A merge of sorted lists of lengths ``lens`` (stored back to back) keeping the first ``K`` of the union,
    carrying ``T`` values per element (public; indices local to the merge).

    Comparisons ``c = [key[ib] < key[ia]]`` (``ia`` in an earlier list). For every element
    ``e = (list l, position i)`` and every other list, the one-hot of how many of that list's
    elements precede ``e`` (up to ``K - 1 - i``) is LOCAL, a difference of two monotone comparison
    bits: ``H = h_const + sum h_sign c[h_src]`` at ``h_tgt``. The tree's first array is ``H`` followed by
    the ``T`` values of every element (``v_at``: element-major). Its leaves, per element, are the
    ``g - 1`` one-hots and the values (last); ``rounds`` multiply pairs of nodes (a one-hot by a one-hot
    is their convolution truncated at ``K - i``; by the values' node, the same for each value) until
    two remain, the convolution ``X`` of some one-hots and the valued node ``Y``; the root is
    ``out[p, t] = sum_e sum_(a + b = p - i) X_e[a] Y_e[b, t]``: a grouped convolution with weights
    ``W[w_p, w_j] = A[w_src]`` (``A`` the last array) over the channels ``j = (e, b)``, whose inputs are
    ``A[x_src[j, t]]``."""

    lens: tuple[int, ...]
    K: int
    T: int
    ia: torch.Tensor
    ib: torch.Tensor
    h_size: int
    h_const: torch.Tensor
    h_tgt: torch.Tensor
    h_src: torch.Tensor
    h_sign: torch.Tensor
    rounds: tuple[_Round, ...]
    channels: int
    w_src: torch.Tensor
    w_p: torch.Tensor
    w_j: torch.Tensor
    x_src: torch.Tensor  # [channels, T]


@functools.lru_cache(maxsize=256)
def _merge(lens: tuple[int, ...], K: int, T: int, leaf: bool) -> _Merge:
    g = len(lens)
    offs = [sum(lens[:m]) for m in range(g)]
    S = offs[-1] + lens[-1]
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
    # nodes per element: (start, length, valued); a valued node holds T entries per position
    nodes: dict[int, list[tuple[int, int, bool]]] = {}
    pos: dict[int, int] = {}
    for la in range(g):
        for i in range(lens[la]):
            e = offs[la] + i
            pos[e], nodes[e] = i, []
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
                        if (m == -1 and la < lb) or (m == lens[lb] and la > lb):
                            const[start + t] += sg
                        elif 0 <= m < lens[lb]:
                            tgt.append(start + t)
                            src.append(cidx[(la, lb, i, m) if la < lb else (lb, la, m, i)])
                            sign.append(sg)
                nodes[e].append((start, n_t, False))
    h_size = len(const)
    for e in range(S):
        nodes[e].append((h_size + e * T, 1, True))
    rounds = []
    while any(len(nl) > 2 for nl in nodes.values()):
        u: list[int] = []
        v: list[int] = []
        pt: list[int] = []
        cs: list[int] = []
        ct: list[int] = []
        new = 0
        for e, nl in nodes.items():
            nn = []
            seq = nl if leaf else nl[:-1]  # the values join as a leaf, or wait for the root
            for m in range(0, len(seq), 2):
                xs, xl, xv = seq[m]
                if m + 1 == len(seq):
                    width = xl * (T if xv else 1)
                    cs.extend(range(xs, xs + width))
                    ct.extend(range(new, new + width))
                    nn.append((new, xl, xv))
                    new += width
                    continue
                ys, yl, yv = seq[m + 1]  # only the later node may be valued
                n_out = min(xl + yl - 1, K - pos[e])
                per = T if yv else 1
                for a in range(xl):
                    for b in range(min(yl, n_out - a)):
                        for r in range(per):
                            u.append(xs + a)
                            v.append(ys + b * per + r)
                            pt.append(new + (a + b) * per + r)
                nn.append((new, n_out, yv))
                new += n_out * per
            if not leaf:
                xs, xl, _ = nl[-1]
                cs.extend(range(xs, xs + xl * T))
                ct.extend(range(new, new + xl * T))
                nn.append((new, xl, True))
                new += xl * T
            nodes[e] = nn
        rounds.append(_Round(new, _t(u), _t(v), _t(pt), _t(cs), _t(ct)))
    w_src: list[int] = []
    w_p: list[int] = []
    w_j: list[int] = []
    x_src: list[list[int]] = []
    for e, nl in nodes.items():
        (xs, xl, _), (ys, yl, _) = nl if len(nl) == 2 else ((-1, 1, False), nl[0])
        j0 = len(x_src)
        for b in range(yl):
            x_src.append([ys + b * T + r for r in range(T)])
        for a in range(xl):
            for b in range(min(yl, K - pos[e] - a)):
                w_src.append(xs + a)  # -1: the constant 1 (a single list: no one-hot)
                w_p.append(pos[e] + a + b)
                w_j.append(j0 + b)
    return _Merge(lens, K, T, _t(ia), _t(ib), h_size, _t(const), _t(tgt), _t(src), _t(sign), tuple(rounds),
                  len(x_src), _t(w_src), _t(w_p), _t(w_j), torch.tensor(x_src, dtype=torch.int64).view(-1, T))


@dataclass(frozen=True)
class _Level:
    """One level of :func:`checked_topk` over all merges (indices into the flat layout of the lists; the
    tree's arrays are the merges' arrays back to back)."""

    lengths: tuple[int, ...]  # the new lists
    ia: torch.Tensor
    ib: torch.Tensor
    h_size: int
    h_const: torch.Tensor
    h_tgt: torch.Tensor
    h_src: torch.Tensor
    h_sign: torch.Tensor
    h_at: torch.Tensor  # first array: positions of the constants h_const
    v_at: torch.Tensor  # first array: positions of the merged elements' values (element-major) ...
    v_src: torch.Tensor  # ... from the old flat layout
    first_size: int
    rounds: tuple[_Round, ...]
    groups: int  # merges: one convolution group each (per row)
    k_max: int
    j_max: int
    w_src: torch.Tensor  # W [groups, k_max, j_max] (flat) at w_at gets A[w_src] (A the last array)
    w_at: torch.Tensor
    x_src: torch.Tensor  # the convolution's input [groups, j_max, T] from A (size of A: zero)
    out_src: torch.Tensor  # new flat layout: from the convolution's output [groups, k_max] ...
    out_at: torch.Tensor
    pass_src: torch.Tensor  # ... or passed through from the old layout
    pass_at: torch.Tensor


def _tile(t: torch.Tensor, base: int, stride: int, count: int) -> torch.Tensor:
    """``t + base + stride * r`` for ``r < count``, concatenated."""
    return (t.view(1, -1) + (base + stride * torch.arange(count)).view(-1, 1)).reshape(-1)


@functools.lru_cache(maxsize=64)
def _plan(n: int, k: int, T: int, fan_in: int) -> tuple[_Level, ...]:
    """The levels of :func:`checked_topk` for ``n`` keys carrying ``T`` values, public sizes only (consecutive
    merges of the same shape are tiled from one :class:`_Merge`)."""
    levels = []
    lengths = (1,) * n
    while len(lengths) > 1:
        chunks = [lengths[m: m + fan_in] for m in range(0, len(lengths), fan_in)]
        leaf = T <= LEAF_VALUES
        runs: list[tuple[tuple[int, ...], int]] = []  # (chunk, repeats)
        for c in chunks:
            if runs and runs[-1][0] == c:
                runs[-1] = (c, runs[-1][1] + 1)
            else:
                runs.append((c, 1))
        merges = {c: _merge(c, min(sum(c), k), T, leaf) for c, _ in runs if len(c) > 1}
        real = list(merges.values())
        depth = max(len(m.rounds) for m in real)
        k_max, j_max = max(m.K for m in real), max(m.channels for m in real)

        def sizes(m: _Merge, depth: int = depth) -> list[int]:
            z = [m.h_size + sum(m.lens) * T] + [rd.size for rd in m.rounds]
            return z + [z[-1]] * (depth - len(m.rounds))

        parts: dict[str, list[torch.Tensor]] = {name: [] for name in (
            "ia", "ib", "h_const", "h_tgt", "h_src", "h_sign", "h_at", "v_at", "v_src", "w_src", "w_at", "x_src",
            "out_src", "out_at", "pass_src", "pass_at")}
        rparts: list[list[list[torch.Tensor]]] = [[[], [], [], [], []] for _ in range(depth)]
        # running offsets: old layout, new layout, comparisons, group, first array, each round's array
        off = noff = c_off = grp = 0
        a_off = [0] * (depth + 1)
        # the last array's size (A), for the padding index: first a pass to size everything
        a_size = sum(sizes(merges[c])[-1] * r for c, r in runs if len(c) > 1)
        new_lengths: list[int] = []
        for c, r in runs:
            if len(c) == 1:
                parts["pass_src"].append(_tile(torch.arange(c[0]), off, c[0], r))
                parts["pass_at"].append(_tile(torch.arange(c[0]), noff, c[0], r))
                new_lengths += [c[0]] * r
                off, noff = off + c[0] * r, noff + c[0] * r
                continue
            m = merges[c]
            s, z = sum(m.lens), sizes(m)
            P = len(m.ia)
            parts["ia"].append(_tile(m.ia, off, s, r))
            parts["ib"].append(_tile(m.ib, off, s, r))
            parts["h_const"].append(m.h_const.repeat(r))
            parts["h_tgt"].append(_tile(m.h_tgt, a_off[0], z[0], r))
            parts["h_src"].append(_tile(m.h_src, c_off, P, r))
            parts["h_sign"].append(m.h_sign.repeat(r))
            parts["h_at"].append(_tile(torch.arange(m.h_size), a_off[0], z[0], r))
            parts["v_at"].append(_tile(torch.arange(m.h_size, z[0]), a_off[0], z[0], r))
            parts["v_src"].append(_tile(torch.arange(s), off, s, r))
            for d in range(depth):
                if d < len(m.rounds):
                    rd = m.rounds[d]
                    us, vs, ts, css, cts = rd.u, rd.v, rd.tgt, rd.csrc, rd.ctgt
                else:
                    us = vs = ts = _EMPTY
                    css = cts = torch.arange(z[d])
                for lst, t, base, stride in zip(rparts[d], (us, vs, ts, css, cts),
                                                (a_off[d], a_off[d], a_off[d + 1], a_off[d], a_off[d + 1]),
                                                (z[d], z[d], z[d + 1], z[d], z[d + 1])):
                    lst.append(_tile(t, base, stride, r))
            parts["w_src"].append(torch.where(m.w_src < 0, a_size, _tile(m.w_src, a_off[depth], z[depth], r).view(
                r, -1)).reshape(-1))
            parts["w_at"].append(_tile(m.w_p * j_max + m.w_j, grp * k_max * j_max, k_max * j_max, r))
            xs = torch.full((j_max, T), -1, dtype=torch.int64)
            xs[: m.channels] = m.x_src
            xt = _tile(xs.view(-1), a_off[depth], z[depth], r)
            parts["x_src"].append(torch.where(xs.view(-1).repeat(r) < 0, a_size, xt))
            parts["out_src"].append(_tile(torch.arange(m.K), grp * k_max, k_max, r))
            parts["out_at"].append(_tile(torch.arange(m.K), noff, m.K, r))
            new_lengths += [m.K] * r
            off, noff, c_off, grp = off + s * r, noff + m.K * r, c_off + P * r, grp + r
            a_off = [a + zz * r for a, zz in zip(a_off, z)]
        rounds_all = tuple(_Round(a_off[d + 1], *(torch.cat(p) for p in rparts[d])) for d in range(depth))

        def cat_or_empty(name: str, parts: dict[str, list[torch.Tensor]] = parts) -> torch.Tensor:
            return torch.cat(parts[name]) if parts[name] else _EMPTY

        levels.append(_Level(
            tuple(new_lengths), cat_or_empty("ia"), cat_or_empty("ib"), int(a_off[0] - len(cat_or_empty("v_at"))),
            cat_or_empty("h_const"), cat_or_empty("h_tgt"), cat_or_empty("h_src"), cat_or_empty("h_sign"),
            cat_or_empty("h_at"), cat_or_empty("v_at"), cat_or_empty("v_src"), a_off[0], rounds_all, grp, k_max,
            j_max, cat_or_empty("w_src"), cat_or_empty("w_at"), cat_or_empty("x_src"), cat_or_empty("out_src"),
            cat_or_empty("out_at"), cat_or_empty("pass_src"), cat_or_empty("pass_at")))
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
    :data:`FAN_IN` (2) consecutive lists and keeping the first ``K = min(total, k)`` of each merge
    (:class:`_Merge`): ONE :func:`checked_ltz` over the compared pairs of every row and merge (the pairs
    ``(a_i, b_j)`` of two lists with ``i + j < K``), the count one-hots from the comparison bits (local),
    then a tree whose leaves are an element's ``g - 1`` count one-hots and its ``T = 1 + len(payloads)``
    carried values (or the one-hots only, the values joining at the root, for more than
    :data:`LEAF_VALUES` values): rounds of ONE :func:`checked_mul` each, and a root of ONE grouped
    :func:`checked_conv2d` (a group per row and merge) that sums each output from the products of an
    element's rank one-hot and its values: one element per output and value.

    Rounds: :func:`topk_rounds`: 12 or 13 per level, ``ceil(log4 n)`` levels. Elements per party:
    per level a ``checked_ltz`` per compared pair (about 6: 3.97 AND words and 2 for the injection), the
    tree's products, and ``T`` per kept output. Exact (no fixed-point error).
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
    one = public_shares(party, torch.ones(Q, 1, dtype=torch.int64))
    for lv in _plan(n, k, T, FAN_IN):
        key = ArithmeticShares(party, lo[0], hi[0], 0)
        c = checked_ltz(key[:, lv.ib] - key[:, lv.ia], log)  # [Q, P]: 1 where the later list's key is smaller
        first = []
        for t, vals in ((c.lo, lo), (c.hi, hi)):
            a = torch.zeros(Q, lv.first_size, dtype=torch.int64)
            a.index_add_(-1, lv.h_tgt, t[:, lv.h_src] * lv.h_sign)
            a[:, lv.v_at] = vals[:, :, lv.v_src].permute(1, 2, 0).reshape(Q, -1)  # element-major, T per element
            first.append(a)
        arr = ArithmeticShares(party, first[0], first[1], 0).add_public(_scatter_const(lv).expand(Q, -1))
        for rd in lv.rounds:
            prod = checked_mul(arr[:, rd.u], arr[:, rd.v], log) if len(rd.u) else None
            nxt = []
            for side in ("lo", "hi"):
                acc = torch.zeros(Q, rd.size, dtype=torch.int64)
                if prod is not None:
                    acc.index_add_(-1, rd.tgt, getattr(prod, side))
                acc.index_add_(-1, rd.ctgt, getattr(arr, side)[:, rd.csrc])
                nxt.append(acc)
            arr = ArithmeticShares(party, nxt[0], nxt[1], 0)
        ext = cat([arr, one], 1)  # index size(A): the constant 1 for W, a zero for x (below)
        G, Km, Jm = lv.groups, lv.k_max, lv.j_max
        w_lo, w_hi = (torch.zeros(Q, G * Km * Jm, dtype=torch.int64).index_copy_(-1, lv.w_at, t[:, lv.w_src])
                      for t in (ext.lo, ext.hi))
        w = ArithmeticShares(party, w_lo.view(Q * G * Km, Jm, 1, 1), w_hi.view(Q * G * Km, Jm, 1, 1), 0)
        zero = torch.zeros(Q, 1, dtype=torch.int64)
        x_lo, x_hi = (torch.cat([t, zero], 1)[:, lv.x_src].view(Q, G * Jm, T).permute(2, 0, 1).reshape(
            T, Q * G * Jm, 1, 1) for t in (arr.lo, arr.hi))
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


def _scatter_const(lv: _Level) -> torch.Tensor:
    """The public part of the level's first array (the count one-hots' constants)."""
    out = torch.zeros(lv.first_size, dtype=torch.int64)
    out[lv.h_at] = lv.h_const
    return out


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


def _shared_keys(query: ArithmeticShares, X: ArithmeticShares, sq: ArithmeticShares,
                 log: ProductLog) -> ArithmeticShares:
    """:func:`_keys` for rows ``X [M, d]`` shared by all queries: ``[X ; query] @ query^T`` by ONE
    :func:`checked_matmul` (``[M + Q, d] @ [d, Q]``), then ``key[j, m] = q_j . q_j - 2 q_j . x_m + 2^f
    ||x_m||^2`` locally: no ``[Q, M, d]`` temporary (``q - 2 x`` for every record and query) and a proof
    vector of ``2 d`` entries. Cost: 1 round, ``(M + Q) Q`` elements per party; exact."""
    party, f = query.party, query.frac_bits
    Q, M = query.shape[0], X.shape[0]
    z = checked_matmul(cat([X, query]), query.T, log)  # [M + Q, Q] at 2f
    idx = torch.arange(Q)
    qq_lo, qq_hi = z.lo[M + idx, idx].reshape(Q, 1), z.hi[M + idx, idx].reshape(Q, 1)
    lo = qq_lo - 2 * z.lo[:M].T + (sq.lo << f).reshape(1, M)
    hi = qq_hi - 2 * z.hi[:M].T + (sq.hi << f).reshape(1, M)
    return ArithmeticShares(party, lo, hi, 2 * f)


def _onehot_from_digits(nodes: list[ArithmeticShares], C: int, log: ProductLog) -> ArithmeticShares:
    """``[R, C]`` one-hot of the numbers whose digits' one-hots (least significant first, ``[R, 2^w]`` each)
    are ``nodes``: the outer product of them, a tree of ``ceil(log2 D)`` rounds of ONE :func:`checked_mul`
    each (the last one only for the numbers below ``C``). Elements per party: ``C`` per row for two
    digits (C = 1000: 1000), a little more for more. Exact."""
    party = nodes[0].party
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


def keys_first(n_centroids: int, nprobe: int, dim: int) -> bool:
    """Whether :func:`checked_search` computes every record's key with the centroids' (one product) and
    fetches ``(key, id, ||x||^2)`` (:func:`_fetch_keys`), instead of fetching whole rows and keying those.
    Elements per party and query: ``C + C B + 3 nprobe B`` against ``C + nprobe B (d + 3)``, so keys first
    when ``C < nprobe d`` (e.g. C = 316, nprobe = 64, d = 128: 0.9 + 0.5 MB against 23 MB at n = 100,000);
    one round fewer too. The proof's local work is about the same either way (it weights the record
    matrix ``[C B, d]`` once, by positions or by the fetch's columns)."""
    return n_centroids < nprobe * dim


def _record_keys(query: ArithmeticShares, fetched: ArithmeticShares, d: int,
                 log: ProductLog) -> tuple[ArithmeticShares, ArithmeticShares, ArithmeticShares]:
    """Keys, ids and ``||x||^2`` ``[Q, M]`` of fetched rows ``[Q or 1, M, d + 2]``: rows shared by all queries
    (``[1, M, d + 2]``) by :func:`_shared_keys`, per-query rows by :func:`_keys`. 1 round."""
    party, f = query.party, query.frac_bits
    Q, M = query.shape[0], fetched.shape[-2]
    X = ArithmeticShares(party, fetched.lo[..., :d], fetched.hi[..., :d], f)
    sq = ArithmeticShares(party, fetched.lo[..., d], fetched.hi[..., d], f)
    ids = ArithmeticShares(party, fetched.lo[..., d + 1], fetched.hi[..., d + 1], 0)
    keys = _shared_keys(query, X[0], sq[0], log) if fetched.shape[0] == 1 else _keys(query, X, sq, log)
    return keys, ids.expand(Q, M), sq.expand(Q, M)


def _fetch_keys(onehot: ArithmeticShares, rkeys: ArithmeticShares, rows: ArithmeticShares, d: int, f: int,
                log: ProductLog) -> tuple[ArithmeticShares, ArithmeticShares, ArithmeticShares]:
    """``(key, id, ||x||^2)`` ``[Q, nprobe B]`` of the probed buckets (``||x||^2`` at ``f``): each query's
    one-hot ``[nprobe, C]`` times its table ``[C, 3 B]`` (its record keys ``rkeys [Q, C B]``, the stored
    ``||x||^2`` and ids), all queries in ONE checked grouped ``1 x 1`` convolution (a group per query, the
    table's ``3 B`` columns as its batch). Cost: 1 round, ``3 Q nprobe B`` elements per party; exact
    (integer one-hot)."""
    party = rkeys.party
    Q, CB = rkeys.shape
    C = rows.shape[0]
    B, P = CB // C, onehot.shape[0] // Q
    tables = []
    for side in ("lo", "hi"):
        cols = getattr(rows, side).reshape(C, B, d + RECORD_EXTRA)
        t = torch.cat([getattr(rkeys, side).reshape(Q, C, B), cols[..., d].expand(Q, C, B),
                       cols[..., d + 1].expand(Q, C, B)], 2)  # [Q, C, 3 B]: keys, ||x||^2, ids
        tables.append(t.permute(2, 0, 1).reshape(3 * B, Q * C, 1, 1))
    x = ArithmeticShares(party, tables[0], tables[1], 0)
    w = ArithmeticShares(party, onehot.lo.reshape(Q * P, C, 1, 1), onehot.hi.reshape(Q * P, C, 1, 1), 0)
    out = checked_conv2d(x, w, log, groups=Q).reshape(3, B, Q, P)  # [column, b, query, probe]

    def column(j: int, frac: int) -> ArithmeticShares:  # candidates probe-major, as the rows-first fetch
        lo, hi = (getattr(out, side)[j].permute(1, 2, 0).reshape(Q, P * B) for side in ("lo", "hi"))
        return ArithmeticShares(party, lo, hi, frac)

    return column(0, rkeys.frac_bits), column(2, 0), column(1, f)


def checked_search(party: Party, query: ArithmeticShares, index: IndexShares, k: int, nprobe: int,
                   log: ProductLog) -> tuple[ArithmeticShares, ArithmeticShares]:
    """Shares of the ``k`` nearest ids ``[Q, k]`` (integer) and squared distances ``[Q, k]`` (at the index's
    ``f`` fractional bits) of ``query [Q, d]`` (or ``[d]``: 1-D results) at ``f`` fractional bits, as
    :func:`protocols.search.secure_search` (IVF over the ``nprobe`` nearest buckets; ties: the
    earlier candidate; padding records, id -1, come last with distance ``||q||^2 + pad_sqnorm``),
    every message recorded in ``log``. Nothing is revealed; run ``verify_products(log)`` before any
    result leaves the servers.

    Steps (``C`` centroids, ``B`` records per bucket, ``M = nprobe B`` candidates):

    1. Keys ``q . (q - 2 x) + ||x||^2`` at ``2^(2f)`` (:func:`_keys`, 1 round): of the centroids, and, when
       :func:`keys_first` (``C < nprobe d``, e.g. the product's n = 100,000: C = 316, nprobe = 64), of
       every record too, in the same product (``Q (C + C B)`` elements); else of the centroids (``Q C``).
    2. Top-nprobe by :func:`checked_topk` with the one-hots of the centroid numbers' ``D`` digits of at
       most 5 bits as payloads (``V`` values, 64 at C = 1000: they only cost the top-nprobe's last
       convolution of each level, one element per kept output and value).
    3. One-hot ``[Q nprobe, C]``: the outer product of the digits' one-hots
       (:func:`_onehot_from_digits`, ``ceil(log2 D)`` rounds, ``C`` elements per probe for two
       digits): instead of ``checked_eqz(probe - c)`` (11 rounds, two ``checked_ltz`` per centroid
       and probe).
    4. Keys first: fetch the probed buckets' ``(key, id, ||x||^2)`` (:func:`_fetch_keys`, 1 round,
       ``3 Q M``). Else fetch their rows by ``checked_matmul(one-hot, rows [C, B (d + 2)])`` (1 round,
       ``Q nprobe B (d + 2)``) and key them as in 1 (1 round, ``Q M``).
    5. :func:`checked_topk` of the keys with payloads ``(id, ||x||^2)``.
    6. ``dist = trunc(key - 2^f ||x||^2, f) + ||x||^2`` by :func:`checked_truncate` on the ``Q k``
       outputs only (1 round): the comparisons see the exact keys, and the truncated value is
       ``||q||^2 - 2 q . x``, not the padding's huge distance (the truncation's rare large error,
       probability ``|z| / 2^63``, stays that of ``secure_search``).

    ``nprobe = C``: steps 1-4 are skipped, every record is a candidate (bucket order) and is keyed.

    Rounds (:func:`search_rounds`): ``1 + T(C, 1 + V) + ceil(log2 D) + 1 + T(nprobe B, 3) + 1`` keys
    first (one more rows first), ``T`` = :func:`topk_rounds`; ``1 + T(C B, 3) + 1`` for ``nprobe = C``;
    224 at C = 1000, nprobe = 8, B = 100, d = 128. Elements per party: ``Q (C + C B)`` + the
    top-nprobe's + ``Q nprobe C`` (two digits) + ``3 Q M`` + the top-k's + ``Q k`` (3 ``Q k`` for party
    0) keys first; rows first ``Q C`` and ``Q M (d + 3)`` instead of ``Q (C + C B)`` and ``3 Q M``.
    Key range (for ``checked_topk``): every key lies in ``[-2^(f-1), (||q||^2 + pad_sqnorm) 2^(2f)]``, below
    ``1.125 * 2^62`` for queries within ``layout.max_sqnorm`` (checked here: ``pad_sqnorm 2^(2f)
    <= 2^62``, true for every ``id_bits`` at ``f = 16``): differences do not wrap.
    Error: distances within one ulp (``2^-f``) of the exact fixed-point value, ids exact for the
    fixed-point distances (exact integer keys).

    Measured before :func:`keys_first` (rows first; in-process, three parties on one 2-core machine under
    load from other jobs, 2026-12-03; C = 1000, nprobe = 8, B = 100, d = 128, k = 10, Q = 1; bytes per
    party): ``secure_search`` 37 rounds, 4.39 MB, 0.35-0.75 s; this function 130 rounds, 4.57 MB, 1.6-2.6 s, then
    ``verify_products`` 53 rounds, 0.03 MB, 23-60 s (20.7M GF(2^48) entries from 23k comparisons,
    0.4M ring entries); with ``FAN_IN = 2``: 225 rounds, 4.22 MB, 2.1-2.4 s, proof 51 rounds and
    10.5-13 s (back to back with the first: 33 s against 13 s).
    Same ids as ``secure_search`` and the plaintext index.
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
    if pad_sqnorm(index.id_bits, f) * 2.0 ** (2 * f) > 2.0**62:
        raise ValueError(f"the padding distance at 2^(2f) (f = {f}, id_bits = {index.id_bits}) exceeds 2^62")
    Q, W = query.shape[0], d + RECORD_EXTRA
    rows = ArithmeticShares(party, *index.rows, 0)  # [C, B W]
    if nprobe < C:
        cent = ArithmeticShares(party, *index.centroids, f)
        csq = ArithmeticShares(party, *index.centroid_sqnorm, f)
        first = keys_first(C, nprobe, d)
        if first:  # every record's key with the centroids', in the same product
            recs = rows.reshape(C * B, W)
            X_all = cat([cent, ArithmeticShares(party, recs.lo[:, :d], recs.hi[:, :d], f)])
            sq_all = cat([csq, ArithmeticShares(party, recs.lo[:, d], recs.hi[:, d], f)])
            both = _shared_keys(query, X_all, sq_all, log)  # [Q, C + C B] at 2f
            ckeys = ArithmeticShares(party, both.lo[:, :C], both.hi[:, :C], 2 * f)
            rkeys = ArithmeticShares(party, both.lo[:, C:], both.hi[:, C:], 2 * f)
        else:
            ckeys = _keys(query, cent, csq, log)  # [Q, C]
        numbers = torch.arange(C, dtype=torch.int64)
        digits = _digits(C)
        values = [public_shares(party, (((numbers >> shift) & ((1 << w) - 1)) == v).long().expand(Q, C).contiguous())
                  for shift, w in digits for v in range(1 << w)]
        _, probe_values = checked_topk(ckeys, values, nprobe, log)  # V x [Q, nprobe]
        leaves, at = [], 0
        for _, w in digits:
            part = probe_values[at: at + (1 << w)]
            at += 1 << w
            leaves.append(ArithmeticShares(party, torch.stack([v.lo.reshape(-1) for v in part], 1),
                                           torch.stack([v.hi.reshape(-1) for v in part], 1), 0))
        onehot = _onehot_from_digits(leaves, C, log)  # [Q nprobe, C]
        if first:
            keys, ids, sq = _fetch_keys(onehot, rkeys, rows, d, f, log)  # [Q, nprobe B] each
        else:
            fetched = checked_matmul(onehot, rows, log).reshape(Q, nprobe * B, W)
            keys, ids, sq = _record_keys(query, fetched, d, log)
    else:
        keys, ids, sq = _record_keys(query, rows.reshape(1, C * B, W), d, log)
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
