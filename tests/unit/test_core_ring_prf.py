"""Fixed-point codec, ring checks and the AES-CTR PRG / correlated randomness."""

import math

import numpy as np
import pytest
import torch

from protocols.prf import PRG, PairwiseKeys, dealerless_trio_keys, derive_key, random_key
from protocols.ring import DEFAULT_FP, FixedPoint, RingError, as_ring
from protocols.simulate import run_parties


def test_encode_decode_roundtrip_within_half_ulp():
    x = torch.tensor([0.0, -0.0, 1.5, -1.5, 1e-6, -3.25, 12345.678, -(2.0**30), 2.0**31 - 1], dtype=torch.float64)
    err = (DEFAULT_FP.decode(DEFAULT_FP.encode(x)) - x.double()).abs()
    assert float(err.max()) <= 0.5 / DEFAULT_FP.scale + 1e-12


def test_encode_rejects_out_of_range_and_nonfinite():
    with pytest.raises(RingError, match="must be <"):
        DEFAULT_FP.encode(torch.tensor([2.0**31]))
    with pytest.raises(RingError, match="NaN"):
        DEFAULT_FP.encode(torch.tensor([float("nan")]))
    with pytest.raises(RingError, match="NaN"):
        DEFAULT_FP.encode(torch.tensor([math.inf]))


def test_documented_range_and_resolution():
    fp = FixedPoint(16)
    assert fp.max_abs == 2.0**31
    assert fp.resolution == 2.0**-16


def test_as_ring_rejects_wrong_dtype():
    with pytest.raises(TypeError, match="int64"):
        as_ring(torch.zeros(3, dtype=torch.int32))
    with pytest.raises(TypeError, match="torch.Tensor"):
        as_ring([1, 2, 3])


def test_prg_is_deterministic_per_key_and_differs_across_keys():
    k = random_key()
    a, b = PRG(k).int64((1000,)), PRG(k).int64((1000,))
    assert torch.equal(a, b)
    assert not torch.equal(a, PRG(random_key()).int64((1000,)))
    with pytest.raises(ValueError):
        PRG(b"short")


def test_prg_int64_and_bytes_read_one_keystream_in_order():
    """Draws of any shape and kind continue one AES-CTR stream (every party must draw alike)."""
    k = random_key()
    whole = PRG(k).bytes(8 * 40)[: 8 * 40]
    r = PRG(k)
    parts = [r.int64((3, 5)), torch.frombuffer(r.bytes(8 * 7)[: 8 * 7], dtype=torch.int64), r.int64((18,))]
    assert torch.equal(torch.cat([p.reshape(-1) for p in parts]), torch.frombuffer(whole, dtype=torch.int64))
    assert parts[0].is_contiguous() and parts[0].dtype == torch.int64 and PRG(k).int64((0, 4)).shape == (0, 4)
    buf, f = np.zeros(8 * 15 + 15, dtype=np.uint8), PRG(k)  # fill: the same stream into a caller's buffer
    f.fill(buf, 8 * 15)
    assert bytes(buf[: 8 * 15]) == bytes(whole[: 8 * 15]) and torch.equal(f.int64((5,)), parts[1][:5])
    with pytest.raises(ValueError):
        f.fill(np.zeros(8, dtype=np.uint8), 8)  # no room for AES-CTR's block of slack


def test_prg_output_bits_are_balanced():
    words = PRG(random_key()).int64((20000,))
    bits = torch.stack([(words >> i) & 1 for i in range(64)])
    means = bits.double().mean(dim=1)
    # each bit position: mean 0.5, std 1/sqrt(4*20000) ~ 0.0035; 6 sigma bound
    assert float((means - 0.5).abs().max()) < 0.022


def test_session_keys_are_independent_and_shared():
    keys = dealerless_trio_keys()
    s0, s1 = keys[0].for_session("q1"), keys[1].for_session("q1")
    assert s0.next == s1.prev  # the pair (0,1) agrees
    assert keys[0].for_session("q2").next != s0.next
    assert derive_key(b"k" * 16, "a") != derive_key(b"k" * 16, "b")
    assert len(keys[0].fingerprint()) == 12


def test_zero_sharings_sum_to_zero_and_random_pairs_replicate():
    def f(p):
        return p.zero_share((257,)), p.zero_share_xor((257,)), p.random_pair((257,))

    out = run_parties(f)
    assert torch.equal(out[0][0] + out[1][0] + out[2][0], torch.zeros(257, dtype=torch.int64))
    assert torch.equal(out[0][1] ^ out[1][1] ^ out[2][1], torch.zeros(257, dtype=torch.int64))
    for i in range(3):  # party i's hi is party i+1's lo
        assert torch.equal(out[i][2][1], out[(i + 1) % 3][2][0])
    assert isinstance(keys := PairwiseKeys(b"a" * 16, b"b" * 16), PairwiseKeys) and keys.prev != keys.next
