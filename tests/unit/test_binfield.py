"""protocols.binfield: GF(2^56) scalars and bit-plane vectors agree with element-by-element arithmetic."""

from __future__ import annotations

import pytest
import torch

from protocols import binfield as BF
from protocols.prf import PRG


def _elements(v: BF.BitVec) -> list[int]:
    """The ``v.bits`` field elements of a bit-plane vector, one Python int each."""
    out = []
    for g in range(v.bits):
        word, bit = divmod(g, 64)
        out.append(sum(((int(v.planes[k, word]) >> bit) & 1) << k for k in range(BF.DEGREE)))
    return out


def _mul(a: int, b: int) -> int:
    return int(BF.mul(torch.tensor([a]), torch.tensor([b]))[0])


def test_field_laws():
    rng = PRG(bytes(16))
    a, b, c = (int(t) for t in BF.random(rng, 3).reshape(-1))
    assert _mul(a, b) == _mul(b, a)
    assert _mul(_mul(a, b), c) == _mul(a, _mul(b, c))
    assert _mul(a, b ^ c) == _mul(a, b) ^ _mul(a, c)
    assert _mul(a, 1) == a and _mul(a, 0) == 0
    assert all(x < 1 << BF.DEGREE for x in (a, b, c, _mul(a, b)))


