"""Verified elementwise multiplication over Z_2^64: security with abort against one malicious party.

Triple verification by sacrifice with cut-and-choose and bucketing (Furukawa, Lindell, Nof,
Weinstein, Eurocrypt 2017; Araki et al., IEEE S&P 2017). It needs no field: every check is
an identity over the ring, and soundness is combinatorial.

:func:`verified_triples` (``n`` triples, bucket size ``B``, ``C`` opened):

1. ``M = n B + C`` random triples: ``a``, ``b`` random replicated sharings (pairwise PRGs, no
   communication), ``c = a * b`` by the semi-honest product (1 round, ``M`` elements).
2. A joint coin: a random sharing opened with the replicated cross-check (1 round, 4 words);
   it is fixed after the triples, and one party alone can neither predict nor bias it.
3. The coin permutes the ``M`` triples. The first ``C`` are opened and checked ``c = a b``
   (1 round, ``3C`` elements); the rest form ``n`` buckets of ``B``.
4. In every bucket the first triple ``t`` is checked against each other triple ``u`` by
   sacrifice: open ``rho = a_t - a_u``, ``sigma = b_t - b_u`` (1 round), then open
   ``w = c_t - c_u - sigma a_u - rho b_u - rho sigma`` and require ``w = 0`` (1 round).
   With errors ``c_t = a_t b_t + e_t`` and ``c_u = a_u b_u + e_u``, ``w = e_t - e_u``.

:func:`check_products` checks ``z = x * y`` with one verified triple per element the same
way (``w = e_z - e_t``, 2 rounds, batched with step 4), and :func:`verified_mul` is the
semi-honest product followed by that check. Every opening is cross-checked
(``sharing.reveal(check=True)``), so a party that lies while opening is caught there.

Soundness. A corrupted party can only add errors (to the reshare it sends, to the shares it
opens). A bad triple survives only in a bucket whose triples all carry the SAME error, and
any bad triple that is opened or shares a bucket with a good one makes ``w != 0``. So the
adversary needs its ``mB`` bad triples (``m >= 1``) to avoid the ``C`` opened positions and
to fill ``m`` whole buckets; over the coin's uniform permutation that happens with
probability ``binom(n, m) / binom(nB + C, mB)``. :func:`soundness_bits` is
``-log2`` of the maximum over ``m``; :func:`bucket_size` picks the smallest ``B`` (``C = B``)
with at least ``2^-40``. If every triple is good, any nonzero product error is detected
with certainty. Examples (asserted in tests/unit/test_verify.py): ``n = 100 -> B = 7``,
``n = 10^4 -> B = 4``, ``n = 2^20 -> B = 3``.

Cost of :func:`check_products` for ``n`` products with bucket size ``B`` (``C = B``): 5 rounds
(triples, coin, cut-and-choose, rho/sigma, w) and per party ``M + 3C + 3 (B - 1) n + 3 n``
elements plus 4 coin words and 4 digest words per opening, i.e. ``4 B n + 4 B + 20`` ring
elements. :func:`verified_mul` adds the product itself: 6 rounds and ``(4 B + 1) n + 4 B + 20``
elements, against 1 round and ``n`` elements for the semi-honest product (``4 B + 1`` times
the bytes: 13x at ``B = 3``, 29x at ``B = 7``; tests/unit/test_verify.py pins both counts).
Scope: elementwise integer products (``frac_bits = 0`` operands; a fixed-point truncation
after the product is not verified). Nothing here is used by the query protocols yet.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from scipy.special import gammaln  # type: ignore[import-untyped]

from .arithmetic import mul
from .party import Party
from .sharing import ArithmeticShares, reveal

SOUNDNESS_BITS = 40


class VerificationError(RuntimeError):
    """A multiplication or triple check failed: a party deviated (the protocol aborts)."""


def soundness_bits(n: int, bucket: int, opened: int) -> float:
    """``-log2`` of the adversary's best chance to pass a bad triple (see the module doc)."""
    total = n * bucket + opened
    m = np.arange(1, n + 1, dtype=np.float64)
    log_p = (gammaln(n + 1) - gammaln(m + 1) - gammaln(n - m + 1)
             - (gammaln(total + 1) - gammaln(m * bucket + 1) - gammaln(total - m * bucket + 1)))
    return float(-log_p.max() / math.log(2))


def bucket_size(n: int, bits: int = SOUNDNESS_BITS) -> int:
    """Smallest bucket size ``B`` (with ``C = B`` opened) reaching ``bits`` of soundness for ``n`` triples."""
    b = 2
    while soundness_bits(n, b, b) < bits:
        b += 1
    return b


def _shares(party: Party, lo: torch.Tensor, hi: torch.Tensor) -> ArithmeticShares:
    return ArithmeticShares(party, lo, hi, 0)


def _take(x: ArithmeticShares, idx: torch.Tensor) -> ArithmeticShares:
    return _shares(x.party, x.lo[idx], x.hi[idx])


