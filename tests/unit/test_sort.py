"""SecSortPair, bitonic sort, top-k and argmin vs plaintext (three parties in-process).

With ``id_bits`` the order is lexicographic on (key, id), so integer keys with many
ties must match a plaintext lexsort exactly.
"""

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from protocols import compare as C
from protocols import sort as S
from protocols import topk as T
from protocols.sharing import from_pair, share
from protocols.simulate import evaluate, run_parties

IDB = 12


def _lex(keys, ids):
    comp = keys * (1 << IDB) + ids
    order = torch.argsort(comp, -1)
    return torch.gather(keys, -1, order), torch.gather(ids, -1, order)


def _ids(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    n = shape[-1]
    return torch.stack([torch.randperm(n, generator=g) for _ in range(int(torch.tensor(shape[:-1]).prod()))]).reshape(
        shape
    )


def test_sort_pair_min_max_with_tie_break():
    ka = torch.tensor([5, 1, 3, 3, -7, 0])
    kb = torch.tensor([2, 9, 3, 3, -7, 0])
    pa = torch.tensor([10, 11, 4, 2, 6, 1])
    pb = torch.tensor([20, 21, 1, 8, 6, 2])
    out = evaluate(lambda a, b, c, d: tuple(x for pair in S.secure_sort_pair(a, b, c, d, IDB) for x in pair),
                   ka, pa, kb, pb)
    kmin, pmin, kmax, pmax = out
    lo = (ka * 4096 + pa) <= (kb * 4096 + pb)
    assert torch.equal(kmin, torch.where(lo, ka, kb)) and torch.equal(pmin, torch.where(lo, pa, pb))
    assert torch.equal(kmax, torch.where(lo, kb, ka)) and torch.equal(pmax, torch.where(lo, pb, pa))


def test_sort_pair_costs_one_comparison_plus_one_round():
    x = share(torch.randint(-100, 100, (50,)))

    def body(p, pr):
        a = from_pair(p, pr, 0)
        s0 = p.comm.stats.snapshot()
        C.ltz(a)
        s1 = p.comm.stats.snapshot()
        S.secure_sort_pair(a, a, a, a, IDB)
        s2 = p.comm.stats.snapshot()
        return (s1 - s0).rounds, (s2 - s1).rounds

    for r_lt, r_pair in run_parties(body, [(x[i],) for i in range(3)]):
        assert r_pair == r_lt + 1


@pytest.mark.parametrize("n", [1, 2, 13, 37])
def test_bitonic_sort_any_n_with_ties_and_negatives(n):
    g = torch.Generator().manual_seed(n)
    keys = torch.randint(-5, 5, (2, n), generator=g)
    ids = _ids((2, n), n)
    sk, sp = evaluate(lambda a, b: S.secure_sort(a, b, IDB), keys, ids)
    rk, rp = _lex(keys, ids)
    assert torch.equal(sk, rk) and torch.equal(sp, rp)


def test_sort_fixed_point_keys_descending_without_payload():
    keys = torch.randn(30) * 50
    sk, sp = evaluate(lambda a: S.secure_sort(a, descending=True), keys)
    assert sp is None
    assert torch.allclose(sk, keys.double().sort(descending=True).values, atol=2**-16)


@pytest.mark.parametrize("method", ["merge", "bitonic"])
@pytest.mark.parametrize("n,k", [(1, 1), (7, 1), (37, 3), (100, 10), (40, 40), (129, 16), (300, 5)])
def test_topk_matches_lexicographic_plaintext(n, k, method):
    g = torch.Generator().manual_seed(n * 7 + k)
    keys = torch.randint(-20, 20, (2, n), generator=g)  # many ties
    ids = _ids((2, n), k)
    tk, tp = evaluate(lambda a, b: T.secure_topk(a, b, k, IDB, method=method), keys, ids)
    rk, rp = _lex(keys, ids)
    assert torch.equal(tk, rk[..., :k]) and torch.equal(tp, rp[..., :k])


@pytest.mark.parametrize("method", ["merge", "bitonic"])
def test_topk_batched_leading_dims_fixed_point_keys(method):
    keys = torch.randn(2, 3, 50)
    ids = _ids((2, 3, 50), 5)
    tk, tp = evaluate(lambda a, b: T.secure_topk(a, b, 4, IDB, method=method), keys, ids)
    ref = keys.double().sort(-1)
    assert torch.allclose(tk, ref.values[..., :4], atol=2**-16)
    assert torch.equal(tp, torch.gather(ids, -1, ref.indices[..., :4]))


def test_argmin_default_index_ties_to_smallest_index():
    keys = torch.tensor([[4, 1, 7, 1, 9], [3, 3, 3, 3, 3], [-2, 0, -9, 5, -9]])
    mk, mi = evaluate(T.secure_argmin, keys)
    assert torch.equal(mk, keys.min(-1).values)
    assert torch.equal(mi, torch.tensor([1, 0, 2]))


def test_merge_topk_without_payload_stable_on_ties():
    keys = torch.tensor([[3, 1, 3, 1, 2, 1, 0, 5, 5]])
    tk, tp = evaluate(lambda a: T.secure_topk(a, None, 4), keys)
    assert tp is None and torch.equal(tk, torch.tensor([[0, 1, 1, 1]]))


def test_merge_topk_rounds_follow_the_plan():
    x = share(torch.randint(-1000, 1000, (1100,)))
    ids = share(torch.randperm(1100))

    def body(p, a, b):
        ka, pa = from_pair(p, a, 0), from_pair(p, b, 0)
        s0 = p.comm.stats.snapshot()
        C.ltz(ka[:4])
        s1 = p.comm.stats.snapshot()
        T.secure_topk(ka, pa, 10, IDB)
        s2 = p.comm.stats.snapshot()
        return (s1 - s0).rounds, (s2 - s1).rounds

    for r_lt, r_topk in run_parties(body, [(x[i], ids[i]) for i in range(3)]):
        plan = T.merge_plan(1100, 10)
        assert r_topk == sum(r_lt + (1 if m == 2 else 3) for m in plan) == 24  # [25, 4, 11]
        assert r_topk < 11 * (r_lt + 1)  # the binary tournament: 11 levels


def test_topk_is_cheaper_than_a_full_sort_for_small_k():
    x = share(torch.randint(-1000, 1000, (512,)))
    ids = share(torch.arange(512))

    def body(p, a, b):
        ka, pa = from_pair(p, a, 0), from_pair(p, b, 0)
        s0 = p.comm.stats.snapshot()
        T.secure_topk(ka, pa, 4, IDB)
        s1 = p.comm.stats.snapshot()
        S.secure_sort(ka, pa, IDB)
        s2 = p.comm.stats.snapshot()
        return s1 - s0, s2 - s1

    for topk, full in run_parties(body, [(x[i], ids[i]) for i in range(3)]):
        assert topk.rounds * 10 < full.rounds  # 16 vs 270
        assert topk.bytes_sent < full.bytes_sent  # the plan spends comparisons to save rounds


def test_rejects_bad_k_and_shapes():
    x = share(torch.arange(5))
    y = share(torch.arange(4))

    def body(p, a, b):
        ka, pb = from_pair(p, a, 0), from_pair(p, b, 0)
        for bad in (0, 6):
            with pytest.raises(ValueError):
                T.secure_topk(ka, ka, bad)
        with pytest.raises(ValueError):
            T.secure_topk(ka, pb, 2)
        return True

    assert all(run_parties(body, [(x[i], y[i]) for i in range(3)]))


@settings(max_examples=8, deadline=None)
@given(st.lists(st.integers(-3, 3), min_size=1, max_size=24), st.integers(1, 24))
def test_topk_property(vals, k):
    k = min(k, len(vals))
    keys = torch.tensor(vals)
    ids = torch.arange(len(vals)).flip(0)
    tk, tp = evaluate(lambda a, b: T.secure_topk(a, b, k, IDB), keys, ids)
    rk, rp = _lex(keys, ids)
    assert torch.equal(tk, rk[:k]) and torch.equal(tp, rp[:k])


def test_narrow_order_topk_ties_by_position_and_cost():
    """Keys alone on the 42-bit 3-bit-digit layout: equal to a stable plaintext sort (ties: earlier position),
    padding never surfaces, the same rounds as the (key, id) order, fewer words per comparison."""
    from protocols import digits as D

    order = T.narrow_order(42)
    assert order.spec is not None and order.spec.widths == (3,) * 14 and order.r_lt == D.WIDE.rounds + 1
    g = torch.Generator().manual_seed(3)
    n, k = 1003, 10  # not a multiple of the radices: list padding
    keys = torch.randint(-15, 16, (2, n), generator=g) * (2**36)  # many ties, both ends of the range
    keys[0, :3] = 2**40 - 2  # the largest valid key
    ids = torch.arange(n).expand(2, n).contiguous()
    tk, tp = evaluate(lambda a, b: T.secure_topk(a, b, k, order=order), keys, ids)
    idx = torch.sort(keys, stable=True, dim=-1).indices[:, :k]
    assert torch.equal(tp, idx) and torch.equal(tk, torch.gather(keys, -1, idx))
    assert D.msb_cost(19200, order.spec)[1] < 0.6 * D.msb_cost(19200, D.WIDE)[1]
    x = share(torch.randint(-1000, 1000, (1100,)))
    pid = share(torch.randperm(1100))

    def body(p, a, b):
        s0 = p.comm.stats.snapshot()
        T.secure_topk(from_pair(p, a, 0), from_pair(p, b, 0), 10, order=order)
        return (p.comm.stats.snapshot() - s0).rounds

    plan = T.merge_plan(1100, 10, order.r_lt, order.round_comparisons)
    assert run_parties(body, [(x[i], pid[i]) for i in range(3)]) == [sum(order.r_lt + (1 if m == 2 else 3)
                                                                           for m in plan)] * 3
