"""protocols.galois: GR(2^64, 56) arithmetic, and why checks need it."""

from __future__ import annotations

import torch

from protocols import binfield as BF
from protocols import galois as G
from protocols.prf import PRG


def _gf2_gcd(a: int, b: int) -> int:
    while b:
        while a and a.bit_length() >= b.bit_length():
            a ^= b << (a.bit_length() - b.bit_length())
        a, b = b, a
    return a


def test_the_modulus_is_irreducible_mod_2():
    """Rabin's test: x^(2^56) = x mod f, and gcd(x^(2^(56/p)) - x, f) = 1 for the primes p = 2, 7 of 56."""
    d = G.DEGREE
    f = (1 << d) | sum(1 << t for t in G.TAPS)

    def x_pow_2k(k: int) -> int:  # X^(2^k) mod f, by the field's own product (checked by its laws below)
        x = 2
        for _ in range(k):
            x = BF._clmul_mod(x, x)
        return x

    assert x_pow_2k(d) == 2
    for p in (2, 7):
        assert _gf2_gcd(f, x_pow_2k(d // p) ^ 2) == 1


def test_ring_laws_and_the_fast_paths_agree():
    rng = PRG(bytes(16))
    a, b, c = G.random(rng, 5), G.random(rng, 5), G.random(rng, 5)
    assert torch.equal(G.mul(a, b), G.mul(b, a))
    assert torch.equal(G.mul(G.mul(a, b), c), G.mul(a, G.mul(b, c)))
    assert torch.equal(G.mul(a, b + c), G.mul(a, b) + G.mul(a, c))
    assert torch.equal(G.mul(a, G.one()), a)
    assert torch.equal(a @ G.mul_matrix(b[0]), G.mul(a, b[0]))
    assert torch.equal(G.inner(a, b), G.mul(a, b).sum(0))
    x = torch.tensor([3, -7, 1 << 62])
    assert torch.equal(G.mul(G.lift(x), G.lift(x))[:, 0], x * x)  # Z_2^64 sits inside


def test_a_high_order_error_survives_an_even_coefficient_but_not_a_unit():
    """In Z_2^64, 2^63 * r = 0 for every even r (half of them); in the extension only r in (2) kills it."""
    e = G.lift(torch.tensor([-(1 << 63)]))
    rng = PRG(bytes(range(16)))
    r = G.random(rng, 256)
    killed = (G.mul(e, r) == 0).all(-1)
    assert torch.equal(killed, ~G.is_unit(r))
    assert int(killed.sum()) == 0  # a non-unit has probability 2^-56
    assert bool((G.mul(e, G.lift(torch.tensor([2]))) == 0).all())


def test_in_place_fold_and_fold_products_match_elementwise_arithmetic():
    """The proofs' bulk steps (numba kernels) against ``G.mul``: a fold written over its low half, and the fold
    polynomial's two products in one pass."""
    rng = PRG(bytes(range(3, 19)))
    for m in (1, 2, 37):
        u, v, r = G.random(rng, 2 * m), G.random(rng, 2 * m), G.random(rng, 1)[0]
        lo, hi = u[:m].clone(), u[m:].clone()
        want = lo + G.mul(hi - lo, r)
        buf = u.clone()
        got = G.fold_inplace(buf, r)
        assert torch.equal(got, want) and got.data_ptr() == buf.data_ptr()  # a view: no new memory
        assert torch.equal(buf[m:], hi)  # the upper half is left alone
        c0, c2 = G.fold_products(u, v)
        assert torch.equal(c0, G.mul(u[:m], v[:m]).sum(0))
        assert torch.equal(c2, G.mul(u[m:] - u[:m], v[m:] - v[:m]).sum(0))


def test_parts_written_in_place_equal_the_products_they_stand_for(monkeypatch):
    """The challenge coefficients of elementwise products are a key, regenerated block by block where read
    (``LazyRandom``: the same elements every time and for every holder of the key, blocks that are distinct
    streams); the parts and weighted sums written from them equal the products with the elements in memory."""
    from protocols.checked import _Lifted, _RhoScaled, _weighted_sum

    monkeypatch.setattr(G, "LAZY_BLOCK", 4)  # three blocks, the last one short
    rng = PRG(bytes(range(4, 20)))
    n = 9
    lazy = G.LazyRandom.draw(rng, n)
    rho, a, b = lazy.dense(), rng.int64((n,)), rng.int64((n,))
    assert torch.equal(rho, G.LazyRandom.draw(PRG(bytes(range(4, 20))), n).dense()) and torch.equal(rho, lazy.dense())
    assert len({tuple(r.tolist()) for r in rho}) == n
    out = G.random(rng, 2 * n)  # garbage: every entry must be overwritten
    _RhoScaled(lazy, (a, b)).write(out)
    assert torch.equal(out, torch.cat([G.mul(rho, G.lift(a)), G.mul(rho, G.lift(b))]))
    _Lifted((b, a)).write(out)
    assert torch.equal(out, G.lift(torch.cat([b, a])))
    assert torch.equal(_weighted_sum(lazy, a), G.mul(rho, G.lift(a)).sum(0))


def test_weighted_values_equal_the_int64_matrix_products():
    """``galois.weighted`` / ``weighted_t`` (compiled) against torch's int64 ``matmul``, on strided views and
    batched groups, with operands that wrap mod 2^64."""
    g = torch.Generator().manual_seed(7)
    a = torch.randint(-(2**63), 2**63 - 1, (37, 300), generator=g, dtype=torch.int64)
    t = torch.randint(-(2**63), 2**63 - 1, (300, G.DEGREE), generator=g, dtype=torch.int64)
    assert torch.equal(G.weighted(a, t), a @ t)
    assert torch.equal(G.weighted(a.T.contiguous().T, t), a @ t)  # column-major values
    s = torch.randint(-(2**63), 2**63 - 1, (37, G.DEGREE), generator=g, dtype=torch.int64)
    assert torch.equal(G.weighted_t(a, s), a.T @ s)
    batch = torch.randint(-(2**63), 2**63 - 1, (4, 9, 5), generator=g, dtype=torch.int64)
    sb = torch.randint(-(2**63), 2**63 - 1, (4, 9, G.DEGREE), generator=g, dtype=torch.int64)
    assert torch.equal(G.weighted_t(batch, sb), torch.einsum("gcj,gce->gje", batch, sb))


def test_grouped_one_by_one_convolution_equals_torch():
    """``checked._f`` on a grouped 1x1 convolution (the compiled ``proof_kernels.grouped_mm``) against torch's
    int64 ``conv2d``, with a spatial extent and operands that wrap."""
    import torch.nn.functional as F

    from protocols.checked import _ConvShape, _f

    g = torch.Generator().manual_seed(3)
    x = torch.randint(-(2**63), 2**63 - 1, (3, 6 * 5, 2, 3), generator=g, dtype=torch.int64)
    w = torch.randint(-(2**63), 2**63 - 1, (6 * 4, 5, 1, 1), generator=g, dtype=torch.int64)
    conv = _ConvShape((1, 1), (0, 0), (1, 1), 6)
    assert torch.equal(_f("conv2d", x, w, conv), F.conv2d(x, w, None, 1, 0, 1, 6))
