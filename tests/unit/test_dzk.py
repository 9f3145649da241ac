"""protocols.dzk + protocols.checked: checked gates on in-process parties. Honest runs are exact and pass at the
pinned cost; every message any one party sends (its products' reshares, and each of its messages
inside the check) carrying an error, a low one or 2^63, ends in ProofRejected naming it."""

from __future__ import annotations

import pytest
import torch
from dzk_faults import corrupt_send

from protocols import galois as G
from protocols.checked import checked_and, checked_conv2d, checked_matmul, checked_mul, checked_truncate
from protocols.dzk import (
    MAX_FOLDS,
    STAGGER,
    ProductLog,
    ProofRejected,
    call_soundness_bits,
    check_cost,
    soundness_bits,
    verify_products,
)
from protocols.party import Party
from protocols.prf import PRG, derive_key
from protocols.sectypes import BooleanShares
from protocols.sharing import from_pair, reconstruct, share, share_xor
from protocols.simulate import PartyFailed, run_parties

_G = torch.Generator().manual_seed(0)
X = torch.randint(-(2**62), 2**62, (100,), generator=_G)
Y = torch.randint(-(2**62), 2**62, (100,), generator=_G)
A = torch.randint(-(2**62), 2**62, (7, 5), generator=_G)
B = torch.randint(-(2**62), 2**62, (5, 3), generator=_G)
LENGTH = 2 * 100 + 2 * 5  # vector entries: 2n for the elementwise product, 2k for the matrix product
MESSAGES = 2 + 1 + 2 + 3 * 8 + 2  # products; pad; challenge (2 sends); 8 folds (1 as P, 2 as V); decide (2)


def _pairs():
    shares = [share(t) for t in (X, Y, A, B)]
    return [[s[i] for s in shares] for i in range(3)]


def _products(party: Party, px, py, pa, pb):
    log = ProductLog(party)
    x, y, a, b = (from_pair(party, p) for p in (px, py, pa, pb))
    z, w = checked_mul(x, y, log), checked_matmul(a, b, log)
    before = party.comm.stats.snapshot()
    verify_products(log)
    return (z.lo, z.hi), (w.lo, w.hi), party.comm.stats - before


def test_honest_products_are_exact_and_the_check_costs_what_check_cost_says():
    out = run_parties(_products, _pairs())
    assert torch.equal(reconstruct([o[0] for o in out]), X * Y)  # wrap-around products in Z_2^64
    assert torch.equal(reconstruct([o[1] for o in out]), A @ B)
    rounds, words = check_cost(LENGTH)
    assert (rounds, words) == (2 * 8 + 3, 284 + 172 * 8)  # 211 entries with the pad -> 256 = 2^8
    for *_, st in out:
        assert st.rounds == rounds
        assert st.bytes_sent == 8 * words


def _faulty(bad: int, index: int, error: int):
    """Party ``bad`` adds ``error`` to the first word of the ``index``-th tensor it sends."""

    def body(party: Party, *pairs):
        if party.id == bad:
            corrupt_send(party, index, error)
        return _products(party, *pairs)

    return body


@pytest.mark.parametrize("bad", [0, 1, 2])
def test_an_error_in_any_message_of_one_party_is_rejected_naming_it(bad):
    kinds = (1, -(1 << 63), int(torch.randint(1, 1 << 62, (1,), generator=_G)))  # low, top bit, random
    for index in range(MESSAGES):
        error = kinds[(index + bad) % 3]
        with pytest.raises(PartyFailed) as exc:
            run_parties(_faulty(bad, index, error), _pairs())
        cause = exc.value.__cause__
        assert isinstance(cause, ProofRejected), (index, error, exc.value)
        assert bad in cause.suspects, (index, error, cause)
    run_parties(_faulty(bad, MESSAGES, 1), _pairs())  # past its last message: nothing changes, it passes


