"""Comm counters/timeouts, share/reconstruct, reveal, and the security-shaped view tests."""

import pytest
import torch

from protocols.comm import CommError, InProcessComm
from protocols.sharing import (
    ArithmeticShares,
    BooleanShares,
    InconsistentSharesError,
    additive_split,
    from_pair,
    reconstruct,
    reveal,
    reveal_to,
    share,
    share_xor,
)
from protocols.simulate import PartyFailed, evaluate, make_parties, run_parties


def test_share_reconstruct_roundtrip_any_shape():
    for shape in [(), (1,), (7,), (3, 5, 2)]:
        x = torch.randint(-(2**63), 2**63 - 1, shape)
        pairs = share(x)
        assert torch.equal(reconstruct(pairs), x)
        for drop in range(3):  # any two servers suffice
            partial = [p if i != drop else None for i, p in enumerate(pairs)]
            assert torch.equal(reconstruct(partial, check=False), x)
        xs = share_xor(x)
        assert torch.equal(xs[0][0] ^ xs[1][0] ^ xs[2][0], x)


def test_reconstruct_detects_a_wrong_share_and_names_servers():
    x = torch.arange(10, dtype=torch.int64)
    pairs = share(x)
    lo, hi = pairs[1]
    pairs[1] = (lo, hi + 1)  # server 1 lies about component 2
    with pytest.raises(InconsistentSharesError) as e:
        reconstruct(pairs)
    assert set(e.value.suspects) == {1, 2}
    pairs[1] = (lo + 1, hi + 1)  # server 1 lies about both its components: it alone is in both pairs
    with pytest.raises(InconsistentSharesError, match="server 1 is in every disagreeing pair") as e:
        reconstruct(pairs)
    assert e.value.suspects == (1,)


def test_reconstruct_rejects_bad_input():
    x = torch.arange(4, dtype=torch.int64)
    pairs = share(x)
    with pytest.raises(ValueError, match="at least two"):
        reconstruct([pairs[0], None, None])
    with pytest.raises(ValueError, match="shapes differ"):
        reconstruct([pairs[0], (pairs[1][0], pairs[1][1][:2]), pairs[2]])
    with pytest.raises(TypeError, match="int64"):
        reconstruct([(p[0].float(), p[1]) for p in pairs])


def test_share_rejects_non_ring_input():
    with pytest.raises(TypeError, match="int64"):
        share(torch.zeros(3))


def test_single_party_view_is_uniform_whatever_the_secret():
    """A server's pair (x_i, x_{i+1}) has the same (uniform) distribution for secrets 0 and 2**62-1."""
    n = 20000
    for secret in (0, 2**62 - 1):
        x = torch.full((n,), secret, dtype=torch.int64)
        pairs = share(x)
        for server in range(3):
            for comp in pairs[server]:
                bits = torch.stack([(comp >> i) & 1 for i in range(64)]).double().mean(dim=1)
                assert float((bits - 0.5).abs().max()) < 0.025, (secret, server)
    # and the two components of one pair are independent: their XOR is balanced too
    pairs = share(torch.zeros(n, dtype=torch.int64))
    x = pairs[0][0] ^ pairs[0][1]
    assert float(((x & 1).double().mean() - 0.5).abs()) < 0.025


def test_additive_split_sums():
    x = torch.randint(-1000, 1000, (50,))
    a, b, c = additive_split(x)
    assert torch.equal(a + b + c, x)


def test_reveal_to_all_costs_one_round_one_element():
    x = torch.randint(-(2**40), 2**40, (100,))
    pairs = share(x)
    parties = make_parties()
    out = run_parties(lambda p, pr: reveal(from_pair(p, pr)), [(pr,) for pr in pairs], parties=parties)
    assert all(torch.equal(o, x) for o in out)
    for p in parties:  # the share plus a 32-byte digest for the consistency check
        assert p.comm.stats.rounds == 1 and p.comm.stats.bytes_sent == 100 * 8 + 32


def test_reveal_to_one_sends_only_to_the_receiver():
    x = torch.randint(-(2**40), 2**40, (64,))
    pairs = share(x)
    for receiver in range(3):
        parties = make_parties()
        out = run_parties(
            lambda p, pr, r=receiver: reveal_to(from_pair(p, pr), r), [(pr,) for pr in pairs], parties=parties
        )
        assert torch.equal(out[receiver], x)
        assert all(out[i] is None for i in range(3) if i != receiver)
        sent = [p.comm.stats.bytes_sent for p in parties]
        received = [p.comm.stats.bytes_received for p in parties]
        # only party receiver-1 sends a share; the third party sends only a 32-byte digest
        # of its copy of that same component; only the receiver receives anything
        assert sent[(receiver - 1) % 3] == 64 * 8 and sent[(receiver + 1) % 3] == 32
        assert received[receiver] == 64 * 8 + 32 and sum(received) == received[receiver]


def test_secret_cannot_be_branched_on_and_repr_hides_values():
    parties = make_parties()
    s = ArithmeticShares(parties[0], torch.tensor([123456789]), torch.tensor([987654321]))
    with pytest.raises(TypeError, match="branch"):
        bool(s)
    assert "123456789" not in repr(s) and "987654321" not in repr(s)


