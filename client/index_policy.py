"""When to update the servers' shared index in place and when to rebuild it (owner side).

Inserts and deletes re-share only the touched records (``index.share_update``) when the
owner's :class:`~index.PlainIndex` matches the servers' index version; otherwise (first
upload, size doubled since the last build, a bucket overflowed, or no local copy) the
index is rebuilt with faiss k-means and re-shared. A large index (``LARGE_INDEX`` rows or
more) taking few rows (at most 1 per ``FEW_PER``) is never rebuilt for an overflow: a row whose
nearby buckets are full takes the nearest bucket with a free slot (k-means over 1M rows
takes minutes on 2 cores and the re-share moves the whole index; the few rows placed
further away are found when that bucket is probed). An index with no items (everything
deleted) is an IVF index whose buckets hold only padding.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
import torch

from index import PlainIndex, build_index, share_index, share_update
from index.build import PAD_ID
from protocols.ring import DEFAULT_FP

from .owner_state import OwnerState

IndexUpload = tuple[dict, list[dict[str, torch.Tensor]], Callable[[int], None]]
LARGE_INDEX = 10_000
FEW_PER = 100


def insert_anywhere(n_indexed: int, n_new: int) -> bool:
    """Whether an insert that overflows its nearby buckets goes to any free slot instead of a rebuild."""
    return n_indexed >= LARGE_INDEX and n_new * FEW_PER <= n_indexed


def n_centroids_for(n: int) -> int:
    """About sqrt(n) centroids, with at least 39 items each (faiss k-means' minimum)."""
    return max(1, min(int(round(np.sqrt(n))), n // 39))


def index_bundles(owner: OwnerState, feats: np.ndarray, ids: np.ndarray, base_version: int,
                  new_feats: np.ndarray | None = None, new_ids: np.ndarray | None = None,
                  deletes: Sequence[int] = ()) -> IndexUpload:
    """Public index meta, one dict of tensors per server, and a callback to run once committed
    (it records the owner's PlainIndex for the new version)."""
    d = int(feats.shape[1])
    got = owner.load_plain_index(base_version)
    if got is not None and len(ids) < 2 * got[1]:
        plain, built_n = got
        if len(deletes):
            upd = plain.delete(np.asarray(deletes, dtype=np.int64))
        elif new_ids is None:
            raise ValueError("index_bundles: an update without deletes needs new_feats and new_ids")
        else:
            upd = plain.insert(new_feats, new_ids, anywhere=insert_anywhere(plain.n_items, len(new_ids)))
        if not upd.rebuilt:
            ups = share_update(plain, upd, DEFAULT_FP)
            imeta = {"format": "ivf", "update": True, "base_version": base_version,
                     "n_centroids": int(plain.n_centroids), "bucket_size": int(plain.bucket_size), "dim": d,
                     "id_bits": int(plain.id_bits), "frac_bits": int(plain.frac_bits)}
            per = [{"slots": u.slots, "records.lo": u.records[0], "records.hi": u.records[1],
                    "n_items": torch.tensor(int(u.n_items), dtype=torch.int64)} for u in ups]
            return imeta, per, lambda v: owner.save_plain_index(plain, v, built_n)
    elif len(ids):
        plain = build_index(feats.astype(np.float32), ids.astype(np.int64), n_centroids_for(len(ids)))
        built_n = len(ids)
    else:
        plain, built_n = empty_index(d), 0
    shares = share_index(plain, DEFAULT_FP)
    imeta = {"format": "ivf", "base_version": base_version, "n_centroids": int(plain.n_centroids),
             "bucket_size": int(plain.bucket_size), "dim": d, "id_bits": int(plain.id_bits),
             "frac_bits": int(plain.frac_bits)}  # public: the key range (client.search checks feature queries)
    return imeta, [s.to_tensors() for s in shares], lambda v: owner.save_plain_index(plain, v, built_n)


def empty_index(dim: int) -> PlainIndex:
    """An IVF index with no items: one centroid at the origin and one padding slot."""
    return PlainIndex(np.zeros((1, dim), np.float32), np.zeros((1, 1, dim), np.float32),
                      np.full((1, 1), PAD_ID, np.int64), id_bits=8)
