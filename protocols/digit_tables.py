"""The tables of the digit comparisons (:mod:`protocols.digits`): which rows a receiver's table holds
(``fields``), where they sit in its words (``layout``), their bits (``lut``), and the sender's rows for a
batch built digit by digit with the output masks applied word by word (``sender_rows``)."""

from __future__ import annotations

from functools import cache
from typing import TYPE_CHECKING

import numpy as np
import torch

if TYPE_CHECKING:
    from .digits import Digits

_BIT = torch.arange(64, dtype=torch.int64)


def fields(spec: Digits, kind: str) -> list[tuple[int, str]]:
    """(digit, function) of every table row: lowest digit G only, top digit (S0, S0^S1)."""
    d = len(spec.widths)
    if kind == "eq":
        return [(i, "E") for i in range(d)]
    if d == 1:
        return [(0, "S0")]
    return [(0, "G")] + [(i, f) for i in range(1, d - 1) for f in ("G", "P")] + [(d - 1, "S0"), (d - 1, "PT")]


@cache
def lut(w: int, fn: str) -> torch.Tensor:
    """``[2**w (u), pieces]``: the row of bits ``fn(u, j)`` over candidates ``j`` (64 per piece)."""
    size, top = 1 << w, w - 1
    u, j = torch.arange(size).view(-1, 1), torch.arange(size).view(1, -1)
    s = u + j
    table = {
        "G": s >= size,
        "P": s == size - 1,
        "S0": ((s % size) >> top) & 1 == 1,
        "PT": (((s % size) >> top) & 1) != ((((s + 1) % size) >> top) & 1),
        "E": u == j,
    }[fn].to(torch.int64)
    width, pieces = min(size, 64), max(1, size // 64)
    return (table.view(size, pieces, width) << _BIT[:width]).sum(-1)


def layout(spec: Digits, fields: list[tuple[int, str]]) -> tuple[list[tuple[int, int]], int]:
    """Word and bit offset of every row in a receiver's table, and the words per element."""
    pos, word, bit = [], 0, 0
    for i, _ in fields:
        size = 1 << spec.widths[i]
        if size >= 64:
            word, bit = word + (bit > 0), 0
            pos.append((word, 0))
            word += size // 64
        else:
            if bit + size > 64:
                word, bit = word + 1, 0
            pos.append((word, bit))
            bit += size
    return pos, word + (bit > 0)


@cache
def _sender_tables(spec: Digits, kind: str) -> tuple[list[torch.Tensor], list[tuple[int, int, torch.Tensor]]] | None:
    """The sender's rows by digit: ``[2**w, T]`` words holding all of the digit's rows at their places, and per
    word ``(f0, f1, lut)``: its fields ``f0..f1`` and the word flipping the rows whose mask bit is set, indexed
    by the fields' mask bits. ``None`` when a word holds more than 8 rows (digits under 3 bits)."""
    fs_all = fields(spec, kind)
    pos, T = layout(spec, fs_all)
    span = [(pos[f][0], pos[f][0] + max(1, (1 << spec.widths[i]) // 64)) for f, (i, _) in enumerate(fs_all)]
    words = []
    for t in range(T):
        fs = [f for f in range(len(fs_all)) if span[f][0] <= t < span[f][1]]
        if len(fs) > 8:
            return None
        flips = []
        for idx in range(1 << len(fs)):
            v = 0
            for j, f in enumerate(fs):
                w = spec.widths[fs_all[f][0]]
                v |= ((1 << 64) - 1 if w >= 6 else ((1 << (1 << w)) - 1) << pos[f][1]) * ((idx >> j) & 1)
            flips.append(v - (1 << 64) if v >> 63 else v)
        words.append((fs[0], fs[-1] + 1, torch.tensor(flips, dtype=torch.int64)))
    digits = []
    for i, w in enumerate(spec.widths):
        table = torch.zeros((1 << w, T), dtype=torch.int64)
        for f, (j, fn) in enumerate(fs_all):
            if j == i:
                vals = lut(w, fn)
                table[:, pos[f][0] : pos[f][0] + vals.shape[1]] |= vals << pos[f][1]
        digits.append(table)
    return digits, words


def sender_rows(spec: Digits, kind: str, ud: list[torch.Tensor], mask: torch.Tensor, nc: int) -> torch.Tensor | None:
    """``[T, nc]`` rows of the sender's tables xored with the output masks (bit-sliced ``mask`` ``[F, wc]``)."""
    tabs = _sender_tables(spec, kind)
    if tabs is None:
        return None
    digits, words = tabs
    rows = digits[0][ud[0]]
    for i in range(1, len(digits)):
        rows |= digits[i][ud[i]]
    rows = rows.T.contiguous()
    bits = np.unpackbits(np.ascontiguousarray(mask.numpy()).view(np.uint8), axis=1, count=nc, bitorder="little")
    for t, (f0, f1, flip) in enumerate(words):
        rows[t] ^= flip[torch.from_numpy(np.packbits(bits[f0:f1], axis=0, bitorder="little")[0].astype(np.int64))]
    return rows
