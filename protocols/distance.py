"""SecDist: squared Euclidean distances between shared queries and shared rows.

``dist(q, x) = ||q||^2 - 2 q.x + ||x||^2`` with ``||x||^2`` precomputed by the data owner
and uploaded as shares. The two degree-2 terms (``q.x`` for every row and ``||q||^2``)
are computed locally as one 3-out-of-3 sum and brought back to replicated shares in ONE
reshare-and-truncate round (ABY3), so the whole distance matrix costs one round and one
ring element per output element per party, independent of ``d``.

Fixed point: ``q`` and ``X`` carry ``f`` fractional bits; the products are held at scale
``2**(2f)`` before truncation, so every ``|q.x|`` and ``||q||^2`` must stay below
``2**(63 - 2f)`` (``2**31`` for ``f = 16``). The result is exact up to one ulp
(``2**-f``) from truncation, plus the encoding error of the inputs; with probability at
most ``|z| / 2**63`` per element (``z`` the pre-truncation ring value, about
``2**(40-63) = 2**-23`` for distances near 256) an element is off by about
``2**(64 - 2f)`` (see ``arithmetic.reshare_truncate``).
"""

from __future__ import annotations

import torch

from .arithmetic import reshare_truncate
from .sharing import ArithmeticShares


def _dot_rows(a: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``a [..., Q, d]`` against rows ``x [n, d]`` or per-query rows ``x [Q, n, d]`` -> ``[Q, n]``."""
    if x.dim() == 2:
        return a @ x.T
    return torch.matmul(a.unsqueeze(-2), x.transpose(-1, -2)).squeeze(-2)


def distances_from_cross(q: ArithmeticShares, cross: torch.Tensor, bits: int, frac_bits: int) -> ArithmeticShares:
    """``||q||^2 - 2 q.x`` as RSS from this party's 3-out-of-3 term ``cross`` of ``q.x`` ``[Q, n]``:
    adds the ``||q||^2`` term and a zero-sharing, then ONE reshare-and-truncate by ``bits``
    (the result at ``frac_bits``). Cost: 1 round, ``Q n`` elements per party. The caller adds ``||x||^2``."""
    party = q.party
    z = query_sqnorm_term(q) - 2 * cross
    z = z + party.zero_share(z.shape)
    lo, hi = reshare_truncate(party, z, bits)
    return ArithmeticShares(party, lo, hi, frac_bits)


def query_sqnorm_term(q: ArithmeticShares) -> torch.Tensor:
    """This party's 3-out-of-3 term of ``||q||^2`` for ``q [Q, d]`` -> ``[Q, 1]`` (scale ``2**(2f)``). Local."""
    return (q.lo * (q.lo + q.hi) + q.hi * q.lo).sum(-1, keepdim=True)


def secure_distance(q: ArithmeticShares, X: ArithmeticShares, x_sqnorm: ArithmeticShares) -> ArithmeticShares:
    """Shared squared distances ``[Q, n]`` between queries ``q [Q, d]`` and rows ``X``.

    ``X`` is either ``[n, d]`` (the same rows for every query) or ``[Q, n, d]`` (per-query
    candidate rows, e.g. fetched buckets); ``x_sqnorm`` is ``[n]`` or ``[Q, n]`` (shares
    of ``||x||^2`` at the same scale). A 1-D ``q [d]`` gives a 1-D result ``[n]``.

    Steps: locally ``z_i = -2 (q_i . (X_i + X_{i+1}) + q_{i+1} . X_i)
    + (q_i . (q_i + q_{i+1}) + q_{i+1} . q_i) + a_i`` (``a`` a zero-sharing), one
    reshare-and-truncate round, then add ``||x||^2`` (local).
    Cost: 1 round, ``Q * n`` ring elements sent per party.
    """
    if q.frac_bits == 0 or X.frac_bits == 0 or x_sqnorm.frac_bits != q.frac_bits:
        raise ValueError("secure_distance expects fixed-point q, X and ||x||^2 at the same scale")
    if q.party is not X.party or q.party is not x_sqnorm.party:
        raise ValueError("shares of different parties/sessions")
    squeeze = len(q.shape) == 1
    if squeeze:
        q = q.unsqueeze(0)
    if q.shape[-1] != X.shape[-1]:
        raise ValueError(f"dimension mismatch: q {tuple(q.shape)} vs X {tuple(X.shape)}")
    if len(X.shape) == 3 and X.shape[0] != q.shape[0]:
        raise ValueError(f"per-query rows need X [Q, n, d] with Q = {q.shape[0]}, got {tuple(X.shape)}")
    cross = _dot_rows(q.lo, X.lo + X.hi) + _dot_rows(q.hi, X.lo)  # 3-out-of-3 of q.x
    bits = min(q.frac_bits, X.frac_bits)
    out = distances_from_cross(q, cross, bits, q.frac_bits + X.frac_bits - bits)
    if out.frac_bits != x_sqnorm.frac_bits:
        raise ValueError("||x||^2 must be at the scale of the products after truncation")
    out = out + x_sqnorm
    return out[0] if squeeze else out
