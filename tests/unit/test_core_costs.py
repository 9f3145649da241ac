"""The cost table (protocols/costs.py) against the Comm counters of every protocol, run in-process.

Each protocol runs on three parties; rounds and int64 words sent by each party must equal
``costs.<protocol>(n)`` exactly, for sizes on and off the packing widths. The README's
"MPC core in one page" table quotes ``costs.TABLE``, checked here against the same
functions.
"""

from __future__ import annotations

import pytest
import torch

from protocols import approx, costs, digits
from protocols import compare as C
from protocols.arithmetic import mul, truncate
from protocols.sharing import from_pair, share, share_fixed, share_xor
from protocols.simulate import make_parties, run_parties
from protocols.sort import secure_sort_pair


def _measure(fn, inputs: list[torch.Tensor], frac_bits: int = 0, boolean: bool = False) -> list[tuple[int, int]]:
    """(rounds, words sent) of each party for ``fn(*shares)``."""
    from protocols.sectypes import BooleanShares

    pairs = [share_xor(x) if boolean else (share_fixed(x) if frac_bits else share(x)) for x in inputs]

    def body(party, *ps):
        args = [BooleanShares(party, *p) if boolean else from_pair(party, p, frac_bits) for p in ps]
        before = party.comm.stats.snapshot()
        fn(*args)
        d = party.comm.stats.snapshot() - before
        return d.rounds, d.bytes_sent // 8

    return run_parties(body, [[p[i] for p in pairs] for i in range(3)], parties=make_parties(seed=5))


def _expect(cost: costs.Cost) -> list[tuple[int, int]]:
    return [(cost.rounds, int(cost.sent(i))) for i in range(3)]


def _ints(n: int, bound: int = 1000, seed: int = 0) -> torch.Tensor:
    return torch.randint(-bound, bound, (n,), generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("n", [1, 64, 100, 192, 1000])
def test_comparison_family_costs(n: int) -> None:
    x, y = _ints(n), _ints(n, seed=1)
    assert _measure(C.msb, [x]) == _expect(costs.msb(n))
    assert _measure(C.ltz, [x]) == _expect(costs.ltz(n))
    assert _measure(C.relu, [x]) == _expect(costs.relu(n))
    assert _measure(C.eqz, [x]) == _expect(costs.eqz(n))
    assert _measure(C.a2b, [x]) == _expect(costs.a2b(n))
    assert _measure(lambda a: C.truncate_exact(a, 16), [x]) == _expect(costs.truncate_exact(n))
    assert _measure(lambda a, b: secure_sort_pair(a, b, b, a, 12), [x, y]) == _expect(costs.sort_pair(n))
    assert _measure(lambda a, b: secure_sort_pair(a, None, b, None), [x, y]) == _expect(costs.sort_pair(n, False))


@pytest.mark.parametrize("n", [1, 63, 192, 500])
def test_products_injection_and_bounded_comparison_costs(n: int) -> None:
    x, y = _ints(n), _ints(n, seed=1)
    assert _measure(mul, [x, y]) == _expect(costs.product(n))
    assert _measure(lambda a: truncate(a, 4), [x]) == _expect(costs.product(n))
    bits = torch.randint(0, 2, (n,), generator=torch.Generator().manual_seed(2))
    assert _measure(C.bit_inject, [bits], boolean=True) == _expect(costs.bit_inject(n))
    for spec in (approx.FAST, approx.EXACT):
        assert _measure(lambda a, s=spec: approx.ltz_bounded(a, s), [x]) == _expect(costs.bounded_ltz(n, spec))
    assert _measure(lambda a: digits.eqz(a, digits.eq_spec(4096)), [x]) == _expect(
        costs.eqz(n, digits.eq_spec(4096)))


@pytest.mark.parametrize("spec", [approx.FAST, approx.EXACT])
def test_cnn_nonlinearities_costs(spec) -> None:
    n = 130
    x = torch.rand(n, dtype=torch.float64) * 16 - 8
    assert _measure(lambda a: approx.relu(a, spec), [x], 16) == _expect(costs.bounded_relu(n, spec))
    assert _measure(lambda a: approx.clamp(a, 0.0, 6.0, spec), [x], 16) == _expect(costs.bounded_clamp(n, spec))


def test_l2_normalize_cost() -> None:
    x = torch.rand(3, 10, dtype=torch.float64) + 0.1
    got = _measure(approx.l2_normalize, [x], 16)
    assert got == _expect(costs.l2_normalize(3, 10, approx.J_MAX - approx.J_MIN))
    assert got[0][0] == 12


def test_table_is_the_per_element_cost_of_a_192_batch() -> None:
    n = 192
    assert costs.TABLE["ltz"] == costs.ltz(n).per(n)
    assert costs.TABLE["eqz"] == costs.eqz(n).per(n)
    assert costs.TABLE["bounded_ltz_fast"] == costs.bounded_ltz(n, approx.FAST).per(n)
    # The figures the README quotes (rounded there).
    assert (costs.TABLE["ltz"].rounds, round(costs.TABLE["ltz"].sent_p0, 1)) == (5, 7.7)
    assert (costs.TABLE["relu"].rounds, round(costs.TABLE["relu"].sent_other, 1)) == (6, 8.7)
    assert (costs.TABLE["bounded_ltz_fast"].rounds, round(costs.TABLE["bounded_ltz_fast"].sent_p0, 1)) == (3, 4.4)
    assert costs.TABLE["truncate_exact"] == costs.Cost(9, 11.96875, 3.96875)
    assert costs.TABLE["product"] == costs.Cost(1, 1, 1)
