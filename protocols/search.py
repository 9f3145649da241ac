"""Oblivious k-nearest-neighbour search over the shared, padded k-means index.

Steps of :func:`secure_search` (every shape is public; nothing depends on secret data):

1. SecDist from the shared query to the ``C`` shared centroids (1 round, ``Q C`` elements).
2. ``secure_topk`` of those distances with the (public) centroid numbers as payloads:
   shares of the ``nprobe`` nearest centroid numbers (ties -> smaller number).
3. Shared one-hot ``[Q, nprobe, C]`` by ``eq(probe, c)`` for every ``c`` (one vectorised
   equality test).
4. Oblivious fetch: ``one-hot @ rows`` where ``rows [C, B (d + 2)]`` holds every bucket's
   records ``[x, ||x||^2, id]``. Local work O(C B d) per probe, one reshare round,
   ``Q nprobe B (d + 2)`` elements sent per party. No server learns the bucket.
5. SecDist from the query to the ``nprobe B`` fetched rows (1 round).
6. ``secure_topk`` by distance (ties: :func:`distance_order`): shares of the ``k`` ids and distances.

Both top-k compare distances alone on a narrow layout (:func:`distance_order`).

When ``nprobe`` and ``d`` are large (:func:`distances_first`), steps 1 and 5 swap places:
the distances to EVERY record are computed with the centroid distances in one round (two
matrix-vector passes over the stored table), and step 4 fetches only ``(distance, id)``:
one round fewer, and the local work no longer grows with ``nprobe``.

The caller sends ``output_pair`` of both results to the querier, who reconstructs.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import torch

from . import digits as D
from .arithmetic import reshare
from .distance import distances_from_cross, secure_distance
from .layout import RECORD_EXTRA, IndexShares
from .party import Party
from .ringmm import ring_matmul
from .sharing import ArithmeticShares, SharePair, public_shares
from .sort import KEY_TOP_BITS
from .topk import MERGE_MAX_K, PARTITION_FAIL, KeyOrder, narrow_order, secure_topk


class IndexSizes(Protocol):
    """The public sizes of a shared index (``IndexShares`` has them), read only."""

    @property
    def n_centroids(self) -> int: ...
    @property
    def bucket_size(self) -> int: ...
    @property
    def dim(self) -> int: ...
    @property
    def id_bits(self) -> int: ...
    @property
    def frac_bits(self) -> int: ...


class IndexView(Protocol):
    """A party's stored index share pair as the search uses it: public sizes, ``||c||^2`` shares,
    and the LOCAL products over the stored table (no communication). :class:`SharedIndexView`
    computes them in this process; ``servers.sharded_search`` on shard actors. Everything the
    parties send is computed by this module's functions from these terms, so every view speaks
    the same protocol (same messages, same PRG draws)."""

    party: Party
    centroid_sqnorm: ArithmeticShares

    @property
    def shares(self) -> IndexSizes: ...

    def centroid_terms(self, query: ArithmeticShares) -> torch.Tensor:
        """``[Q, C]``: this party's 3-out-of-3 term of ``q . c``: ``q_i (c_i + c_{i+1}) + q_{i+1} c_i``."""
        ...

    def record_terms(self, q_sum: torch.Tensor, q_lo: torch.Tensor) -> torch.Tensor:
        """``[Q, C B]``: ``X_i q_sum + X_{i+1} q_lo`` for every record (queries padded to the record width)."""
        ...

    def record_column(self, j: int) -> SharePair:
        """Column ``j`` of every record, ``[C B]`` each (``d``: ``||x||^2``, ``d + 1``: the id)."""
        ...

    def fetch_terms(self, onehot: ArithmeticShares) -> torch.Tensor:
        """``[P, C]`` one-hot -> ``[P, B (d + 2)]``: this party's 3-out-of-3 term of ``onehot @ rows``."""
        ...


