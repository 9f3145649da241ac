"""Owner's index policy: a large index taking a few new rows is updated in place even when their
nearby buckets are full (no k-means rebuild, no full re-share); a small one is rebuilt."""

import numpy as np

from client.index_policy import LARGE_INDEX, index_bundles, insert_anywhere
from client.owner_state import OwnerState
from index.build import PAD_ID
from index.synthetic import clustered


def _unit(x: np.ndarray) -> np.ndarray:
    return (x / np.linalg.norm(x, axis=1, keepdims=True)).astype(np.float32)


def test_few_rows_into_a_large_index_insert_without_rebuild(tmp_path):
    n, d = 20_000, 8
    x = _unit(clustered(n, d, 40, seed=1))
    ids = np.arange(n, dtype=np.int64)
    owner = OwnerState(tmp_path)
    imeta, per, after = index_bundles(owner, x, ids, base_version=0)
    assert "update" not in imeta
    after(1)
    plain, _ = owner.load_plain_index(1)
    # 150 rows at one spot: more than the free slots of its spill nearest buckets
    new = _unit(x[:1] + 1e-3 * np.random.default_rng(2).standard_normal((150, d)))
    new_ids = np.arange(n, n + 150, dtype=np.int64)
    assert insert_anywhere(n, len(new)) and not insert_anywhere(LARGE_INDEX - 1, 1)
    assert plain.insert(new, new_ids).rebuilt  # the old rule: k-means over everything again
    imeta, per, after = index_bundles(owner, np.concatenate([x, new]), np.concatenate([ids, new_ids]), 1, new, new_ids)
    assert imeta["update"] and imeta["n_centroids"] == plain.n_centroids
    assert [int(u["n_items"]) for u in per] == [n + 150] * 3 and per[0]["slots"].shape == (150, 2)
    after(2)
    got, _ = owner.load_plain_index(2)
    assert got.n_items == n + 150 and set(new_ids.tolist()) <= set(got.ids[got.ids != PAD_ID].tolist())
    found, _ = got.search(new[:5], k=1, nprobe=got.n_centroids)  # every bucket probed: exact
    assert found[:, 0].tolist() == new_ids[:5].tolist()


def test_small_index_overflow_rebuilds(tmp_path):
    x = _unit(clustered(400, 8, 4, seed=3))
    owner = OwnerState(tmp_path)
    _, _, after = index_bundles(owner, x, np.arange(400), base_version=0)
    after(1)
    new = _unit(x[:1] + 1e-3 * np.random.default_rng(4).standard_normal((60, 8)))
    imeta, per, after = index_bundles(owner, np.concatenate([x, new]), np.arange(460), 1, new, np.arange(400, 460))
    assert "update" not in imeta and "meta" in per[0]  # the whole index, re-shared
    after(2)
    assert owner.load_plain_index(2)[0].n_items == 460
