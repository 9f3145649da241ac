"""End-to-end benchmark over three real server processes (gRPC + mutual TLS) vs in-process.

``python -m benchmarks.e2e --json`` prints one final JSON line with ``n_images``,
``upload_images_per_s`` (real bundled photos: read, features, encrypt, share, 2PC upload),
``query_s`` (end to end: share the image, secure CNN + secure search on the servers,
reconstruct), ``retrieve_s``, ``bytes_per_party_per_query`` and ``in_process_query_s``: the
same ``servers.query.run_query`` on the same stored shares with three in-process parties,
so ``grpc_overhead`` = query_s / in_process_query_s - 1 is measured, not assumed.

The index holds the uploaded real images plus synthetic clustered feature vectors up to
``--n`` (default 100,000), uploaded as one index-only transaction. Not a test: no timing
is asserted anywhere.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
import uuid
from pathlib import Path

import numpy as np
import torch


def _load_party_state(root: Path, i: int):
    """Server ``i``'s stored model and index, exactly as the server loads them."""
    from servers.query import LoadedIndex, LoadedModel
    from servers.storage import Store

    st = Store(root / "data" / f"server{i}")
    mv, mmeta = st.current("model")
    iv, imeta = st.current("index")
    t = st.load_tensors("model", mv)
    names = sorted({k.rsplit(".", 1)[0] for k in t})
    model = LoadedModel(mv, mmeta["arch"], {n: (t[f"{n}.lo"], t[f"{n}.hi"]) for n in names})
    index = LoadedIndex(iv, imeta, st.load_tensors("index", iv))
    st.close()
    return model, index