@dataclass
class SharedIndexView:
    """A party's view of its :class:`IndexShares` as share objects bound to ``party`` (an :class:`IndexView`)."""

    party: Party
    shares: IndexShares
    centroids: ArithmeticShares
    centroid_sqnorm: ArithmeticShares

    @classmethod
    def of(cls, party: Party, shares: IndexShares) -> SharedIndexView:
        if shares.party_id != party.id:
            raise ValueError(f"index shares of server {shares.party_id} given to party {party.id}")
        f = shares.frac_bits
        return cls(party, shares, ArithmeticShares(party, *shares.centroids, f),
                   ArithmeticShares(party, *shares.centroid_sqnorm, f))

    @property
    def rows(self) -> SharePair:
        return self.shares.rows

    def _table(self) -> SharePair:
        sh = self.shares
        lo, hi = sh.rows
        return lo.view(sh.n_centroids * sh.bucket_size, sh.dim + RECORD_EXTRA), hi.view(
            sh.n_centroids * sh.bucket_size, sh.dim + RECORD_EXTRA)

    def centroid_terms(self, query: ArithmeticShares) -> torch.Tensor:
        return centroid_cross(query.lo, query.hi, self.centroids.lo, self.centroids.hi)

    def record_terms(self, q_sum: torch.Tensor, q_lo: torch.Tensor) -> torch.Tensor:
        return record_cross(*self._table(), q_sum, q_lo)

    def record_column(self, j: int) -> SharePair:
        x_lo, x_hi = self._table()
        return x_lo[:, j], x_hi[:, j]

    def fetch_terms(self, onehot: ArithmeticShares) -> torch.Tensor:
        return _fetch_terms(onehot, *self.rows)


# The local products over (a range of) the stored table; servers.shards runs the same functions.
def centroid_cross(q_lo: torch.Tensor, q_hi: torch.Tensor, c_lo: torch.Tensor, c_hi: torch.Tensor) -> torch.Tensor:
    """``[Q, C]``: ``q_i (c_i + c_{i+1}) + q_{i+1} c_i``, this party's 3-out-of-3 term of ``q . c``."""
    return q_lo @ (c_lo + c_hi).T + q_hi @ c_lo.T


def record_cross(x_lo: torch.Tensor, x_hi: torch.Tensor, q_sum: torch.Tensor, q_lo: torch.Tensor) -> torch.Tensor:
    """``[Q, n]``: ``X_i q_sum + X_{i+1} q_lo`` for records ``[n, W]`` (queries ``[Q, W]``), two
    matrix-vector products per query over the table read in place."""
    return torch.stack([torch.mv(x_lo, q_sum[j]) + torch.mv(x_hi, q_lo[j]) for j in range(q_sum.shape[0])])


def selection_terms(a: torch.Tensor, b: torch.Tensor, x_lo: torch.Tensor, x_hi: torch.Tensor) -> torch.Tensor:
    """``a [P, C] @ X_i + b [P, C] @ X_{i+1}`` for rows ``[C, W]`` as axpy passes over the two stored
    components (each row read once per probe, no temporary of the table's size)."""
    P, n_c = a.shape
    if x_lo.shape[0] != n_c:
        raise ValueError(f"one-hot over {n_c} buckets, table has {x_lo.shape[0]}")
    al, bl = a.tolist(), b.tolist()
    z = torch.zeros((P, x_lo.shape[1]), dtype=torch.int64)
    for c in range(n_c):
        lo_c, hi_c = x_lo[c], x_hi[c]
        for p in range(P):
            z[p].add_(lo_c, alpha=al[p][c]).add_(hi_c, alpha=bl[p][c])
    return z


def _fetch_terms(onehot: ArithmeticShares, x_lo: torch.Tensor, x_hi: torch.Tensor) -> torch.Tensor:
    """This party's 3-out-of-3 term of ``onehot [P, C] @ rows [C, W]``: ``(e_i + e_{i+1}) X_i + e_i X_{i+1}``
    (:func:`selection_terms`). Local."""
    return selection_terms(onehot.lo + onehot.hi, onehot.lo, x_lo, x_hi)


def _fetch_terms_small(onehot: ArithmeticShares, x_lo: torch.Tensor, x_hi: torch.Tensor) -> torch.Tensor:
    """:func:`_fetch_terms` for a small table ``[C, W]``: two matrix products for all probes on
    float64 BLAS limbs (:func:`ringmm.ring_matmul`, exact in ``Z_2^64``; at C = 1000, W = 2200, 64
    probes: ~0.3 s instead of ~1.3 s of int64 ``matmul`` on a 2-core AVX2 server). Local."""
    a, b = onehot.lo + onehot.hi, onehot.lo
    return ring_matmul(a, x_lo).add_(ring_matmul(b, x_hi))


