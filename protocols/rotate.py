"""Bit-slicing and the one-round exchange with the sender role rotated over three parts of a batch.

The table-OT protocols (:mod:`protocols.digits`, :mod:`protocols.tablegate`, :mod:`protocols.bitmul`)
cut a batch of ``n`` elements (zero-padded to a multiple of 3) into three equal parts; party ``r``
plays the sender of part ``r``, so every party sends the same. Boolean results are bit-sliced per
part: element ``e`` of a part sits at bit ``e % 64`` of the part's word ``e // 64`` (each part
padded to whole words), the parts' words concatenated in part order.
"""

from __future__ import annotations

import numpy as np
import torch


def pack(bits: torch.Tensor | np.ndarray) -> torch.Tensor:
    """0/1 (or bool; torch or numpy) ``[F, n]`` -> bit-sliced words ``[F, ceil(n / 64)]`` (element e at bit e % 64)."""
    f, n = bits.shape
    w = -(-n // 64)
    b = bits if isinstance(bits, np.ndarray) else bits.numpy()
    b = b if b.dtype in (np.bool_, np.int8, np.uint8) else b.astype(np.bool_)  # packbits: nonzero is 1
    packed = np.packbits(b, axis=1, bitorder="little")
    out = np.zeros((f, 8 * w), dtype=np.uint8)
    out[:, : packed.shape[1]] = packed
    return torch.from_numpy(out.view(np.int64))


def unpack(words: torch.Tensor, n: int) -> torch.Tensor:
    """Bit-sliced words ``[F, W]`` -> 0/1 int64 ``[F, n]``."""
    raw = np.ascontiguousarray(words.numpy()).view(np.uint8)
    return torch.from_numpy(np.unpackbits(raw, axis=1, count=n, bitorder="little").astype(np.int64))


def chunks(n: int) -> list[tuple[int, int]]:
    """Element ranges of the three equal parts (``n`` a multiple of 3): party ``r`` is the sender of part ``r``."""
    return [(r * n // 3, (r + 1) * n // 3) for r in range(3)]


def part_words(n: int) -> list[tuple[int, int]]:
    """Bit-sliced word ranges ``(w0, wc)`` of the three parts of ``n`` elements (``n`` a multiple of 3)."""
    out, w0 = [], 0
    for e0, e1 in chunks(n):
        wc = -(-(e1 - e0) // 64)
        out.append((w0, wc))
        w0 += wc
    return out


def padded3(n: int) -> int:
    """``n`` rounded up to a multiple of 3: the batch the three parts cover (zero padding)."""
    return n + (-n % 3)


def part(t: torch.Tensor, e0: int, e1: int) -> torch.Tensor:
    """Elements ``e0:e1`` of the flat ``t`` zero-padded (zeros: a valid sharing of 0) to
    :func:`padded3` elements (a view unless the part reaches into the padding: no copy of the whole batch)."""
    n = t.numel()
    if e1 <= n:
        return t[e0:e1]
    return torch.cat([t[e0:n], torch.zeros(e1 - max(e0, n), dtype=t.dtype)]) if e0 < n else torch.zeros(
        e1 - e0, dtype=t.dtype)


def rotated_round(party, n: int, prepare) -> list[tuple]:
    """Run ``prepare(q, e0, e1)`` for the three parts (``q`` = this party's role in the part:
    0 sender, 1 the sender's next, 2 its prev) in ONE exchange.

    ``prepare`` returns ``(to_next, to_prev, n_from_next, n_from_prev, finish)``;
    ``finish(from_next, from_prev)`` gives the part's ``(lo, hi)``. Messages of the parts
    are concatenated per link in part order (sizes are public).
    """
    parts = []
    for r, (e0, e1) in enumerate(chunks(n)):
        if e1 > e0:
            parts.append(prepare((party.id - r) % 3, e0, e1))
    send_next = [t.reshape(-1) for t, *_ in parts if t is not None]
    send_prev = [p[1].reshape(-1) for p in parts if p[1] is not None]
    want_next, want_prev = sum(p[2] for p in parts), sum(p[3] for p in parts)
    got_next, got_prev = party.comm.exchange(
        send_next=torch.cat(send_next) if send_next else None,
        send_prev=torch.cat(send_prev) if send_prev else None,
        recv_next=want_next > 0, recv_prev=want_prev > 0,
    )
    out, on, op = [], 0, 0
    for _, _, a, b, finish in parts:
        out.append(finish(got_next[on : on + a] if a else None, got_prev[op : op + b] if b else None))
        on, op = on + a, op + b
    return out
