"""A server as a Ray driver with shard actors (servers/shards.py), among three real server processes.

One Ray session per module (``ray.init`` here: 2 CPUs, no dashboard, its own temp dir);
server 1 joins it (``[servers.1.shards] address``) with 2 shard actors, servers 0 and 2 stay
in process (a deployment gives each server its own cluster: docker/compose.yaml's ``ray``
profile; benchmarks/scale.py shards all three at n = 1M). The same stored index is searched
first in process, then, after a restart, sharded: the ids must be identical. A shard actor
killed while a query waits on it fails that query with a clear error (no wrong answer, no
hang) and Ray restarts it from the stored shares.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import tempfile
import threading
import time

import numpy as np
import pytest
import ray
import torch

from client.errors import TriVaultError
from client.local_cluster import LocalCluster
from client.sdk import Client
from servers.shards import bucket_ranges, init_ray, npz_member

from .conftest import RES, small_images, tiny_model

pytestmark = pytest.mark.timeout(900)  # the module's Ray start-up is in the first test: minutes on a loaded machine
N_IMAGES = 120  # C = 3 buckets (client.index_policy: at least 39 items per bucket): ranges [0, 2), [2, 3)


@pytest.fixture(scope="module")
def ray_address():
    tmp = tempfile.mkdtemp(prefix="tvray", dir="/tmp")  # short: Ray's socket paths must fit 107 bytes
    ctx = init_ray(num_cpus=2, include_dashboard=False, _temp_dir=tmp, object_store_memory=100 * 2**20,
                   log_to_driver=False)  # Ray 2.60 advertises this machine's own address, never another host
    yield ctx.address_info["gcs_address"]
    ray.shutdown()
    shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture(scope="module")
def sharded(tmp_path_factory, ray_address):
    """(cluster, client, queries, in-process ids): the same stored index, then served by shards."""
    lc = LocalCluster(tmp_path_factory.mktemp("shards"), txn_timeout_s=8.0, peer_timeout_s=20.0,
                      query_timeout_s=60.0)
    lc.start()
    c = Client(lc.client_config, progress=False)
    try:
        c.register_model(tiny_model(), resolution=RES)
        c.upload(small_images(N_IMAGES, seed=5), labels=[f"s{i}" for i in range(N_IMAGES)])
        feats, ids = c.owner.load_features()
        rng = np.random.default_rng(0)
        queries = feats[rng.choice(len(feats), 6, replace=False)].astype(np.float64) + 0.05
        before = {nprobe: c.search(queries, k=4, nprobe=nprobe)[1] for nprobe in (1, 2)}
        lc.stop()
        with open(lc.config_path, "a") as f:
            f.write(f'\n[servers.1.shards]\nworkers = 2\naddress = "{ray_address}"\ntimeout_s = 20\n')
        lc.start(timeout_s=900)  # Ray start-up: seconds on an idle machine, minutes on a loaded one
        yield lc, c, queries, before, (feats, ids)
    finally:
        c.close()
        lc.stop()


TOL = 2.0**-10  # fixed point: 16 fractional bits, truncation +-1 ulp per product (fresh randomness per query)


def assert_same_ids(got: np.ndarray, want: np.ndarray, queries: np.ndarray, feats: np.ndarray, ids: np.ndarray):
    """Identical ids, except that two items whose plaintext distances tie within TOL may swap ranks
    (the truncation noise differs between any two runs, sharded or not)."""
    assert got.shape == want.shape
    for q, g_row, w_row in zip(queries, got, want):
        plain = dict(zip(ids.tolist(), ((feats.astype(np.float64) - q) ** 2).sum(1).tolist()))
        for g, w in zip(g_row.tolist(), w_row.tolist()):
            assert g == w or abs(plain[g] - plain[w]) <= TOL, (g_row, w_row)


def _shard_pids(lc: LocalCluster, server: int) -> dict[int, int]:
    """Shard number -> pid of server ``server``'s actors, from its log (latest binding)."""
    pids = {}
    pat = re.compile(rf"server {server}: shard (\d+)/\d+ buckets .* pid (\d+)")
    for m in pat.finditer(lc.log_path(server).read_text(errors="replace")):
        pids[int(m.group(1))] = int(m.group(2))
    return pids


def test_sharded_servers_return_the_unsharded_ids(sharded):
    lc, c, queries, before, (feats, ids) = sharded
    for nprobe, want in before.items():
        _, got = c.search(queries, k=4, nprobe=nprobe)
        assert_same_ids(got, want, queries, feats, ids)
        assert np.array_equal(got[:, 0], want[:, 0])
    assert len(_shard_pids(lc, 1)) == 2  # server 1: 2 actors over its stored share pair
    assert "2 shard workers" in lc.log_path(1).read_text() and not _shard_pids(lc, 0)