def test_vector_operations_match_elementwise_arithmetic():
    rng = PRG(bytes(range(16)))
    for words in (1, 2, 4):  # below, at and above a word per half
        rho = rng.int64((BF.DEGREE, words))
        bits = rng.int64((words,))
        other = rng.int64((words,))
        lifted = torch.zeros(BF.DEGREE, words, dtype=torch.int64)  # the bits of other as field elements: plane 0
        lifted[0] = other
        u, v = BF.BitVec(rho & bits, 64 * words), BF.BitVec(lifted, 64 * words)
        ue, ve = _elements(u), _elements(v)
        rho_e = _elements(BF.BitVec(rho, 64 * words))
        assert ve == [(int(other[g // 64]) >> (g % 64)) & 1 for g in range(64 * words)]
        assert int(BF.dot_bits(rho, other)[0]) == _xor(r for r, b in zip(rho_e, ve) if b)

        half = 32 * words
        h = BF.fold_polynomial(u, v)
        lo = _xor(_mul(a, b) for a, b in zip(ue[:half], ve[:half]))
        hi = _xor(_mul(a, b) for a, b in zip(ue[half:], ve[half:]))
        assert int(h[0, 0]) == lo and int(h[0, 0] ^ h[1, 0] ^ h[2, 0]) == hi  # h(0), h(1)

        r = int(BF.random(rng, 1)[0, 0])
        folded = _elements(BF.fold(u, torch.tensor([r])))
        assert folded == [a ^ _mul(r, a ^ b) for a, b in zip(ue[:half], ue[half:])]


def _xor(values) -> int:
    out = 0
    for x in values:
        out ^= x
    return out


def test_fold_planes_four_at_a_time_equals_the_xor_of_the_selected_planes():
    """``proof_kernels.fold_planes`` (tables of 4-plane combinations, blocks of 512 words) against the plain
    definition, across block boundaries and for plane counts that are not a multiple of 4."""
    import numpy as np

    from protocols import proof_kernels as K

    gen = np.random.default_rng(5)
    for planes, words in ((BF.DEGREE, 1300), (6, 515), (1, 3)):
        both = gen.integers(-(2**63), 2**63 - 1, size=(planes, 2 * words), dtype=np.int64)
        select = gen.integers(0, 2, size=(planes, planes)).astype(bool)
        low, high = both[:, :words].copy(), both[:, words:]
        d = low ^ high
        want = low.copy()
        for k in range(planes):
            for i in np.flatnonzero(select[k]):
                want[k] ^= d[i]
        K.fold_planes(both[:, :words], both[:, words:], select)  # in place, on views of one buffer
        assert np.array_equal(both[:, :words], want)


def _laid_out(v: BF.Paired) -> BF.BitVec:
    """The vector a :class:`BF.Paired` stands for, built densely: left sides, the pad, zeros | right sides, zeros."""
    hw = v.half_words
    planes = torch.zeros(BF.DEGREE, 2 * hw, dtype=torch.int64)
    off = 0
    for p in v.parts:
        n = p.left.numel()
        for side, base in ((p.left, 0), (p.right, hw)):
            if p.rho is None:
                planes[0, base + off: base + off + n] = side
            else:
                planes[:, base + off: base + off + n] = p.rho & side
        off += n
    planes[:, off] = (v.pad >> torch.arange(BF.DEGREE)) & 1
    return BF.BitVec(planes, 128 * hw)


def _as_dense(v) -> BF.BitVec:
    return BF.combo_dense(v) if isinstance(v, BF.Combo) else v


def test_paired_vectors_and_their_combinations_fold_and_multiply_as_the_dense_vectors_they_stand_for():
    """The proof's field vectors: scaled parts (V1's side) are folded straight from ``rho`` and bits (V2's side)
    become a :class:`BF.Combo` of terms, dense again past ``MAX_TERMS``; at every fold both equal the dense
    vector laid out explicitly, and so do the fold polynomials (with and without the known total)."""
    rng = PRG(bytes(range(9, 25)))
    for folds, widths in ((8, [1]), (10, [3, 2]), (14, [40, 1, 60])):
        rhos = [rng.int64((BF.DEGREE, w)) for w in widths]
        sides = [(rng.int64((w,)), rng.int64((w,)), rng.int64((w,)), rng.int64((w,))) for w in widths]
        u = BF.paired([BF.Pair(rho, a, b) for rho, (a, b, _, _) in zip(rhos, sides)], BF.random(rng, 1)[0], folds)
        v = BF.paired([BF.Pair(None, c, d) for _, _, c, d in sides], BF.random(rng, 1)[0], folds)
        ud, vd = _laid_out(u), _laid_out(v)
        if folds < 14:
            assert int(BF.inner(ud, vd)[0]) == _xor(_mul(a, b) for a, b in zip(_elements(ud), _elements(vd)))
        total = None
        kinds = set()
        for _ in range(folds):
            h = BF.fold_polynomial(u, v, total)
            assert torch.equal(h, BF.fold_polynomial(ud, vd))
            if total is not None:
                assert torch.equal(BF.fold_polynomial(u, v), h)
            r = BF.random(rng, 1)[0]
            u, v = BF.fold_pair(u, r, v, r)
            ud, vd = BF.fold(ud, r), BF.fold(vd, r)
            kinds.add(type(v).__name__)
            for got, want in ((_as_dense(u), ud), (_as_dense(v), vd)):  # planes (elements: slow in Python)
                assert torch.equal(got.planes, want.planes) if want.bits >= 1024 else _elements(got) == _elements(want)
            total = BF.inner(ud, vd)
        assert torch.equal(BF.first(u), BF.first(ud)) and torch.equal(BF.first(v), BF.first(vd))
        assert "Combo" in kinds and (folds < 14 or "BitVec" in kinds)  # past MAX_TERMS: dense again


def test_paired_refuses_mixed_or_oversized_parts():
    rng = PRG(bytes(range(10, 26)))
    w = rng.int64((2,))
    pad = BF.random(rng, 1)[0]
    with pytest.raises(ValueError, match="scaled parts and bits"):
        BF.paired([BF.Pair(rng.int64((BF.DEGREE, 2)), w, w), BF.Pair(None, w, w)], pad, 9)
    with pytest.raises(ValueError, match="do not fit"):
        BF.paired([BF.Pair(None, w, w)], pad, 8)  # 2 words + the pad in a half of 2
    with pytest.raises(ValueError, match="differ in size"):
        BF.paired([BF.Pair(None, w, w[:1])], pad, 9)


def test_a_lazy_rho_is_regenerated_alike_block_by_block_and_proves_as_its_dense_planes(monkeypatch):
    """``Rho``: the challenge planes drawn as a key and regenerated block by block where a kernel reads them (no
    ``[56, W]`` array in memory): the same planes every time and for every holder of the key, the mask applied,
    blocks that are distinct streams, and the dot products, first fold polynomial and first fold of a paired
    vector equal to those of the same planes held in memory."""
    monkeypatch.setattr(BF, "RHO_BLOCK", 3)  # several blocks, and a short last one
    rng = PRG(bytes(range(3, 19)))
    twin = PRG(bytes(range(3, 19)))
    rho, again = BF.Rho.draw(rng, 8), BF.Rho.draw(twin, 8)
    dense = rho.dense()
    assert torch.equal(dense, again.dense()) and torch.equal(dense, rho.dense())
    assert tuple(dense.shape) == (BF.DEGREE, 8) and len({tuple(dense[:, w].tolist()) for w in range(8)}) == 8
    masked = BF.Rho(rho.key, 8, (1 << 63) - 1).dense()
    assert torch.equal(masked, dense & ((1 << 63) - 1)) and not torch.equal(masked, dense)
    bits, a, b, c, d = (rng.int64((8,)) for _ in range(5))
    assert torch.equal(BF.dot_bits(rho, bits), BF.dot_bits(dense, bits))
    pad, pad_v, r = BF.random(rng, 1)[0], BF.random(rng, 1)[0], BF.random(rng, 1)[0]
    lazy = BF.paired([BF.Pair(rho, a, b)], pad, 11)
    held = BF.paired([BF.Pair(dense, a, b)], pad, 11)
    v = BF.paired([BF.Pair(None, c, d)], pad_v, 11)
    assert torch.equal(BF.fold_polynomial(lazy, v), BF.fold_polynomial(held, v))
    got, want = BF.fold(lazy, r), BF.fold(held, r)
    assert isinstance(got, BF.BitVec) and isinstance(want, BF.BitVec) and torch.equal(got.planes, want.planes)
