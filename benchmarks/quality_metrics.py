"""Retrieval metrics for ``benchmarks.quality``: copy detection (one relevant original per
query), same-person retrieval (every other photo of the query's person is relevant) and IVF
recall against exact search, with the product's index builder."""

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


def identity_retrieval(db: np.ndarray, labels: list[str]) -> dict | None:
    """Same-person retrieval, leave one out: every database item with a label (a person) queries the
    whole database minus itself; relevant = the other items with its label. mAP (standard AP over
    the full ranking, ties by lower id) and precision@1. ``None`` when fewer than two labels have
    two items each (nothing to measure)."""
    lab = np.array(labels)
    counts = {k: int((lab == k).sum()) for k in set(labels) if k}
    people = sorted(k for k, c in counts.items() if c >= 2)
    if len(people) < 2:
        return None
    qs = np.flatnonzero(np.isin(lab, people))
    x = db.astype(np.float64)
    sq = (x * x).sum(1)
    aps, p1 = [], []
    for s in range(0, len(qs), 256):
        idx = qs[s:s + 256]
        d = sq[idx, None] - 2 * x[idx] @ x.T + sq[None]
        d[np.arange(len(idx)), idx] = np.inf  # the query itself goes last
        order = np.argsort(d, axis=1, kind="stable")[:, :-1]
        rel = lab[order] == lab[idx][:, None]
        hits = np.cumsum(rel, axis=1)
        prec = hits / np.arange(1, rel.shape[1] + 1)
        aps += list((prec * rel).sum(1) / rel.sum(1))
        p1 += list(rel[:, 0])
    return {"mAP": float(np.mean(aps)), "precision_at_1": float(np.mean(p1)), "n_queries": len(qs),
            "n_people": len(people)}


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
