"""Compiled loops of the proofs (numba; no Python per word): GF(2) bit-planes for :mod:`protocols.binfield`,
and the two bulk operations of GR(2^64, 56) vectors for :mod:`protocols.galois`.

A bit-plane matrix is ``[planes, words]`` int64: plane ``k``, word ``w`` holds bit ``k`` of the 64
field elements ``64 w .. 64 w + 63``. Two kernels do the proof's work:

* :func:`cross_parities` (inner products): ``acc[i, j] = XOR_w u[i, w] & v[j, w]``; the parity of
  ``popcount(acc[i, j])`` is the coefficient of ``X^(i + j)`` in ``<u, v>`` before reduction.
  One pass over both operands in cache-sized blocks: ``planes_u * planes_v`` AND+XOR per word.
  :func:`cross_parities_folded` takes the two halves of a fold (strided views) and the halves'
  difference without building either.
* :func:`fold_planes` (a fold ``low + r (high - low)``, in place) and :func:`subset_xor`: output
  plane ``k`` is the XOR of the input planes ``i`` whose ``r X^i`` has bit ``k`` (about 28 of 56).
  :func:`fold_planes` XORs them four at a time (the method of the Four Russians): per block of words,
  the 16 XOR combinations of each group of 4 planes of ``high - low`` (11 plane XORs per group), then
  one table row per group and output plane: 14 + 154 / 56 = 16.75 row XORs per output plane instead
  of about 28 (1.4-1.5x less time on an AVX2 EPYC, 2026-12-03).
* :func:`fold_masked` and :func:`masked_parities3`: a proof's first fold and first fold polynomial of a vector
  laid out as ``[rho & left ; rho & right]`` (``binfield.Paired``) straight from ``rho`` and the two mask
  words, without building the vector (one pass over ``rho``; :func:`masked_parities` is the one-mask form).

* :func:`ring_weight` and :func:`ring_weight_t`: Z_2^64 matrices times ring-element vectors (the gates'
  challenges: the rank-1 reductions of matrix products and convolutions, ``tau``), where torch's int64
  ``matmul`` was most of the proofs' preparation.
* :func:`ring_fold_inplace` and :func:`ring_cross_folded`: a fold ``low + (high - low) @ M`` written
  over ``low``, and the fold polynomial's two products ``u_L^T v_L``, ``(u_R - u_L)^T (v_R - v_L)``,
  on int64 ``[m, 56]`` matrices (wrapping mod 2^64), row by row with the 56 x 56 operand in cache:
  3136 multiply-adds per row, vectorised (about 2-4x less CPU than torch's int64 ``matmul``).
  :func:`ring_cross_base` and :func:`ring_fold_base` are their forms for a vector of Z_2^64 values not yet
  lifted into the ring (``D`` word products per entry instead of ``D^2``).
* :func:`grouped_mm`: the top-k's grouped 1x1 products (torch's int64 ``conv2d`` ran them group by group).

The proofs fold their vectors in place and read halves as views: a proof allocates its four vectors
once. (Fresh memory is the expensive kind here: the kernel zeroes every page a process touches for the
first time, and building each fold's halves anew made that 58% of a search proof's CPU.)

Numba is imported and the loops compiled on first use (:func:`_jit`): importing numba costs about
0.4 s, which every server and CLI process would otherwise pay whether or not it ever proves anything.
All release the GIL, so the three in-process parties of the tests and benchmarks run them in
parallel threads. Compiled on first use and cached beside this file (``cache=True``).
"""

from __future__ import annotations

from functools import cache
from types import SimpleNamespace

import numpy as np

_BLOCK = 512  # words per block: 2 x 56 planes x 512 words x 8 bytes = 448 KiB, inside L2


