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
6. ``secure_topk`` by ``(distance, id)``: shares of the ``k`` ids and distances.

The caller sends ``output_pair`` of both results to the querier, who reconstructs.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from . import digits as D
from .arithmetic import reshare
from .distance import secure_distance
from .layout import RECORD_EXTRA, IndexShares
from .party import Party
from .sharing import ArithmeticShares, SharePair, public_shares
from .topk import secure_topk


@dataclass
class SharedIndexView:
    """A party's view of its :class:`IndexShares` as share objects bound to ``party``."""

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


def oblivious_fetch(onehot: ArithmeticShares, rows: SharePair) -> ArithmeticShares:
    """``onehot [P, C] @ rows [C, W]`` for a shared 0/1 ``onehot`` and shared ``rows``.

    Local: ``z_i = (e_i + e_{i+1}) X_i + e_i X_{i+1} + a_i`` as axpy passes over the two
    stored components (each read once per probe, no temporary of the table's size), then
    one reshare. The result has the integer scale of ``rows`` (no truncation: exact).
    Cost: 1 round, ``P W`` ring elements sent per party.
    """
    if onehot.frac_bits:
        raise ValueError("the selection vector must be an integer 0/1 sharing")
    x_lo, x_hi = rows
    P, n_c = onehot.shape
    if x_lo.shape[0] != n_c:
        raise ValueError(f"one-hot over {n_c} buckets, table has {x_lo.shape[0]}")
    a = (onehot.lo + onehot.hi).tolist()
    b = onehot.lo.tolist()
    z = torch.zeros((P, x_lo.shape[1]), dtype=torch.int64)
    for c in range(n_c):
        lo_c, hi_c = x_lo[c], x_hi[c]
        for p in range(P):
            z[p].add_(lo_c, alpha=a[p][c]).add_(hi_c, alpha=b[p][c])
    party = onehot.party
    z += party.zero_share(z.shape)
    lo, hi = reshare(party, z)
    return ArithmeticShares(party, lo, hi, 0)


def _columns(x: ArithmeticShares, sl, frac_bits: int) -> ArithmeticShares:
    return ArithmeticShares(x.party, x.lo[..., sl], x.hi[..., sl], frac_bits)


def secure_search(
    party: Party,
    query: ArithmeticShares,
    index: IndexShares,
    k: int,
    nprobe: int = 1,
) -> tuple[ArithmeticShares, ArithmeticShares]:
    """Shares of the ``k`` nearest ids ``[Q, k]`` (integer) and distances ``[Q, k]`` (fixed point).

    ``query`` is ``[Q, d]`` (or ``[d]``) fixed point. Results are sorted by (distance, id);
    if ``k`` exceeds the real rows in the probed buckets, padding appears as id -1 with a
    huge distance. Nothing is revealed.
    Cost: rounds = ``1 + T(C, nprobe) + 2 + 1 + 1 + T(nprobe B, k)`` (centroid distances,
    top-nprobe, one-hot, fetch, distances, top-k; the top-nprobe and one-hot are skipped
    when ``nprobe = C``), ``T(n, k)`` the rounds of ``secure_topk`` (``topk.merge_plan``:
    6 per binary level, 8 per wider one) and 2 for the one-hot (``digits.eqz`` on
    ``|probe - c| < C``). Elements sent per party: ``Q (C + nprobe B (d + 2))`` for the
    products, plus the comparisons of both top-k (42.3 words each, ``costs.ltz``, every
    party), their small equalities and products, and the ``Q nprobe C`` one-hot equalities.
    At n = 1e6, C = 1000, B = 1100, d = 32, k = 10: 45 rounds for nprobe = 1, 71 for 8.
    """
    view = SharedIndexView.of(party, index)
    sh = view.shares
    if query.party is not party:
        raise ValueError("query shares belong to another party/session")
    squeeze = len(query.shape) == 1
    if squeeze:
        query = query.unsqueeze(0)
    if query.shape[-1] != sh.dim or query.frac_bits != sh.frac_bits:
        raise ValueError(f"query must be [Q, {sh.dim}] at {sh.frac_bits} fractional bits")
    n_c, B, d = sh.n_centroids, sh.bucket_size, sh.dim
    if not 1 <= nprobe <= n_c:
        raise ValueError(f"need 1 <= nprobe <= C = {n_c}")
    if not 1 <= k <= nprobe * B:
        raise ValueError(f"need 1 <= k <= nprobe * B = {nprobe * B}")
    Q = query.shape[0]

    # 1-3: nearest centroids as a shared one-hot.
    if nprobe == n_c:
        eye = torch.eye(n_c, dtype=torch.int64).expand(Q, n_c, n_c).contiguous()
        onehot = public_shares(party, eye)
    else:
        cd = secure_distance(query, view.centroids, view.centroid_sqnorm)  # [Q, C]
        cid = public_shares(party, torch.arange(n_c, dtype=torch.int64).expand(Q, n_c).contiguous())
        _, probe = secure_topk(cd, cid, nprobe, id_bits=n_c.bit_length() + 1)  # [Q, nprobe]
        onehot = D.eqz(probe.unsqueeze(-1) - torch.arange(n_c, dtype=torch.int64), D.eq_spec(n_c))  # [Q, nprobe, C]

    # 4: oblivious fetch of the probed buckets.
    fetched = oblivious_fetch(onehot.reshape(Q * nprobe, n_c), view.rows)
    fetched = fetched.reshape(Q, nprobe * B, d + RECORD_EXTRA)
    X = _columns(fetched, slice(0, d), sh.frac_bits)
    sq = _columns(fetched, d, sh.frac_bits)
    ids = _columns(fetched, d + 1, 0)

    # 5-6: distances inside and top-k by (distance, id).
    dist = secure_distance(query, X, sq)  # [Q, M]
    dk, ik = secure_topk(dist, ids, k, id_bits=sh.id_bits)
    if squeeze:
        return ik[0], dk[0]
    return ik, dk