def oblivious_fetch(onehot: ArithmeticShares, rows: SharePair | IndexView) -> ArithmeticShares:
    """``onehot [P, C] @ rows [C, W]`` for a shared 0/1 ``onehot`` and shared ``rows`` (a share
    pair, or an :class:`IndexView`'s stored records).

    Local: :func:`_fetch_terms` (or the view's ``fetch_terms``) plus a zero-sharing, then one
    reshare. The result has the integer scale of ``rows`` (no truncation: exact).
    Cost: 1 round, ``P W`` ring elements sent per party.
    """
    if onehot.frac_bits:
        raise ValueError("the selection vector must be an integer 0/1 sharing")
    z = _fetch_terms(onehot, *rows) if isinstance(rows, tuple) else rows.fetch_terms(onehot)
    party = onehot.party
    z += party.zero_share(z.shape)
    lo, hi = reshare(party, z)
    return ArithmeticShares(party, lo, hi, 0)


FETCH_DISTANCES_WORDS = 32
"""Rule of :func:`distances_first` (public sizes only): computing the distance to EVERY record
sends ``n`` more ring elements per party (8 bytes, ~64 ns at 1 Gbit/s each) but replaces
``nprobe`` passes of the fetch over the ``n (d + 2)``-word table by about two (one
multiply-add, ~1-2 ns each); it pays when ``(nprobe - 1) (d + 2) > 32``."""


def distances_first(nprobe: int, dim: int) -> bool:
    """Whether :func:`secure_search` computes every record's distance first and fetches ``(distance, id)``."""
    return (nprobe - 1) * (dim + RECORD_EXTRA) > FETCH_DISTANCES_WORDS


def centroid_distances(query: ArithmeticShares, view: IndexView) -> ArithmeticShares:
    """SecDist ``[Q, C]`` to the centroids: ``distance.secure_distance`` with its cross term from
    ``view.centroid_terms`` (same steps, same messages). Cost: 1 round, ``Q C`` elements per party."""
    f = view.shares.frac_bits
    return distances_from_cross(query, view.centroid_terms(query), f, f) + view.centroid_sqnorm


def record_distances(query: ArithmeticShares, view: IndexView) -> tuple[ArithmeticShares, ArithmeticShares]:
    """Distances ``[Q, C]`` to the centroids and ``[Q, C, B]`` to every record, in ONE round.

    Both are SecDist (``distance.secure_distance``) with their 3-out-of-3 terms concatenated
    before one reshare-and-truncate: ``q . x`` for every record is ``X_i (q_i + q_{i+1}) +
    X_{i+1} q_i``, two matrix-vector products per query over the stored table (the query
    padded with zeros over the ``||x||^2`` and id columns, so the table is read in place),
    then ``||x||^2`` is added from the table (local). Cost: 1 round, ``Q (C + C B)``
    elements per party; error as ``secure_distance`` (one ulp, rare large truncation error).
    """
    party, sh = view.party, view.shares
    n_c, B, d = sh.n_centroids, sh.bucket_size, sh.dim
    q_sum = torch.nn.functional.pad(query.lo + query.hi, (0, RECORD_EXTRA))
    q_lo = torch.nn.functional.pad(query.lo, (0, RECORD_EXTRA))
    f = sh.frac_bits
    both = distances_from_cross(query, torch.cat([view.centroid_terms(query), view.record_terms(q_sum, q_lo)], 1),
                                f, f)
    sq = ArithmeticShares(party, *view.record_column(d), f)
    Q = query.shape[0]
    return both[:, :n_c] + view.centroid_sqnorm, (both[:, n_c:] + sq).reshape(Q, n_c, B)


def fetch_distances(onehot: ArithmeticShares, dist: ArithmeticShares, view: IndexView) -> tuple[
        ArithmeticShares, ArithmeticShares]:
    """``(distance, id)`` of the probed buckets: ``onehot [Q, nprobe, C]`` against each query's
    table ``[C, 2 B]`` (its distances ``[Q, C, B]`` and the stored ids), ONE reshare for all
    queries. Cost: 1 round, ``2 Q nprobe B`` elements per party; exact (integer one-hot)."""
    party, sh = view.party, view.shares
    n_c, B, d = sh.n_centroids, sh.bucket_size, sh.dim
    Q, P = onehot.shape[0], onehot.shape[1]
    ids_lo, ids_hi = (t.reshape(n_c, B) for t in view.record_column(d + 1))
    z = torch.stack([
        _fetch_terms_small(onehot[j], torch.cat([dist.lo[j], ids_lo], 1), torch.cat([dist.hi[j], ids_hi], 1))
        for j in range(Q)])  # [Q, P, 2 B]
    z += party.zero_share(z.shape)
    lo, hi = reshare(party, z)
    lo, hi = lo.view(Q, P, 2, B).transpose(1, 2).reshape(Q, 2, P * B), hi.view(Q, P, 2, B).transpose(1, 2).reshape(
        Q, 2, P * B)
    return ArithmeticShares(party, lo[:, 0], hi[:, 0], dist.frac_bits), ArithmeticShares(party, lo[:, 1], hi[:, 1], 0)


