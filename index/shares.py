"""Owner side: encode the plaintext index into the shared layout and share it.

The layout itself (:class:`protocols.layout.IndexShares`, one per server) belongs to the
protocol layer that reads it. ``||x||^2`` is computed by the owner from the
fixed-point-rounded features, so the secure distance is exact up to truncation.
``share_update`` re-shares only the records an insert/delete touched.
"""

from __future__ import annotations

import numpy as np
import torch

from protocols.layout import RECORD_EXTRA, IndexShares, IndexUpdateShares
from protocols.ring import FixedPoint
from protocols.sharing import share

from .build import IndexUpdate, PlainIndex

__all__ = ["share_index", "share_update"]


def _records(plain: PlainIndex, fp: FixedPoint, buckets: np.ndarray, slots: np.ndarray) -> torch.Tensor:
    """Ring encoding of records ``[m, d + 2]`` (m = len(buckets))."""
    feats = torch.from_numpy(np.ascontiguousarray(plain.features[buckets, slots]))
    ids = torch.from_numpy(np.ascontiguousarray(plain.ids[buckets, slots]))
    enc = fp.encode(feats)
    sq = (fp.decode(enc) ** 2).sum(-1)
    sq = torch.where(ids < 0, torch.full_like(sq, plain.pad_sqnorm), sq)
    return torch.cat([enc, fp.encode(sq).unsqueeze(-1), ids.unsqueeze(-1)], -1)


def _encode_rows(plain: PlainIndex, fp: FixedPoint) -> torch.Tensor:
    """All buckets as ``[C, B * (d + 2)]`` ring elements, bucket by bucket (bounded memory)."""
    C, B, d = plain.n_centroids, plain.bucket_size, plain.dim
    out = torch.empty((C, B, d + RECORD_EXTRA), dtype=torch.int64)
    step = max(1, (1 << 22) // max(1, B * d))
    all_slots = np.arange(B)
    for c0 in range(0, C, step):
        cs = np.arange(c0, min(C, c0 + step))
        b = np.repeat(cs, B)
        s = np.tile(all_slots, len(cs))
        out[c0 : c0 + len(cs)] = _records(plain, fp, b, s).view(len(cs), B, d + RECORD_EXTRA)
    return out.view(C, B * (d + RECORD_EXTRA))


def share_index(plain: PlainIndex, fp: FixedPoint | None = None) -> list[IndexShares]:
    """Owner side: RSS pairs of centroids, ||c||^2 and padded bucket records, one per server."""
    fp = fp or FixedPoint(plain.frac_bits)
    if fp.frac_bits != plain.frac_bits:
        raise ValueError("fixed point of the shares must match the index's frac_bits")
    cent = fp.encode(torch.from_numpy(plain.centroids))
    csq = fp.encode((fp.decode(cent) ** 2).sum(-1))
    rows = _encode_rows(plain, fp)
    pc, pcs = share(cent), share(csq)
    pr = share(rows)
    del rows
    return [
        IndexShares(i, pc[i], pcs[i], pr[i], plain.n_centroids, plain.bucket_size, plain.dim,
                    plain.id_bits, plain.frac_bits, plain.n_items)
        for i in range(3)
    ]


def share_update(plain: PlainIndex, update: IndexUpdate, fp: FixedPoint | None = None) -> list[IndexUpdateShares]:
    """Owner side: fresh shares of the records touched by ``insert``/``delete``.

    After a rebuild the whole index must be re-shared with :func:`share_index` instead.
    """
    if update.rebuilt:
        raise ValueError("the index was rebuilt: re-share it with share_index")
    fp = fp or FixedPoint(plain.frac_bits)
    slots = np.asarray(update.slots, dtype=np.int64).reshape(-1, 2)
    rec = _records(plain, fp, slots[:, 0], slots[:, 1])
    pairs = share(rec)
    st = torch.from_numpy(slots.copy())
    return [IndexUpdateShares(st, pairs[i], plain.n_items) for i in range(3)]
