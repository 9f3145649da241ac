"""protocols.tablegate: any boolean function of up to 6 shared bits in one round, vs plaintext; cost; views."""

import pytest
import torch

from protocols import tablegate as TG
from protocols.rotate import pack, part_words, unpack
from protocols.sharing import BooleanShares
from protocols.simulate import make_parties, run_parties


def _slice(bits: torch.Tensor) -> torch.Tensor:
    """0/1 ``[k, n]`` (n a multiple of 3) -> bit-sliced ``[k, W]`` in the three-part layout."""
    n = bits.shape[1]
    return torch.cat([pack(bits[:, r * n // 3 : (r + 1) * n // 3]) for r in range(3)], 1)


def _unslice(words: torch.Tensor, n: int) -> torch.Tensor:
    return torch.cat([unpack(words[w0 : w0 + wc].unsqueeze(0), n // 3)[0] for w0, wc in part_words(n)])


def _xor_shares(words: torch.Tensor, gen: torch.Generator) -> list[tuple[torch.Tensor, torch.Tensor]]:
    a = torch.randint(-(2**62), 2**62, words.shape, generator=gen)
    b = torch.randint(-(2**62), 2**62, words.shape, generator=gen)
    c = words ^ a ^ b
    comps = [a, b, c]
    return [(comps[i], comps[(i + 1) % 3]) for i in range(3)]


@pytest.mark.parametrize("k,n", [(1, 3), (4, 192), (6, 300), (6, 999)])
def test_gate_matches_plaintext(k, n):
    gen = torch.Generator().manual_seed(k * 1000 + n)
    truth = tuple(bool(v) for v in torch.randint(0, 2, (1 << k,), generator=gen))
    bits = torch.randint(0, 2, (k, n), generator=gen)
    pairs = _xor_shares(_slice(bits), gen)
    parties = make_parties()

    def run(p, pr):
        lo, hi = pr
        return TG.gate([BooleanShares(p, lo[f], hi[f]) for f in range(k)], n, truth)[0]

    outs = run_parties(lambda p, pr: run(p, pr), [(pr,) for pr in pairs], parties=parties)
    got = _unslice(outs[0].lo ^ outs[0].hi ^ outs[1].hi, n)
    idx = (bits << torch.arange(k).view(-1, 1)).sum(0)
    want = torch.tensor(truth, dtype=torch.int64)[idx]
    assert torch.equal(got, want)
    rounds, words = TG.gate_cost(n)
    for p in parties:
        assert p.comm.stats.rounds == rounds == 1
        assert p.comm.stats.bytes_sent == 8 * words


@pytest.mark.parametrize("n", [3, 300, 1002])
def test_gate_with_xor_and_early_injection(n):
    """``xor_in`` is xored into the output; ``early`` + ``b2a.late`` give its arithmetic 0/1 at 1 word per element."""
    from protocols import b2a as B2A

    gen = torch.Generator().manual_seed(n)
    truth = tuple(bool(v) for v in torch.randint(0, 2, (64,), generator=gen))
    bits = torch.randint(0, 2, (7, n), generator=gen)  # 6 inputs and the xor
    pairs = _xor_shares(_slice(bits), gen)
    parties = make_parties()

    def run(p, pr):
        lo, hi = pr
        before = p.comm.stats.snapshot()
        out, st = TG.gate([BooleanShares(p, lo[f], hi[f]) for f in range(6)], n, truth, BooleanShares(p, lo[6], hi[6]),
                          early=True)
        arith = B2A.late(out, n, st)
        return out, arith, p.comm.stats.snapshot() - before

    outs = run_parties(run, [(pr,) for pr in pairs], parties=parties)
    idx = (bits[:6] << torch.arange(6).view(-1, 1)).sum(0)
    want = torch.tensor(truth, dtype=torch.int64)[idx] ^ bits[6]
    assert torch.equal(_unslice(outs[0][0].lo ^ outs[0][0].hi ^ outs[1][0].hi, n), want)
    assert torch.equal(outs[0][1].lo + outs[0][1].hi + outs[1][1].hi, want)
    for _, _, d in outs:
        assert d.rounds == 2 and d.bytes_sent == 8 * (TG.gate_cost(n, early=True)[1] + 2 * (n // 3))
        assert d.bytes_sent == 8 * (TG.gate_cost(n)[1] + B2A.cost(n)[1])


def test_gate_rejects_bad_tables():
    with pytest.raises(ValueError):
        TG.gate([], 3, (True,))
