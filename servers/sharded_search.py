"""``protocols.search.secure_search`` with its two big local products done by shard actors.

Steps (same order, shapes, PRG draws and messages as ``secure_search``; only the local
work of steps 1 and 4 moves to the actors of ``servers.shards``):

1. centroid distances: each shard returns its columns of the cross term
   ``q_i . (c_i + c_{i+1}) + q_{i+1} . c_i``; the driver concatenates them, adds
   ``||q||^2``, masks with the zero-sharing and runs the one reshare-and-truncate round of
   ``protocols.distance.secure_distance`` (1 round, ``Q C`` elements per party).
2-3. the top-nprobe and its one-hot on the driver, by ``protocols.search``'s own code (same
   comparison layout, ``distance_order``).
4. oblivious fetch: each shard returns ``a[:, range] @ X_i[range] + b[:, range] @ X_{i+1}[range]``
   (``a = e_i + e_{i+1}``, ``b = e_i``); the driver sums the partials in the ring (no
   interaction), adds the zero-sharing and reshares (1 round, ``Q nprobe B (d + 2)``).
5-6. distances inside the fetched buckets and top-k on the driver (``distance_order`` as in
   ``secure_search``).

Rounds and elements sent to the peers are exactly those of ``secure_search``; within the
server each shard receives ``Q nprobe (C / N) 2`` and returns ``Q nprobe B (d + 2)`` ring
elements per query (``Q d 2`` and ``Q C / N`` for step 1). The sums are exact in
``Z_2^64``: from the same PRG state the output shares are bit-identical to the unsharded
path's (``tests/integration/test_shards.py`` checks the ids through three real servers).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from protocols.arithmetic import reshare, reshare_truncate
from protocols.distance import secure_distance
from protocols.layout import RECORD_EXTRA
from protocols.party import Party
from protocols.search import _probe_onehot as probe_onehot
from protocols.search import distance_order
from protocols.sharing import ArithmeticShares, SharePair, public_shares
from protocols.topk import secure_topk

from .shards import ShardPool, npz_member

META_FIELDS = ("party_id", "n_centroids", "bucket_size", "dim", "id_bits", "frac_bits", "n_items")


@dataclass
class ShardedIndex:
    """One index version served by a :class:`ShardPool`; the driver keeps only public sizes and ``||c||^2``."""

    pool: ShardPool
    version: int
    sizes: dict[str, int]
    centroid_sqnorm: SharePair

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

    def _centroid_distance(self, q: ArithmeticShares) -> ArithmeticShares:
        party, f = q.party, q.frac_bits
        lo, hi = q.lo.numpy(), q.hi.numpy()
        parts = self.pool.call([a.centroid_cross.remote(self.version, lo, hi) for a in self.pool.actors])
        cross = torch.from_numpy(np.concatenate(parts, axis=1))
        qq = (q.lo * (q.lo + q.hi) + q.hi * q.lo).sum(-1, keepdim=True)
        z = qq - 2 * cross
        z = z + party.zero_share(z.shape)
        zl, zh = reshare_truncate(party, z, f)
        return ArithmeticShares(party, zl, zh, f) + ArithmeticShares(party, *self.centroid_sqnorm, f)

    def _fetch(self, onehot: ArithmeticShares) -> ArithmeticShares:
        if onehot.frac_bits:
            raise ValueError("the selection vector must be an integer 0/1 sharing")
        a = (onehot.lo + onehot.hi).numpy()
        b = onehot.lo.numpy()
        pool = self.pool
        refs = [act.fetch.remote(self.version, np.ascontiguousarray(a[:, s:e]), np.ascontiguousarray(b[:, s:e]))
                for act, (s, e) in zip(pool.actors, pool.ranges)]
        parts = pool.call(refs)
        acc = np.array(parts[0])  # a writable copy (Ray returns read-only views of its object store)
        for p in parts[1:]:
            acc += p  # int64 addition wraps: a sum in Z_2^64
        z = torch.from_numpy(acc)
        party = onehot.party
        z += party.zero_share(z.shape)
        lo, hi = reshare(party, z)
        return ArithmeticShares(party, lo, hi, 0)

    def search(self, party: Party, query: ArithmeticShares, k: int,
               nprobe: int = 1) -> tuple[ArithmeticShares, ArithmeticShares]:
        """Shares of the ``k`` nearest ids and distances, as ``protocols.search.secure_search``."""
        sz = self.sizes
        if sz["party_id"] != party.id:
            raise ValueError(f"index shares of server {sz['party_id']} given to party {party.id}")
        if query.party is not party:
            raise ValueError("query shares belong to another party/session")
        squeeze = len(query.shape) == 1
        if squeeze:
            query = query.unsqueeze(0)
        n_c, B, d, f = sz["n_centroids"], sz["bucket_size"], sz["dim"], sz["frac_bits"]
        if query.shape[-1] != d or query.frac_bits != f:
            raise ValueError(f"query must be [Q, {d}] at {f} fractional bits")
        if not 1 <= nprobe <= n_c:
            raise ValueError(f"need 1 <= nprobe <= C = {n_c}")
        if not 1 <= k <= nprobe * B:
            raise ValueError(f"need 1 <= k <= nprobe * B = {nprobe * B}")
        Q = query.shape[0]
        if nprobe == n_c:
            eye = torch.eye(n_c, dtype=torch.int64).expand(Q, n_c, n_c).contiguous()
            onehot = public_shares(party, eye)
        else:
            onehot = probe_onehot(party, self._centroid_distance(query), nprobe, sz["id_bits"])
        fetched = self._fetch(onehot.reshape(Q * nprobe, n_c)).reshape(Q, nprobe * B, d + RECORD_EXTRA)
        X = _columns(fetched, slice(0, d), f)
        dist = secure_distance(query, X, _columns(fetched, d, f))
        dk, ik = secure_topk(dist, _columns(fetched, d + 1, 0), k, id_bits=sz["id_bits"],
                             order=distance_order(sz["id_bits"], k))
        if squeeze:
            return ik[0], dk[0]
        return ik, dk


def _columns(x: ArithmeticShares, sl: Any, frac_bits: int) -> ArithmeticShares:
    return ArithmeticShares(x.party, x.lo[..., sl], x.hi[..., sl], frac_bits)