def in_process_query(root: Path, image: np.ndarray, k: int, nprobe: int) -> tuple[float, list[int]]:
    """Seconds and ids of one query with three in-process parties on the servers' stored shares."""
    from client.preprocess import preprocess
    from protocols.ring import DEFAULT_FP
    from protocols.sharing import reconstruct, share_fixed
    from protocols.simulate import run_parties
    from servers.query import run_query

    states = [_load_party_state(root, i) for i in range(3)]
    res = int(states[0][0].arch["input_shape"][-1])
    pairs = share_fixed(preprocess(image, res).unsqueeze(0).to(torch.float64), DEFAULT_FP)

    def body(party, model, index, pair):
        return run_query(party, model, index, pair, k, nprobe, "image")

    t0 = time.perf_counter()
    out = run_parties(body, [(states[i][0], states[i][1], pairs[i]) for i in range(3)])
    secs = time.perf_counter() - t0
    kind, outs = out[0]
    if kind == "topk":
        ids = reconstruct([o[1]["ids"] for o in out])[0].tolist()
    else:
        dist = reconstruct([o[1]["dist"] for o in out])[0]
        ids = states[0][1].tensors["ids"][torch.argsort(dist, stable=True)[:k]].tolist()
    return secs, ids


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print one JSON line."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100_000, help="index size (real + synthetic)")
    ap.add_argument("--upload", type=int, default=40, help="real images uploaded (timed)")
    ap.add_argument("--upload-at-n", type=int, default=20, help="real images uploaded into the full index (timed)")
    ap.add_argument("--queries", type=int, default=3)
    ap.add_argument("--k", type=int, default=10)
    ap.add_argument("--nprobe", type=int, default=1)
    ap.add_argument("--model", default="auto", help="auto, efficientnet or tiny")
    ap.add_argument("--resolution", type=int, default=64)
    ap.add_argument("--dim", type=int, default=32)
    ap.add_argument("--json", action="store_true", help="print only the final JSON line on stdout")
    a = ap.parse_args(argv)
    # Same per-party compute as the servers (TRIVAULT_TORCH_THREADS, default 1) so the ratio
    # isolates the transport.
    threads = int(os.environ.get("TRIVAULT_TORCH_THREADS", "1"))
    torch.set_num_threads(threads)
    log = (lambda *m: print(*m, file=sys.stderr)) if a.json else print

    from client.demo_data import augment, base_images, demo_collection
    from client.local_cluster import LocalCluster
    from client.recipes import build_model
    from client.sdk import Client
    from index.synthetic import clustered
    from servers import bundle as bd

    with tempfile.TemporaryDirectory(prefix="trivault-bench-") as tmp:
        root = Path(tmp)
        with LocalCluster(root, query_timeout_s=600.0, peer_timeout_s=300.0) as lc, \
                Client(lc.client_config, progress=False) as c:
            model = build_model(a.model, a.resolution, a.dim)
            c.register_model(model, resolution=a.resolution)
            imgs, labels = demo_collection(copies=max(0, -(-a.upload // 19) - 1))
            imgs, labels = imgs[: a.upload], labels[: a.upload]
            t0 = time.perf_counter()
            ids = c.upload(imgs, labels=labels)
            upload_s = time.perf_counter() - t0
            log(f"uploaded {len(ids)} real images in {upload_s:.1f} s")
            # Grow the index to n entries with synthetic clustered features (index-only transaction).
            feats, fids = c.owner.load_features()
            extra = max(0, a.n - len(fids))
            if extra:
                syn = clustered(extra, feats.shape[1], n_clusters=max(8, extra // 500), seed=1)
                syn /= np.linalg.norm(syn, axis=1, keepdims=True)  # like the model's unit-norm features
                syn *= float(np.linalg.norm(feats, axis=1).mean())
                all_f = np.concatenate([feats, syn.astype(np.float32)])
                all_ids = np.concatenate([fids, np.arange(10**6, 10**6 + extra, dtype=np.int64)])
                info = c.info()
                t1 = time.perf_counter()
                c.owner.drop_plain_index()  # build the big index from scratch
                imeta, it, after = c._index_bundles(all_f, all_ids, info["index_version"])
                if imeta["format"] == "flat":
                    raise SystemExit("the flat fallback index cannot hold synthetic ids; needs index/ + search")
                txn = str(uuid.uuid4())
                c._transact([bd.Bundle("txn", txn, {"index": imeta},
                                       {f"index/{k}": v for k, v in it[s].items()}) for s in range(3)])
                after(info["index_version"] + 1)
                log(f"index grown to {len(all_ids)} entries ({imeta}) in {time.perf_counter() - t1:.1f} s")
            # Uploads into the big index: only the touched index records are re-shared.
            more = [augment(imgs[j % len(imgs)], 7_000 + j) for j in range(a.upload_at_n)]
            t3 = time.perf_counter()
            c.upload(more, labels=[f"extra{j}" for j in range(len(more))]) if more else None
            upload_at_n_s = time.perf_counter() - t3
            at_n_mode = c.last_upload_stats.get("index") if more else None
            log(f"uploaded {len(more)} more images at n={a.n} in {upload_at_n_s:.1f} s (index {at_n_mode})")
            n_images = max(len(fids), a.n) + len(more)
            bases = base_images()
            c.search(augment(bases[-1][1], 4_999), k=a.k, nprobe=a.nprobe)  # warm-up: servers load model/index
            qs, grpc_s, comm, proc_s, same = [], [], [], [], []
            for q in range(a.queries):
                img = augment(bases[q % len(bases)][1], 5_000 + q)
                r = c.search(img, k=a.k, nprobe=a.nprobe)
                grpc_s.append(r.seconds)
                comm.append(r.bytes_per_party)
                ps, pids = in_process_query(root, img, a.k, a.nprobe)
                proc_s.append(ps)
                same.append(pids == r.ids)
                log(f"query {q}: gRPC {r.seconds:.2f} s, in-process {ps:.2f} s, {r.bytes_per_party / 1e6:.2f} MB/party")
                qs.append(r)
            t2 = time.perf_counter()
            for i in ids[:3]:
                c.retrieve(i)
            retrieve_s = (time.perf_counter() - t2) / min(3, len(ids))
    q_s, p_s = float(np.median(grpc_s)), float(np.median(proc_s))
    out = {
        "n_images": int(n_images),
        "n_real_images": len(ids),
        "upload_images_per_s": round(len(ids) / upload_s, 3),
        "upload_images_per_s_at_n": round(len(more) / upload_at_n_s, 3) if more else None,
        "upload_index_mode_at_n": at_n_mode,
        "query_s": round(q_s, 4),
        "retrieve_s": round(retrieve_s, 4),
        "bytes_per_party_per_query": int(np.mean(comm)),
        "rounds_per_query": int(qs[0].comm[0]["rounds"]),
        "in_process_query_s": round(p_s, 4),
        "grpc_overhead": round(q_s / p_s - 1.0, 4),
        "same_ids_grpc_vs_in_process": all(same),
        "model": getattr(model, "recipe", {}).get("kind"),
        "resolution": a.resolution, "dim": a.dim, "k": a.k, "nprobe": a.nprobe, "queries": a.queries,
        "cores": os.cpu_count(), "torch_threads_per_party": threads,
    }
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
