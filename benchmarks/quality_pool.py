"""The real-feature distractor pool shared by ``benchmarks.quality`` (large n) and ``benchmarks.e2e``.

* :func:`split_photos`: a seeded half of the real originals is the *distractor half*; the
  other half is the *query half*. :func:`map_image_rows` lists the images whose trunk
  feature maps are kept (the originals of the distractor half and their transformed
  copies, ``quality_data.make_queries``) and :func:`query_half_rows` the copies of the query
  half (the queries), so no distractor comes from a query's own photo.
* :func:`distractors` draws ``count`` features from the pool of window features
  (``quality_features.window_features``: the pool, through the given head, of every proper
  sub-rectangle of the trunk's final feature map of those images at every extracted
  resolution: features of image parts computed in feature space). Drawn without
  replacement in a seeded order; only when the pool is smaller than ``count`` is the rest
  filled by JITTERED copies: a pool feature ``p`` (uniform, with replacement) plus
  ``jitter x (a - b)`` for two other pool features ``a, b``, L2-normalised (noise along
  real-feature directions, not isotropic). The returned info says how many of each.
"""

from __future__ import annotations

import numpy as np

from .quality_data import Query
from .quality_features import Head, window_count, window_features

FILL_JITTER = 0.1


def split_photos(n_originals: int, seed: int) -> np.ndarray:
    """Boolean mask [n_originals]: True for the seeded distractor half (``n // 2`` photos)."""
    half = np.zeros(n_originals, bool)
    half[np.random.default_rng([seed, 3]).permutation(n_originals)[: n_originals // 2]] = True
    return half


def map_image_rows(distractor_half: np.ndarray, queries: list[Query]) -> np.ndarray:
    """Rows (originals first, then copies offset by ``len(distractor_half)``) whose feature maps make the pool."""
    n0 = len(distractor_half)
    return np.array([i for i in range(n0) if distractor_half[i]]
                    + [n0 + j for j, q in enumerate(queries) if distractor_half[q.source]], dtype=np.int64)


def query_half_rows(distractor_half: np.ndarray, queries: list[Query]) -> np.ndarray:
    """Indices into ``queries`` of the copies of query-half photos."""
    return np.array([j for j, q in enumerate(queries) if not distractor_half[q.source]], dtype=np.int64)


def pool_features(h: Head, maps_by_res: dict[int, np.ndarray]) -> np.ndarray:
    """Every window feature of every map, resolutions in increasing order, through head ``h``."""
    return np.concatenate([window_features(h, maps_by_res[r]) for r in sorted(maps_by_res)])


def distractors(h: Head, maps_by_res: dict[int, np.ndarray], count: int, seed: int,
                jitter: float = FILL_JITTER) -> tuple[np.ndarray, dict]:
    """``count`` distractor features [count, d] float32 (module docstring) and what they are."""
    pool = pool_features(h, maps_by_res)
    if not len(pool):
        raise ValueError("the distractor pool is empty (no feature maps)")
    rng = np.random.default_rng([seed, 11])
    order = rng.permutation(len(pool))
    real = min(count, len(pool))
    out = np.empty((count, pool.shape[1]), np.float32)
    out[:real] = pool[order[:real]]
    fill = count - real
    if fill:
        frng = np.random.default_rng([seed, 13])
        for s in range(0, fill, 100_000):
            m = min(100_000, fill - s)
            p, a, b = (pool[frng.integers(0, len(pool), m)].astype(np.float64) for _ in range(3))
            x = p + jitter * (a - b)
            out[real + s: real + s + m] = x / np.maximum(np.linalg.norm(x, axis=1, keepdims=True), 1e-12)
    info = {"pool": int(len(pool)), "from_pool": int(real), "jittered": int(fill),
            "jitter": jitter if fill else None,
            "windows_per_resolution": {int(r): window_count(maps_by_res[r]) for r in sorted(maps_by_res)}}
    return out, info
