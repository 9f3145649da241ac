"""The partition stage of the top-k tournament (``topk.partition_plan``): exact failure bound, results vs
plaintext, the failure behaviour, and its rounds/comparisons at the product's sizes."""

import itertools
import math

import torch

from protocols import topk as T
from protocols.sharing import from_pair, share
from protocols.simulate import evaluate, run_parties

ORDER = T.narrow_order(42, T.PARTITION_FAIL)


def _brute_fail(n: int, groups: int, keep: int, k: int) -> float:
    size = -(-n // groups)
    bad = sum(max(sum(1 for p in c if p // size == g) for g in range(groups)) > keep
              for c in itertools.combinations(range(n), k))
    return bad / math.comb(n, k)


def test_failure_probability_is_exact():
    """Against enumeration of every k-subset, including a shorter last group."""
    for n, groups, keep, k in [(12, 4, 1, 3), (14, 4, 2, 4), (10, 3, 1, 2), (9, 2, 3, 5)]:
        assert math.isclose(T.partition_fail(n, groups, keep, k), _brute_fail(n, groups, keep, k), rel_tol=1e-12)
    assert T.partition_fail(100, 10, 10, 10) == 0.0


def test_plan_at_the_product_sizes():
    """n = 1M, nprobe 64 of C = 1000 buckets of 1,100: top-10 of 70,400 in 40 rounds (plain tournament 54) and
    0.60M comparisons (1.01M); top-64 of 1,000 centroids: 24 rounds either way, 89k comparisons (140k)."""
    r_lt, rate = ORDER.r_lt, ORDER.round_comparisons
    assert T.partition_plan(70_400, 10, r_lt, rate, T.PARTITION_FAIL) == (1024, 3)
    assert T.partition_fail(70_400, 1024, 3, 10) < 2e-7
    first, final = T._plan_cost(69, 3, r_lt, rate), T._plan_cost(3072, 10, r_lt, rate)
    assert (first[1] + final[1], 1024 * first[2] + final[2]) == (40, 599_712)
    assert T._plan_cost(70_400, 10, r_lt, rate)[1:] == (54, 1_012_870)
    groups, keep = T.partition_plan(1000, 64, r_lt, rate, T.PARTITION_FAIL)
    assert T.partition_fail(1000, groups, keep, 64) <= T.PARTITION_FAIL
    assert T.partition_plan(1100, 10, r_lt, rate, T.PARTITION_FAIL) is None  # small: the plain tournament


def test_equals_plaintext_topk_and_pins_rounds():
    n, k = 4400, 10
    groups, keep = T.partition_plan(n, k, ORDER.r_lt, ORDER.round_comparisons, T.PARTITION_FAIL)
    g = torch.Generator().manual_seed(5)
    keys = torch.randint(-(2**30), 2**30, (2, n), generator=g)
    ids = torch.arange(n).expand(2, n).contiguous()
    tk, tp = evaluate(lambda a, b: T.secure_topk(a, b, k, order=ORDER), keys, ids)
    ref = torch.topk(keys, k, largest=False, sorted=True)
    assert torch.equal(tk, ref.values) and torch.equal(tp, ref.indices)

    x, pid = share(keys[0]), share(ids[0])

    def body(p, a, b):
        s0 = p.comm.stats.snapshot()
        T.secure_topk(from_pair(p, a, 0), from_pair(p, b, 0), k, order=ORDER)
        return (p.comm.stats.snapshot() - s0).rounds

    def rounds(plan):
        return sum(ORDER.r_lt + (1 if m == 2 else 3) for m in plan)

    size = -(-n // groups)
    expected = rounds(T.merge_plan(size, keep, ORDER.r_lt, ORDER.round_comparisons)) + rounds(
        T.merge_plan(groups * keep, k, ORDER.r_lt, ORDER.round_comparisons))
    plain = T._plan_cost(n, k, ORDER.r_lt, ORDER.round_comparisons)
    first, final = T._plan_cost(size, keep, ORDER.r_lt, ORDER.round_comparisons), T._plan_cost(
        groups * keep, k, ORDER.r_lt, ORDER.round_comparisons)
    assert expected <= plain[1] and groups * first[2] + final[2] < plain[2]
    assert run_parties(body, [(x[i], pid[i]) for i in range(3)]) == [expected] * 3


def test_failure_returns_the_top_k_of_what_the_groups_kept():
    """Keys placed against the public permutation: keep + 2 of the true top-10 in ONE group. The result is the
    exact top-10 of the groups' kept candidates (two true top-10 lost), documented behaviour."""
    n, k = 4400, 10
    groups, keep = T.partition_plan(n, k, ORDER.r_lt, ORDER.round_comparisons, T.PARTITION_FAIL)
    size = -(-n // groups)
    perm = T.public_permutation(n)
    keys = torch.arange(n, dtype=torch.int64) * 4 + 1000  # distinct, larger than the planted ones
    planted = perm[:keep + 2]  # positions that land in group 0
    keys[planted] = torch.arange(keep + 2, dtype=torch.int64)
    tk, _ = evaluate(lambda a, b: T.secure_topk(a, b, k, order=ORDER), keys, torch.arange(n))
    grouped = torch.cat([keys[perm], torch.full((groups * size - n,), 2**39)]).reshape(groups, size)
    kept = torch.sort(grouped, -1).values[:, :keep].reshape(-1)
    assert torch.equal(tk, torch.sort(kept).values[:k])
    assert not torch.equal(tk, torch.sort(keys).values[:k])