def _columns(x: ArithmeticShares, sl, frac_bits: int) -> ArithmeticShares:
    return ArithmeticShares(x.party, x.lo[..., sl], x.hi[..., sl], frac_bits)


def secure_search(
    party: Party,
    query: ArithmeticShares,
    index: IndexShares | IndexView,
    k: int,
    nprobe: int = 1,
) -> tuple[ArithmeticShares, ArithmeticShares]:
    """Shares of the ``k`` nearest ids ``[Q, k]`` (integer) and distances ``[Q, k]`` (fixed point).

    ``query`` is ``[Q, d]`` (or ``[d]``) fixed point. Results are sorted by distance (ties: see
    ``distance_order``);
    if ``k`` exceeds the real rows in the probed buckets, padding appears as id -1 with a
    huge distance. Nothing is revealed.
    Two paths, chosen from public sizes (:func:`distances_first`):

    * rows first (``(nprobe - 1)(d + 2) <= 32``, e.g. nprobe = 1): steps 1-6 of the module
      docstring. Rounds ``1 + T(C, nprobe) + 2 + 1 + 1 + T(nprobe B, k)``; elements sent per
      party ``Q (C + nprobe B (d + 2))`` for the products.
    * distances first: the distances to the centroids AND to every record in ONE round
      (:func:`record_distances`), then the top-nprobe and one-hot as above, and the fetch of
      ``(distance, id)`` only (:func:`fetch_distances`): rounds ``1 + T(C, nprobe) + 2 + 1 +
      T(nprobe B, k)`` (one fewer); elements ``Q (C + C B + 2 nprobe B)``; local work two
      passes over the table instead of ``nprobe``.

    ``T(n, k)`` is the rounds of ``secure_topk`` (``topk.merge_plan``: ``R_lt + 1`` per binary
    level, ``R_lt + 3`` per wider one) and 2 for the one-hot (``digits.eqz`` on ``|probe - c| <
    C``); the top-nprobe and one-hot are skipped when ``nprobe = C``. Both top-k add their
    comparisons (``distance_order``), small equalities and products, and the one-hot its
    ``Q nprobe C`` equalities. Large top-k start with ``topk.partition_plan``'s stage.
    With ``nprobe = C`` the distances-first path fetches nothing (one round and ``2 Q C B``
    elements less). At n = 1e6, C = 1000, B = 1100, d = 128, nprobe = 64 (the product default),
    k = 10, unit-norm features (``id_bits`` 39): 60 rounds (top-nprobe 21, one-hot 2, top-k of
    70,400 35), 40.3 MB per party (measured, ``benchmarks.e2e --profile-only``).
    """
    view: IndexView = SharedIndexView.of(party, index) if isinstance(index, IndexShares) else index
    if view.party is not party:
        raise ValueError("the index view belongs to another party/session")
    sh = view.shares
    if query.party is not party:
        raise ValueError("query shares belong to another party/session")
    squeeze = len(query.shape) == 1
    if squeeze:
        query = query.unsqueeze(0)
    if query.shape[-1] != sh.dim or query.frac_bits != sh.frac_bits:
        raise ValueError(f"query must be [Q, {sh.dim}] at {sh.frac_bits} fractional bits")
    n_c, B = sh.n_centroids, sh.bucket_size
    if not 1 <= nprobe <= n_c:
        raise ValueError(f"need 1 <= nprobe <= C = {n_c}")
    if not 1 <= k <= nprobe * B:
        raise ValueError(f"need 1 <= k <= nprobe * B = {nprobe * B}")

    dist, ids = _candidates(party, query, view, nprobe)  # [Q, M] each

    # 6: top-k by distance, on the narrow key layout (distance_order).
    dk, ik = secure_topk(dist, ids, k, id_bits=sh.id_bits, order=distance_order(sh.id_bits, k))
    if squeeze:
        return ik[0], dk[0]
    return ik, dk


