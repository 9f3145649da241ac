"""Benchmark of a server as a Ray cluster of shard actors (issue 15), and a fitted scaling model.

``python -m benchmarks.scale --json`` prints one JSON line per ``(n, workers)`` with
``n, workers, secure_query_s, fetch_s, bytes_per_party, memory_per_worker_bytes,
same_ids_as_unsharded`` (and more), ``workers = 0`` being today's in-process path, then one
``{"model": ...}`` line: the model fitted on these measurements and its predicted query
time and memory at n = 10M and 100M for 1-64 workers per server (docs/SCALING.md).

Method:
* data and index as ``benchmarks.search``: clustered synthetic features (d = 128),
  ``C = round(sqrt(n))`` k-means buckets padded to ``B = ceil(1.1 n / C)``; the owner's
  shares of each server are written as that server's ``v1.npz`` (the store's format) in
  ``--dir``; every run maps them (``servers.shards.npz_member``), nothing is copied;
* ``secure_query_s``: median over ``--queries`` single queries (after one warm-up) of the
  slowest of the three parties, run as threads in this process (one torch thread each).
  The sharded parties (``servers.sharded_search.ShardedIndex``) use one Ray session here
  (a deployment gives each server its own cluster); all three servers and their workers
  share this machine's 2 cores, so this is NOT the time of three separate machines;
* ``fetch_s``: median time of one server's oblivious-fetch local product (the part the
  shards split), measured for one server alone on the machine: ``workers = 0`` runs
  ``BucketShard.fetch`` over all buckets in this process, ``workers = N`` through the N
  actors (Ray call, partial products, transfer of the partials); the configurations are
  timed in turn, 5 rounds (``fetch_s_all``), so the drifting load of a shared machine hits
  all alike (``fetch_s_sequential``: the same measured right after each configuration's queries);
* ``fetch_in_query_s``: the same stage timed inside the 3-party queries (contended);
* ``bytes_per_party``: bytes sent to the peers per query (largest party);
* ``memory_per_worker_bytes``: share bytes each worker maps (its bucket range of both
  components and its centroids); ``worker_rss_bytes`` its resident set after the queries;
* ``same_ids_as_unsharded``: every query's top-k ids equal the unsharded path's;
* ``faiss_query_s``: plaintext faiss IVF-Flat with the same lists and nprobe.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import statistics
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np
import torch

from index import build_index, share_index
from index.synthetic import clustered, queries_like
from protocols.layout import RECORD_EXTRA, IndexShares
from protocols.party import Party
from protocols.search import secure_search
from protocols.sharing import from_pair, output_pair, reconstruct, share_fixed
from protocols.simulate import make_parties, run_parties
from servers.sharded_search import ShardedIndex
from servers.shards import BucketShard, ShardPool, init_ray, npz_member
from servers.storage import tensors_to_npz

WORKER_GRID = (1, 2, 4, 8, 16, 32, 64)
PREDICT_N = (10_000_000, 100_000_000)
NET_BYTES_S = 1.25e9  # assumed network between a server's workers and its driver: 10 Gbit/s


def _log(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


class _TimedIndex(ShardedIndex):
    """Benchmark-only: records the wall time of the sharded fetch stage."""

    fetch_times: list[float]

    def _fetch(self, onehot):
        t0 = time.perf_counter()
        out = super()._fetch(onehot)
        self.fetch_times.append(time.perf_counter() - t0)
        return out


def _write_shares(n: int, d: int, root: Path, seed: int) -> tuple[np.ndarray, dict[str, Any], Any]:
    """Build and share the index; write each server's v1.npz; return (queries source, sizes, faiss ivf)."""
    x = clustered(n, d, max(10, n // 1000), seed=seed)
    C = max(1, round(math.sqrt(n)))
    t0 = time.perf_counter()
    plain = build_index(x, None, C, seed=seed)
    _log(f"[n={n}] index built in {time.perf_counter() - t0:.1f} s: C={C}, B={plain.bucket_size}")
    shs = share_index(plain)
    for i in range(3):
        (root / f"server{i}").mkdir(parents=True, exist_ok=True)
        (root / f"server{i}" / "v1.npz").write_bytes(tensors_to_npz(shs[i].to_tensors()))
        shs[i] = None  # type: ignore[call-overload]
    sizes = {"n_centroids": C, "bucket_size": plain.bucket_size, "share_bytes_per_server":
             2 * C * plain.bucket_size * (d + RECORD_EXTRA) * 8}
    ivf = plain.to_faiss()
    return x, sizes, ivf


def _mapped_index(path: Path) -> IndexShares:
    """A server's IndexShares with every tensor memory-mapped from its npz (no copy)."""
    names = ["meta"] + [f"{p}.{h}" for p in ("centroids", "centroid_sqnorm", "rows") for h in ("lo", "hi")]
    return IndexShares.from_tensors({k: torch.from_numpy(npz_member(path, k)) for k in names})


def _queries(indexes: list[Any], q: np.ndarray, k: int, sharded: bool) -> tuple[np.ndarray, list[float], int]:
    """Run the queries one at a time on three in-process parties: (ids, per-query max time, bytes)."""
    q_pairs = share_fixed(torch.from_numpy(q))

    def body(p: Party, qp, ix):
        torch.set_num_threads(1)
        Q = from_pair(p, qp, 16)

        def one(i: int):
            return ix.search(p, Q[i : i + 1], k) if sharded else secure_search(p, Q[i : i + 1], ix, k)

        one(0)
        outs, times, sent = [], [], []
        for i in range(Q.shape[0]):
            before = p.comm.stats.snapshot()
            t0 = time.perf_counter()
            ids, _ = one(i)
            times.append(time.perf_counter() - t0)
            sent.append((p.comm.stats.snapshot() - before).bytes_sent)
            outs.append(output_pair(ids))
        return outs, times, sent

    res = run_parties(body, [(q_pairs[i], indexes[i]) for i in range(3)], parties=make_parties(timeout_s=3600),
                      timeout_s=3600)
    ids = np.concatenate([reconstruct([r[0][j] for r in res]).numpy() for j in range(len(q))])
    times = [max(r[1][j] for r in res) for j in range(len(q))]
    return ids, times, max(max(r[2]) for r in res)


def _onehot(C: int, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A server's (a, b) components of a random one-hot selection ``[1, C]`` (as in the protocol)."""
    e = np.zeros((1, C), dtype=np.int64)
    e[0, rng.integers(C)] = 1
    lo = rng.integers(-(2**62), 2**62, size=(1, C), dtype=np.int64)
    hi = rng.integers(-(2**62), 2**62, size=(1, C), dtype=np.int64)
    return lo + hi, lo  # any split works for timing; the work is identical


def _pool_fetch(pool: ShardPool, a: np.ndarray, b: np.ndarray) -> list[np.ndarray]:
    """One server's sharded fetch product alone: every actor's partial (the driver's sum is negligible)."""
    return pool.call([act.fetch.remote(1, a[:, s:e].copy(), b[:, s:e].copy())
                      for act, (s, e) in zip(pool.actors, pool.ranges)])


def _fetch_alone(run, reps: int) -> float:
    run()
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        run()
        ts.append(time.perf_counter() - t0)
    return statistics.median(ts)


def _prepare(n: int, d: int, k: int, n_queries: int, root: Path, seed: int) -> tuple[np.ndarray, dict[str, Any]]:
    """Queries and sizes; builds and writes the shares unless ``root/meta.json`` says they are there."""
    meta_path = root / "meta.json"
    if meta_path.exists():
        sizes = json.loads(meta_path.read_text())
        if (sizes["n"], sizes["d"], sizes["seed"]) == (n, d, seed):
            _log(f"[n={n}] reusing the shares in {root} (built {sizes['build_s']:.0f} s)")
            return queries_like(clustered(n, d, max(10, n // 1000), seed=seed), n_queries, seed=seed + 1), sizes
    t0 = time.perf_counter()
    x, sizes, ivf = _write_shares(n, d, root, seed)
    sizes["build_s"] = time.perf_counter() - t0
    q = queries_like(x, n_queries, seed=seed + 1)
    del x
    ivf.nprobe = 1
    t0 = time.perf_counter()
    for i in range(n_queries):
        ivf.search(q[i : i + 1], k)
    sizes.update(faiss_query_s=(time.perf_counter() - t0) / n_queries, n=n, d=d, seed=seed)
    meta_path.write_text(json.dumps(sizes))
    return q, sizes


def _interleaved_fetch(rows: list[dict], index_dir: Path, C: int, workers: list[int], a: np.ndarray, b: np.ndarray,
                       reps: int) -> None:
    """``fetch_s`` of every configuration measured in turn, round by round (the load of a shared
    machine drifts over minutes; interleaving exposes each configuration to the same drift).
    The sequential figure stays as ``fetch_s_sequential``."""
    local = BucketShard(str(index_dir), 0, C)
    pools = {w: ShardPool(0, w, timeout_s=600) for w in workers}
    for pool in pools.values():
        pool.bind(index_dir, 1, C)
    runs = {0: partial(local.fetch, 1, a, b)} | {w: partial(_pool_fetch, p, a, b) for w, p in pools.items()}
    for fn in runs.values():
        fn()
    times: dict[int, list[float]] = {w: [] for w in runs}
    for _ in range(reps):
        for w, fn in runs.items():
            t0 = time.perf_counter()
            fn()
            times[w].append(time.perf_counter() - t0)
    calls = {w: _fetch_alone(p.info, 9) for w, p in pools.items()}  # a Ray round trip to every actor, no work
    for r in rows:
        if r["workers"] in calls:
            r["ray_call_s"] = calls[r["workers"]]
        r["fetch_s_sequential"] = r["fetch_s"]
        r["fetch_s"] = statistics.median(times[r["workers"]])
        r["fetch_s_all"] = times[r["workers"]]
    for p in pools.values():
        p.close()


def run(n: int, d: int, k: int, workers: list[int], n_queries: int, root: Path, seed: int = 0) -> list[dict]:
    import ray

    q, sizes = _prepare(n, d, k, n_queries, root, seed)
    faiss_s = sizes["faiss_query_s"]
    paths = [root / f"server{i}" / "v1.npz" for i in range(3)]
    C = sizes["n_centroids"]
    rng = np.random.default_rng(seed)
    base = {"n": n, "d": d, "k": k, "nprobe": 1, "n_centroids": C, "bucket_size": sizes["bucket_size"],
            "share_bytes_per_server": sizes["share_bytes_per_server"], "faiss_query_s": faiss_s,
            "queries_timed": n_queries, "machine": f"{os.cpu_count()} cores, shared with other jobs (busy)"}
    ids0, times0, sent0 = _queries([_mapped_index(p) for p in paths], q, k, sharded=False)
    local = BucketShard(str(paths[0].parent), 0, C)
    a, b = _onehot(C, rng)
    fetch0 = _fetch_alone(partial(local.fetch, 1, a, b), 3)
    out = [dict(base, workers=0, secure_query_s=statistics.median(times0), secure_query_s_all=times0,
                fetch_s=fetch0, bytes_per_party=sent0, memory_per_worker_bytes=local.info()["mapped_bytes"],
                same_ids_as_unsharded=True)]
    _log(json.dumps(out[-1]))
    del local
    ray_tmp = tempfile.mkdtemp(prefix="tvray-", dir="/tmp")
    init_ray(attempts=5, num_cpus=3 * max(workers), include_dashboard=False, log_to_driver=False,
             _temp_dir=ray_tmp, object_store_memory=400 * 2**20)
    try:
        for w in workers:
            pools = [ShardPool(i, w, timeout_s=600) for i in range(3)]
            idx = [_TimedIndex.open(pools[i], paths[i].parent, 1) for i in range(3)]
            for ix in idx:
                ix.fetch_times = []
            ids, times, sent = _queries(idx, q, k, sharded=True)
            alone = _fetch_alone(partial(_pool_fetch, pools[0], a, b), 3)
            infos = pools[0].info()
            out.append(dict(base, workers=w, secure_query_s=statistics.median(times), secure_query_s_all=times,
                            fetch_s=alone, fetch_in_query_s=statistics.median(idx[0].fetch_times[1:]),
                            bytes_per_party=sent, memory_per_worker_bytes=max(i["mapped_bytes"] for i in infos),
                            worker_rss_bytes=max(i["rss_bytes"] for i in infos),
                            same_ids_as_unsharded=bool((ids == ids0).all())))
            _log(json.dumps(out[-1]))
            for p in pools:
                p.close()
        _interleaved_fetch(out, paths[0].parent, C, workers, a, b, reps=5)
    finally:
        ray.shutdown()
        shutil.rmtree(ray_tmp, ignore_errors=True)
    return out


def fit_model(rows: list[dict]) -> dict[str, Any]:
    """Fit ``fetch(n, w) = S(n) / (w beta) + w o + w W(n) 8 / net`` and ``rest(n) = r sqrt(n / n0)``.

    ``beta``: bytes of shares one worker core multiplies per second (from workers = 1);
    ``o``: per-shard overhead of a Ray call, measured as a round trip to the actors with no
    work (``ray_call_s`` of workers = 1); ``W(n) 8``: one partial result (a bucket's bytes)
    returned by each worker, over the network;
    ``rest``: the query minus its fetch stage (top-k over C centroids and over B rows scale
    with sqrt(n)), from the workers = 1 run. Memory per worker: ``S(n) / w``.
    """
    by_w = {r["workers"]: r for r in rows}
    n0, d = rows[0]["n"], rows[0]["d"]
    s0 = rows[0]["share_bytes_per_server"]
    f1 = by_w[1]["fetch_s"]
    beta = s0 / f1
    o = by_w[1].get("ray_call_s", 0.0)
    rest = max(0.0, by_w[1]["secure_query_s"] - by_w[1]["fetch_in_query_s"])
    preds = []
    for n in PREDICT_N:
        C = round(math.sqrt(n))
        B = math.ceil(1.1 * n / C)
        S = 2 * C * B * (d + RECORD_EXTRA) * 8
        part = B * (d + RECORD_EXTRA) * 8
        for w in WORKER_GRID:
            fetch = S / (w * beta) + w * o + w * part / NET_BYTES_S
            preds.append({"n": n, "workers": w, "fetch_s": round(fetch, 3),
                          "query_s": round(fetch + rest * math.sqrt(n / n0), 3),
                          "memory_per_worker_bytes": int(S / w), "share_bytes_per_server": S})
    speedup = f1 / by_w[2]["fetch_s"] if 2 in by_w else None
    return {"fetch_speedup_2_vs_1_worker": speedup,
            "beta_bytes_per_s_per_worker": beta, "ray_overhead_s_per_shard": o, "rest_s_at_n0": rest, "n0": n0,
            "net_bytes_per_s_assumed": NET_BYTES_S, "predictions": preds}


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--json", action="store_true", help="print only JSON lines on stdout")
    ap.add_argument("-n", type=int, default=1_000_000)
    ap.add_argument("-d", type=int, default=128)
    ap.add_argument("-k", type=int, default=10)
    ap.add_argument("--workers", default="1,2", help="comma-separated shard workers per server")
    ap.add_argument("--queries", type=int, default=3, help="timed single queries per configuration")
    ap.add_argument("--dir", default=None, help="where the three servers' share files go (default: a temp dir); "
                    "shares already there for the same n, d and seed are reused")
    args = ap.parse_args(argv)
    root = Path(args.dir or tempfile.mkdtemp(prefix="trivault-scale-"))
    rows = run(args.n, args.d, args.k, [int(w) for w in args.workers.split(",")], args.queries, root)
    for r in rows:
        print(json.dumps(r), flush=True)
    if 1 in {r["workers"] for r in rows}:
        print(json.dumps({"model": fit_model(rows)}), flush=True)
    if not args.json:
        for r in rows:
            _log(f"n={r['n']} workers={r['workers']} query {r['secure_query_s']:.3f} s fetch {r['fetch_s']:.3f} s "
                 f"same ids {r['same_ids_as_unsharded']}")


if __name__ == "__main__":
    main()
