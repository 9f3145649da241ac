"""Bit-identity of the comparison machinery (protocols.digits, digit_tables, tablegate, rotate, b2a, bitmul).

Runs msb / ltz / eqz / msb_early (via approx.clamp) / bit_mul on seeded parties and hashes every message
each party sends, every message it receives and every output share; the digest is that of the
implementation before the CPU work of 2026-12-02 (computed from its git tree), so a faster version must
send the same words, draw the same PRG streams and output the same shares."""

import hashlib

import torch

from protocols import approx, topk
from protocols import bitmul as BM
from protocols import digits as D
from protocols.prf import PRG, derive_key
from protocols.sharing import from_pair, share, share_fixed
from protocols.simulate import make_parties, run_parties

LAYOUTS = [topk.key_layout(42), topk.key_layout(50), D.CNN_FAST, D.CNN_EXACT, D.FULL, D.WIDE, D.OCTAVE,
           D.Digits(8, 0, (8,)), D.Digits(11, 0, (6, 5)), D.Digits(9, 0, (3, 3, 3)),
           D.Digits(16, 0, (2,) * 8), D.Digits(10, 3, (1, 2, 3, 4)), D.Digits(24, 0, (6, 7, 5, 6)),
           D.Digits(21, 0, (9, 2, 10)), D.Digits(20, 7, (10, 10))]
EQ = [D.eq_spec(1000), D.eq_spec(2**40), D.Digits(11, 0, (6, 5)), D.Digits(7, 0, (7,)), topk.key_layout(42)]
SIZES = (5, 700)

DIGEST = "184a2a07e2fea510484c1f87f67ecd1e91d426210a6b012cca25f4e392bc2ea9"


def _recording(p, h):
    orig = p.comm.exchange

    def exchange(send_next=None, send_prev=None, recv_next=False, recv_prev=False):
        for tag, t in ((b"N", send_next), (b"P", send_prev)):
            h.update(tag + (b"-" if t is None else t.contiguous().numpy().tobytes()))
        got = orig(send_next=send_next, send_prev=send_prev, recv_next=recv_next, recv_prev=recv_prev)
        for t in got:
            h.update(b"R" + (b"-" if t is None else t.contiguous().numpy().tobytes()))
        return got

    p.comm.exchange = exchange


def _out(h, r):
    for t in (r.lo, r.hi):
        h.update(b"O" + str(tuple(t.shape)).encode() + t.contiguous().numpy().tobytes())


def _body(p, ints, fixed, h):
    _recording(p, h)
    for k, spec in enumerate(LAYOUTS):
        for j in range(len(SIZES)):
            x = from_pair(p, ints[k][j])
            _out(h, D.msb(x, spec))
            _out(h, D.ltz(x, spec))
    for k, spec in enumerate(EQ):
        for j in range(len(SIZES)):
            _out(h, D.eqz(from_pair(p, ints[len(LAYOUTS) + k][j]), spec))
    for j in range(len(SIZES)):
        x = from_pair(p, fixed[j], 16)
        for lanes in (D.CNN_FAST, D.CNN_EXACT, D.Digits(20, 7, (10, 10))):
            _out(h, approx.clamp(x, 0.0, 6.0, lanes))
            _out(h, approx.clamp(x, -1.0, 6.0, lanes))
        _out(h, BM.bit_mul(D.msb(x, D.CNN_FAST), x))
    return h.hexdigest()


def _digest() -> str:
    prg = PRG(derive_key(bytes(16), "tables-identity"))
    gen = torch.Generator().manual_seed(5)
    specs = LAYOUTS + EQ
    ints = []
    for k, spec in enumerate(specs):
        lim = min(spec.bound, 2**62)
        row = []
        for n in SIZES:
            x = torch.randint(-lim + 1, lim, (n,), generator=gen)
            if k >= len(LAYOUTS):
                x[::3] = 0
            row.append(share(x, prg))
        ints.append(row)
    fixed = [share_fixed(torch.randn(n, generator=gen, dtype=torch.float64) * 8, prg=prg) for n in SIZES]
    hs = [hashlib.sha256() for _ in range(3)]
    args = [([[r[i] for r in row] for row in ints], [f[i] for f in fixed], hs[i]) for i in range(3)]
    out = run_parties(_body, args, parties=make_parties(seed=11))
    return hashlib.sha256("".join(out).encode()).hexdigest()


def test_messages_and_outputs_unchanged():
    assert _digest() == DIGEST
