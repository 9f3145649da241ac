"""secure_search end to end on three in-process parties vs the plaintext index and faiss.

Exactness: the plaintext replica ``PlainIndex.search`` ranks by (distance, id) in
float64; the secure search ranks fixed-point distances (inputs rounded to 2**-16, one
truncation). Ids must agree except where two candidates' true distances are within the
fixed-point error (we allow at most 1% of queries to differ; none do on these seeds).
Distances agree within 2**-16 (2 sum|q - x| + 4).
"""

import numpy as np
import pytest
import torch

from index import build_index, share_index, share_update
from index.synthetic import clustered, queries_like
from protocols.ring import DEFAULT_FP
from protocols.search import secure_search
from protocols.sharing import from_pair, output_pair, reconstruct, share, share_fixed
from protocols.simulate import make_parties, run_parties


def _run(shs, q, k, nprobe, record=False):
    qs = share_fixed(torch.from_numpy(np.ascontiguousarray(q)))
    parties = make_parties()
    logs = [[], [], []]
    if record:
        for p in parties:
            orig = p.comm.exchange

            def rec(send_next=None, send_prev=None, recv_next=False, recv_prev=False, _o=orig, _l=logs[p.id]):
                _l.append((None if send_next is None else tuple(send_next.shape),
                           None if send_prev is None else tuple(send_prev.shape), recv_next, recv_prev))
                return _o(send_next, send_prev, recv_next, recv_prev)

            p.comm.exchange = rec

    def body(p, qp, ish):
        ids, d = secure_search(p, from_pair(p, qp, 16), ish, k, nprobe)
        return output_pair(ids), output_pair(d), p.comm.stats.snapshot()

    out = run_parties(body, [(qs[i], shs[i]) for i in range(3)], parties=parties)
    ids = reconstruct([o[0] for o in out]).numpy()
    dist = DEFAULT_FP.decode(reconstruct([o[1] for o in out])).numpy()
    return ids, dist, [o[2] for o in out], logs


@pytest.fixture(scope="module")
def small():
    x = clustered(4000, 32, 16, seed=2)
    plain = build_index(x, np.arange(len(x)) * 3 + 7, 25, seed=0)
    return x, plain, share_index(plain)


@pytest.mark.parametrize("k,nprobe", [(10, 1), (1, 1), (5, 3), (5, 25)])  # 3, 25: distances first; 25 = C
def test_matches_plaintext_index_and_faiss(small, k, nprobe):
    x, plain, shs = small
    q = queries_like(x, 6, seed=k + nprobe)
    ids, dist, _, _ = _run(shs, q, k, nprobe)
    rid, rd = plain.search(q, k, nprobe)
    assert (ids == rid).all(axis=1).mean() >= 0.99
    assert np.abs(dist - rd).max() <= 2**-16 * (2 * np.abs(q).sum(-1).max() * 4 + 4)
    ivf = plain.to_faiss()
    ivf.nprobe = nprobe
    _, fi = ivf.search(q, k)
    assert (np.sort(fi, 1) == np.sort(ids, 1)).all(axis=1).mean() >= 0.99


def test_k_equals_probed_rows_padding_last(small):
    x, plain, shs = small
    q = queries_like(x, 2, seed=9)
    k = plain.bucket_size
    ids, dist, _, _ = _run(shs, q, k, 1)
    rid, _ = plain.search(q, k, 1)
    assert np.array_equal(ids, rid)
    for row, dr in zip(ids, dist):
        pad = row == -1
        if pad.any():
            first = int(np.argmax(pad))
            assert pad[first:].all() and dr[first:].min() > 1e5


def test_transcript_independent_of_query_and_bucket(small):
    x, plain, shs = small
    cent = plain.centroids
    far = np.argmax(((cent - cent[0]) ** 2).sum(-1))
    q1, q2 = cent[0:1] + 0.01, cent[far : far + 1] + 0.01  # different nearest buckets
    assert plain.search(q1, 1, 1)[0][0, 0] != plain.search(q2, 1, 1)[0][0, 0]
    _, _, st1, log1 = _run(shs, q1, 10, 2, record=True)
    _, _, st2, log2 = _run(shs, q2, 10, 2, record=True)
    for i in range(3):
        assert st1[i].as_dict() == st2[i].as_dict()
        assert log1[i] == log2[i]
    assert st1[0].rounds > 0


def test_distances_first_path_equals_rows_path_one_round_fewer(small, monkeypatch):
    """Both fetch paths of secure_search give the same ids and distances; distances-first
    (every record's distance in the centroid round, then a (distance, id) fetch) saves a round
    and sends Q (C + C B + 2 nprobe B) product elements instead of Q (C + nprobe B (d + 2) + nprobe B)."""
    import protocols.search as S

    x, plain, shs = small
    q = queries_like(x, 2, seed=11)
    nprobe, k = 3, 7
    assert S.distances_first(nprobe, 32) and not S.distances_first(1, 32) and not S.distances_first(2, 30)
    ids_f, dist_f, st_f, _ = _run(shs, q, k, nprobe)
    monkeypatch.setattr(S, "distances_first", lambda nprobe, dim: False)
    ids_r, dist_r, st_r, _ = _run(shs, q, k, nprobe)
    assert np.array_equal(ids_f, ids_r) and np.abs(dist_f - dist_r).max() <= 2 * 2**-16
    assert np.array_equal(ids_f, plain.search(q, k, nprobe)[0])
    n_c, B, d, Q = plain.n_centroids, plain.bucket_size, 32, 2
    for a, b in zip(st_f, st_r):
        assert a.rounds == b.rounds - 1
        assert b.bytes_sent - a.bytes_sent == 8 * Q * (nprobe * B * (d + 2) + nprobe * B - n_c * B - 2 * nprobe * B)


