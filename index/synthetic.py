"""Clustered synthetic features for tests and benchmarks (recall on uniform data is meaningless)."""

from __future__ import annotations

import numpy as np


def clustered(n: int, d: int, n_clusters: int, seed: int = 0, spread: float = 0.35,
              chunk: int = 200_000) -> np.ndarray:
    """``n`` points ``[n, d]`` float32: Gaussian blobs around ``n_clusters`` centres ~ N(0, 1).

    Cluster sizes vary (Dirichlet weights) so that k-means buckets are unbalanced, as in
    real data. Generated in chunks to bound memory at n = 1,000,000.
    """
    rng = np.random.default_rng(seed)
    centres = rng.standard_normal((n_clusters, d)).astype(np.float32)
    weights = rng.dirichlet(np.full(n_clusters, 2.0))
    label = rng.choice(n_clusters, size=n, p=weights)
    out = np.empty((n, d), dtype=np.float32)
    for s in range(0, n, chunk):
        e = min(n, s + chunk)
        out[s:e] = centres[label[s:e]] + spread * rng.standard_normal((e - s, d), dtype=np.float32)
    return out


def queries_like(data: np.ndarray, n_queries: int, seed: int = 1, noise: float = 0.2) -> np.ndarray:
    """Queries near random database points (``noise`` times N(0, 1) per coordinate)."""
    rng = np.random.default_rng(seed)
    pick = rng.choice(len(data), size=n_queries, replace=False)
    q = data[pick] + noise * rng.standard_normal((n_queries, data.shape[1]), dtype=np.float32)
    return np.ascontiguousarray(q, dtype=np.float32)