def distance_order(id_bits: int, k: int) -> KeyOrder | None:
    """How both top-k of the search compare (public sizes only): distances alone on
    ``topk.narrow_order(KEY_TOP_BITS - id_bits + 3)``: 24 bits in eight 3-bit digits for the
    ``id_bits = 39`` that ``index.build.auto_id_bits`` gives unit-norm features (the product's),
    one round less per tournament level than the 42 bits (fourteen digits) of ``id_bits = 21``
    and 3.5 words per comparison for those instead of 6.7 for the 64-bit ``(distance, id)`` key.
    The range is the one the index guarantees: every record distance (and its padding,
    ``layout.pad_sqnorm``) is below ``sort.key_limit(id_bits) = 2**(KEY_TOP_BITS - id_bits)``
    ring units, and a centroid (the mean of its bucket) is no farther than its farthest record.
    Both may start with the partition stage (``topk.partition_plan``, failure bound
    ``topk.PARTITION_FAIL`` = 1e-6 per top-k: a true top-k element missed, the result is then the
    exact top-k of the kept candidates): at n = 1M the top-10 of 70,400 takes 40 rounds and 0.60M
    comparisons instead of 54 and 1.01M, the top-64 of 1,000 centroids 89k comparisons instead of
    140k. Ties go to the earlier position after the stage's public permutation (the merges are
    stable). ``None`` (the ``(distance, id)`` key) where the tournament is not the merge."""
    if k > MERGE_MAX_K:
        return None
    return narrow_order(KEY_TOP_BITS - id_bits + 3, PARTITION_FAIL)


def onehot_spec(n_c: int) -> D.Digits:
    """Digits of the probes' one-hot equality (``|probe - c| < C``): one digit up to 6 bits; else 2-4
    digits of at most 4 bits (at most 6 up to 24 bits), joined in one table-gate round. At C = 1000:
    (4, 3, 3), 3 rounds and 1.2 MB per party for 64 probes, ~10x less CPU than one 10-bit digit
    (1-of-1024 tables: 2 rounds, 6.0 MB)."""
    bits = D.eq_spec(n_c).bits
    if bits <= 6:
        return D.eq_spec(n_c)
    d = min(4, -(-bits // 4)) if bits <= 24 else -(-bits // 6)
    return D.even(bits, d)


def _probe_onehot(party: Party, cd: ArithmeticShares, nprobe: int, id_bits: int) -> ArithmeticShares:
    """Shared one-hot ``[Q, nprobe, C]`` of the ``nprobe`` nearest centroids (ties -> smaller number)."""
    Q, n_c = cd.shape
    cid = public_shares(party, torch.arange(n_c, dtype=torch.int64).expand(Q, n_c).contiguous())
    _, probe = secure_topk(cd, cid, nprobe, id_bits=n_c.bit_length() + 1,
                           order=distance_order(id_bits, nprobe))  # [Q, nprobe]
    return D.eqz(probe.unsqueeze(-1) - torch.arange(n_c, dtype=torch.int64), onehot_spec(n_c))


def _candidates(party: Party, query: ArithmeticShares, view: IndexView, nprobe: int) -> tuple[
        ArithmeticShares, ArithmeticShares]:
    """Steps 1-5 of :func:`secure_search`: distances ``[Q, M]`` and ids of the probed buckets' records."""
    sh = view.shares
    n_c, B, d = sh.n_centroids, sh.bucket_size, sh.dim
    Q = query.shape[0]

    first = distances_first(nprobe, d)
    if first:
        cd, all_dist = record_distances(query, view)  # [Q, C], [Q, C, B] in one round
    elif nprobe < n_c:
        cd = centroid_distances(query, view)  # [Q, C]
    if nprobe < n_c:
        onehot = _probe_onehot(party, cd, nprobe, sh.id_bits)  # [Q, nprobe, C]
    else:
        onehot = public_shares(party, torch.eye(n_c, dtype=torch.int64).expand(Q, n_c, n_c).contiguous())

    # 4-5: oblivious fetch of the probed buckets, distances (every bucket probed: no fetch).
    if first and nprobe == n_c:
        dist = all_dist.reshape(Q, n_c * B)
        ids_lo, ids_hi = (t.expand(Q, n_c * B) for t in view.record_column(d + 1))
        ids = ArithmeticShares(party, ids_lo, ids_hi, 0)
    elif first:
        dist, ids = fetch_distances(onehot, all_dist, view)
    else:
        fetched = oblivious_fetch(onehot.reshape(Q * nprobe, n_c), view)
        fetched = fetched.reshape(Q, nprobe * B, d + RECORD_EXTRA)
        X = _columns(fetched, slice(0, d), sh.frac_bits)
        sq = _columns(fetched, d, sh.frac_bits)
        ids = _columns(fetched, d + 1, 0)
        dist = secure_distance(query, X, sq)  # [Q, M]
    return dist, ids
