"""The tables of the digit comparisons (:mod:`protocols.digits`): which rows a receiver's table holds
(``fields``), where they sit in its words (``layout``), their bits (``lut``), and the sender's rows for a
batch: one look-up per word in a table over the digits the word depends on (``word_tables``,
``sender_rows_words``), else built digit by digit (``sender_rows``), the output masks applied word by word.
The receivers' picks read the rows through 8/16/32/64-bit lane views of the words (``plan``, ``pick_bits``).
All of it is local computation: the messages and PRG draws of :mod:`protocols.digits` do not depend on which
path builds them (``tests/unit/test_digits_identity.py``)."""

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


_DTYPES = {8: torch.int8, 16: torch.int16, 32: torch.int32, 64: torch.int64}


class Group:
    """Fields whose rows each sit inside one ``unit``-bit lane of a table word (lane ``slot`` of word ``word``,
    from bit ``offset`` of the lane): read and written through a view of the table in that lane's dtype."""

    def __init__(self, unit: int, fs: list[int], spec: Digits, kind: str) -> None:
        fs_all = fields(spec, kind)
        pos, _ = layout(spec, fs_all)
        self.unit, self.dtype, self.lanes = unit, _DTYPES[unit], 64 // unit
        self.fields = torch.tensor(fs)
        self.words = torch.tensor([pos[f][0] for f in fs])
        self.slots = torch.tensor([pos[f][1] // unit for f in fs])
        self.flat = self.words * self.lanes + self.slots  # row of the lane-major view ``[T * lanes, nc]``
        self.in_order = bool((self.flat == torch.arange(len(fs))).all())
        self.n, self.flat_np, self.fields_np = len(fs), self.flat.numpy(), self.fields.numpy()
        self.digits = torch.tensor([fs_all[f][0] for f in fs])
        self.digits_np = self.digits.numpy()
        self.digit_list = self.digits.tolist()
        offs = [pos[f][1] % unit for f in fs]
        self.offset_np = np.array(offs, dtype=np.uint8).reshape(-1, 1) if any(offs) else None


@cache
def plan(spec: Digits, kind: str) -> list[Group] | None:
    """The fields grouped by lane width (the smallest of 8/16/32/64 bits holding the row without crossing a
    lane), or ``None`` when a row spans several words (digits over 6 bits)."""
    if max(spec.widths) > 6:
        return None
    fs_all = fields(spec, kind)
    pos, _ = layout(spec, fs_all)
    by_unit: dict[int, list[int]] = {}
    for f, (i, _) in enumerate(fs_all):
        size, bit = 1 << spec.widths[i], pos[f][1]
        unit = next(u for u in (8, 16, 32, 64) if bit // u == (bit + size - 1) // u)
        by_unit.setdefault(unit, []).append(f)
    return [Group(u, fs, spec, kind) for u, fs in sorted(by_unit.items())]


def digits_u8(t: torch.Tensor, spec: Digits) -> np.ndarray:
    """``[D, n]`` uint8 digits of ``t`` ``[n]`` (low first, digits of at most 8 bits), numpy; cut from 32-bit
    windows of ``t`` (one int64 shift per window, the digits by uint32 shifts)."""
    tn = t.numpy()
    out = np.empty((len(spec.widths), tn.shape[0]), dtype=np.uint8)
    s, base, win = spec.drop, -64, tn
    for i, w in enumerate(spec.widths):
        if s + w > base + 32:
            base = s
            win = (tn >> s if s else tn).astype(np.uint32)
        np.bitwise_and(win >> (s - base) if s > base else win, (1 << w) - 1, out=out[i], casting="unsafe")
        s += w
    return out


_UNSIGNED = {8: np.uint8, 16: np.uint16, 32: np.uint32, 64: np.uint64}


def pick_bits(groups: list[Group], table: torch.Tensor, ch: np.ndarray, n_fields: int) -> np.ndarray:
    """Bit ``ch`` of every field's row in every element's table ``[T, nc]``: 0/1 ``[F, nc]`` (uint8, numpy:
    its shifts and transposes are vectorised where torch's int8 ones are not); ``ch`` ``[D, nc]`` uint8: the
    digits of the receiver's choice."""
    T, nc = table.shape
    tab = table.numpy()
    out = None if len(groups) == 1 else np.empty((n_fields, nc), dtype=np.uint8)
    for g in groups:
        dt = _UNSIGNED[g.unit]
        lanes = tab.view(dt).reshape(T, nc, g.lanes).transpose(0, 2, 1).copy().reshape(T * g.lanes, nc)
        bits = lanes[: g.n] if g.in_order else lanes[g.flat_np]  # a fresh array: shifted in place (fresh
        if g.offset_np is not None or g.n <= 8:  # big temporaries cost more than the shifts on this machine)
            c = ch[g.digits_np]
            if g.offset_np is not None:
                c += g.offset_np
            np.right_shift(bits, c, out=bits, casting="unsafe")
        else:
            for f, d in enumerate(g.digit_list):
                np.right_shift(bits[f], ch[d], out=bits[f], casting="unsafe")
        bits &= 1
        if out is None:
            return bits.astype(np.uint8) if dt != np.uint8 else bits
        out[g.fields_np] = bits
    assert out is not None
    return out


class WordTable:
    """One word of the sender's rows as a function of the digits it depends on: ``lut[(u >> shift) & mask]``,
    xored with ``flips[sum_j m_{f0+j} << j]`` for the output-mask bits ``m`` of its fields ``f0..f1``."""

    def __init__(self, spec: Digits, kind: str, t: int, fs: list[int]) -> None:
        fs_all = fields(spec, kind)
        pos, _ = layout(spec, fs_all)
        ds = [fs_all[f][0] for f in fs]
        i0, i1 = min(ds), max(ds)
        nb = sum(spec.widths[i0 : i1 + 1])
        self.shift, self.mask, self.f0, self.f1 = spec.drop + sum(spec.widths[:i0]), (1 << nb) - 1, fs[0], fs[-1] + 1
        v = torch.arange(1 << nb)
        word = torch.zeros(1 << nb, dtype=torch.int64)
        for f in fs:
            i, fn = fs_all[f]
            digit = (v >> sum(spec.widths[i0:i])) & ((1 << spec.widths[i]) - 1)
            word |= lut(spec.widths[i], fn)[digit, 0] << pos[f][1]
        self.lut = word
        flips = []
        for idx in range(1 << len(fs)):
            x = 0
            for j, f in enumerate(fs):
                x |= (((1 << (1 << spec.widths[fs_all[f][0]])) - 1) << pos[f][1]) * ((idx >> j) & 1)
            flips.append(x - (1 << 64) if x >> 63 else x)
        self.flips = torch.tensor(flips, dtype=torch.int64)


@cache
def word_tables(spec: Digits, kind: str) -> list[WordTable] | None:
    """Per word of the sender's rows its :class:`WordTable`, or ``None`` when a word would need a table over
    more than 16 bits of ``u`` or holds more than 8 rows (or a row spans several words: digits over 6 bits)."""
    if max(spec.widths) > 6:
        return None
    fs_all = fields(spec, kind)
    pos, T = layout(spec, fs_all)
    out = []
    for t in range(T):
        fs = [f for f in range(len(fs_all)) if pos[f][0] == t]
        ds = [fs_all[f][0] for f in fs]
        if len(fs) > 8 or sum(spec.widths[min(ds) : max(ds) + 1]) > 16:
            return None
        out.append(WordTable(spec, kind, t, fs))
    return out


def sender_rows_words(tables: list[WordTable], u: torch.Tensor, mask: torch.Tensor, nc: int) -> torch.Tensor:
    """As :func:`sender_rows`, one table look-up per word (:func:`word_tables`) from the sender's sum ``u``."""
    rows = torch.empty((len(tables), nc), dtype=torch.int64)
    raw = np.ascontiguousarray(mask.numpy()).view(np.uint8)
    m = torch.from_numpy(np.unpackbits(raw, axis=1, count=nc, bitorder="little"))  # [F, nc] uint8
    for t, wt in enumerate(tables):
        torch.index_select(wt.lut, 0, (u >> wt.shift) & wt.mask, out=rows[t])
        idx = m[wt.f0].clone()
        for j in range(1, wt.f1 - wt.f0):
            idx |= m[wt.f0 + j] << j
        rows[t] ^= wt.flips.index_select(0, idx.to(torch.int32))
    return rows
