"""Retrieval metrics for ``benchmarks.quality``: copy detection (one relevant original per
query) and IVF recall against exact search, with the product's index builder."""

from __future__ import annotations

import math

import faiss
import numpy as np

from index import build_index


def product_centroids(n: int) -> int:
    """The SDK's rule for the number of centroids (``client.sdk``): round(sqrt(n)), >= 39 rows each."""
    return max(1, min(int(round(math.sqrt(n))), n // 39))


def _ranks(db: np.ndarray, queries: np.ndarray, truth: np.ndarray) -> np.ndarray:
    """1-based rank of each query's true original by squared distance (ties: lower id first)."""
    ranks = np.empty(len(queries), np.int64)
    ids = np.arange(len(db))
    for s in range(0, len(queries), 512):
        q = queries[s:s + 512].astype(np.float64)
        d = (q * q).sum(1)[:, None] - 2 * q @ db.T.astype(np.float64) + (db.astype(np.float64) ** 2).sum(1)
        t = truth[s:s + 512]
        dt = d[np.arange(len(q)), t][:, None]
        ranks[s:s + 512] = 1 + (d < dt).sum(1) + ((d == dt) & (ids[None] < t[:, None])).sum(1)
    return ranks


def copy_detection(db: np.ndarray, queries: np.ndarray, truth: np.ndarray, groups: list[str]) -> dict:
    """mAP (= mean 1/rank: one relevant item per query), recall@10, precision@1, mAP per transform group."""
    r = _ranks(db, queries, truth)
    ap = 1.0 / r
    g = np.array(groups)
    return {"mAP": float(ap.mean()), "recall_at_10": float((r <= 10).mean()), "precision_at_1": float((r == 1).mean()),
            "mAP_by_group": {k: round(float(ap[g == k].mean()), 4) for k in sorted(set(groups))}}


def exact_topk(db: np.ndarray, queries: np.ndarray, k: int) -> np.ndarray:
    flat = faiss.IndexFlatL2(db.shape[1])
    flat.add(np.ascontiguousarray(db, dtype=np.float32))
    return flat.search(np.ascontiguousarray(queries, dtype=np.float32), k)[1]


def ivf_recall(db: np.ndarray, queries: np.ndarray, centroid_counts: list[int], nprobes: list[int], k: int = 10,
               truth: np.ndarray | None = None, seed: int = 0) -> list[dict]:
    """Recall@k of the product's IVF (``index.build_index``: faiss k-means, balanced buckets padded to B)
    against exact search: one dict per C, with per-nprobe ``recall_at_10_vs_exact``. Searched with
    faiss IVF-Flat over the SAME centroids and lists (``PlainIndex.to_faiss``), which returns what
    ``PlainIndex.search`` (the plaintext replica of the secure search) returns up to ties. With
    ``truth``: also the fraction of queries whose true original is in the IVF top-k."""
    exact = exact_topk(db, queries, k)
    qs = np.ascontiguousarray(queries, dtype=np.float32)
    out = []
    for c in sorted(set(centroid_counts)):
        if not 1 <= c <= len(db):
            continue
        plain = build_index(db, None, c, seed=seed)
        ivf = plain.to_faiss()
        row: dict = {"n": len(db), "n_centroids": c, "bucket_size": plain.bucket_size,
                     "recall_at_10_vs_exact": {}, "rows_fetched": {}}
        if truth is not None:
            row["truth_in_top10"] = {}
        for p in (p for p in nprobes if p <= c):
            ivf.nprobe = p
            got = ivf.search(qs, k)[1]
            overlap = [len(set(a[a >= 0]) & set(b[b >= 0])) / k for a, b in zip(got, exact)]
            row["recall_at_10_vs_exact"][p] = round(float(np.mean(overlap)), 4)
            row["rows_fetched"][p] = p * plain.bucket_size
            if truth is not None:
                row["truth_in_top10"][p] = round(float(np.mean([t in a for a, t in zip(got, truth)])), 4)
        out.append(row)
    return out
