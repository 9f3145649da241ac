"""Replicated secret sharing (2-out-of-3) over Z_2^64: share, reconstruct, reveal.

A secret ``x = x0 + x1 + x2 (mod 2**64)`` (arithmetic) or ``x0 ^ x1 ^ x2`` (boolean, 64
bits packed per int64 word). Party ``i`` holds the pair ``(x_i, x_{i+1})`` as
``lo``/``hi``. This is ABY3's sharing (Mohassel & Rindal, CCS 2018). Any one pair is two
uniformly random ring elements, whatever ``x`` is; any two pairs determine ``x``.

The share types (:class:`ArithmeticShares`, :class:`BooleanShares`) live in
:mod:`protocols.sectypes` and are re-exported here; this module holds the client side
(split, reconstruct with a consistency check) and the party side (reveal, wrap pairs).
"""

from __future__ import annotations

import hashlib
from collections.abc import Sequence

import torch

from .party import Party
from .prf import PRG, random_key
from .ring import DEFAULT_FP, FixedPoint, as_ring
from .sectypes import ArithmeticShares, BooleanShares, SharePair, _check_pair

__all__ = [
    "ArithmeticShares", "BooleanShares", "InconsistentSharesError", "SharePair", "additive_split", "digest",
    "from_pair", "output_pair", "public_shares", "reconstruct", "reveal", "reveal_to", "share", "share_fixed",
    "share_xor",
]


class InconsistentSharesError(ValueError):
    """Replicated copies of a share disagree: some server sent a wrong share."""

    def __init__(self, message: str, suspects: tuple[int, ...]) -> None:
        super().__init__(message)
        self.suspects = suspects


# ---- client side --------------------------------------------------------------------


def additive_split(x: torch.Tensor, prg: PRG | None = None) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Split ring tensor ``x`` into three uniformly random additive shares."""
    x = as_ring(x, "secret")
    prg = prg or PRG(random_key())
    x0 = prg.int64(x.shape)
    x1 = prg.int64(x.shape)
    return x0, x1, x - x0 - x1


def share(x: torch.Tensor, prg: PRG | None = None) -> list[SharePair]:
    """Client side: RSS pairs of ring tensor ``x``; pair ``i`` goes to party ``i``. Cost: 2 elements per party."""
    xs = additive_split(x, prg)
    return [(xs[i], xs[(i + 1) % 3]) for i in range(3)]


def share_xor(x: torch.Tensor, prg: PRG | None = None) -> list[SharePair]:
    """Client side: boolean RSS pairs of ``x`` (XOR)."""
    x = as_ring(x, "secret")
    prg = prg or PRG(random_key())
    x0, x1 = prg.int64(x.shape), prg.int64(x.shape)
    xs = (x0, x1, x ^ x0 ^ x1)
    return [(xs[i], xs[(i + 1) % 3]) for i in range(3)]


def share_fixed(x, fp: FixedPoint = DEFAULT_FP, prg: PRG | None = None) -> list[SharePair]:
    """Client side: encode reals in fixed point, then ``share``."""
    return share(fp.encode(x), prg)


def reconstruct(pairs: Sequence[SharePair | None], check: bool = True) -> torch.Tensor:
    """Client side: combine the pairs received from the servers (any two suffice).

    With all three pairs and ``check``, every replicated component is compared across the
    two servers that hold it; a mismatch raises :class:`InconsistentSharesError` naming
    the servers involved (a server that sent a wrong share is detected, not trusted): the
    pair holding the component, or the one server common to two disagreeing pairs.
    """
    given = {i: p for i, p in enumerate(pairs) if p is not None}
    if len(pairs) != 3 or len(given) < 2:
        raise ValueError("reconstruct needs pairs from at least two of the three servers")
    for pair in given.values():
        _check_pair(*pair)
    shapes = {tuple(pair[0].shape) for pair in given.values()}
    if len(shapes) != 1:
        raise ValueError(f"servers returned different shapes: {sorted(shapes)}")
    comp: dict[int, torch.Tensor] = {}
    bad: list[set[int]] = []
    for i, (lo, hi) in given.items():
        for j, v in ((i, lo), ((i + 1) % 3, hi)):
            if j not in comp:
                comp[j] = v
            elif check and not torch.equal(comp[j], v):
                bad.append({(j - 1) % 3, j})  # component j is held by servers j-1 and j
    if bad:
        # one corrupted server (the threat model) holds two components: when both disagree,
        # it is the one server in both pairs
        common = set.intersection(*bad)
        suspects = tuple(sorted(common or set.union(*bad)))
        raise InconsistentSharesError(
            f"replicated shares disagree between servers {sorted(set.union(*bad))}"
            + (f"; server {suspects[0]} is in every disagreeing pair" if len(suspects) == 1 else ""),
            suspects,
        )
    return comp[0] + comp[1] + comp[2]


def digest(t: torch.Tensor) -> bytes:
    """SHA-256 of a tensor's bytes: used to compare replicated copies without sending them."""
    return hashlib.sha256(t.contiguous().numpy().tobytes()).digest()


