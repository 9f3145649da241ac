"""Digit-table comparisons (protocols.digits) vs plaintext: exact signs, the stated error bound, costs, views."""

import pytest
import torch

from protocols import digits as D
from protocols.sharing import from_pair, share
from protocols.simulate import evaluate, make_parties, run_parties

SPECS = [D.FULL, D.WIDE, D.CNN_EXACT, D.Digits(12, 0, (12,)), D.Digits(9, 0, (3, 3, 3))]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: f"{s.bits}b{len(s.widths)}d")
def test_ltz_exact_inside_the_bound(spec):
    half = 2 ** (spec.bits - 1)
    edge = torch.tensor([0, 1, -1, half - 1, -half, half // 2, -(half // 2) - 1], dtype=torch.int64)
    for n in (1, 2, 3, 4, 64, 65, 301):
        x = torch.randint(-half, half, (n,)) if spec.bits < 64 else torch.randint(-(2**63), 2**63 - 1, (n,))
        x[: min(n, len(edge))] = edge[: min(n, len(edge))]
        assert torch.equal(evaluate(lambda a: D.ltz(a, spec), x), (x < 0).long()), n


def test_ltz_shapes_are_kept():
    x = torch.randint(-100, 100, (3, 7, 5)) * 1000 + 500  # outside the [0, 2**7) zone
    assert torch.equal(evaluate(lambda a: D.ltz(a, D.CNN_FAST), x), (x < 0).long())


def test_fast_cnn_layout_error_bound():
    """CNN_FAST drops 7 bits: right for x < 0 and 2**7 <= x < bound; only 0 <= x < 2**7 may read negative."""
    spec = D.CNN_FAST
    assert spec.bound == 2**26 - 2**7
    zone = torch.arange(0, 2**7).repeat(8)
    outside = torch.cat([torch.arange(-3000, 0), torch.arange(2**7, 3000),
                         torch.randint(-spec.bound + 1, spec.bound, (4000,)),
                         torch.tensor([spec.bound - 1, -spec.bound + 1])])
    out = evaluate(lambda a: D.ltz(a, spec), torch.cat([zone, outside]))
    assert torch.equal(out[len(zone):], (outside < 0).long())
    wrong = out[: len(zone)].sum().item()
    assert 0 < wrong < len(zone)  # the zone does misread sometimes (delta = 1), never outside it


def test_eqz_small_range_exact():
    spec = D.eq_spec(1000)
    x = torch.randint(-999, 1000, (3000,))
    x[:100] = 0
    assert torch.equal(evaluate(lambda a: D.eqz(a, spec), x), (x == 0).long())
    two = D.Digits(11, 0, (6, 5))
    assert torch.equal(evaluate(lambda a: D.eqz(a, two), x), (x == 0).long())


def test_inject_every_bit_pattern():
    bits = torch.randint(0, 2, (1001,))
    out = evaluate(lambda a: D.inject(D.msb(a, D.CNN_EXACT)), -bits)
    assert torch.equal(out, bits)


@pytest.mark.parametrize("spec,kind", [(D.FULL, "cmp"), (D.CNN_FAST, "cmp"), (D.CNN_EXACT, "cmp"),
                                       (D.eq_spec(1000), "eq"), (D.Digits(11, 0, (6, 5)), "eq")])
@pytest.mark.parametrize("n", [1, 5, 192, 1000])
def test_costs_match_the_counters(spec, kind, n):
    pairs = share(torch.randint(-100, 100, (n,)))
    parties = make_parties()
    fn = D.ltz if kind == "cmp" else D.eqz
    run_parties(lambda p, pr: fn(from_pair(p, pr), spec), [(pr,) for pr in pairs], parties=parties)
    rounds, words = D.ltz_cost(n, spec, kind)
    m_rounds, m_words = D.msb_cost(n, spec, kind)
    inj = D.inject_cost(n)[1] if len(spec.widths) == 2 else n + (-n % 3)  # b2a: 1 word per element, not 2
    assert (rounds, words) == (m_rounds + 1, m_words + inj)
    for p in parties:  # the sender role rotates over the batch: every party sends the same
        assert p.comm.stats.rounds == rounds == spec.rounds + 1
        assert p.comm.stats.bytes_sent == 8 * words
    per = D.msb_cost(3 * 64 * 100, D.CNN_FAST)[1] / (3 * 64 * 100)
    assert per < 3.5  # words per comparison per party: 2.8 + 0.67 for the table gate (one round less)


def test_rounds_with_the_table_gate():
    """The last two levels of the carry tree (3 or 4 groups) take ONE table-gate round."""
    assert [s.rounds for s in (D.CNN_FAST, D.CNN_EXACT, D.OCTAVE, D.FULL, D.WIDE)] == [2, 3, 3, 3, 4]
    assert [D.Digits(b, 0, w).rounds for b, w in ((12, (12,)), (11, (6, 5)), (9, (3, 3, 3)))] == [1, 2, 2]


def test_received_words_look_uniform_whatever_the_input():
    """Each party's received words are masked by keys it lacks: bits are fair coins even for x = 0 or x = -1."""
    for value in (0, -1):
        pairs = share(torch.full((3000,), value, dtype=torch.int64))
        parties = make_parties()
        seen = [[], [], []]
        for p in parties:
            orig = p.comm.exchange

            def rec(*a, _o=orig, _s=seen[p.id], **k):
                got = _o(*a, **k)
                _s.extend(t for t in got if t is not None)
                return got

            p.comm.exchange = rec
        run_parties(lambda p, pr: D.ltz(from_pair(p, pr), D.CNN_FAST), [(pr,) for pr in pairs], parties=parties)
        for words in seen:
            w = torch.cat([t.reshape(-1) for t in words])
            ones = ((w.unsqueeze(1) >> torch.arange(64)) & 1).double().mean().item()
            assert abs(ones - 0.5) < 0.01, ones


def test_bad_layouts_rejected():
    with pytest.raises(ValueError):
        D.Digits(20, 0, (5, 5))
    with pytest.raises(ValueError):
        D.eqz(None, D.CNN_FAST)  # type: ignore[arg-type]