def test_shards_map_contiguous_bucket_ranges_of_the_stored_file(sharded):
    lc = sharded[0]
    path = max((lc.root / "data" / "server1" / "objects" / "index").glob("v*.npz"), key=lambda p: int(p.stem[1:]))
    rows = npz_member(path, "rows.lo", mode="r")
    assert isinstance(rows, np.memmap) and rows.dtype == np.int64
    C = rows.shape[0]
    ranges = bucket_ranges(C, 2)
    assert ranges[0][0] == 0 and ranges[-1][1] == C and all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    with np.load(path) as z:  # the map reads exactly what np.load reads
        assert np.array_equal(np.asarray(rows), z["rows.lo"])


def test_delete_reaches_the_shards(sharded):
    lc, c, queries, _, (feats, ids) = sharded
    victim = int(ids[3])
    c.delete(victim)
    q = feats[[3, 7]].astype(np.float64) + 0.01
    _, found = c.search(q, k=2)
    assert victim not in found.tolist()[0] and found[1, 0] == int(ids[7])


def test_killed_shard_fails_the_query_in_flight_then_is_restarted(sharded):
    lc, c, queries, _, (feats, ids) = sharded
    old = _shard_pids(lc, 1)[0]
    os.kill(old, signal.SIGSTOP)  # the shard hangs: the query below waits on it
    err: list[BaseException] = []

    def query() -> None:
        try:
            c.search(queries[:1], k=4)
        except TriVaultError as exc:
            err.append(exc)

    t = threading.Thread(target=query)
    t.start()
    time.sleep(3.0)
    os.kill(old, signal.SIGKILL)
    t.join(60)
    assert not t.is_alive() and err, "the query in flight must fail, not hang or answer"
    # the client stops at the first server's error: server 1's own ("shard 0 of 2 ... died") or,
    # when a peer answers first, that peer's relay naming server 1 as the one that aborted
    assert re.search(r"server 1: shard 0 of 2 .* died|server 1 aborted the query", str(err[0])), str(err[0])
    deadline = time.monotonic() + 60
    while True:  # Ray restarts the actor from the stored shares; queries succeed again
        try:
            _, got = c.search(queries, k=4)
            break
        except TriVaultError:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)
    _, want = c.search(queries, k=4)
    assert_same_ids(got, want, queries, feats, ids)
    with pytest.raises(ProcessLookupError):
        os.kill(old, 0)


@pytest.mark.parametrize("nprobe", [1, 6, 8])  # rows first; distances first ((6 - 1)(16 + 2) > 32); every bucket
def test_a_sharded_party_speaks_the_unsharded_protocol(ray_address, tmp_path, nprobe):
    """Party 1 searches through shard actors (``ShardedView``), parties 0 and 2 in process, on
    both search paths: the ids equal plaintext search over the probed buckets (three in-process
    parties, the module's Ray session; a desync of the two implementations fails the exchange)."""
    from index import build_index, share_index
    from index.synthetic import clustered
    from protocols.ring import DEFAULT_FP
    from protocols.search import secure_search
    from protocols.sharing import from_pair, reconstruct, share_fixed
    from protocols.simulate import run_parties
    from servers.sharded_search import ShardedIndex
    from servers.shards import ShardPool
    from servers.storage import tensors_to_npz

    x = clustered(400, 16, n_clusters=8, seed=3)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    plain = build_index(x.astype(np.float32), None, 8)
    shares = share_index(plain, DEFAULT_FP)
    (tmp_path / "v1.npz").write_bytes(tensors_to_npz(shares[1].to_tensors()))
    pool = ShardPool(1, 2, timeout_s=60.0, worker_cpus=0.0)  # in this process's Ray session, beside server 1's actors
    try:
        sharded = ShardedIndex.open(pool, tmp_path, 1)
        q = x[[5, 150, 333]].astype(np.float64) + 0.01
        qs = share_fixed(torch.from_numpy(q), DEFAULT_FP)

        def body(party, pair):
            query = from_pair(party, pair, DEFAULT_FP.frac_bits)
            if party.id == 1:
                ids = sharded.search(party, query, 4, nprobe=nprobe)[0]
            else:
                ids = secure_search(party, query, shares[party.id], 4, nprobe=nprobe)[0]
            return ids.lo, ids.hi

        got = reconstruct(run_parties(body, [[qs[i]] for i in range(3)])).numpy()
    finally:
        pool.close()
    d = ((x[None].astype(np.float64) - q[:, None]) ** 2).sum(-1)  # [Q, n]
    cd = ((plain.centroids[None].astype(np.float64) - q[:, None]) ** 2).sum(-1)
    for j in range(len(q)):
        probed = set(np.argsort(cd[j], kind="stable")[:nprobe].tolist())
        cand = sorted({int(i) for c in probed for i in plain.ids[c].tolist() if i >= 0})
        want = sorted(cand, key=lambda i: d[j, i])[:4]
        assert len(set(got[j].tolist())) == 4
        for g, w in zip(got[j].tolist(), want):
            assert g == w or abs(d[j, g] - d[j, w]) <= TOL, (got[j], want)
