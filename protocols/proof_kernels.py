"""Compiled loops of the proofs (numba; no Python per word): GF(2) bit-planes for :mod:`protocols.binfield`,
and the two bulk operations of GR(2^64, 56) vectors for :mod:`protocols.galois`.

A bit-plane matrix is ``[planes, words]`` int64: plane ``k``, word ``w`` holds bit ``k`` of the 64
field elements ``64 w .. 64 w + 63``. Two kernels do the proof's work:

* :func:`cross_parities` (inner products): ``acc[i, j] = XOR_w u[i, w] & v[j, w]``; the parity of
  ``popcount(acc[i, j])`` is the coefficient of ``X^(i + j)`` in ``<u, v>`` before reduction.
  One pass over both operands in cache-sized blocks: ``planes_u * planes_v`` AND+XOR per word.
* :func:`subset_xor` (a vector times a scalar): output plane ``k`` is the XOR of the input planes
  listed in row ``k`` of ``rows`` (the planes ``i`` whose ``r X^i`` has bit ``k``).

* :func:`ring_fold` and :func:`ring_cross`: ``low + (high - low) @ M`` and ``u^T v`` on int64 ``[m, 56]``
  matrices (wrapping mod 2^64), row by row with the 56 x 56 operand in cache: 3136 multiply-adds per
  row, vectorised (about 2-4x less CPU than torch's int64 ``matmul``, a plain loop).

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
    for w0 in range(0, n, _BLOCK):
        w1 = min(n, w0 + _BLOCK)
        for i in range(pu):
            ui = u[i, w0:w1]
            for j in range(pv):
                vj = v[j, w0:w1]
                a = np.int64(0)
                for w in range(ui.shape[0]):  # row slices: LLVM vectorises the reduction
                    a ^= ui[w] & vj[w]
                acc[i, j] ^= a


def _cross_folded(ul: np.ndarray, uh: np.ndarray, vl: np.ndarray, vh: np.ndarray, acc_low: np.ndarray,
                  acc_diff: np.ndarray) -> None:  # pragma: no cover - compiled
    pu, n = ul.shape
    pv = vl.shape[0]
    du = np.empty((pu, _BLOCK), dtype=np.int64)
    dv = np.empty((pv, _BLOCK), dtype=np.int64)
    for w0 in range(0, n, _BLOCK):
        w1 = min(n, w0 + _BLOCK)
        m = w1 - w0
        for i in range(pu):
            du[i, :m] = ul[i, w0:w1] ^ uh[i, w0:w1]
        for j in range(pv):
            dv[j, :m] = vl[j, w0:w1] ^ vh[j, w0:w1]
        for i in range(pu):
            ui, di = ul[i, w0:w1], du[i, :m]
            for j in range(pv):
                vj, ej = vl[j, w0:w1], dv[j, :m]
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


@cache
def _jit() -> SimpleNamespace:
    """The loops above compiled by numba (``nogil``; cached on disk beside this file)."""
    from numba import njit

    return SimpleNamespace(**{f.__name__: njit(cache=True, nogil=True)(f)
                              for f in (_cross, _cross_folded, _subset_xor, _ring_fold, _ring_cross)})


def cross_parities(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``[pu, pv]`` bools: parity of ``sum_w popcount(u[i, w] & v[j, w])`` for planes ``u [pu, W]``, ``v [pv, W]``."""
    acc = np.zeros((u.shape[0], v.shape[0]), dtype=np.int64)
    _jit()._cross(np.ascontiguousarray(u), np.ascontiguousarray(v), acc)
    return (np.bitwise_count(acc.view(np.uint64)) & 1).astype(bool)


def cross_parities_folded(ul: np.ndarray, uh: np.ndarray, vl: np.ndarray, vh: np.ndarray) -> tuple[
        np.ndarray, np.ndarray]:
    """:func:`cross_parities` of ``(ul, vl)`` and of ``(ul ^ uh, vl ^ vh)`` in one pass (no temporaries)."""
    a = np.zeros((ul.shape[0], vl.shape[0]), dtype=np.int64)
    b = np.zeros_like(a)
    _jit()._cross_folded(np.ascontiguousarray(ul), np.ascontiguousarray(uh), np.ascontiguousarray(vl),
                  np.ascontiguousarray(vh), a, b)
    return ((np.bitwise_count(a.view(np.uint64)) & 1).astype(bool),
            (np.bitwise_count(b.view(np.uint64)) & 1).astype(bool))


def subset_xor(p: np.ndarray, select: np.ndarray, base: np.ndarray) -> np.ndarray:
    """``out[k] = base[k] ^ XOR_{i: select[k, i]} p[i]`` for planes ``p [P, W]``, ``select [K, P]`` bools and
    ``base [K, W]``: one pass, ``sum(select)`` word XORs per word column."""
    counts = select.sum(1).astype(np.int64)
    rows = np.zeros((select.shape[0], max(1, select.shape[1])), dtype=np.int64)
    for k in range(select.shape[0]):
        idx = np.flatnonzero(select[k])
        rows[k, : idx.size] = idx
    out = np.empty_like(base)
    _jit()._subset_xor(np.ascontiguousarray(p), rows, counts, np.ascontiguousarray(base), out)
    return out


def _ring_fold(low: np.ndarray, high: np.ndarray, m: np.ndarray, out: np.ndarray) -> None:  # pragma: no cover
    n, d = low.shape
    for g in range(n):
        lo, hi, o = low[g], high[g], out[g]
        o[:] = lo
        for i in range(d):
            c = hi[i] - lo[i]
            mi = m[i]
            for k in range(d):
                o[k] += c * mi[k]


def _ring_cross(u: np.ndarray, v: np.ndarray, acc: np.ndarray) -> None:  # pragma: no cover - compiled
    n, d = u.shape
    for g in range(n):
        ug, vg = u[g], v[g]
        for i in range(d):
            a = ug[i]
            ai = acc[i]
            for j in range(d):
                ai[j] += a * vg[j]


def ring_fold(low: np.ndarray, high: np.ndarray, m: np.ndarray) -> np.ndarray:
    """``low + (high - low) @ m`` for int64 ``low, high [n, D]`` and ``m [D, D]``, mod 2^64."""
    out = np.empty_like(low)
    _jit()._ring_fold(np.ascontiguousarray(low), np.ascontiguousarray(high), np.ascontiguousarray(m), out)
    return out


def ring_cross(u: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``u^T v`` (``[D, D]``) for int64 ``u, v [n, D]``, mod 2^64."""
    acc = np.zeros((u.shape[1], v.shape[1]), dtype=np.int64)
    _jit()._ring_cross(np.ascontiguousarray(u), np.ascontiguousarray(v), acc)
    return acc
