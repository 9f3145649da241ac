"""SDK search (issue 16): one image, a list, an [N,H,W,C] array or a [Q, d] feature array, run as
ONE secure session and returned faiss-style as ``(distances, ids)`` of shape [Q, k]; k above
the candidates returns what exists with a warning; the servers refuse it with the numbers."""

from __future__ import annotations

import re

import numpy as np
import pytest

from client.errors import TriVaultError, TriVaultWarning
from client.search import plan_k

from .test_cluster import TOL, assert_matches_plaintext


def sessions_done(cluster) -> list[int]:
    """Secure sessions each server has finished so far (from its log)."""
    return [len(re.findall(r"session \S+ for \S+ done", cluster.log_path(i).read_text())) for i in range(3)]


def test_list_of_images_is_one_session_with_faiss_shapes(cluster, client):
    targets = [3, 7, 1]
    before = sessions_done(cluster)
    distances, ids = client.search([cluster.images[t] for t in targets], k=3)
    assert sessions_done(cluster) == [b + 1 for b in before]  # three queries, one secure session
    assert distances.shape == ids.shape == (3, 3)
    assert distances.dtype == np.float32 and ids.dtype == np.int64
    assert ids[:, 0].tolist() == targets
    for q, t in enumerate(targets):  # every row equals the plaintext top-k
        assert_matches_plaintext(client, cluster.images[t], ids[q].tolist(), distances[q].astype(float).tolist())


def test_one_image_and_an_nhwc_array(cluster, client):
    d1, i1 = client.search(cluster.images[5], k=2)
    assert i1.shape == (1, 2) and i1[0, 0] == 5 and abs(d1[0, 0]) <= TOL
    stack = np.stack([cluster.images[2], cluster.images[9]])  # [N, H, W, C] uint8
    d2, i2 = client.search(stack, k=1)
    assert i2[:, 0].tolist() == [2, 9] and np.all(np.abs(d2) <= TOL)


def test_feature_array_queries_match_plaintext(cluster, client):
    feats, ids = client.owner.load_features()
    pick = [4, 10, 0]
    q = feats[[list(ids).index(p) for p in pick]].astype(np.float64) + 0.01
    distances, found = client.search(q, k=4)
    assert found.shape == (3, 4) and found[:, 0].tolist() == pick
    for row in range(3):
        plain = ((feats.astype(np.float64) - q[row]) ** 2).sum(1)
        expect = dict(zip(ids.tolist(), plain.tolist()))
        kth = np.sort(plain)[3]
        for i, d in zip(found[row].tolist(), distances[row].tolist()):
            assert abs(d - expect[i]) <= TOL and expect[i] <= kth + TOL
    _d1, i1 = client.search(q[1].astype(np.float32), k=1)  # one feature vector [d]
    assert i1.tolist() == [[10]]
    with pytest.raises(ValueError, match=r"\[Q, 8\]"):
        client.search(np.zeros((2, 5)), k=1)
    with pytest.raises(ValueError, match="squared L2 norm below"):  # outside the index's key range
        client.search(np.full((1, 8), 1e4), k=1)


def test_per_query_results_carry_the_owners_labels(cluster, client):
    res = client.search_results([cluster.images[6], cluster.images[11]], k=2)
    assert [r.ids[0] for r in res] == [6, 11]
    assert [r.labels[0] for r in res] == ["img6", "img11"]
    assert res[0].comm and res[0].bytes_per_party > 0 and res[0].seconds > 0