def test_a_prover_that_fixes_the_first_fold_to_hide_its_error_is_still_rejected():
    """Party 1 adds e to its first reshared element, then, knowing the challenge, shifts its first
    fold polynomial by rho_0 e X so that h(0) + h(1) matches the verifiers' claim. The lie moves into
    h(r) and is caught later."""
    e = 12345

    def body(party: Party, *pairs):
        if party.id == 1:
            send, recv, sent, seen = party.comm._send, party.comm._recv, [0], {}

            def lying_recv(frm: int) -> torch.Tensor:
                t = recv(frm)
                if "seed" not in seen and t.numel() == 2:
                    seen["seed"] = t
                return t

            def lying_send(to: int, t: torch.Tensor) -> None:
                if sent[0] == 0:  # its reshare of the elementwise product
                    t = t.clone()
                    t[0] += e
                if sent[0] == 5:  # its first fold message to V2: (c0, c1, c2) minus V1's mask share
                    rho0 = G.LazyRandom.draw(PRG(derive_key(seen["seed"].numpy().tobytes(), "dzk-rho")), 100).dense()[0]
                    t = t.clone().view(3, G.DEGREE)
                    t[1] += rho0 * e
                    t = t.reshape(-1)
                sent[0] += 1
                send(to, t)

            party.comm._send, party.comm._recv = lying_send, lying_recv
        return _products(party, *pairs)

    with pytest.raises(PartyFailed) as exc:
        run_parties(body, _pairs())
    assert isinstance(exc.value.__cause__, ProofRejected) and 1 in exc.value.__cause__.suspects


def test_fixed_point_products_keep_the_untruncated_scale():
    def body(party: Party, px, py):
        log = ProductLog(party)
        x, y = from_pair(party, px, 16), from_pair(party, py, 16)
        z = checked_mul(x, y, log)
        verify_products(log)
        return z.frac_bits, (z.lo, z.hi)

    xs, ys = share(torch.tensor([3 << 16])), share(torch.tensor([-5 << 16]))
    out = run_parties(body, [[xs[i], ys[i]] for i in range(3)])
    assert out[0][0] == 32
    assert int(reconstruct([o[1] for o in out])) == -15 << 32


def test_soundness_is_at_least_2_to_the_minus_40_up_to_the_fold_limit():
    assert soundness_bits(LENGTH) > 43
    assert soundness_bits((1 << MAX_FOLDS) - 1) >= 49
    assert check_cost(10**6) == (43, 284 + 172 * 20)


