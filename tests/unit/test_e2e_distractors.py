"""benchmarks.quality_pool, which grows benchmarks.e2e's index: real window features first (drawn without
replacement), jittered copies only beyond the pool, photo halves that keep queries and distractors apart."""

from __future__ import annotations

import numpy as np

from benchmarks import e2e
from benchmarks.quality_data import make_queries
from benchmarks.quality_features import Head, head, window_count
from benchmarks.quality_pool import distractors, map_image_rows, pool_features, query_half_rows, split_photos


def _setup(seed: int = 0) -> tuple[Head, dict[int, np.ndarray]]:
    rng = np.random.default_rng(seed)
    h = Head("pca", 4, rng.normal(size=(4, 16)), rng.normal(size=4))
    maps = {64: rng.normal(size=(3, 16, 2, 2)).astype(np.float16),
            96: rng.normal(size=(2, 16, 3, 3)).astype(np.float16)}
    return h, maps


def test_window_pool_is_every_sub_rectangle_through_the_head() -> None:
    h, maps = _setup()
    pool = pool_features(h, maps)
    assert len(pool) == window_count(maps[64]) + window_count(maps[96]) == 3 * 8 + 2 * 35
    m = maps[96][1].astype(np.float64)  # last window of the 96 map's second image: the bottom-right cell
    ref = head(h, m[:, 2:3, 2:3].mean(axis=(1, 2))[None])[0]
    first = head(h, maps[64][0].astype(np.float64)[:, 0:1, 0:1].mean(axis=(1, 2))[None])[0]
    assert np.abs(pool[0] - first).max() < 1e-5
    assert np.abs(pool[-1] - ref).max() < 1e-5
    assert np.allclose(np.linalg.norm(pool, axis=1), 1.0, atol=1e-5)


def test_distractors_come_from_the_pool_without_replacement() -> None:
    h, maps = _setup()
    pool = pool_features(h, maps)
    x, info = distractors(h, maps, 50, seed=0)
    assert info == {**info, "pool": 94, "from_pool": 50, "jittered": 0, "jitter": None}
    rows = [int(np.abs(pool - v).max(1).argmin()) for v in x]
    assert all(np.abs(pool[r] - v).max() < 1e-6 for r, v in zip(rows, x)) and len(set(rows)) == 50
    again, _ = distractors(h, maps, 50, seed=0)
    assert np.array_equal(x, again)  # seeded


def test_jittered_fill_only_beyond_the_pool() -> None:
    h, maps = _setup()
    pool = pool_features(h, maps)
    x, info = distractors(h, maps, 300, seed=1, jitter=0.1)
    assert (info["from_pool"], info["jittered"], info["jitter"]) == (94, 206, 0.1)
    assert sorted(int(np.abs(pool - v).max(1).argmin()) for v in x[:94]) == list(range(94))
    fill = x[94:]
    assert np.allclose(np.linalg.norm(fill, axis=1), 1.0, atol=1e-5)
    near = np.min(np.linalg.norm(fill[:, None, :] - pool[None], axis=2), axis=1)
    assert near.max() < 0.5 and near.mean() > 1e-3  # close to a real feature, not a copy of it


def test_photo_halves_keep_queries_and_distractors_apart() -> None:
    half = split_photos(11, seed=0)
    assert half.sum() == 5 and np.array_equal(half, split_photos(11, seed=0))
    copies = make_queries(11, 3)
    rows = map_image_rows(half, copies)
    qs = query_half_rows(half, copies)
    assert all(half[r] for r in rows if r < 11) and all(half[copies[r - 11].source] for r in rows if r >= 11)
    assert len(rows) == 5 + 15 and len(qs) == 18 and not any(half[copies[j].source] for j in qs)


def test_e2e_defaults_grow_one_million_with_real_distractors() -> None:
    a = e2e.parse_args([])
    assert a.n == 1_000_000 and a.distractors == "windows" and a.upload == 0
    assert set(e2e.QUALITY_RESOLUTIONS) <= set(a.distractor_resolutions)
    assert "jittered" in e2e.describe_distractors({"from_pool": 5, "pool": 5, "jittered": 3, "jitter": 0.1,
                                                   "resolutions": [96], "head": "pca_whiten"}, 221)