def test_equality_on_shares_is_secure_or_raises_never_identity():
    """Like MPyC's secure types: ``==`` is a protocol (shares of 0/1), never Python's identity test."""
    x, y = torch.tensor([3, -7, 0, 42]), torch.tensor([3, 7, 0, 41])
    eq, ne, eq_public = evaluate(lambda a, b: (a == b, a != b, a == 42), x, y)
    assert eq.tolist() == [1, 0, 1, 0] and ne.tolist() == [0, 1, 0, 1] and eq_public.tolist() == [0, 0, 0, 1]
    assert evaluate(lambda a: a == a, x).tolist() == [1, 1, 1, 1]  # the same object: still the protocol
    parties = make_parties()
    a = ArithmeticShares(parties[0], torch.zeros(2, dtype=torch.int64), torch.zeros(2, dtype=torch.int64))
    b = BooleanShares(parties[0], torch.zeros(2, dtype=torch.int64), torch.zeros(2, dtype=torch.int64))
    for bad in (lambda: a == "x", lambda: a == None, lambda: a == True, lambda: b == b, lambda: b != 0):  # noqa: E711, E712
        with pytest.raises(TypeError):
            bad()
    for obj in (a, b):
        with pytest.raises(TypeError, match="unhashable"):
            hash(obj)
        with pytest.raises(TypeError):
            _ = {obj}


def test_mismatched_shapes_and_dtypes_rejected():
    parties = make_parties()
    with pytest.raises(ValueError, match="shapes differ"):
        ArithmeticShares(parties[0], torch.zeros(3, dtype=torch.int64), torch.zeros(4, dtype=torch.int64))
    with pytest.raises(TypeError, match="int64"):
        ArithmeticShares(parties[0], torch.zeros(3), torch.zeros(3))
    a = ArithmeticShares(parties[0], torch.zeros(3, dtype=torch.int64), torch.zeros(3, dtype=torch.int64), 16)
    b = ArithmeticShares(parties[0], torch.zeros(3, dtype=torch.int64), torch.zeros(3, dtype=torch.int64), 0)
    with pytest.raises(ValueError, match="scales differ"):
        a + b
    c = ArithmeticShares(parties[1], torch.zeros(3, dtype=torch.int64), torch.zeros(3, dtype=torch.int64), 16)
    with pytest.raises(ValueError, match="different parties"):
        a + c


def test_comm_counts_rounds_and_bytes_and_rejects_non_ring():
    comms = InProcessComm.create_trio()
    t = torch.zeros(10, dtype=torch.int64)
    comms[0].exchange(send_next=t)
    _, got = comms[1].exchange(recv_prev=True)
    assert torch.equal(got, t)
    assert comms[0].stats.bytes_sent == 80 and comms[0].stats.rounds == 1
    assert comms[1].stats.bytes_received == 80
    with pytest.raises(TypeError, match="int64"):
        comms[0].exchange(send_next=torch.zeros(2))
    with pytest.raises(ValueError):
        InProcessComm(3, None)  # type: ignore[arg-type]


def test_comm_timeout_is_a_clear_error():
    comms = InProcessComm.create_trio(timeout_s=0.2)
    with pytest.raises(CommError, match="no message from party 1"):
        comms[0].exchange(recv_next=True)


def test_failure_in_one_party_aborts_the_others_quickly():
    def f(p):
        if p.id == 1:
            raise ValueError("boom")
        p.comm.exchange(recv_next=True, recv_prev=True)

    with pytest.raises(PartyFailed, match="party 1 failed: ValueError: boom"):
        run_parties(f, timeout_s=60)


def test_an_abort_names_the_party_that_aborted_first():
    comms = InProcessComm.create_trio(timeout_s=30)
    comms[2].close()
    comms[1].close()  # a later abort does not rename it
    for c in comms[:2]:
        with pytest.raises(CommError, match="session aborted by party 2"):
            c.exchange(recv_next=True)


@pytest.mark.parametrize("cheater", [0, 1, 2])
def test_a_party_that_sends_a_wrong_share_is_detected_at_opening(cheater):
    x = torch.randint(-(2**40), 2**40, (32,))
    pairs = share(x)

    def f(p, pr):
        lo, hi = pr
        if p.id == cheater:
            lo = lo + 1  # deviates: sends a wrong x_i to its next party
        return reveal(from_pair(p, (lo, hi)))

    with pytest.raises(PartyFailed) as e:
        run_parties(f, [(pr,) for pr in pairs])
    err = e.value.__cause__
    assert isinstance(err, InconsistentSharesError)
    assert cheater in err.suspects


def test_reveal_to_one_detects_a_wrong_share():
    x = torch.randint(-(2**40), 2**40, (8,))
    pairs = share(x)

    def f(p, pr):
        lo, hi = pr
        if p.id == 2:
            lo = lo ^ 4
        return reveal_to(from_pair(p, (lo, hi)), 0)

    with pytest.raises(PartyFailed, match="disagree"):
        run_parties(f, [(pr,) for pr in pairs])
