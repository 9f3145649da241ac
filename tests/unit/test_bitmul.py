"""Fused bit x value product (protocols.bitmul) vs plaintext; fused and unfused ReLU / ReLU6 agree."""

import torch

from protocols import approx
from protocols import bitmul as BM
from protocols import digits as D
from protocols.sharing import from_pair, share
from protocols.simulate import evaluate, make_parties, run_parties


def test_bit_mul_exact_for_every_size():
    for n in (1, 2, 3, 4, 100, 1001):
        x = torch.randint(-(2**30), 2**30, (n,))
        y = torch.randint(-(2**62), 2**62, (n,))
        out = evaluate(lambda a, c: BM.bit_mul(D.msb(a, D.CNN_EXACT), c), x, y)
        assert torch.equal(out, (x < 0).long() * y), n


def test_bit_mul_cost_one_round_same_for_every_party():
    n = 999
    pairs = share(torch.randint(-100, 100, (n,)))
    parties = make_parties()
    run_parties(lambda p, pr: BM.bit_mul(D.msb(from_pair(p, pr), D.CNN_EXACT), from_pair(p, pr)),
                [(pr,) for pr in pairs], parties=parties)
    rounds, words = D.msb_cost(n, D.CNN_EXACT)
    for p in parties:
        assert p.comm.stats.rounds == rounds + 1
        assert p.comm.stats.bytes_sent == 8 * (words + BM.bit_mul_cost(n)[1]) == 8 * (words + 4 * n)


def test_fused_relu_and_clamp_match_torch_and_save_a_round():  # clamp: fused at every size
    x = torch.randn(3000, dtype=torch.float64) * 10
    small, big = x[:1000], torch.randn(40000, dtype=torch.float64) * 10
    assert BM.fuse(1000, 3) and not BM.fuse(40000, 3)
    for t in (small, big):
        parties = make_parties()
        r6, r = evaluate(lambda a: (approx.clamp(a, 0.0, 6.0, approx.FAST), approx.relu(a, approx.FAST)), t,
                         parties=parties)
        assert (r6 - t.clamp(0, 6)).abs().max() <= 2**-9 + 2**-15
        assert (r - t.clamp(min=0)).abs().max() <= 2**-9 + 2**-15
    parties = make_parties()
    pairs = share(torch.randint(-2**20, 2**20, (900,)))
    run_parties(lambda p, pr: approx.clamp(from_pair(p, pr, 16), 0.0, 6.0, approx.FAST), [(pr,) for pr in pairs],
                parties=parties)
    assert parties[0].comm.stats.rounds == D.CNN_FAST.rounds + 1  # 3: table, table gate, fused product


def test_mul_and_inject_one_round_exact():
    """``b * y`` and the injection of bits ``c`` of another size in one round, exact; cost = the sum."""
    for n, m in ((1, 2), (5, 5), (301, 602)):
        x = torch.randint(-(2**30), 2**30, (n,))
        z = torch.randint(-(2**30), 2**30, (m,))
        y = torch.randint(-(2**62), 2**62, (n,))

        def body(a, c, w):
            prod, inj = BM.mul_and_inject(D.msb(a, D.CNN_EXACT), c, D.msb(w, D.CNN_EXACT))
            return prod, inj

        prod, inj = evaluate(body, x, y, z)
        assert torch.equal(prod, (x < 0).long() * y) and torch.equal(inj, (z < 0).long()), n
    pairs = share(torch.randint(-100, 100, (600,)))
    parties = make_parties()

    def counted(p, pr):
        a = from_pair(p, pr)
        bits = D.msb(a, D.CNN_EXACT)
        before = p.comm.stats.snapshot()
        BM.mul_and_inject(bits[:200], a[:200], bits)
        return p.comm.stats.snapshot() - before

    for d in run_parties(counted, [(pr,) for pr in pairs], parties=parties):
        assert d.rounds == 1 and d.bytes_sent == 8 * (BM.bit_mul_cost(200)[1] + D.inject_cost(600)[1])


def test_clamp_with_both_ends_nonzero():
    t = torch.randn(2000, dtype=torch.float64) * 4
    out = evaluate(lambda a: approx.clamp(a, -1.5, 2.25, approx.FAST), t)
    assert (out - t.clamp(-1.5, 2.25)).abs().max() <= 2**-9 + 2**-15


def test_clamp_costs_with_b2a_and_with_two_digit_signs():
    """Gated layouts inject by b2a (1 word per bit, first message in the gate round); two digits fall back to
    digits.inject (2 words). Both match torch and costs.bounded_clamp."""
    from protocols import costs

    t = torch.randn(600, dtype=torch.float64) * 4
    for spec in (approx.FAST, D.Digits(20, 7, (10, 10))):
        for lo in (0.0, -1.0):
            parties = make_parties()
            out = evaluate(lambda a, spec=spec, lo=lo: approx.clamp(a, lo, 6.0, spec), t, parties=parties)
            assert (out - t.clamp(lo, 6.0)).abs().max() <= 2**-9 + 2**-15
            want = costs.bounded_clamp(600, spec, lo == 0.0)
            for p in parties:
                assert p.comm.stats.rounds - 1 == want.rounds  # + the reveal
    assert costs.bounded_clamp(600, approx.FAST).sent_p0 == D.msb_cost(1200, approx.FAST)[1] + 4 * 600 + 600
