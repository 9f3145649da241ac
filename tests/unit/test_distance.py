"""SecDist vs plaintext torch (three parties in-process).

Tolerance: inputs are rounded to 2**-16 (error <= 2**-17 per coordinate), so a squared
distance moves by at most ~ 2**-16 * sum|q - x| + d 2**-32; the one truncation adds at
most one ulp (2**-16). We check |secure - exact| <= 2**-16 (2 sum|q-x| + 4).
"""

import pytest
import torch

from protocols.distance import secure_distance
from protocols.sharing import from_pair, share_fixed
from protocols.simulate import evaluate, make_parties, run_parties

ULP = 2.0**-16


def _exact(q, X):
    q, X = q.double(), X.double()
    if X.dim() == 2:
        return ((q[:, None, :] - X[None]) ** 2).sum(-1), (q[:, None, :] - X[None]).abs().sum(-1)
    return ((q[:, None, :] - X) ** 2).sum(-1), (q[:, None, :] - X).abs().sum(-1)


def _check(out, q, X):
    ref, l1 = _exact(q, X)
    assert out.shape == ref.shape
    assert bool(((out - ref).abs() <= ULP * (2 * l1 + 4)).all()), float((out - ref).abs().max())


@pytest.mark.parametrize("Q,n,d", [(1, 1, 1), (3, 37, 16), (5, 200, 128)])
def test_distance_matches_plaintext_with_negative_coordinates(Q, n, d):
    g = torch.Generator().manual_seed(Q * 100 + n)
    q = torch.randn(Q, d, generator=g) * 3
    X = torch.randn(n, d, generator=g) * 3 - 1
    sq = (X.double() ** 2).sum(-1)
    out = evaluate(secure_distance, q, X, sq)
    _check(out, q, X)


def test_per_query_rows_and_one_dimensional_query():
    g = torch.Generator().manual_seed(7)
    q = torch.randn(4, 32, generator=g)
    X = torch.randn(4, 50, 32, generator=g)
    out = evaluate(secure_distance, q, X, (X.double() ** 2).sum(-1))
    _check(out, q, X)
    one = evaluate(secure_distance, q[0], X[0], (X[0].double() ** 2).sum(-1))
    assert one.shape == (50,)
    _check(one.unsqueeze(0), q[:1], X[0])


def test_duplicates_give_equal_distances_and_self_distance_near_zero():
    g = torch.Generator().manual_seed(3)
    row = torch.randn(1, 64, generator=g)
    X = torch.cat([row, row, row, torch.randn(2, 64, generator=g)])
    out = evaluate(secure_distance, row, X, (X.double() ** 2).sum(-1))
    assert float(out[0, :3].abs().max()) <= 64 * ULP
    assert float((out[0, 0] - out[0, 1]).abs()) <= 2 * ULP


def test_cost_one_round_one_element_per_output():
    Q, n, d = 3, 40, 128
    pq, pX, ps = share_fixed(torch.randn(Q, d)), share_fixed(torch.randn(n, d)), share_fixed(torch.rand(n))

    def body(p, a, b, c):
        before = p.comm.stats.snapshot()
        secure_distance(from_pair(p, a, 16), from_pair(p, b, 16), from_pair(p, c, 16))
        return p.comm.stats.snapshot() - before

    costs = run_parties(body, [(pq[i], pX[i], ps[i]) for i in range(3)])
    for cost in costs:
        assert cost.rounds == 1
        assert cost.bytes_sent == 8 * Q * n


def test_rejects_mismatched_inputs():
    pq, pX = share_fixed(torch.randn(2, 8)), share_fixed(torch.randn(5, 9))
    ps = share_fixed(torch.rand(5))

    def body(p, a, b, c):
        with pytest.raises(ValueError):
            secure_distance(from_pair(p, a, 16), from_pair(p, b, 16), from_pair(p, c, 16))
        with pytest.raises(ValueError):
            secure_distance(from_pair(p, a, 16), from_pair(p, b, 0), from_pair(p, c, 16))
        return True

    assert all(run_parties(body, [(pq[i], pX[i], ps[i]) for i in range(3)], parties=make_parties()))
