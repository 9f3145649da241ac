"""protocols.checked_compare: comparisons from checked gates only, against torch; a verified nearest
neighbour (distances, argmin, then one proof, then the reveal) and errors injected into it."""

from __future__ import annotations

import pytest
import torch
from dzk_faults import assert_rejected, corrupt_send, outcomes

from protocols.checked import checked_mul
from protocols.checked_compare import checked_bit_to_arith, checked_eqz, checked_ltz, checked_nearest, checked_relu
from protocols.dzk import ProductLog, verify_products
from protocols.party import Party
from protocols.sectypes import BooleanShares
from protocols.sharing import from_pair, reconstruct, reveal, share, share_xor
from protocols.simulate import run_parties

F = 16  # fractional bits of the features


def test_ltz_eqz_and_relu_are_exact_including_zero_and_the_extremes():
    g = torch.Generator().manual_seed(0)
    x = torch.randint(-(2**62), 2**62, (200,), generator=g)
    x[:6] = torch.tensor([0, -1, 1, -(2**62), 2**62 - 1, -(2**63)])
    x[6:9] = 0
    xs = share(x)

    def body(party: Party, px):
        log = ProductLog(party)
        a = from_pair(party, px, F)
        r, lt, eq = checked_relu(a, log), checked_ltz(a, log), checked_eqz(a, log)
        verify_products(log)
        return (r.lo, r.hi), (lt.lo, lt.hi), (eq.lo, eq.hi)

    out = run_parties(body, [[xs[i]] for i in range(3)])
    assert torch.equal(reconstruct([o[0] for o in out]), x.clamp(min=0))
    assert torch.equal(reconstruct([o[1] for o in out]), (x < 0).long())
    assert torch.equal(reconstruct([o[2] for o in out]), (x == 0).long())


@pytest.mark.parametrize("n", [1, 2, 129, 2001])
def test_the_32_bit_comparison_is_exact_inside_its_bound_with_half_the_and_gates(n):
    """``bits = 32``: two values per word, no carry across the halves; exact for ``|x| < 2^31`` (odd and even
    sizes, the extremes of the bound, zero); 9 rounds before the proof, and half the AND words of the
    64-bit comparison (its proof has half the field entries)."""
    g = torch.Generator().manual_seed(n)
    x = torch.randint(-(2**31) + 1, 2**31, (n,), generator=g)
    x[:6] = torch.tensor([0, -1, 1, -(2**31) + 1, 2**31 - 1, -(2**30)])[:n]
    xs = share(x)

    def body(party: Party, px, bits: int):
        log = ProductLog(party)
        before = party.comm.stats.snapshot()
        lt = checked_ltz(from_pair(party, px, F), log, bits=bits)
        used = party.comm.stats - before
        lanes = sum(e.length(0) for e in log.entries if e.field)
        verify_products(log)
        return (lt.lo, lt.hi), used.rounds, lanes

    narrow = run_parties(body, [[xs[i], 32] for i in range(3)])
    wide = run_parties(body, [[xs[i], 64] for i in range(3)])
    assert torch.equal(reconstruct([o[0] for o in narrow]), (x < 0).long())
    assert narrow[0][1] == 9 and wide[0][1] == 10
    if n > 1000:  # small sizes are dominated by the padding to whole words
        assert narrow[0][2] <= 0.55 * wide[0][2]


def test_the_comparisons_prove_the_and_words_their_docstrings_state():
    """``checked_msb`` proves 2 + 63/32 = 3.97 AND words per element (one for the carry-save step's majority,
    one for the generate word, 1.97 for the packed carry tree, whose levels pack their two ANDs into one
    word), ``checked_msb32`` 1 + 31/32 = 1.97 (two values per word); every AND lane is two proof entries."""
    n = 256
    x = torch.randint(-(2**31) + 1, 2**31, (n,), generator=torch.Generator().manual_seed(5))
    xs = share(x)

    def body(party: Party, px, bits: int):
        log = ProductLog(party)
        lt = checked_ltz(from_pair(party, px, F), log, bits=bits)
        lanes = sum(e.length(0) for e in log.entries if e.field)
        verify_products(log)
        return (lt.lo, lt.hi), lanes

    for bits, words in ((64, 2 + 63 / 32), (32, 1 + 31 / 32)):
        out = run_parties(body, [[xs[i], bits] for i in range(3)])
        assert torch.equal(reconstruct([o[0] for o in out]), (x < 0).long())
        assert out[0][1] == 2 * 64 * words * n