# ---- party side: reveal -------------------------------------------------------------


def _digest_words(t: torch.Tensor) -> torch.Tensor:
    """SHA-256 of a tensor as 4 int64 words (to send through ``Comm``)."""
    return torch.frombuffer(bytearray(digest(t)), dtype=torch.int64)


def _combine(x: ArithmeticShares | BooleanShares, missing: torch.Tensor) -> torch.Tensor:
    if isinstance(x, BooleanShares):
        return x.lo ^ x.hi ^ missing
    return x.lo + x.hi + missing


def _verify(party_id: int, got: torch.Tensor, digest_words: torch.Tensor) -> None:
    if not torch.equal(_digest_words(got), digest_words):
        suspects = ((party_id - 1) % 3, (party_id + 1) % 3)
        raise InconsistentSharesError(
            f"party {party_id}: replicated share copies disagree at an opening "
            f"(sent by parties {suspects[0]} and {suspects[1]}); one of them deviated",
            suspects,
        )


def reveal(x: ArithmeticShares | BooleanShares, check: bool = True) -> torch.Tensor:
    """Open ``x`` to all three parties. Cost: 1 round, ``numel`` elements (+4 words if checked) per party.

    Party i sends ``x_i`` to party i+1, the one component it lacks. With ``check`` the
    other holder of that component (party i+2) sends its SHA-256 digest too, so a single
    party that sends a wrong share is detected (``InconsistentSharesError``), never trusted.
    """
    comm = x.party.comm
    if not check:
        _, got = comm.exchange(send_next=x.lo, recv_prev=True)
        return _combine(x, got)
    h, got = comm.exchange(send_next=x.lo, send_prev=_digest_words(x.hi), recv_next=True, recv_prev=True)
    _verify(x.party.id, got, h)
    return _combine(x, got)


def reveal_to(x: ArithmeticShares | BooleanShares, receiver: int, check: bool = True) -> torch.Tensor | None:
    """Open ``x`` to party ``receiver`` only. Cost: 1 round, ``numel`` elements sent by one party (+4 words).

    Only party ``receiver - 1`` sends a share: ``x_{receiver-1}``, the component the
    receiver lacks. With ``check`` the third party sends the receiver a digest of its copy
    of that same component; the non-receivers receive nothing.
    """
    p = x.party
    if receiver not in (0, 1, 2):
        raise ValueError(f"receiver must be 0, 1 or 2, got {receiver!r}")
    if p.id == (receiver - 1) % 3:
        p.comm.exchange(send_next=x.lo)
        return None
    if p.id == receiver:
        if not check:
            _, got = p.comm.exchange(recv_prev=True)
            return _combine(x, got)
        h, got = p.comm.exchange(recv_prev=True, recv_next=True)
        _verify(p.id, got, h)
        return _combine(x, got)
    p.comm.exchange(send_prev=_digest_words(x.hi) if check else None)
    return None


def output_pair(x: ArithmeticShares | BooleanShares) -> SharePair:
    """This party's pair, to send to the client who reconstructs (reveal-to-client)."""
    return x.lo, x.hi


def from_pair(party: Party, pair: SharePair, frac_bits: int = 0) -> ArithmeticShares:
    """Wrap a received pair (e.g. uploaded by a client) as this party's shares."""
    return ArithmeticShares(party, pair[0], pair[1], frac_bits)


def public_shares(party: Party, value: torch.Tensor, frac_bits: int = 0) -> ArithmeticShares:
    """Shares of a PUBLIC ring tensor (component x0 = value, x1 = x2 = 0). Cost: local."""
    value = value.to(torch.int64)
    zero = torch.zeros_like(value)
    if party.id == 0:
        return ArithmeticShares(party, value, zero, frac_bits)
    if party.id == 2:
        return ArithmeticShares(party, zero, value, frac_bits)
    return ArithmeticShares(party, zero, zero.clone(), frac_bits)