def _cross(u: np.ndarray, v: np.ndarray, acc: np.ndarray) -> None:  # pragma: no cover - compiled
    pu, n = u.shape
    pv = v.shape[0]
    bu = np.empty((pu, _BLOCK), dtype=np.int64)  # the block's planes, contiguous (operands may be strided views)
    bv = np.empty((pv, _BLOCK), dtype=np.int64)
    for w0 in range(0, n, _BLOCK):
        w1 = min(n, w0 + _BLOCK)
        m = w1 - w0
        for i in range(pu):
            for w in range(m):
                bu[i, w] = u[i, w0 + w]
        for j in range(pv):
            for w in range(m):
                bv[j, w] = v[j, w0 + w]
        for i in range(pu):
            ui = bu[i, :m]
            for j in range(pv):
                vj = bv[j, :m]
                a = np.int64(0)
                for w in range(m):  # row slices: LLVM vectorises the reduction
                    a ^= ui[w] & vj[w]
                acc[i, j] ^= a


def _cross_folded(ul: np.ndarray, uh: np.ndarray, vl: np.ndarray, vh: np.ndarray, acc_low: np.ndarray,
                  acc_diff: np.ndarray) -> None:  # pragma: no cover - compiled
    pu, n = ul.shape
    pv = vl.shape[0]
    bu = np.empty((pu, _BLOCK), dtype=np.int64)  # the block's planes, contiguous (the halves are strided views)
    bv = np.empty((pv, _BLOCK), dtype=np.int64)
    du = np.empty((pu, _BLOCK), dtype=np.int64)
    dv = np.empty((pv, _BLOCK), dtype=np.int64)
    for w0 in range(0, n, _BLOCK):
        w1 = min(n, w0 + _BLOCK)
        m = w1 - w0
        for i in range(pu):
            for w in range(m):
                bu[i, w] = ul[i, w0 + w]
                du[i, w] = ul[i, w0 + w] ^ uh[i, w0 + w]
        for j in range(pv):
            for w in range(m):
                bv[j, w] = vl[j, w0 + w]
                dv[j, w] = vl[j, w0 + w] ^ vh[j, w0 + w]
        for i in range(pu):
            ui, di = bu[i, :m], du[i, :m]
            for j in range(pv):
                vj, ej = bv[j, :m], dv[j, :m]
                a = np.int64(0)
                b = np.int64(0)
                for w in range(m):
                    a ^= ui[w] & vj[w]
                    b ^= di[w] & ej[w]
                acc_low[i, j] ^= a
                acc_diff[i, j] ^= b


def _subset_xor(p: np.ndarray, rows: np.ndarray, counts: np.ndarray, base: np.ndarray,
                out: np.ndarray) -> None:  # pragma: no cover - compiled
    k_out, n = out.shape
    for w0 in range(0, n, _BLOCK):
        w1 = min(n, w0 + _BLOCK)
        for k in range(k_out):
            o = out[k, w0:w1]
            o[:] = base[k, w0:w1]
            for t in range(counts[k]):
                src = p[rows[k, t], w0:w1]
                for w in range(o.shape[0]):
                    o[w] ^= src[w]


def _masked_xor(rho: np.ndarray, words: np.ndarray, acc: np.ndarray) -> None:  # pragma: no cover - compiled
    k_out, n = rho.shape
    for k in range(k_out):
        r = rho[k]
        a = np.int64(0)
        for w in range(n):
            a ^= r[w] & words[w]
        acc[k] = a


def _fold_planes(low: np.ndarray, high: np.ndarray, nib: np.ndarray) -> None:  # pragma: no cover - compiled
    k_out, n = low.shape
    groups = nib.shape[1]
    tab = np.empty((groups, 16, _BLOCK), dtype=np.int64)  # tab[g, e]: XOR of the planes 4 g + b of d with bit b of e
    for w0 in range(0, n, _BLOCK):
        w1 = min(n, w0 + _BLOCK)
        m = w1 - w0
        for g in range(groups):
            t = tab[g]
            for w in range(m):
                t[0, w] = 0
            for b in range(4):
                p = 4 * g + b
                s = 1 << b
                if p < k_out:
                    for w in range(m):
                        t[s, w] = low[p, w0 + w] ^ high[p, w0 + w]
                else:
                    for w in range(m):
                        t[s, w] = 0
                for e in range(1, s):
                    for w in range(m):
                        t[s + e, w] = t[s, w] ^ t[e, w]
        for k in range(k_out):  # output plane k reads the tables (copies) and low[k] alone: in place is safe
            o = low[k, w0:w1]
            for g in range(groups):
                src = tab[g, nib[k, g]]
                for w in range(m):
                    o[w] ^= src[w]


