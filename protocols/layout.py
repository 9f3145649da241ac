"""The shared index layout that ``secure_search`` reads: one :class:`IndexShares` per server.

The protocol layer defines it; ``index`` (owner side) builds it from a plaintext index.
All tensors are int64 ring tensors held as RSS pairs, fixed point with ``frac_bits``
where real:

* ``centroids`` ``[C, d]`` and ``centroid_sqnorm`` ``[C]`` (fixed point);
* ``rows`` ``[C, B * (d + 2)]``: bucket ``c`` is one row of ``B`` records
  ``[x (d, fixed point), ||x||^2 (fixed point), id (integer)]``; padding records are
  ``[0, pad_sqnorm, -1]``. One row per bucket makes the oblivious fetch a single
  (one-hot x rows) product that reads every share once.

Public sizes: C, B, d, id_bits, frac_bits, and the number of real items N.

Updates (:class:`IndexUpdateShares`) carry fresh shares of the touched records only; a
server learns which bucket slots changed (not what they hold, nor whether a record was
inserted or deleted).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .sharing import SharePair
from .sort import KEY_TOP_BITS

PAD_ID = -1
"""Id of a padding record (real ids are in ``[0, 2**id_bits)``)."""

RECORD_EXTRA = 2
"""Ring elements per record besides the ``d`` features: ``||x||^2`` and the id."""

_META_FIELDS = ("party_id", "n_centroids", "bucket_size", "dim", "id_bits", "frac_bits", "n_items")
_PAIRS = ("centroids", "centroid_sqnorm", "rows")


def pad_sqnorm(id_bits: int, frac_bits: int) -> float:
    """Public ``||x||^2`` of padding records (real units): half the sort key range.

    Distances are sorted with ``id_bits`` tie-break bits at ``frac_bits`` fractional bits,
    so keys must stay below ``2**(KEY_TOP_BITS - id_bits)`` ring units, i.e.
    ``2**(KEY_TOP_BITS - id_bits - frac_bits)`` real units; the padding takes half of that
    (capped at ``2**30``) so every padding distance is a valid key larger than any real one.
    """
    return float(2.0 ** min(KEY_TOP_BITS - 1 - id_bits - frac_bits, 30))


def max_sqnorm(id_bits: int, frac_bits: int) -> float:
    """Largest ``||x||^2`` (real units) a record or a query may have: ``pad_sqnorm / 8``, so every real
    distance (at most ``4 max ||x||^2``) stays below half the padding's."""
    return pad_sqnorm(id_bits, frac_bits) / 8


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
        return self.dim + RECORD_EXTRA

    def to_tensors(self) -> dict[str, torch.Tensor]:
        """int64 tensors for storage/transport (no pickle)."""
        meta = torch.tensor([getattr(self, f) for f in _META_FIELDS], dtype=torch.int64)
        out = {"meta": meta}
        for name in _PAIRS:
            lo, hi = getattr(self, name)
            out[f"{name}.lo"] = lo
            out[f"{name}.hi"] = hi
        return out

    @classmethod
    def from_tensors(cls, t: dict[str, torch.Tensor]) -> IndexShares:
        meta = dict(zip(_META_FIELDS, (int(v) for v in t["meta"].tolist())))
        pairs = {}
        for name in _PAIRS:
            lo, hi = t[f"{name}.lo"], t[f"{name}.hi"]
            if lo.dtype != torch.int64 or hi.dtype != torch.int64:
                raise TypeError(f"{name}: index shares must be int64")
            pairs[name] = (lo, hi)
        sh = cls(centroids=pairs["centroids"], centroid_sqnorm=pairs["centroid_sqnorm"], rows=pairs["rows"], **meta)
        sh.validate()
        return sh

    def validate(self) -> None:
        C, B, d = self.n_centroids, self.bucket_size, self.dim
        want = {"centroids": (C, d), "centroid_sqnorm": (C,), "rows": (C, B * (d + RECORD_EXTRA))}
        for name, shape in want.items():
            for part in getattr(self, name):
                if tuple(part.shape) != shape:
                    raise ValueError(f"{name}: shape {tuple(part.shape)}, expected {shape}")

    def apply_update(self, upd: IndexUpdateShares) -> None:
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
