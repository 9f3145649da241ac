"""protocols.verify: verified multiplication (cut-and-choose triples + sacrifice) on in-process parties."""

from __future__ import annotations

import pytest
import torch

from protocols.arithmetic import mul
from protocols.party import Party
from protocols.sharing import ArithmeticShares, from_pair, reconstruct, share
from protocols.simulate import run_parties
from protocols.verify import bucket_size, check_products, soundness_bits, verified_mul


def test_bucket_sizes_reach_2_to_the_minus_40():
    assert [bucket_size(n) for n in (100, 10_000, 1 << 20)] == [7, 4, 3]
    assert soundness_bits(1 << 20, 3, 3) >= 40 > soundness_bits(1 << 20, 2, 2)
    assert soundness_bits(100, 7, 7) >= 40 > soundness_bits(100, 6, 6)


def _run(fn, x: torch.Tensor, y: torch.Tensor, seed: int = 1):
    sx, sy = share(x), share(y)
    return run_parties(lambda party, px, py: fn(party, from_pair(party, px), from_pair(party, py)),
                       [[sx[i], sy[i]] for i in range(3)])


def test_verified_mul_is_exact_and_its_cost_is_pinned():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(-(2**62), 2**62, (100,), generator=g)
    y = torch.randint(-(2**62), 2**62, (100,), generator=g)

    def body(party, a, b):
        before = party.comm.stats.snapshot()
        z = verified_mul(a, b)
        return (z.lo, z.hi), party.comm.stats - before

    out = _run(body, x, y)
    assert torch.equal(reconstruct([o[0] for o in out]), x * y)  # wrap-around product in Z_2^64
    n, b = 100, 7
    for _, st in out:
        assert st.rounds == 6  # the product, then triples, coin, cut-and-choose, rho/sigma, w
        assert st.bytes_sent == 8 * ((4 * b + 1) * n + 4 * b + 20)


@pytest.mark.parametrize("where", ["product", "triple"])
def test_an_additive_error_by_one_party_is_always_detected(where):
    """Party 1 adds a random nonzero error to one element it reshares: in the product being
    checked, or while the triples are made. Every run aborts; none returns a wrong product."""
    g = torch.Generator().manual_seed(5)
    x = torch.randint(-1000, 1000, (64,), generator=g)
    y = torch.randint(-1000, 1000, (64,), generator=g)
    for run in range(5):
        e = int(torch.randint(1, 1 << 40, (1,), generator=g))
        i = int(torch.randint(64, (1,), generator=g))

        def body(party: Party, a: ArithmeticShares, b: ArithmeticShares, i: int = i, e: int = e):
            z = mul(a, b)
            if party.id == 1 and where == "product":
                z = ArithmeticShares(party, z.lo, z.hi, 0)
                z.lo[i] += e  # party 1's copy of its component: what it sent differs from what it kept
            if party.id == 1 and where == "triple":
                orig = party.comm._send

                def bad_send(to, t, _orig=orig, i=i, e=e):  # corrupt the first reshare of the triple generation
                    party.comm._send = _orig
                    t = t.clone()
                    t.view(-1)[i] += e
                    return _orig(to, t)
                party.comm._send = bad_send
            check_products(a, b, z)
            return z.lo, z.hi

        with pytest.raises(Exception) as exc:
            _run(body, x, y)
        assert "deviated" in str(exc.value) or "disagree" in str(exc.value), (run, exc.value)