def test_k_above_the_candidates_returns_what_exists_with_a_note(cluster, client):
    info = client.info()
    meta, n = info["index_meta"], len(info["image_ids"])
    cand = int(meta["n_centroids"]) * int(meta["bucket_size"])
    k = cand + 3
    with pytest.warns(TriVaultWarning, match="candidates") as rec:
        b = client.search_batch(cluster.images[8], k=k, nprobe=1)
    assert b.ids.shape == (1, k) and b.k_run == cand and b.nprobe_run == int(meta["n_centroids"])
    found = b.ids[0][b.ids[0] >= 0]
    assert found[0] == 8 and len(found) == min(n, cand) and len(set(found.tolist())) == len(found)
    assert np.all(b.ids[0][len(found):] == -1) and np.all(np.isinf(b.distances[0][len(found):]))
    assert b.note and str(rec[0].message) == b.note
    # the CLI's default k=10 on a 12-image deployment just works
    _d, i = client.search(cluster.images[8], k=10)
    assert i.shape == (1, 10) and i[0, 0] == 8


def test_servers_refuse_k_above_candidates_with_the_numbers(cluster, client):
    """A client that skips the SDK's planning gets INVALID_ARGUMENT with the numbers, not INTERNAL."""
    import uuid

    import torch

    from protocols.sharing import share_fixed
    from wire import bundle as bd

    info = client.info()
    meta = info["index_meta"]
    k = int(meta["bucket_size"]) + 1
    sid = str(uuid.uuid4())
    pairs = share_fixed(torch.zeros(1, 3, 16, 16, dtype=torch.float64))
    auth = client.sign("search", {"session": sid, "collection": "default", "purpose": None, "k": k})
    m = {"k": k, "nprobe": 1, "input": "image", "index_version": info["index_version"],
         "model_version": info["model_version"]}

    def one(i: int):
        b = bd.Bundle("search", sid, m, bd.pairs_to_tensors("query", pairs[i]), auth)
        return list(client.fan.stubs[i].Search(bd.encode(b), timeout=30))

    with pytest.raises(TriVaultError) as e:
        client.fan.all(one)
    msg = str(e.value)
    assert "INVALID_ARGUMENT" in msg and f"k={k} is more than the {meta['bucket_size']} candidates" in msg
    assert "INTERNAL" not in msg and "ValueError" not in msg
    assert "internal error" not in "".join(cluster.log_path(i).read_text() for i in range(3))


def test_plan_k_widens_nprobe_then_caps_k():
    assert plan_k(5, 1, 4, 8, 30) == (5, 1, None)
    k, nprobe, note = plan_k(10, 1, 4, 3, 30)  # 10 > 1 x 3: four buckets reach 12 >= 10
    assert (k, nprobe) == (10, 4) and "nprobe widened from 1 to 4" in note
    k, nprobe, note = plan_k(20, 2, 4, 3, 30)  # 4 x 3 = 12 candidates at most
    assert (k, nprobe) == (12, 4) and "searched with k=12" in note
    k, nprobe, note = plan_k(10, 1, 1, 16, 3)
    assert (k, nprobe) == (10, 1) and "only 3 image(s)" in note
    assert plan_k(0, 1, 1, 16, 3) == (0, 1, None)  # left to the servers' range check
    assert plan_k(10, 64, 3, 16, 40) == (10, 3, None)  # the default nprobe on a small index: every bucket


def test_servers_refuse_wrong_feature_queries_at_admission(cluster, client):
    import uuid

    import torch

    from protocols.sharing import share_fixed
    from wire import bundle as bd

    info = client.info()
    sid = str(uuid.uuid4())
    pairs = share_fixed(torch.zeros(2, 5, dtype=torch.float64))  # the index dimension is 8
    auth = client.sign("search", {"session": sid, "collection": "default", "purpose": None, "k": 1})
    m = {"k": 1, "nprobe": 1, "input": "features", "index_version": info["index_version"],
         "model_version": info["model_version"]}

    def one(i: int):
        b = bd.Bundle("search", sid, m, bd.pairs_to_tensors("query", pairs[i]), auth)
        return list(client.fan.stubs[i].Search(bd.encode(b), timeout=30))

    with pytest.raises(TriVaultError, match=r"INVALID_ARGUMENT: server \d: query features must be \[Q, 8\]"):
        client.fan.all(one)