def _fold_masked(rho: np.ndarray, left: np.ndarray, right: np.ndarray, nib: np.ndarray, out: np.ndarray,
                 at: int) -> None:  # pragma: no cover - compiled
    k_out, n = rho.shape
    groups = nib.shape[1]
    tab = np.empty((groups, 16, _BLOCK), dtype=np.int64)  # tab[g, e]: XOR of the planes 4 g + b of rho, bit b of e
    acc = np.empty(_BLOCK, dtype=np.int64)
    diff = np.empty(_BLOCK, dtype=np.int64)
    for w0 in range(0, n, _BLOCK):
        w1 = min(n, w0 + _BLOCK)
        m = w1 - w0
        for w in range(m):
            diff[w] = left[w0 + w] ^ right[w0 + w]
        for g in range(groups):
            t = tab[g]
            for w in range(m):
                t[0, w] = 0
            for b in range(4):
                p = 4 * g + b
                s = 1 << b
                if p < k_out:
                    for w in range(m):
                        t[s, w] = rho[p, w0 + w]
                else:
                    for w in range(m):
                        t[s, w] = 0
                for e in range(1, s):
                    for w in range(m):
                        t[s + e, w] = t[s, w] ^ t[e, w]
        for k in range(k_out):
            for w in range(m):
                acc[w] = 0
            for g in range(groups):
                src = tab[g, nib[k, g]]
                for w in range(m):
                    acc[w] ^= src[w]
            o = out[k, at + w0: at + w1]
            rk = rho[k, w0:w1]
            for w in range(m):
                o[w] = (acc[w] & diff[w]) ^ (rk[w] & left[w0 + w])


def _masked_xor3(rho: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray,
                 acc: np.ndarray) -> None:  # pragma: no cover - compiled
    k_out, n = rho.shape
    for k in range(k_out):
        r = rho[k]
        x = np.int64(0)
        y = np.int64(0)
        z = np.int64(0)
        for w in range(n):
            rw = r[w]
            x ^= rw & a[w]
            y ^= rw & b[w]
            z ^= rw & c[w]
        acc[0, k] = x
        acc[1, k] = y
        acc[2, k] = z


