"""Poisson image blending (the "normal clone" of Perez et al. 2003), deterministic.

``cv2.seamlessClone`` (OpenCV 4.14) returned different results for identical inputs on
repeated calls in one process, so the same equation is solved here with scipy: inside
the mask, the Laplacian of the result equals the Laplacian of the source patch; on the
mask's outer boundary it equals the destination. The result inside the mask therefore
depends only on the source patch and on destination pixels OUTSIDE the mask.
"""

from __future__ import annotations

import numpy as np
from scipy.sparse import coo_matrix  # type: ignore[import-untyped]  # scipy ships no stubs
from scipy.sparse.linalg import splu  # type: ignore[import-untyped]


def poisson_blend(dst: np.ndarray, src: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Blend ``src`` into ``dst`` (same HxWx3 shape) over ``mask`` (HxW, nonzero = inside)."""
    inside = mask > 0
    inside[0, :] = inside[-1, :] = False  # keep a one-pixel frame of Dirichlet boundary
    inside[:, 0] = inside[:, -1] = False
    out = dst.copy()
    n = int(inside.sum())
    if n == 0:
        return out
    h, w = inside.shape
    index = -np.ones((h, w), np.int64)
    ys, xs = np.nonzero(inside)
    index[ys, xs] = np.arange(n)
    d = dst.astype(np.float64)
    s = src.astype(np.float64)
    rows, cols, vals = [np.arange(n)], [np.arange(n)], [np.full(n, 4.0)]
    rhs = 4.0 * s[ys, xs]
    for dy, dx in ((-1, 0), (1, 0), (0, -1), (0, 1)):
        ny, nx = ys + dy, xs + dx
        rhs -= s[ny, nx]
        nb = index[ny, nx]
        is_in = nb >= 0
        rows.append(np.nonzero(is_in)[0])
        cols.append(nb[is_in])
        vals.append(-np.ones(int(is_in.sum())))
        rhs[~is_in] += d[ny[~is_in], nx[~is_in]]
    A = coo_matrix((np.concatenate(vals), (np.concatenate(rows), np.concatenate(cols))), shape=(n, n)).tocsc()
    sol = splu(A).solve(rhs)
    out[ys, xs] = np.clip(np.rint(sol), 0, 255).astype(dst.dtype)
    return out