def test_insert_and_delete_visible_to_secure_search(small):
    x, _, _ = small
    plain = build_index(x, None, 25, seed=0, slack=0.3)
    shs = share_index(plain)
    c = int((plain.ids != -1).sum(1).argmin())
    new = plain.centroids[c : c + 1] + 0.05
    upd = plain.insert(new, [len(x) + 1])
    assert not upd.rebuilt
    for s, u in zip(shs, share_update(plain, upd)):
        s.apply_update(u)
    ids, _, _, _ = _run(shs, new, 3, 1)
    assert ids[0, 0] == len(x) + 1
    upd = plain.delete([len(x) + 1])
    for s, u in zip(shs, share_update(plain, upd)):
        s.apply_update(u)
    ids, _, _, _ = _run(shs, new, 3, 1)
    assert len(x) + 1 not in ids[0]


def test_rejects_bad_arguments(small):
    _, _, shs = small
    qs = share_fixed(torch.zeros(1, 32))

    def body(p, qp, ish, other):
        q = from_pair(p, qp, 16)
        for kw in ({"k": 0}, {"k": 10, "nprobe": 0}, {"k": 10 ** 6}):
            with pytest.raises(ValueError):
                secure_search(p, q, ish, **kw)
        with pytest.raises(ValueError):
            secure_search(p, q, other, 1)
        return True

    assert all(run_parties(body, [(qs[i], shs[i], shs[(i + 1) % 3]) for i in range(3)]))


def _recall_vs_faiss(n, n_queries, n_centroids, nprobe, seed):
    x = clustered(n, 128, max(8, n // 1000), seed=seed)
    plain = build_index(x, None, n_centroids, seed=0)
    shs = share_index(plain)
    q = queries_like(x, n_queries, seed=seed + 1)
    ids, _, _, _ = _run(shs, q, 10, nprobe)
    ivf = plain.to_faiss()
    ivf.nprobe = nprobe
    _, fi = ivf.search(q, 10)
    return (np.sort(fi, 1) == np.sort(ids, 1)).all(axis=1).mean()


def test_recall_at_10_vs_faiss_ivf_20k():
    assert _recall_vs_faiss(20_000, 32, 64, 2, seed=5) >= 0.99


@pytest.mark.slow
def test_recall_at_10_vs_faiss_ivf_100k():
    assert _recall_vs_faiss(100_000, 100, 316, 2, seed=6) >= 0.99


def test_unit_norm_index_narrow_keys_padding_last():
    """The product's L2-normalised features get ``id_bits`` 39 (``index.build.auto_id_bits``): 24-bit keys in
    eight 3-bit digits, padding at ``||x||^2 = 16``; results equal the plaintext index, padding last."""
    from protocols.search import distance_order
    from protocols.topk import narrow_order

    x = clustered(3000, 16, 12, seed=4)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    plain = build_index(x, None, 20, bucket_size=200, seed=0)  # 150 rows per bucket on average: padding
    assert plain.id_bits == 39 and plain.pad_sqnorm == 16.0
    order = distance_order(plain.id_bits, 10)
    assert order is not None and order.spec == narrow_order(24).spec and order.spec.widths == (3,) * 8
    shs = share_index(plain)
    q = queries_like(x, 3, seed=5)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    for k, nprobe in [(10, 4), (plain.bucket_size, 1)]:
        ids, dist, _, _ = _run(shs, q, k, nprobe)
        rid, rd = plain.search(q, k, nprobe)
        # same ranked distances; ids equal up to swaps of near-ties (module docstring)
        assert np.abs(dist - rd).max() <= 2**-16 * 16
        assert all(set(a) == set(b) for a, b in zip(ids, rid)) if k == plain.bucket_size else np.array_equal(ids, rid)
    pad = ids == -1
    assert pad.any() and all(row[int(np.argmax(row)):].all() for row in pad if row.any())
    assert np.allclose(dist[pad], 17.0, atol=1e-3)  # ||q||^2 + 16
    with pytest.raises(ValueError, match="norms too large"):
        plain.insert(np.full((1, 16), 1.0, np.float32), np.array([5000]))  # ||x||^2 = 16 > 2


def test_probe_onehot_digits_and_cost():
    """The probes' one-hot at C = 1000: three digits (4, 3, 3) in 3 rounds and 1.22 MB per party for 64
    probes, against 2 rounds and 5.98 MB for one 10-bit digit; exact on every candidate difference."""
    from protocols import digits as D
    from protocols.search import onehot_spec

    assert onehot_spec(25).widths == (5,) and onehot_spec(1000).widths == (4, 3, 3)
    probe = torch.randint(0, 1000, (64, 1))
    diff = probe - torch.arange(1000)  # [64, 1000], every value in (-1000, 1000)
    shares = share(diff)

    def body(p, pair):
        s0 = p.comm.stats.snapshot()
        out = D.eqz(from_pair(p, pair, 0), onehot_spec(1000))
        st = p.comm.stats.snapshot() - s0
        return output_pair(out), st.rounds, st.bytes_sent

    out = run_parties(body, [(shares[i],) for i in range(3)])
    assert torch.equal(reconstruct([o[0] for o in out]), (diff == 0).to(torch.int64))
    assert all(o[1] == 3 for o in out) and max(o[2] for o in out) <= 1_230_000