def _injected(party: Party, pb, bad: int | None = None, index: int = -1):
    if party.id == bad:
        corrupt_send(party, index, 1)
    log = ProductLog(party)
    b = checked_bit_to_arith(BooleanShares(party, *pb), log)
    lengths = [sum(e.length(j) for e in log.entries) for j in range(3)]
    verify_products(log)
    return reveal(b), lengths  # only after the proof


def test_bit_injection_proves_only_the_cross_terms_that_can_be_nonzero():
    """``checked_bit_to_arith`` multiplies XOR components of the bit, each held by two parties and publicly 0
    in the third's shares: party 0 proves one cross term per bit (``c0 c1``, both its own), parties 1 and 2
    one each (``t c2``): 3 ring entries per bit, not 12. Exact; an error in either message of any party (the
    products with no term to prove included: their claims are still checked) is rejected naming it; a
    component declared 0 that is not is refused."""
    n = 50
    bits = torch.randint(0, 2, (n,), generator=torch.Generator().manual_seed(11))
    bs = share_xor(bits)
    out = run_parties(_injected, [[bs[i]] for i in range(3)])
    assert torch.equal(out[0][0], bits) and out[0][1] == [n, n, n]
    for bad in range(3):
        for index in (0, 1):
            assert_rejected(outcomes(_injected, [[bs[i], bad, index] for i in range(3)]), bad, (bad, index))

    def wrong(party: Party, px):
        x = from_pair(party, px)
        checked_mul(x, x, ProductLog(party), components=(frozenset({0}), frozenset({1})))

    xs = share(torch.arange(1, 5))
    refused = outcomes(wrong, [[xs[i]] for i in range(3)])
    assert all(isinstance(o, ValueError) and "component" in str(o) for o in refused)


def _nearest(party: Party, pq, px, pxx, bad: int | None = None, index: int = -1, error: int = 0):
    """Squared distances at scale 2^(2F) (no truncation needed before comparing), the argmin, ONE proof
    of everything, and only then the index is revealed (checked)."""
    if party.id == bad:
        corrupt_send(party, index, error)
    log = ProductLog(party)
    idx, _ = checked_nearest(from_pair(party, pq, F), from_pair(party, px, F), from_pair(party, pxx, 2 * F), log)
    verify_products(log)
    return int(reveal(idx))


def _database(seed: int, n: int = 37, dim: int = 8):
    g = torch.Generator().manual_seed(seed)
    feats = torch.randn(n, dim, generator=g, dtype=torch.float64)
    query = feats[seed % n] + 0.3 * torch.randn(dim, generator=g, dtype=torch.float64)

    def enc(t: torch.Tensor) -> torch.Tensor:
        return torch.round(t * 2**F).to(torch.int64)

    q, x = enc(query).view(1, -1), enc(feats)
    want = int(torch.cdist(query.view(1, -1), feats).argmin())
    return [share(q), share(x), share((x * x).sum(1))], want


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_verified_nearest_neighbour_matches_torch(seed):
    shares, want = _database(seed)
    out = run_parties(_nearest, [[s[i] for s in shares] for i in range(3)])
    assert out == [want] * 3


def test_an_error_anywhere_in_the_verified_nearest_neighbour_is_rejected_before_the_reveal():
    """Party 1 corrupts one of its messages: its reshares in the distances, in the comparisons' AND
    gates and bit injections, in the muxes, or inside either proof. No party gets an index; the
    honest parties 0 and 2 end in ProofRejected, every one of which names party 1. (A corrupted
    reshare also makes the receiver's later messages disagree with party 1's own copy, so party 1
    may reject them: its word does not count.)"""
    shares, _ = _database(4, n=9)

    def count(party: Party, *pairs):
        before = party.comm.stats.messages_sent
        _nearest(party, *pairs)
        return party.comm.stats.messages_sent - before

    sends = run_parties(count, [[s[i] for s in shares] for i in range(3)])[1]
    for index in range(0, sends - 2, 7):  # every seventh message before the reveal's two
        out = outcomes(_nearest, [[s[i] for s in shares] + [1, index, 1 << 20] for i in range(3)])
        assert_rejected(out, bad=1, context=index)
