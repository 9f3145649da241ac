"""Owner side, plaintext: k-means index with buckets padded to one fixed size B.

The data owner clusters its own features with faiss k-means (C centroids); each centroid
owns one bucket of exactly ``B`` slots. Bucket sizes must not leak, so every bucket is
padded to ``B`` (padding rows: zero features, id ``-1``, and a huge public ``||x||^2``
so their distance never competes with real rows).

Balanced assignment: plain nearest-centroid assignment makes some clusters several times
larger than the mean, and padding every bucket to the largest would multiply the
servers' storage and work. Instead ``B = ceil(N / C * (1 + slack))`` and points are
assigned greedily in rounds: in round ``r`` every unassigned point asks for its r-th
nearest centroid (``r < spill``) and each centroid accepts the closest askers while it
has room. Points left after ``spill`` rounds take the nearest centroid with room. The
plaintext baseline (``to_faiss``) uses exactly these centroids and lists, so the
comparison with faiss IVF-Flat is like for like.

Insert puts a row into a free slot of the nearest centroid with room among its ``spill``
nearest (the same rule as the build); when none has room the index is rebuilt, or, for a
large index taking a few rows (``anywhere``), the row takes the nearest bucket with room.
Delete turns the row's slot back into padding. Both return the touched slots so the
owner re-shares only those rows (``index.shares.share_update``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import faiss
import numpy as np

from protocols import layout
from protocols.layout import PAD_ID

DEFAULT_SLACK = 0.1
DEFAULT_SPILL = 8


@dataclass
class IndexUpdate:
    """Slots changed by an insert/delete (``[m, 2]`` rows of (bucket, slot)), or a rebuild."""

    slots: np.ndarray
    rebuilt: bool = False


@dataclass
class PlainIndex:
    """The owner's plaintext index: centroids ``[C, d]``, buckets ``[C, B, d]``, ids ``[C, B]``."""

    centroids: np.ndarray
    features: np.ndarray
    ids: np.ndarray
    id_bits: int
    frac_bits: int = 16
    slack: float = DEFAULT_SLACK
    spill: int = DEFAULT_SPILL
    seed: int = 0
    niter: int = 20
    _where: dict[int, tuple[int, int]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        if not self._where:
            c, s = np.nonzero(self.ids != PAD_ID)
            self._where = {int(i): (int(a), int(b)) for i, a, b in zip(self.ids[c, s], c, s)}

    # ---- public sizes -------------------------------------------------------------------
    @property
    def n_centroids(self) -> int:
        return self.centroids.shape[0]

    @property
    def bucket_size(self) -> int:
        return self.features.shape[1]

    @property
    def dim(self) -> int:
        return self.centroids.shape[1]

    @property
    def n_items(self) -> int:
        return len(self._where)

    @property
    def pad_sqnorm(self) -> float:
        return layout.pad_sqnorm(self.id_bits, self.frac_bits)

    def assignment(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Real rows as ``(features [n, d], ids [n], bucket [n])``."""
        c, s = np.nonzero(self.ids != PAD_ID)
        return self.features[c, s], self.ids[c, s], c

    # ---- plaintext references ------------------------------------------------------------
    def to_faiss(self) -> faiss.IndexIVFFlat:
        """faiss IVF-Flat with the same centroids and the same lists (for baselines)."""
        quantizer = faiss.IndexFlatL2(self.dim)
        quantizer.add(np.ascontiguousarray(self.centroids, dtype=np.float32))
        ivf = faiss.IndexIVFFlat(quantizer, self.dim, self.n_centroids)
        ivf.is_trained = True
        x, ids, lists = self.assignment()
        x = np.ascontiguousarray(x, dtype=np.float32)
        ids = np.ascontiguousarray(ids, dtype=np.int64)
        lists = np.ascontiguousarray(lists, dtype=np.int64)
        ivf.add_core(len(x), faiss.swig_ptr(x), faiss.swig_ptr(ids), faiss.swig_ptr(lists))
        return ivf

    def search(self, queries: np.ndarray, k: int, nprobe: int = 1) -> tuple[np.ndarray, np.ndarray]:
        """Plaintext replica of ``secure_search`` (float64): ``(ids [Q, k], dists [Q, k])``.

        Centroids ranked by (distance, index); candidates by (distance, id); padding rows
        have distance ``||q||^2 + pad_sqnorm`` and id -1.
        """
        q = np.asarray(queries, dtype=np.float64)
        cd = ((q[:, None, :] - self.centroids[None].astype(np.float64)) ** 2).sum(-1)
        probes = np.lexsort((np.broadcast_to(np.arange(self.n_centroids), cd.shape), cd), axis=-1)[:, :nprobe]
        out_ids = np.empty((len(q), k), dtype=np.int64)
        out_d = np.empty((len(q), k))
        for i, pr in enumerate(probes):
            feats = self.features[pr].reshape(-1, self.dim).astype(np.float64)
            ids = self.ids[pr].reshape(-1)
            d = ((feats - q[i]) ** 2).sum(-1)
            d = np.where(ids == PAD_ID, (q[i] ** 2).sum() + self.pad_sqnorm, d)
            order = np.lexsort((ids, d))[:k]
            out_ids[i], out_d[i] = ids[order], d[order]
        return out_ids, out_d

    # ---- updates -----------------------------------------------------------------------
    def insert(self, features: np.ndarray, ids: np.ndarray, anywhere: bool = False) -> IndexUpdate:
        """Insert rows into free padding slots (nearest centroid with room among ``spill``).

        When some row finds no room there: with ``anywhere`` it takes the nearest centroid
        with a free slot among all C (a large index taking a few rows: k-means over
        everything would cost minutes for a slightly better bucket); otherwise, or when no
        bucket has room, the index is rebuilt (same C, seed; B recomputed) and must be
        re-shared whole. Returns the touched slots.
        """
        features = np.ascontiguousarray(features, dtype=np.float32).reshape(-1, self.dim)
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        _check_ids(ids, self.id_bits, len(features))
        dup = [int(i) for i in ids if int(i) in self._where]
        if dup:
            raise ValueError(f"ids already in the index: {dup[:5]}")
        _check_norms(features, self.id_bits, self.frac_bits)
        flat = faiss.IndexFlatL2(self.dim)
        flat.add(np.ascontiguousarray(self.centroids, dtype=np.float32))
        _, near = flat.search(features, self.n_centroids if anywhere else min(self.spill, self.n_centroids))
        free = self.ids == PAD_ID
        placed: list[tuple[int, int, int]] = []
        for r, row_near in enumerate(near):
            slot = None
            for c in row_near:
                if c < 0:
                    continue
                empty = np.flatnonzero(free[c])
                if len(empty):
                    slot = (int(c), int(empty[0]))
                    break
            if slot is None:
                self._rebuild(features, ids)
                return IndexUpdate(np.zeros((0, 2), dtype=np.int64), rebuilt=True)
            free[slot] = False
            placed.append((r, *slot))
        for r, c, s in placed:
            self.features[c, s] = features[r]
            self.ids[c, s] = ids[r]
            self._where[int(ids[r])] = (c, s)
        return IndexUpdate(np.array([[c, s] for _, c, s in placed], dtype=np.int64).reshape(-1, 2))

    def delete(self, ids: np.ndarray) -> IndexUpdate:
        """Turn the rows of ``ids`` into padding (zero features, id -1). Returns their slots."""
        ids = np.asarray(ids, dtype=np.int64).reshape(-1)
        missing = [int(i) for i in ids if int(i) not in self._where]
        if missing:
            raise KeyError(f"ids not in the index: {missing[:5]}")
        slots = []
        for i in ids:
            c, s = self._where.pop(int(i))
            self.features[c, s] = 0.0
            self.ids[c, s] = PAD_ID
            slots.append((c, s))
        return IndexUpdate(np.array(slots, dtype=np.int64).reshape(-1, 2))

    def _rebuild(self, extra_x: np.ndarray, extra_ids: np.ndarray) -> None:
        x, ids, _ = self.assignment()
        new = build_index(
            np.concatenate([x, extra_x]), np.concatenate([ids, extra_ids]), self.n_centroids,
            None, self.seed, slack=self.slack, spill=self.spill, id_bits=self.id_bits,
            frac_bits=self.frac_bits, niter=self.niter,
        )
        self.centroids, self.features, self.ids, self._where = new.centroids, new.features, new.ids, new._where


AUTO_ID_BITS_MAX = 39
"""Largest default ``id_bits``: padding ``||x||^2`` of 16 (``layout.pad_sqnorm``), keys below 32 real units."""


def auto_id_bits(x: np.ndarray, ids: np.ndarray, frac_bits: int = 16) -> int:
    """Default ``id_bits``: the narrowest key range that admits ``||x||^2`` up to ``2 max(max ||x||^2, 1)``.

    The secure top-k compares distances on ``KEY_TOP_BITS - id_bits + 3`` bits
    (``protocols.search.distance_order``), so a larger ``id_bits`` means fewer digits per
    comparison: unit-norm features (the product's L2-normalised CNN features) get 39, 24-bit keys
    in eight 3-bit digits (one round and ~40% of the words per comparison less than the 42-bit
    keys of ``id_bits = 21``). The factor 2 leaves inserts room for twice the largest squared
    norm (:func:`_check_norms` allows ``layout.max_sqnorm``). Never fewer than two bits above the
    largest id (room for inserts), at least 8."""
    floor = max(8, int(ids.max()).bit_length() + 2 if len(ids) else 8)
    top = max(1.0, float((np.asarray(x, np.float64) ** 2).sum(-1).max()) if len(x) else 1.0)
    for bits in range(AUTO_ID_BITS_MAX, floor, -1):
        if layout.max_sqnorm(bits, frac_bits) * (1 + 1e-6) >= 2 * top:  # unit norms in float32 round up
            return bits
    return floor


def _check_ids(ids: np.ndarray, id_bits: int, n: int) -> None:
    if len(ids) != n:
        raise ValueError(f"{len(ids)} ids for {n} rows")
    if len(np.unique(ids)) != len(ids):
        raise ValueError("ids must be unique")
    if len(ids) and (ids.min() < 0 or ids.max() >= 2**id_bits):
        raise ValueError(f"ids must be in [0, 2**{id_bits}) (id_bits of this index)")


def _check_norms(x: np.ndarray, id_bits: int, frac_bits: int) -> None:
    """Distances (bounded by 4 max ||x||^2 for queries like the data) must stay below the padding."""
    if len(x) == 0:
        return
    top = float((x.astype(np.float64) ** 2).sum(-1).max())
    limit = layout.max_sqnorm(id_bits, frac_bits)
    if top >= limit:
        raise ValueError(
            f"feature norms too large for the fixed-point key range: max ||x||^2 = {top:.3g}, "
            f"limit {limit:.3g} (use fewer id_bits or normalise features)"
        )


def _balanced_assign(x: np.ndarray, centroids: np.ndarray, cap: int, spill: int) -> np.ndarray:
    """Greedy capacity-constrained assignment (see the module docstring)."""
    n, C = len(x), len(centroids)
    flat = faiss.IndexFlatL2(centroids.shape[1])
    flat.add(np.ascontiguousarray(centroids, dtype=np.float32))
    m = min(spill, C)
    dist_to, near = flat.search(x, m)
    assign = np.full(n, -1, dtype=np.int64)
    load = np.zeros(C, dtype=np.int64)
    for r in range(m):
        un = np.flatnonzero(assign < 0)
        if len(un) == 0:
            break
        cand, dist = near[un, r], dist_to[un, r]
        ok = cand >= 0
        un, cand, dist = un[ok], cand[ok], dist[ok]
        order = np.lexsort((un, dist, cand))
        cs = cand[order]
        first = np.searchsorted(cs, cs, side="left")
        rank = np.arange(len(cs)) - first
        accept = rank < (cap - load[cs])
        assign[un[order[accept]]] = cs[accept]
        load += np.bincount(cs[accept], minlength=C)
    for i in np.flatnonzero(assign < 0):  # rare: every nearby bucket was full
        d = ((centroids - x[i]) ** 2).sum(-1)
        for c in np.argsort(d, kind="stable"):
            if load[c] < cap:
                assign[i] = c
                load[c] += 1
                break
    return assign


def build_index(
    features: np.ndarray,
    ids: np.ndarray | None,
    n_centroids: int,
    bucket_size: int | None = None,
    seed: int = 0,
    *,
    slack: float = DEFAULT_SLACK,
    spill: int = DEFAULT_SPILL,
    id_bits: int | None = None,
    frac_bits: int = 16,
    niter: int = 20,
) -> PlainIndex:
    """Build the padded k-means index from ``features [N, d]`` (owner side, plaintext).

    ``ids`` default to ``0..N-1``; ``bucket_size`` (B) defaults to
    ``ceil(N / C * (1 + slack))`` and must satisfy ``B * C >= N``. ``id_bits`` (public)
    bounds the ids (``< 2**id_bits``) and sets the key range of the secure top-k: real
    distances must stay below ``protocols.layout.pad_sqnorm`` (checked, assuming queries
    no larger than the data). Default: :func:`auto_id_bits`.
    """
    x = np.ascontiguousarray(features, dtype=np.float32)
    if x.ndim != 2:
        raise ValueError(f"features must be [N, d], got shape {x.shape}")
    n, d = x.shape
    ids = np.arange(n, dtype=np.int64) if ids is None else np.asarray(ids, dtype=np.int64).reshape(-1)
    if id_bits is None:
        id_bits = auto_id_bits(x, ids, frac_bits)
    _check_ids(ids, id_bits, n)
    _check_norms(x, id_bits, frac_bits)
    if not 1 <= n_centroids <= max(n, 1):
        raise ValueError(f"need 1 <= n_centroids <= N, got {n_centroids} for N={n}")
    B = bucket_size if bucket_size is not None else max(1, math.ceil(n / n_centroids * (1 + slack)))
    if B * n_centroids < n:
        raise ValueError(f"bucket_size {B} x {n_centroids} centroids < {n} rows")
    # min_points_per_centroid=1: small indexes (fewer than 39 rows per centroid, e.g. a first upload
    # of 12 images) are valid; faiss would otherwise print a warning on stderr for each build.
    km = faiss.Kmeans(d, n_centroids, niter=niter, seed=seed, verbose=False, min_points_per_centroid=1)
    km.train(x)
    centroids = np.ascontiguousarray(km.centroids, dtype=np.float32)
    assign = _balanced_assign(x, centroids, B, spill)
    feats = np.zeros((n_centroids, B, d), dtype=np.float32)
    bid = np.full((n_centroids, B), PAD_ID, dtype=np.int64)
    order = np.argsort(assign, kind="stable")
    a_sorted = assign[order]
    first = np.searchsorted(a_sorted, a_sorted, side="left")
    slot = np.arange(n) - first
    feats[a_sorted, slot] = x[order]
    bid[a_sorted, slot] = ids[order]
    return PlainIndex(centroids, feats, bid, id_bits, frac_bits, slack, spill, seed, niter)