def _coin_permutation(party: Party, size: int) -> torch.Tensor:
    """A permutation of ``range(size)`` from a jointly opened random sharing (1 round, 4 words)."""
    seed = reveal(_shares(party, *party.random_pair((4,))), check=True)
    rng = np.random.default_rng(seed.numpy().view(np.uint64))
    return torch.from_numpy(rng.permutation(size))


def _sacrifice_w(t: tuple[ArithmeticShares, ...], u: tuple[ArithmeticShares, ...],
                 rho: torch.Tensor, sigma: torch.Tensor) -> ArithmeticShares:
    """``c_t - c_u - sigma a_u - rho b_u - rho sigma``: zero iff both triples carry the same error."""
    party = t[0].party
    lo = t[2].lo - u[2].lo - sigma * u[0].lo - rho * u[1].lo
    hi = t[2].hi - u[2].hi - sigma * u[0].hi - rho * u[1].hi
    return _shares(party, lo, hi).add_public(-(rho * sigma))


def _sacrifice(pairs: list[tuple[tuple[ArithmeticShares, ...], tuple[ArithmeticShares, ...]]], what: str) -> None:
    """Check every (t, u) pair by sacrifice, all pairs batched: 2 rounds."""
    party = pairs[0][0][0].party
    diff = [(t[0] - u[0], t[1] - u[1]) for t, u in pairs]
    flat = torch.cat([torch.cat([d.lo.reshape(-1), e.lo.reshape(-1)]) for d, e in diff])
    flat_hi = torch.cat([torch.cat([d.hi.reshape(-1), e.hi.reshape(-1)]) for d, e in diff])
    opened = reveal(_shares(party, flat, flat_hi), check=True)
    ws, pos = [], 0
    for t, u in pairs:
        k = t[0].lo.numel()
        rho = opened[pos:pos + k].view(t[0].shape)
        sigma = opened[pos + k:pos + 2 * k].view(t[0].shape)
        pos += 2 * k
        ws.append(_sacrifice_w(t, u, rho, sigma))
    w = reveal(_shares(party, torch.cat([x.lo.reshape(-1) for x in ws]), torch.cat([x.hi.reshape(-1) for x in ws])),
               check=True)
    if bool((w != 0).any()):
        raise VerificationError(f"party {party.id}: {what} check failed ({int((w != 0).sum())} of {w.numel()}); "
                                f"a party deviated, aborting")


def _random_triples(party: Party, m: int) -> tuple[ArithmeticShares, ArithmeticShares, ArithmeticShares]:
    a = _shares(party, *party.random_pair((m,)))
    b = _shares(party, *party.random_pair((m,)))
    return a, b, mul(a, b)


def verified_triples(party: Party, n: int, bucket: int | None = None, extra: list | None = None
                     ) -> tuple[ArithmeticShares, ArithmeticShares, ArithmeticShares]:
    """``n`` multiplication triples, each verified (see the module doc). ``extra``: more
    (t, u) sacrifice pairs to check in the same two rounds (used by :func:`check_products`)."""
    b = bucket or bucket_size(n)
    a, bb, c = _random_triples(party, n * b + b)
    perm = _coin_permutation(party, n * b + b)
    op = perm[:b]
    lo, hi = torch.cat([s.lo[op] for s in (a, bb, c)]), torch.cat([s.hi[op] for s in (a, bb, c)])
    opened = reveal(_shares(party, lo, hi), check=True)
    got = opened.view(3, b)
    if not torch.equal(got[0] * got[1], got[2]):
        raise VerificationError(f"party {party.id}: an opened triple is not a product; a party deviated, aborting")
    buckets = perm[b:].view(n, b)
    first = tuple(_take(s, buckets[:, 0]) for s in (a, bb, c))
    pairs = [(first, tuple(_take(s, buckets[:, j]) for s in (a, bb, c))) for j in range(1, b)]
    if extra is None:
        _sacrifice(pairs, "triple")
    else:
        extra.extend(pairs)
    return first  # type: ignore[return-value]


def check_products(x: ArithmeticShares, y: ArithmeticShares, z: ArithmeticShares, bucket: int | None = None) -> None:
    """Abort (``VerificationError``) unless ``z = x * y`` elementwise (integer shares, same shape)."""
    party = x.party
    if not x.shape == y.shape == z.shape:
        raise ValueError(f"check_products: shapes differ: {tuple(x.shape)}, {tuple(y.shape)}, {tuple(z.shape)}")
    flat = tuple(_shares(party, s.lo.reshape(-1), s.hi.reshape(-1)) for s in (x, y, z))
    pairs: list = []
    t = verified_triples(party, flat[0].lo.numel(), bucket, extra=pairs)
    # z is checked like a triple against the verified t: w = (z - x y) - (c_t - a_t b_t)
    _sacrifice([*pairs, (flat, t)], "multiplication")


def verified_mul(x: ArithmeticShares, y: ArithmeticShares, bucket: int | None = None) -> ArithmeticShares:
    """``[x] * [y]`` (integer shares, same shape) checked before it is returned."""
    if x.frac_bits or y.frac_bits:
        raise ValueError("verified_mul takes integer shares (frac_bits = 0)")
    z = mul(x, y)
    check_products(x, y, z, bucket)
    return z