@pytest.mark.parametrize(
    "groups,stride,padding,kernel", [(1, 2, 1, 3), (4, 1, 1, 3), (1, 1, 0, 1), (2, (1, 2), (0, 1), 2)]
)
def test_checked_conv2d_is_exact_and_an_error_in_its_reshare_is_rejected(groups, stride, padding, kernel):
    """Convolutions (plain, depthwise, 1x1, grouped with rectangular stride) as in the CNN layers."""
    g = torch.Generator().manual_seed(groups)
    x = torch.randint(-(2**40), 2**40, (2, 4, 7, 6), generator=g)
    w = torch.randint(-(2**20), 2**20, (8, 4 // groups, kernel, kernel), generator=g)
    want = torch.nn.functional.conv2d(x, w, None, stride, padding, 1, groups)
    xs, ws = share(x), share(w)

    def body(party: Party, px, pw, bad: int | None = None):
        log = ProductLog(party)
        if party.id == bad:
            send = party.comm._send

            def corrupt(to: int, t: torch.Tensor, send=send) -> None:
                party.comm._send = send  # the first message only: its reshare
                t = t.clone()
                t.view(-1)[-1] -= 1 << 63
                send(to, t)

            party.comm._send = corrupt
        z = checked_conv2d(from_pair(party, px), from_pair(party, pw), log, stride, padding, 1, groups)
        verify_products(log)
        return z.lo, z.hi

    out = run_parties(body, [[xs[i], ws[i]] for i in range(3)])
    assert torch.equal(reconstruct(out), want)
    with pytest.raises(PartyFailed) as exc:
        run_parties(body, [[xs[i], ws[i], 2] for i in range(3)])
    assert isinstance(exc.value.__cause__, ProofRejected) and 2 in exc.value.__cause__.suspects


WORDS = 10  # AND gates: 640 lanes
BX = torch.randint(-(2**62), 2**62, (WORDS,), generator=_G)
BY = torch.randint(-(2**62), 2**62, (WORDS,), generator=_G)
AND_MESSAGES = 1 + 1 + 2 + 3 * 11 + 2  # the AND; pad; challenge; 11 folds (20 words + a pad word -> 2^11 bits); decide


def _ands(party: Party, px, py, bad: int | None = None, index: int = -1, error: int = 0):
    if party.id == bad:
        corrupt_send(party, index, error)
    log = ProductLog(party)
    z = checked_and(BooleanShares(party, *px), BooleanShares(party, *py), log)
    before = party.comm.stats.snapshot()
    verify_products(log)
    return (z.lo, z.hi), party.comm.stats - before


def test_checked_and_is_exact_and_costs_what_check_cost_says():
    xs, ys = share_xor(BX), share_xor(BY)
    out = run_parties(_ands, [[xs[i], ys[i]] for i in range(3)])
    z = [o[0] for o in out]
    assert torch.equal(z[0][0] ^ z[1][0] ^ z[2][0], BX & BY)
    assert torch.equal(z[0][1], z[1][0]) and torch.equal(z[1][1], z[2][0]) and torch.equal(z[2][1], z[0][0])
    rounds, words = check_cost(2 * 64 * WORDS, boolean=True)
    assert (rounds, words) == (2 * 11 + 3, 9 + 7 * 11)
    assert all(st.rounds == rounds and st.bytes_sent == 8 * words for _, st in out)
    assert soundness_bits(2 * 64 * WORDS, boolean=True) > 43


def test_a_flipped_bit_in_any_message_of_one_party_is_rejected_naming_it():
    """Party 1 adds 1 or 2^63 (the top bit) to one word of any one message: its AND's reshare or its
    messages inside the GF(2^56) proof. Parties 0 and 2: their reshare and their first fold message."""
    xs, ys = share_xor(BX), share_xor(BY)
    cases = [(1, i) for i in range(AND_MESSAGES)] + [(b, i) for b in (0, 2) for i in (0, 4)]
    for bad, index in cases:
        error = (1, -(1 << 63))[index % 2]
        with pytest.raises(PartyFailed) as exc:
            run_parties(_ands, [[xs[i], ys[i], bad, index, error] for i in range(3)])
        cause = exc.value.__cause__
        assert isinstance(cause, ProofRejected) and bad in cause.suspects, (bad, index, exc.value)
    run_parties(_ands, [[xs[i], ys[i], 1, AND_MESSAGES, 1] for i in range(3)])  # nothing left to corrupt


def test_a_log_with_products_and_and_gates_runs_both_proofs_in_the_same_rounds():
    xs, ys, ax, ay = share_xor(BX), share_xor(BY), share(X), share(Y)

    def body(party: Party, px, py, qx, qy):
        log = ProductLog(party)
        z = checked_and(BooleanShares(party, *px), BooleanShares(party, *py), log)
        w = checked_mul(from_pair(party, qx), from_pair(party, qy), log)
        verify_products(log)
        assert not log.entries
        return (z.lo, z.hi), (w.lo, w.hi), party.comm.stats.rounds

    out = run_parties(body, [[xs[i], ys[i], ax[i], ay[i]] for i in range(3)])
    assert torch.equal(reconstruct([o[1] for o in out]), X * Y)
    assert out[0][2] == 2 + max(check_cost(200)[0], check_cost(2 * 64 * WORDS, boolean=True)[0])  # side by side


TX = torch.randint(-(2**40), 2**40, (20,), generator=_G)  # fixed point at 32 fractional bits, truncated by 16


def _truncation(party: Party, px, bad: int | None = None, index: int = -1, error: int = 0):
    if party.id == bad:
        corrupt_send(party, index, error, word=-1)
    log = ProductLog(party)
    z = checked_truncate(from_pair(party, px, 32), 16, log)
    before = party.comm.stats.snapshot()
    verify_products(log)
    return (z.lo, z.hi), party.comm.stats - before


def test_checked_truncate_is_within_one_ulp_and_its_cost_is_pinned():
    xs = share(TX)
    out = run_parties(_truncation, [[xs[i]] for i in range(3)])
    assert int((reconstruct([o[0] for o in out]) - (TX >> 16)).abs().max()) <= 1
    ring, field = check_cost(0), check_cost(2 * 2 * 64 * TX.numel(), boolean=True)  # two carry chains
    assert out[0][1].rounds == max(ring[0], field[0])  # the two proofs side by side
    assert all(st.bytes_sent == 8 * (ring[1] + field[1]) for _, st in out)


def test_an_error_in_a_truncation_message_or_its_proof_is_rejected_naming_the_sender():
    """Each party's truncation message (y0 and both carry shares for party 0; z1, z2), at the low,
    a middle and the top bit, and party 0's messages in both proofs."""
    xs = share(TX)
    cases = [(b, 0, e) for b in range(3) for e in (1, 1 << 40, -(1 << 63))]
    sends = run_parties(_truncation, [[xs[i]] for i in range(3)])[0][1].messages_sent  # party 0's, in the proofs
    cases += [(0, i, 1) for i in range(1, 1 + sends, 4)]
    for bad, index, error in cases:
        with pytest.raises(PartyFailed) as exc:
            run_parties(_truncation, [[xs[i], bad, index, error] for i in range(3)])
        cause = exc.value.__cause__
        assert isinstance(cause, ProofRejected) and bad in cause.suspects, (bad, index, exc.value)


@pytest.mark.parametrize("shift", [1, 1 << 48, -(1 << 50)])
def test_a_party_0_that_shifts_y0_and_sends_carries_that_fit_it_is_rejected(shift):
    """Party 0 adds ``shift`` to y0 and computes both carry words honestly for the shifted value: a
    low shift breaks the remainder's range (E1 + E2 >= 2^16), a shift by a multiple of 2^48 leaves
    2^16 (y0 + r) unchanged mod 2^64 but breaks the sign extension of y0 + r."""
    import protocols.checked as D

    xs = share(TX)

    def body(party: Party, px):
        if party.id != 0:
            return _truncation(party, px)
        x, log, bits = from_pair(party, px, 32), ProductLog(party), 16
        a, b = party.prg_next.int64(x.shape), party.prg_prev.int64(x.shape)
        z = x.lo + a - b
        r = party.prg_next.int64(x.shape)
        y0 = -((-z) >> bits) - r + shift
        e1, e2 = (y0 << bits) - x.lo + b, (r << bits) - a
        ce2, cd2 = party.prg_next.int64(x.shape), party.prg_next.int64(x.shape)
        ce1, cd1 = D._carries(e1, e2) ^ ce2, D._carries(y0, r) ^ cd2
        party.comm.exchange(send_prev=torch.stack([y0, ce1, cd1]))
        n = x.lo.numel()
        log.entries += [
            D._RingLinear(0, 1, n, t1=-x.hi + a), D._RingLinear(0, 2, n, t2=-b),
            D._CarryChain(0, 0, n, lambda s: s & -(1 << bits), mine=(e1, e2, ce1, ce2)),
            D._CarryChain(0, 0, n, lambda s: (s ^ (s >> 63)) & (((1 << bits) - 1) << (63 - bits)),
                          mine=(y0, r, cd1, cd2)),
        ]
        verify_products(log)

    with pytest.raises(PartyFailed) as exc:
        run_parties(body, [[xs[i]] for i in range(3)])
    cause = exc.value.__cause__
    assert isinstance(cause, ProofRejected) and 0 in cause.suspects, exc.value


def _batched(party: Party, px, py, qx, qy, bad: int | None = None, index: int = -1, ring_batch: int = 201):
    """Three elementwise products and two AND gates, proved in batches of at most ``ring_batch`` ring / 256
    field entries, pads included: three ring proofs (200 entries each, by default) and two field proofs (128
    lanes each), staggered."""
    if party.id == bad:
        corrupt_send(party, index, 1)
    log = ProductLog(party)
    x, y = from_pair(party, px), from_pair(party, py)
    zs = [checked_mul(x, y, log) for _ in range(3)]
    bs = [checked_and(BooleanShares(party, qx[0][:1], qx[1][:1]), BooleanShares(party, qy[0][:1], qy[1][:1]), log)
          for _ in range(2)]
    before = party.comm.stats.snapshot()
    rounds = verify_products(log, ring_batch=ring_batch, field_batch=256)
    return [(z.lo, z.hi) for z in zs], [(b.lo, b.hi) for b in bs], rounds, (party.comm.stats - before).rounds, \
        log.proof_rounds


def test_a_large_log_is_proved_in_staggered_batches():
    """Each kind's proofs start STAGGER rounds apart and overlap: the call takes the longest chain's rounds,
    not the sum of the proofs' lengths (which the soundness bound adds up)."""
    xs, ys, bx, by = share(X), share(Y), share_xor(BX), share_xor(BY)
    args = [[xs[i], ys[i], bx[i], by[i]] for i in range(3)]
    out = run_parties(_batched, args)
    for zs in zip(*(o[0] for o in out)):
        assert torch.equal(reconstruct(list(zs)), X * Y)
    ring, field = check_cost(200)[0], check_cost(128, boolean=True)[0]
    assert ring == field == 19
    assert out[0][2] == out[0][3] == ring + 2 * STAGGER  # three ring proofs 8 rounds apart; the field ones within
    assert out[0][4] == 3 * ring + 2 * field  # every proof's length, for the soundness bound
    assert call_soundness_bits(out[0][4]) > 40
    messages = 3 + 2 + ring + 2 * STAGGER  # products, ANDs, then the proofs' rounds
    for index in (messages - 1, 5 + STAGGER + 10):  # the last ring proof's decide; rounds where three overlap
        with pytest.raises(PartyFailed) as exc:
            run_parties(_batched, [a + [2, index] for a in args])
        cause = exc.value.__cause__
        assert isinstance(cause, ProofRejected) and 2 in cause.suspects, (index, exc.value)


def test_a_product_longer_than_a_batch_is_cut_into_pieces_that_fill_the_batches():
    """An elementwise step larger than the batch (e.g. a merge level's products) is proved in pieces, each batch
    filled up to ``ring_batch`` entries with its pad (a step's last piece shares its batch with the next step's
    first): memory stays bounded by the batch, not by the step, and no proof pads a half-full vector."""
    xs, ys, bx, by = share(X), share(Y), share_xor(BX), share_xor(BY)
    args = [[xs[i], ys[i], bx[i], by[i], None, -1, 61] for i in range(3)]  # 3 x 100 products: 10 batches of 30
    out = run_parties(_batched, args)
    for zs in zip(*(o[0] for o in out)):
        assert torch.equal(reconstruct(list(zs)), X * Y)
    assert out[0][4] == 10 * check_cost(60)[0] + 2 * check_cost(128, boolean=True)[0]  # 10 ring proofs, 2 field
    for index in (0, 2):  # the first and the last product's message: each in pieces
        with pytest.raises(PartyFailed) as exc:
            run_parties(_batched, [a[:4] + [1, index, 61] for a in args])
        cause = exc.value.__cause__
        assert isinstance(cause, ProofRejected) and 1 in cause.suspects, (index, exc.value)


def test_an_unlifted_vector_folds_and_multiplies_as_its_lifted_copy():
    """The first fold of a batch of products keeps ``v`` as Z_2^64 values (``_BaseVec``, 56 word products per
    entry instead of 56^2): the fold polynomial and the fold equal the lifted vector's, the pad (a whole ring
    element) in either half."""
    from protocols.dzk import _RING, _BaseVec, _Buffers

    rng = PRG(bytes(range(7, 23)))
    for m, pad_at in ((8, 3), (16, 12), (64, 31), (64, 32)):
        values = rng.int64((m,))
        values[pad_at] = 0
        pad = G.random(rng, 1)[0]
        lifted = G.lift(values)
        lifted[pad_at] = pad
        u, r = G.random(rng, m), G.random(rng, 1)[0]
        base = _BaseVec(values.clone(), pad_at, pad)
        assert torch.equal(_RING.fold_polynomial(u, base), _RING.fold_polynomial(u, lifted))
        pool = _Buffers()
        _, folded = _RING.fold_pair(u.clone(), r, base, r, pool)
        assert torch.equal(folded, G.fold_inplace(lifted.clone(), r))


def test_released_field_vectors_no_longer_hold_their_first_buffer():
    """Staggered proofs overlap: a proof past RELEASE_FOLDS must not keep its first (largest) buffers alive."""
    from protocols import binfield as BF
    from protocols.dzk import _FIELD, _Buffers

    rng = PRG(bytes(range(8, 24)))
    words = 60  # and the pad: in a half of 64 words (2^13 entries)
    u = BF.paired([BF.Pair(rng.int64((BF.DEGREE, words)), rng.int64((words,)), rng.int64((words,)))],
                  BF.random(rng, 1)[0], 13)
    v = BF.paired([BF.Pair(None, rng.int64((words,)), rng.int64((words,)))], BF.random(rng, 1)[0], 13)
    for _ in range(3):
        r = BF.random(rng, 1)[0]
        u, v = BF.fold_pair(u, r, v, r)
    first = u.planes.untyped_storage().nbytes()
    kept = _FIELD.release([u, v], _Buffers())
    for before, after in zip((u, v), kept):
        assert torch.equal(after.planes, before.planes) and after.bits == before.bits
        assert after.planes.untyped_storage().nbytes() == after.planes.numel() * 8 < first


def test_batches_fill_each_proof_cutting_elementwise_steps_between_them():
    """``batches``: elementwise steps are cut at element boundaries so that every batch but the last is full (a
    proof's vector is padded to a power of two: a half-full batch costs a full one); a step that cannot be cut
    (a carry chain) starts a new batch, and stays whole even when longer than the limit."""
    from protocols import checked as C
    from protocols import dzk as D

    def body(party: Party, px, py, qx, qy):
        log = ProductLog(party)
        x, y = from_pair(party, px), from_pair(party, py)
        checked_mul(x, y, log)  # 100 products: 200 entries
        checked_mul(x[:7], y[:7], log)  # 14 entries
        rows = [[max(e.length(i) for i in range(3)) for e in g] for g in D.batches(log.entries, 64)]
        flat = log.entries
        chain = C._CarryChain(party.id, 0, 3, lambda s: s)  # 384 lanes for its prover, not cut
        mixed = D.batches([chain, *flat], 256)
        log.entries = []
        return rows, [[max(e.length(i) for i in range(3)) for e in g] for g in mixed]

    xs, ys, bx, by = share(X), share(Y), share_xor(BX), share_xor(BY)
    rows, mixed = run_parties(body, [[xs[i], ys[i], bx[i], by[i]] for i in range(3)])[0]
    assert [sum(g) for g in rows] == [64, 64, 64, 22] and rows[3] == [8, 14]  # the first step's tail joins the second
    assert mixed == [[384], [200, 14]]
