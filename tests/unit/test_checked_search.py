"""protocols.checked_search: the checked top-k, IVF search and result masking against plaintext torch on
three in-process parties, at the stated rounds, with the proof passing on honest runs; a party that
corrupts one message in the top-k or in the fetch is named by both honest parties before anything is
revealed.

Tolerance: the keys are the exact fixed-point squared distances (integers at 2^-32), so the ids equal
an exact integer replica of the search (ties: the earlier candidate) and the float64 plaintext index
(no near-ties on these seeds); distances are within 2 * 2^-16 of the exact fixed-point value (one
truncation) and 1e-3 of the float64 ones (inputs rounded to 2^-16).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from dzk_faults import corrupt_send, outcomes

import protocols.checked_search as S
from index import build_index, share_index
from index.synthetic import clustered, queries_like
from protocols.checked_compare import checked_ltz
from protocols.checked_search import checked_mask_hidden, checked_search, checked_topk, search_rounds, topk_rounds
from protocols.dzk import ProductLog, ProofRejected, verify_products
from protocols.party import Party
from protocols.ring import DEFAULT_FP
from protocols.sharing import from_pair, output_pair, reconstruct, reveal, share, share_fixed
from protocols.simulate import run_parties

F = 16


def test_topk_sorts_ties_by_position_carries_payloads_at_the_stated_cost():
    """Keys with many ties (values 0..5), three rows, n = 37 (not a power of two); k = 5 and k = n."""
    g = torch.Generator().manual_seed(0)
    Q, n = 3, 37
    keys = torch.randint(0, 6, (Q, n), generator=g) - 2
    pay = torch.randint(-(2**40), 2**40, (Q, n), generator=g)
    ks, ps = share(keys), share(pay)

    def body(party: Party, kp, pp, k):
        log = ProductLog(party)
        before = party.comm.stats.snapshot()
        kk, (pk,) = checked_topk(from_pair(party, kp), [from_pair(party, pp, 7)], k, log)
        cost = party.comm.stats - before
        # the stated elements: per level one checked_ltz of the Q P compared pairs, the count one-hots'
        # products, and one per row, kept output and carried value (2 of them)
        ltz_bytes, products = 0, 0
        for lv in S._plan(n, k, 2, S.FAN_IN):
            b = party.comm.stats.snapshot()
            zero = torch.zeros(Q * len(lv.ia), dtype=torch.int64)
            checked_ltz(from_pair(party, (zero, zero)), ProductLog(party))
            ltz_bytes += (party.comm.stats - b).bytes_sent
            products += Q * sum(len(rd.u) for rd in lv.rounds) + 2 * Q * lv.groups * lv.k_max
        verify_products(log)
        assert pk.frac_bits == 7
        return output_pair(kk), output_pair(pk), cost, ltz_bytes + 8 * products

    for k in (5, n):
        out = run_parties(body, [[ks[i], ps[i], k] for i in range(3)])
        order = torch.sort(keys, dim=1, stable=True).indices[:, :k]
        assert torch.equal(reconstruct([o[0] for o in out]), torch.gather(keys, 1, order))
        assert torch.equal(reconstruct([o[1] for o in out]), torch.gather(pay, 1, order))
        for *_, cost, want_bytes in out:
            assert cost.rounds == topk_rounds(n, 2) == 6 * 11  # 37 -> 19 -> 10 -> 5 -> 3 -> 2 -> 1 lists
            assert cost.bytes_sent == want_bytes


@pytest.mark.parametrize("fan_in,n_payloads", [(4, 4), (2, 1), (3, 4)])  # 5 values: they join at the root
def test_topk_other_fan_ins_and_values_at_the_root(monkeypatch, fan_in, n_payloads):
    monkeypatch.setattr(S, "FAN_IN", fan_in)
    g = torch.Generator().manual_seed(fan_in)
    Q, n, k = 2, 23, 6
    keys = torch.randint(-3, 3, (Q, n), generator=g)
    pays = [torch.randint(-(2**50), 2**50, (Q, n), generator=g) for _ in range(n_payloads)]
    shares = [share(t) for t in (keys, *pays)]

    def body(party: Party, kp, *pp):
        log = ProductLog(party)
        before = party.comm.stats.snapshot()
        kk, out = checked_topk(from_pair(party, kp), [from_pair(party, p) for p in pp], k, log)
        rounds = (party.comm.stats - before).rounds
        verify_products(log)
        return [reveal(t) for t in (kk, *out)], rounds

    out = run_parties(body, [[s[i] for s in shares] for i in range(3)])
    order = torch.sort(keys, dim=1, stable=True).indices[:, :k]
    for got, want in zip(out[0][0], (keys, *pays)):
        assert torch.equal(got, torch.gather(want, 1, order))
    assert all(o[1] == topk_rounds(n, 1 + n_payloads) for o in out)


@pytest.mark.parametrize("fan_in", [2, 4])
def test_the_rounds_formula_is_the_plan(monkeypatch, fan_in):
    """topk_rounds (the docstring's formula) against the planned levels: 11 rounds each plus its product rounds."""
    monkeypatch.setattr(S, "FAN_IN", fan_in)
    for n in (2, 3, 4, 5, 17, 64, 65, 800, 1000):
        for values in (1, 3, 4, 11):
            levels = S._plan(n, min(n, 10), values, S.FAN_IN)
            assert topk_rounds(n, values) == sum(11 + len(lv.rounds) for lv in levels), (n, values)
    assert topk_rounds(1) == 0
    if fan_in == 2:  # 10 levels of 11
        assert topk_rounds(1000, 11) == topk_rounds(800, 3) == 10 * 11
        assert search_rounds(1000, 100, 8, 128) == 1 + 110 + 1 + 1 + 110 + 1  # keys first: 1000 < 8 x 128
        assert search_rounds(1000, 100, 4, 128) == 1 + 110 + 1 + 1 + 1 + 9 * 11 + 1  # rows first: 1000 >= 4 x 128
    else:
        assert topk_rounds(1000, 11) == 5 * 13 and topk_rounds(800, 3) == 5 * 12
        assert search_rounds(1000, 100, 8, 128) == 1 + 65 + 1 + 1 + 60 + 1


def test_the_probe_onehot_from_digit_onehots():
    """C = 12: one digit (the payload is the one-hot); 1000: two 5-bit digits (1 round); 3000: three
    4-bit digits (2 rounds)."""
    g = torch.Generator().manual_seed(1)
    for C, rounds in ((12, 0), (1000, 1), (3000, 2)):
        assert S.onehot_rounds(C) == rounds
        numbers = torch.randint(0, C, (3,), generator=g)
        numbers[0] = C - 1
        leaves = [share(torch.nn.functional.one_hot((numbers >> shift) & ((1 << w) - 1), 1 << w))
                  for shift, w in S._digits(C)]

        def body(party: Party, C: int, *pairs):
            log = ProductLog(party)
            before = party.comm.stats.snapshot()
            out = S._onehot_from_digits([from_pair(party, p) for p in pairs], C, log)
            cost = party.comm.stats - before
            verify_products(log)
            return reveal(out), cost

        out = run_parties(body, [[C] + [lf[i] for lf in leaves] for i in range(3)])
        assert torch.equal(out[0][0], torch.nn.functional.one_hot(numbers, C))
        assert all(o[1].rounds == rounds for o in out)


@pytest.fixture(scope="module")
def small():
    x = clustered(600, 16, 8, seed=2)
    x[300:310] = x[0:10]  # exact duplicates: ties
    plain = build_index(x, np.arange(len(x)) * 3 + 7, 12, seed=0)
    return x, plain, share_index(plain)


def _exact(shs, q: torch.Tensor, k: int, nprobe: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer replica on the shared plaintext: keys q.(q - 2x) + 2^f ||x||^2, stable sorts (ties: position)."""
    def plain(name: str) -> torch.Tensor:
        comps = [getattr(s, name)[0] for s in shs]
        return comps[0] + comps[1] + comps[2]

    cent, csq, rows = plain("centroids"), plain("centroid_sqnorm"), plain("rows")
    sh = shs[0]
    C, B, d = sh.n_centroids, sh.bucket_size, sh.dim
    rec = rows.view(C, B, d + 2)
    ids, dist = [], []
    for qi in q:
        probes = torch.arange(C)
        if nprobe < C:
            ck = (qi * (qi - 2 * cent)).sum(-1) + (csq << F)
            probes = torch.sort(ck, stable=True).indices[:nprobe]
        cand = rec[probes].reshape(-1, d + 2)
        key = (qi * (qi - 2 * cand[:, :d])).sum(-1) + (cand[:, d] << F)
        order = torch.sort(key, stable=True).indices[:k]
        ids.append(cand[order, d + 1])
        dist.append(key[order].double() / 2 ** (2 * F))
    return torch.stack(ids), torch.stack(dist)


def _search(party: Party, qp, ish, k: int, nprobe: int, bad: int | None = None, index: int = -1):
    if party.id == bad:
        corrupt_send(party, index, 1 << 20)
    log = ProductLog(party)
    before = party.comm.stats.snapshot()
    ids, dist = checked_search(party, from_pair(party, qp, F), ish, k, nprobe, log)
    rounds = (party.comm.stats - before).rounds
    verify_products(log)
    return reveal(ids), reveal(dist), rounds


@pytest.mark.parametrize("k,nprobe,n_queries,keys_first", [(5, 3, 2, True), (10, 1, 1, True), (5, 3, 2, False),
                                                       (4, 12, 1, True)])  # 12 = C: no fetch
def test_search_matches_plaintext_at_the_stated_rounds(small, monkeypatch, k, nprobe, n_queries, keys_first):
    """Both fetch paths (every record's key then the probed keys, or the probed rows then their keys; the
    rule :func:`checked_search.keys_first` picks the first at these sizes, so the second is forced)."""
    x, plain, shs = small
    if not keys_first:
        monkeypatch.setattr(S, "keys_first", lambda *sizes: False)
    q = queries_like(x, n_queries, seed=k + nprobe)
    q[0] = x[3] + 1e-3  # near a duplicated record: its two copies tie
    qs = share_fixed(torch.from_numpy(np.ascontiguousarray(q)))
    out = run_parties(_search, [[qs[i], shs[i], k, nprobe] for i in range(3)])
    ids, dist = out[0][0], DEFAULT_FP.decode(out[0][1])
    want_ids, want_dist = _exact(shs, DEFAULT_FP.encode(torch.from_numpy(q)), k, nprobe)
    assert torch.equal(ids, want_ids)
    assert (dist - want_dist).abs().max() <= 2 * 2**-F
    rid, rd = plain.search(q, k, nprobe)
    assert np.array_equal(ids.numpy(), rid)
    assert np.abs(dist.numpy() - rd).max() <= 1e-3
    assert all(o[2] == search_rounds(plain.n_centroids, plain.bucket_size, nprobe, x.shape[1]) for o in out)


def test_padding_comes_last_when_k_exceeds_the_probed_rows(small):
    x, plain, shs = small
    c = int((plain.ids != -1).sum(1).argmin())  # the emptiest bucket
    q = plain.centroids[c: c + 1].astype(np.float64) + 1e-3
    assert plain.search(q, 1, 1)[0][0, 0] in plain.ids[c]
    k = plain.bucket_size
    qs = share_fixed(torch.from_numpy(q))
    out = run_parties(_search, [[qs[i], shs[i], k, 1] for i in range(3)])
    ids, dist = out[0][0][0], DEFAULT_FP.decode(out[0][1][0])
    pad = ids == -1
    real = int((plain.ids[c] != -1).sum())
    assert int(pad.sum()) == k - real and bool(pad[real:].all())
    want = (q ** 2).sum() + plain.pad_sqnorm
    assert (dist[pad] - want).abs().max() <= 1e-3
    assert np.array_equal(ids.numpy(), plain.search(q, k, 1)[0][0])


def test_mask_hidden_matches_the_plaintext_rule():
    ids = torch.tensor([[7, -1, 12, 40], [40, 3, 7, 9]])
    dist = torch.tensor([[1.5, 9.0, 2.0, 0.25], [0.5, 1.0, 3.0, 4.0]], dtype=torch.float64)
    hidden = [40, 7, 7, 1000]
    pi, pd = share(ids), share_fixed(dist)

    def body(party: Party, ip, dp):
        log = ProductLog(party)
        before = party.comm.stats.snapshot()
        i2, d2 = checked_mask_hidden(from_pair(party, ip), from_pair(party, dp, F), hidden, log)
        rounds = (party.comm.stats - before).rounds
        verify_products(log)
        return reveal(i2), reveal(d2), rounds

    out = run_parties(body, [[pi[i], pd[i]] for i in range(3)])
    hide = (ids.unsqueeze(-1) == torch.tensor([7, 40])).any(-1)
    assert torch.equal(out[0][0], torch.where(hide, -1, ids))
    assert torch.equal(DEFAULT_FP.decode(out[0][1]), torch.where(hide, 0.0, dist))
    assert all(o[2] == 12 for o in out)


def test_a_corrupted_message_in_the_topk_or_the_fetch_is_rejected_before_the_reveal(small, monkeypatch):
    """Party 1 adds 2^20 to one message: inside the record top-k (an AND gate of its first level, and its
    last products) or its reshare of the fetch. Both honest parties end in ProofRejected naming party 1;
    no party reveals anything."""
    x, plain, shs = small
    q = queries_like(x, 1, seed=3)
    qs = share_fixed(torch.from_numpy(np.ascontiguousarray(q)))
    marks: dict[tuple[int, str], list[int]] = {}

    def recorded(name: str, fn):
        def wrapper(*args, **kw):
            party = args[0].party
            marks.setdefault((party.id, name), []).append(party.comm.stats.messages_sent)
            out = fn(*args, **kw)
            marks[(party.id, name)].append(party.comm.stats.messages_sent)
            return out
        return wrapper

    monkeypatch.setattr(S, "checked_topk", recorded("topk", S.checked_topk))
    monkeypatch.setattr(S, "_fetch_keys", recorded("fetch", S._fetch_keys))  # keys first at these sizes
    run_parties(_search, [[qs[i], shs[i], 5, 2] for i in range(3)])
    monkeypatch.undo()
    topk, fetch = marks[(1, "topk")], marks[(1, "fetch")]
    assert len(topk) == 4 and len(fetch) == 2 and fetch[1] == fetch[0] + 1
    for index in (topk[2] + 3, topk[3] - 1, fetch[0]):
        out = outcomes(_search, [[qs[i], shs[i], 5, 2, 1, index] for i in range(3)])
        assert not any(isinstance(o, tuple) for o in out), index
        for i in (0, 2):
            assert isinstance(out[i], ProofRejected) and 1 in out[i].suspects, (index, i, out[i])