def _ring_weight(a: np.ndarray, t: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
    m, k = a.shape
    d = t.shape[1]
    for i in range(m):
        o = out[i]
        for x in range(d):
            o[x] = 0
        ai = a[i]
        for j in range(k):
            c = ai[j]
            tj = t[j]
            for x in range(d):
                o[x] += c * tj[x]


def _ring_weight_t(a: np.ndarray, s: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
    groups, k, m = a.shape
    d = s.shape[2]
    for g in range(groups):
        og = out[g]
        for j in range(m):
            for x in range(d):
                og[j, x] = 0
        for i in range(k):
            ai, si = a[g, i], s[g, i]
            for j in range(m):
                c = ai[j]
                o = og[j]
                for x in range(d):
                    o[x] += c * si[x]


def _grouped_mm(x: np.ndarray, w: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover - compiled
    n, groups, j_in = x.shape
    k_out = w.shape[1]
    for b in range(n):
        for g in range(groups):
            xg = x[b, g]
            for k in range(k_out):
                wk = w[g, k]
                a = np.int64(0)
                for j in range(j_in):
                    a += wk[j] * xg[j]
                out[b, g, k] = a


@cache
def _jit() -> SimpleNamespace:
    """The loops above compiled by numba (``nogil``; cached on disk beside this file)."""
    from numba import njit

    return SimpleNamespace(**{f.__name__: njit(cache=True, nogil=True)(f)
                              for f in (_cross, _cross_folded, _subset_xor, _fold_planes,
                                        _ring_fold_inplace, _ring_cross, _ring_cross_folded, _ring_cross_base,
                                        _masked_xor, _masked_xor3, _fold_masked, _ring_weight, _ring_weight_t,
                                        _grouped_mm, _ring_fold_base)})


def cross_parities(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``[pu, pv]`` bools: parity of ``sum_w popcount(u[i, w] & v[j, w])`` for planes ``u [pu, W]``, ``v [pv, W]``."""
    acc = np.zeros((u.shape[0], v.shape[0]), dtype=np.int64)
    _jit()._cross(u, v, acc)
    return (np.bitwise_count(acc.view(np.uint64)) & 1).astype(bool)


def cross_parities_folded(ul: np.ndarray, uh: np.ndarray, vl: np.ndarray, vh: np.ndarray) -> tuple[
        np.ndarray, np.ndarray]:
    """:func:`cross_parities` of ``(ul, vl)`` and of ``(ul ^ uh, vl ^ vh)`` in one pass (no temporaries)."""
    a = np.zeros((ul.shape[0], vl.shape[0]), dtype=np.int64)
    b = np.zeros_like(a)
    _jit()._cross_folded(ul, uh, vl, vh, a, b)  # strided halves welcome: copied block by block
    return ((np.bitwise_count(a.view(np.uint64)) & 1).astype(bool),
            (np.bitwise_count(b.view(np.uint64)) & 1).astype(bool))


def _rows(select: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    counts = select.sum(1).astype(np.int64)
    rows = np.zeros((select.shape[0], max(1, select.shape[1])), dtype=np.int64)
    for k in range(select.shape[0]):
        idx = np.flatnonzero(select[k])
        rows[k, : idx.size] = idx
    return rows, counts


def masked_parities(rho: np.ndarray, words: np.ndarray) -> np.ndarray:
    """``[P]`` bools: parity of ``popcount(XOR_w rho[k, w] & words[w])`` for planes ``rho [P, W]``: one pass,
    no ``[P, W]`` temporary."""
    acc = np.zeros(rho.shape[0], dtype=np.int64)
    _jit()._masked_xor(rho, words, acc)
    return (np.bitwise_count(acc.view(np.uint64)) & 1).astype(bool)


def _nibbles(select: np.ndarray) -> np.ndarray:
    """``[K, ceil(P / 4)]``: entry ``[k, g]`` has bit ``b`` set when ``select[k, 4 g + b]``."""
    k_out, p = select.shape
    padded = np.zeros((k_out, 4 * ((p + 3) // 4)), dtype=np.int64)
    padded[:, :p] = select
    return (padded.reshape(k_out, -1, 4) << np.arange(4)).sum(-1)


def fold_planes(low: np.ndarray, high: np.ndarray, select: np.ndarray) -> None:
    """In place: ``low[k] ^= XOR_{i: select[k, i]} (low[i] ^ high[i])`` for planes ``low, high [P, W]`` (views
    of one buffer allowed, e.g. its two column halves): ``low + r (high - low)`` over GF(2^56) when ``select``
    is multiplication by ``r``. No allocation but the tables of one block of words (``P / 4 x 16 x 512`` words)."""
    _jit()._fold_planes(low, high, _nibbles(select))


def fold_masked(rho: np.ndarray, left: np.ndarray, right: np.ndarray, select: np.ndarray, out: np.ndarray,
                at: int = 0) -> None:
    """``out[k, at + w] = (rho[k] & left) ^ (XOR_{i: select[k, i]} rho[i]) & (left ^ right)`` (word ``w``; ``out``
    contiguous, written from column ``at``: a column slice would compile a slower loop) for planes ``rho [P, W]`` and
    words ``left, right [W]``: the fold ``u_L + r (u_R - u_L)`` of ``u = [rho & left ; rho & right]`` (a lane of
    ``rho & m`` is ``rho`` or 0, and multiplying by ``r`` is linear), without building ``u``: one pass over ``rho``
    (four planes at a time, as :func:`fold_planes`)."""
    _jit()._fold_masked(np.ascontiguousarray(rho), left, right, _nibbles(select), out, at)


def masked_parities3(rho: np.ndarray, a: np.ndarray, b: np.ndarray, c: np.ndarray) -> np.ndarray:
    """``[3, P]`` bools: :func:`masked_parities` of ``rho`` with each of the words ``a``, ``b``, ``c`` (one pass)."""
    acc = np.zeros((3, rho.shape[0]), dtype=np.int64)
    _jit()._masked_xor3(rho, a, b, c, acc)
    return (np.bitwise_count(acc.view(np.uint64)) & 1).astype(bool)


def subset_xor(p: np.ndarray, select: np.ndarray, base: np.ndarray) -> np.ndarray:
    """``out[k] = base[k] ^ XOR_{i: select[k, i]} p[i]`` for planes ``p [P, W]``, ``select [K, P]`` bools and
    ``base [K, W]``: one pass, ``sum(select)`` word XORs per word column."""
    rows, counts = _rows(select)
    out = np.empty_like(base)
    _jit()._subset_xor(np.ascontiguousarray(p), rows, counts, np.ascontiguousarray(base), out)
    return out


def _ring_cross(u: np.ndarray, v: np.ndarray, acc: np.ndarray) -> None:  # pragma: no cover - compiled
    n, d = u.shape
    for g in range(n):
        ug, vg = u[g], v[g]
        for i in range(d):
            a = ug[i]
            ai = acc[i]
            for j in range(d):
                ai[j] += a * vg[j]


def _ring_fold_inplace(vec: np.ndarray, half: int, m: np.ndarray) -> None:  # pragma: no cover - compiled
    d = vec.shape[1]
    o = np.empty(d, dtype=np.int64)
    for g in range(half):
        lo, hi = vec[g], vec[g + half]
        o[:] = lo
        for i in range(d):
            c = hi[i] - lo[i]
            mi = m[i]
            for k in range(d):
                o[k] += c * mi[k]
        lo[:] = o


def _ring_cross_base(u: np.ndarray, v: np.ndarray, half: int, c0: np.ndarray, c1: np.ndarray,
                     c2: np.ndarray) -> None:  # pragma: no cover - compiled
    d = u.shape[1]
    for g in range(half):
        a, b = v[g], v[g + half]
        dv = b - a
        ul, uh = u[g], u[g + half]
        for i in range(d):
            c0[i] += ul[i] * a
            c1[i] += uh[i] * b
            c2[i] += (uh[i] - ul[i]) * dv


def _ring_fold_base(v: np.ndarray, half: int, r: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover
    d = out.shape[1]
    for g in range(half):
        a = v[g]
        c = v[g + half] - a
        o = out[g]
        for k in range(d):
            o[k] = c * r[k]
        o[0] += a


def _ring_cross_folded(u: np.ndarray, v: np.ndarray, half: int, acc_low: np.ndarray,
                       acc_diff: np.ndarray) -> None:  # pragma: no cover - compiled
    d = u.shape[1]
    du = np.empty(d, dtype=np.int64)
    dv = np.empty(d, dtype=np.int64)
    for g in range(half):
        ul, vl = u[g], v[g]
        for i in range(d):
            du[i] = u[g + half, i] - ul[i]
            dv[i] = v[g + half, i] - vl[i]
        for i in range(d):
            a, b = ul[i], du[i]
            al, ad = acc_low[i], acc_diff[i]
            for j in range(d):
                al[j] += a * vl[j]
                ad[j] += b * dv[j]


def ring_cross(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``u^T v`` (``[D, D]``) for int64 ``u, v [n, D]``, mod 2^64."""
    acc = np.zeros((u.shape[1], v.shape[1]), dtype=np.int64)
    _jit()._ring_cross(np.ascontiguousarray(u), np.ascontiguousarray(v), acc)
    return acc


def ring_fold_inplace(vec: np.ndarray, m: np.ndarray) -> None:
    """In place: rows ``g < n / 2`` of int64 ``vec [n, D]`` become ``vec[g] + (vec[g + n/2] - vec[g]) @ m``
    (mod 2^64); the upper half is left as it was. No allocation."""
    _jit()._ring_fold_inplace(vec, vec.shape[0] // 2, np.ascontiguousarray(m))


def ring_cross_folded(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(u_L^T v_L, (u_R - u_L)^T (v_R - v_L))`` for int64 ``u, v [n, D]`` split at ``n / 2``, mod 2^64, in one
    pass and without temporaries."""
    a = np.zeros((u.shape[1], v.shape[1]), dtype=np.int64)
    b = np.zeros_like(a)
    _jit()._ring_cross_folded(u, v, u.shape[0] // 2, a, b)
    return a, b


def ring_cross_base(u: np.ndarray, v: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """For int64 ``u [n, D]`` (ring elements) and ``v [n]`` (Z_2^64 values) split at ``n / 2``: the three
    ``[D]`` sums ``sum u_L v_L``, ``sum u_R v_R``, ``sum (u_R - u_L)(v_R - v_L)``, mod 2^64. ``D`` word
    products per entry (a ring element times a ring element would take ``D^2``)."""
    c0, c1, c2 = (np.zeros(u.shape[1], dtype=np.int64) for _ in range(3))
    _jit()._ring_cross_base(u, v, u.shape[0] // 2, c0, c1, c2)
    return c0, c1, c2


def ring_fold_base(v: np.ndarray, r: np.ndarray, out: np.ndarray) -> None:
    """``out[g] = v[g] + r (v[g + n/2] - v[g])`` for Z_2^64 values ``v [n]`` and one ring element ``r [D]``:
    ``D`` word products per entry."""
    _jit()._ring_fold_base(v, v.shape[0] // 2, np.ascontiguousarray(r), out)


def ring_weight(a: np.ndarray, t: np.ndarray) -> np.ndarray:
    """``a @ t`` mod 2^64 for int64 ``a [m, k]`` (any strides) and ``t [k, D]``: Z_2^64 values weighted by
    ring elements (a proof's challenges), ``m k D`` word products, the ``D`` coefficients vectorised (10 to
    30x less time than torch's int64 ``matmul`` on these shapes on an AVX2 EPYC, 2026-12-03)."""
    out = np.empty((a.shape[0], t.shape[1]), dtype=np.int64)
    _jit()._ring_weight(a, np.ascontiguousarray(t), out)
    return out


def ring_weight_t(a: np.ndarray, s: np.ndarray) -> np.ndarray:
    """``a[g].T @ s[g]`` for every ``g``, mod 2^64, for int64 ``a [G, k, m]`` (any strides) and ``s [G, k, D]``:
    ``[G, m, D]`` (:func:`ring_weight` with the values transposed, batched over groups). The loop order is the
    other one: ``s`` is read once, row by row, into all ``m`` output rows, which suits few outputs and long
    ``s``; :func:`ring_weight` writes each output row once with ``t`` in cache, which suits many outputs. One
    kernel for both measured up to 1.3x slower on one side and 10x on the other (2026-12-03)."""
    out = np.empty((a.shape[0], a.shape[2], s.shape[2]), dtype=np.int64)
    _jit()._ring_weight_t(a, np.ascontiguousarray(s), out)
    return out


def grouped_mm(x: np.ndarray, w: np.ndarray) -> np.ndarray:
    """``out[b, g, k] = sum_j w[g, k, j] x[b, g, j]`` mod 2^64 for int64 ``x [N, G, J]``, ``w [G, K, J]``: a grouped
    ``1 x 1`` convolution with many small groups (the checked top-k's merges), where torch's int64 ``conv2d``
    pays per group."""
    out = np.empty((x.shape[0], x.shape[1], w.shape[1]), dtype=np.int64)
    _jit()._grouped_mm(np.ascontiguousarray(x), np.ascontiguousarray(w), out)
    return out
