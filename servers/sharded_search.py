"""``protocols.search.secure_search`` with its big local products done by shard actors.

:class:`ShardedView` is a ``protocols.search.IndexView``: ``secure_search`` runs unchanged
(both paths, rows first and distances first, the same top-k layouts and the same messages
and PRG draws), and only the LOCAL products over the stored table move to the actors of
``servers.shards``, each over its contiguous bucket range:

* ``centroid_terms``: each shard returns its columns of ``q_i . (c_i + c_{i+1}) + q_{i+1} . c_i``;
* ``record_terms`` (distances first): ``X_i q_sum + X_{i+1} q_lo`` for its records;
* ``fetch_terms`` (rows first): ``a[:, range] @ X_i[range] + b[:, range] @ X_{i+1}[range]``
  (``a = e_i + e_{i+1}``, ``b = e_i``), the partials summed in the ring;
* ``record_column``: the ``(||x||^2, id)`` share columns, read from the shards once per index
  version and kept by the driver (``4 n`` ring elements).

The driver concatenates or sums the parts (exact in ``Z_2^64``), so every term equals the
unsharded ``SharedIndexView``'s bit for bit, and rounds and elements sent to the peers are
exactly those of ``secure_search``. Within the server each shard receives the query (``Q d``
elements, twice) or the one-hot of its range and returns its ``Q C / N`` centroid terms,
``Q n / N`` record terms, or ``Q nprobe B (d + 2)`` fetched terms.
``tests/integration/test_shards.py`` checks the ids through three real servers, one sharded.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from protocols.layout import RECORD_EXTRA
from protocols.party import Party
from protocols.search import secure_search
from protocols.sharing import ArithmeticShares, SharePair

from .shards import ShardPool, npz_member

META_FIELDS = ("party_id", "n_centroids", "bucket_size", "dim", "id_bits", "frac_bits", "n_items")


@dataclass
class ShardedIndex:
    """One index version served by a :class:`ShardPool`; the driver keeps only public sizes and ``||c||^2``."""

    pool: ShardPool
    version: int
    sizes: dict[str, int]
    centroid_sqnorm: SharePair
    _record_cols: SharePair | None = None

    @classmethod
    def open(cls, pool: ShardPool, index_dir: Path, version: int) -> ShardedIndex:
        """Read the public sizes and ``||c||^2`` of ``v<version>.npz`` and bind the pool's actors to it."""
        path = index_dir / f"v{version}.npz"
        sizes = dict(zip(META_FIELDS, (int(v) for v in npz_member(path, "meta").tolist())))
        csq = tuple(torch.from_numpy(np.array(npz_member(path, f"centroid_sqnorm.{h}"))) for h in ("lo", "hi"))
        pool.bind(index_dir, version, sizes["n_centroids"])
        return cls(pool, version, sizes, (csq[0], csq[1]))

    def tensors(self) -> dict[str, torch.Tensor]:
        """The small tensors the driver holds (for ``LoadedIndex.tensors``)."""
        meta = torch.tensor([self.sizes[f] for f in META_FIELDS], dtype=torch.int64)
        return {"meta": meta, "centroid_sqnorm.lo": self.centroid_sqnorm[0],
                "centroid_sqnorm.hi": self.centroid_sqnorm[1]}

    def record_columns(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``[C B, 2]`` share pair of every record's ``(||x||^2, id)``, read from the shards once per version."""
        if self._record_cols is None:
            d = self.sizes["dim"]
            parts = self.pool.call([a.columns.remote(self.version, [d, d + 1], d + RECORD_EXTRA)
                                    for a in self.pool.actors])
            self._record_cols = (torch.from_numpy(np.concatenate([p[0] for p in parts])),
                             torch.from_numpy(np.concatenate([p[1] for p in parts])))
        return self._record_cols

    def search(self, party: Party, query: ArithmeticShares, k: int,
               nprobe: int = 1) -> tuple[ArithmeticShares, ArithmeticShares]:
        """Shares of the ``k`` nearest ids and distances: ``protocols.search.secure_search`` itself,
        over a :class:`ShardedView` of this index."""
        if self.sizes["party_id"] != party.id:
            raise ValueError(f"index shares of server {self.sizes['party_id']} given to party {party.id}")
        return secure_search(party, query, ShardedView(party, self), k, nprobe)


@dataclass(frozen=True)
class IndexSizes:
    """The public sizes ``protocols.search`` reads (``search.IndexSizes``)."""

    n_centroids: int
    bucket_size: int
    dim: int
    id_bits: int
    frac_bits: int


class ShardedView:
    """``protocols.search.IndexView`` whose local products over the table run on the shard actors.

    Every product is summed in ``Z_2^64`` from the actors' bucket ranges, so the terms equal
    ``SharedIndexView``'s bit for bit and the parties' messages are those of an unsharded server."""

    def __init__(self, party: Party, index: ShardedIndex) -> None:
        self.party, self._ix = party, index
        sz = index.sizes
        self.shares = IndexSizes(sz["n_centroids"], sz["bucket_size"], sz["dim"], sz["id_bits"], sz["frac_bits"])
        self.centroid_sqnorm = ArithmeticShares(party, *index.centroid_sqnorm, sz["frac_bits"])

    def centroid_terms(self, query: ArithmeticShares) -> torch.Tensor:
        pool = self._ix.pool
        lo, hi = query.lo.numpy(), query.hi.numpy()
        parts = pool.call([a.centroid_cross.remote(self._ix.version, lo, hi) for a in pool.actors])
        return torch.from_numpy(np.concatenate(parts, axis=1))

    def record_terms(self, q_sum: torch.Tensor, q_lo: torch.Tensor) -> torch.Tensor:
        pool = self._ix.pool
        a, b = q_sum.numpy(), q_lo.numpy()
        parts = pool.call([act.record_terms.remote(self._ix.version, a, b) for act in pool.actors])
        return torch.from_numpy(np.concatenate(parts, axis=1))

    def record_column(self, j: int) -> SharePair:
        d = self.shares.dim
        if j not in (d, d + 1):
            raise ValueError(f"the driver holds record columns {d} and {d + 1} only")
        lo, hi = self._ix.record_columns()
        return lo[:, j - d], hi[:, j - d]

    def fetch_terms(self, onehot: ArithmeticShares) -> torch.Tensor:
        """The actors' partial ``a @ X_lo + b @ X_hi`` over their bucket ranges, summed in the ring."""
        a = (onehot.lo + onehot.hi).numpy()
        b = onehot.lo.numpy()
        pool = self._ix.pool
        refs = [act.fetch.remote(self._ix.version, np.ascontiguousarray(a[:, s:e]), np.ascontiguousarray(b[:, s:e]))
                for act, (s, e) in zip(pool.actors, pool.ranges)]
        parts = pool.call(refs)
        acc = np.array(parts[0])  # a writable copy (Ray returns read-only views of its object store)
        for p in parts[1:]:
            acc += p  # int64 addition wraps: a sum in Z_2^64
        return torch.from_numpy(acc)
