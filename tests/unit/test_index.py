"""Owner-side index: padding, balanced buckets, faiss parity, insert/delete, share format."""

import numpy as np
import pytest
import torch

from index import IndexShares, build_index, share_index, share_update
from index.build import PAD_ID
from index.synthetic import clustered, queries_like
from protocols.ring import DEFAULT_FP
from protocols.sharing import reconstruct


@pytest.fixture(scope="module")
def data():
    return clustered(3000, 16, 12, seed=1)


@pytest.fixture()
def plain(data):
    return build_index(data, np.arange(len(data)) + 100, 20, seed=0, slack=0.3)


def test_buckets_padded_to_one_size_every_id_once(plain, data):
    C, B = plain.n_centroids, plain.bucket_size
    assert plain.features.shape == (C, B, 16) and plain.ids.shape == (C, B)
    real = plain.ids[plain.ids != PAD_ID]
    assert sorted(real.tolist()) == list(range(100, 100 + len(data)))
    assert B == int(np.ceil(len(data) / C * 1.3))
    assert np.all(plain.features[plain.ids == PAD_ID] == 0)
    x, ids, _ = plain.assignment()
    assert np.array_equal(x, data[ids - 100])


def test_balanced_assignment_mostly_nearest(plain):
    x, _, lists = plain.assignment()
    nearest = ((x[:, None, :] - plain.centroids[None]) ** 2).sum(-1).argmin(-1)
    assert (nearest == lists).mean() > 0.6  # 12 uneven natural clusters in 20 capped buckets


def test_plain_search_equals_faiss_ivf_with_same_lists(plain, data):
    q = queries_like(data, 20, seed=3)
    ivf = plain.to_faiss()
    for nprobe in (1, 3):
        ivf.nprobe = nprobe
        _, fi = ivf.search(q, 10)
        ids, _ = plain.search(q, 10, nprobe)
        assert (fi == ids).all(axis=1).mean() >= 0.95


def _near_free_bucket(plain, m):
    c = int((plain.ids != PAD_ID).sum(1).argmin())
    return plain.centroids[c] + 0.001 * np.arange(1, m + 1, dtype=np.float32)[:, None]


def test_insert_into_padding_delete_to_padding_and_rebuild(plain, data):
    n0 = plain.n_items
    new = _near_free_bucket(plain, 3)
    upd = plain.insert(new, [5, 6, 7])
    assert not upd.rebuilt and upd.slots.shape == (3, 2)
    for (c, s), i in zip(upd.slots, (5, 6, 7)):
        assert plain.ids[c, s] == i
    assert plain.n_items == n0 + 3
    with pytest.raises(ValueError):
        plain.insert(new[:1], [5])
    d = plain.delete([5, 100])
    assert all(plain.ids[c, s] == PAD_ID for c, s in d.slots)
    with pytest.raises(KeyError):
        plain.delete([5])
    # fill one bucket's region until nothing nearby has room: rebuild
    B = plain.bucket_size
    before = plain.n_items
    many = np.repeat(data[:1], B * plain.spill + 5, axis=0)
    upd = plain.insert(many, np.arange(10_000, 10_000 + len(many)))
    assert upd.rebuilt
    assert plain.n_items == before + len(many)
    x, ids, _ = plain.assignment()
    assert len(np.unique(ids)) == len(ids)
    assert plain.bucket_size * plain.n_centroids >= plain.n_items


def test_rejects_bad_ids_and_huge_norms(data):
    with pytest.raises(ValueError):
        build_index(data[:100], np.zeros(100, dtype=np.int64), 4)
    with pytest.raises(ValueError):
        build_index(data[:100], np.arange(100) - 1, 4)
    with pytest.raises(ValueError):
        build_index(data[:100] * 1e4, None, 4)


def test_shares_reconstruct_records_and_roundtrip_tensors(plain):
    shs = share_index(plain)
    assert [s.party_id for s in shs] == [0, 1, 2]
    rows = reconstruct([s.rows for s in shs]).view(plain.n_centroids, plain.bucket_size, plain.dim + 2)
    feats = DEFAULT_FP.decode(rows[..., :-2])
    assert np.allclose(feats.numpy(), plain.features, atol=2**-16)
    assert torch.equal(rows[..., -1], torch.from_numpy(plain.ids))
    sq = DEFAULT_FP.decode(rows[..., -2]).numpy()
    pad = plain.ids == PAD_ID
    assert np.allclose(sq[pad], plain.pad_sqnorm)
    assert np.allclose(sq[~pad], (feats.numpy()[~pad] ** 2).sum(-1), atol=1e-3)
    cent = DEFAULT_FP.decode(reconstruct([s.centroids for s in shs]))
    assert np.allclose(cent.numpy(), plain.centroids, atol=2**-16)
    t = shs[1].to_tensors()
    assert all(v.dtype == torch.int64 for v in t.values())
    back = IndexShares.from_tensors(t)
    assert back.bucket_size == plain.bucket_size and back.party_id == 1
    assert torch.equal(back.rows[0], shs[1].rows[0])
    t["rows.lo"] = t["rows.lo"][:, :-1]
    with pytest.raises(ValueError):
        IndexShares.from_tensors(t)


def test_share_update_applies_insert_and_delete(plain, data):
    shs = share_index(plain)
    upd = plain.insert(_near_free_bucket(plain, 2), [1, 2])
    assert not upd.rebuilt
    for s, u in zip(shs, share_update(plain, upd)):
        s.apply_update(u)
    upd = plain.delete([101])
    for s, u in zip(shs, share_update(plain, upd)):
        s.apply_update(u)
    rows = reconstruct([s.rows for s in shs]).view(plain.n_centroids, plain.bucket_size, plain.dim + 2)
    assert torch.equal(rows[..., -1], torch.from_numpy(plain.ids))
    assert np.allclose(DEFAULT_FP.decode(rows[..., :-2]).numpy(), plain.features, atol=2**-16)
    assert all(s.n_items == plain.n_items for s in shs)
