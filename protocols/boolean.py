"""Boolean protocols on replicated XOR shares (64 bit-lanes per int64 word)."""

from __future__ import annotations

from collections.abc import Sequence

import torch

from .sharing import BooleanShares


def and_many(pairs: Sequence[tuple[BooleanShares, BooleanShares]]) -> list[BooleanShares]:
    """Several bitwise ANDs in ONE round. Cost: 1 round, sum of ``numel`` words per party.

    ``z_i = (x_i & (y_i ^ y_{i+1})) ^ (x_{i+1} & y_i) ^ a_i`` (``a`` an XOR zero-sharing),
    then party i sends ``z_i`` to party i-1 (ABY3's boolean multiplication).
    """
    if not pairs:
        return []
    party = pairs[0][0].party
    zs = []
    for x, y in pairs:
        if x.party is not party or y.party is not party:
            raise ValueError("cannot AND shares of different parties/sessions")
        if x.shape != y.shape:
            x_lo, y_lo = torch.broadcast_tensors(x.lo, y.lo)
            shape = x_lo.shape
        else:
            shape = x.shape
        zs.append(((x.lo & (y.lo ^ y.hi)) ^ (x.hi & y.lo)).expand(shape).reshape(-1))
    sizes = [z.numel() for z in zs]
    flat = torch.cat(zs) if len(zs) > 1 else zs[0]
    flat = flat ^ party.zero_share_xor(flat.shape)
    got, _ = party.comm.exchange(send_prev=flat, recv_next=True)
    out = []
    off = 0
    for (x, y), n in zip(pairs, sizes):
        # (broadcast_shapes only when needed: its first call costs a lazy torch import)
        shape = x.shape if x.shape == y.shape else torch.broadcast_shapes(x.shape, y.shape)
        out.append(BooleanShares(party, flat[off : off + n].view(shape), got[off : off + n].view(shape)))
        off += n
    return out


def and_(x: BooleanShares, y: BooleanShares) -> BooleanShares:
    """Bitwise ``[x] & [y]``. Cost: 1 round, ``numel`` words per party."""
    return and_many([(x, y)])[0]
