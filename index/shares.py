"""Upload format of the index: one :class:`IndexShares` per server (RSS pairs + public sizes).

Layout (all int64 ring tensors, fixed point with ``frac_bits`` where real):

* ``centroids`` ``[C, d]`` and ``centroid_sqnorm`` ``[C]`` (fixed point);
* ``rows`` ``[C, B * (d + 2)]``: bucket ``c`` is one row of ``B`` records
  ``[x (d, fixed point), ||x||^2 (fixed point), id (integer)]``; padding records are
  ``[0, pad_sqnorm, -1]``. One row per bucket makes the oblivious fetch a single
  (one-hot x rows) product that reads every share once.

``||x||^2`` is computed by the owner from the fixed-point-rounded features, so the
secure distance is exact up to truncation. Public sizes: C, B, d, id_bits, frac_bits,
and the number of real items N.

Updates: ``share_update`` re-shares only the touched records; a server learns which
bucket slots changed (not what they hold, nor whether a record was inserted or deleted).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from protocols.ring import FixedPoint
from protocols.sharing import SharePair, share

from .build import IndexUpdate, PlainIndex

_META_FIELDS = ("party_id", "n_centroids", "bucket_size", "dim", "id_bits", "frac_bits", "n_items")


@dataclass
class IndexShares:
    """One server's shares of the index plus the public sizes."""

    party_id: int
    centroids: SharePair
    centroid_sqnorm: SharePair
    rows: SharePair
    n_centroids: int
    bucket_size: int
    dim: int
    id_bits: int
    frac_bits: int
    n_items: int

    @property
    def record(self) -> int:
        """Ring elements per record: d features, ||x||^2, id."""
        return self.dim + 2

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """int64 tensors for storage/transport (no pickle)."""
        meta = torch.tensor([getattr(self, f) for f in _META_FIELDS], dtype=torch.int64)
        out = {"meta": meta}
        for name in ("centroids", "centroid_sqnorm", "rows"):
            lo, hi = getattr(self, name)
            out[f"{name}.lo"] = lo
            out[f"{name}.hi"] = hi
        return out

    @classmethod
    def from_tensors(cls, t: dict[str, torch.Tensor]) -> "IndexShares":
        meta = dict(zip(_META_FIELDS, (int(v) for v in t["meta"].tolist())))
        pairs = {}
        for name in ("centroids", "centroid_sqnorm", "rows"):
            lo, hi = t[f"{name}.lo"], t[f"{name}.hi"]
            if lo.dtype != torch.int64 or hi.dtype != torch.int64:
                raise TypeError(f"{name}: index shares must be int64")
            pairs[name] = (lo, hi)
        sh = cls(centroids=pairs["centroids"], centroid_sqnorm=pairs["centroid_sqnorm"], rows=pairs["rows"], **meta)
        sh.validate()
        return sh

    def validate(self) -> None:
        C, B, d = self.n_centroids, self.bucket_size, self.dim
        want = {"centroids": (C, d), "centroid_sqnorm": (C,), "rows": (C, B * (d + 2))}
        for name, shape in want.items():
            for part in getattr(self, name):
                if tuple(part.shape) != shape:
                    raise ValueError(f"{name}: shape {tuple(part.shape)}, expected {shape}")

    def apply_update(self, upd: "IndexUpdateShares") -> None:
        """Overwrite the touched records with their fresh shares (in place)."""
        r = self.record
        for j, (c, s) in enumerate(upd.slots.tolist()):
            self.rows[0][c, s * r : (s + 1) * r] = upd.records[0][j]
            self.rows[1][c, s * r : (s + 1) * r] = upd.records[1][j]
        self.n_items = upd.n_items


@dataclass
class IndexUpdateShares:
    """One server's shares of the re-written records ``[m, d + 2]`` at ``slots [m, 2]``."""

    slots: torch.Tensor
    records: SharePair
    n_items: int


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
    out = torch.empty((C, B, d + 2), dtype=torch.int64)
    step = max(1, (1 << 22) // max(1, B * d))
    all_slots = np.arange(B)
    for c0 in range(0, C, step):
        cs = np.arange(c0, min(C, c0 + step))
        b = np.repeat(cs, B)
        s = np.tile(all_slots, len(cs))
        out[c0 : c0 + len(cs)] = _records(plain, fp, b, s).view(len(cs), B, d + 2)
    return out.view(C, B * (d + 2))


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
