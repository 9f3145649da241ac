"""Key delivery: HPKE-sealed key-share pairs, one server cannot release a key, two suffice, a bad share is named."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey

from client import crypto
from client.identity import Identity
from protocols.sharing import reconstruct
from wire.key_delivery import (
    KeyDeliveryError,
    key_to_words,
    open_share,
    recover_key,
    seal_share,
    split_key,
    verify_key,
    words_to_key,
)

IMG = 42


@pytest.fixture()
def querier() -> Identity:
    return Identity.create({"role": "doctor"})


def _sealed(key: bytes, q: Identity, image=IMG, deid=False):
    return [seal_share(p, q.public().kex_pub, i, image, deid) for i, p in enumerate(split_key(key))]


def test_all_three_and_any_two_servers_recover_the_key(querier):
    key = crypto.new_key()
    sealed = _sealed(key, querier)
    assert recover_key(sealed, querier.kex_key, IMG) == key
    for refused in range(3):
        s = list(sealed)
        s[refused] = None
        assert recover_key(s, querier.kex_key, IMG) == key
    assert words_to_key(key_to_words(key)) == key


def test_one_server_alone_cannot_release_the_key(querier):
    key = crypto.new_key()
    sealed = _sealed(key, querier)
    for i in range(3):
        only = [None, None, None]
        only[i] = sealed[i]
        with pytest.raises(KeyDeliveryError, match="at least two"):
            recover_key(only, querier.kex_key, IMG)
    # Information-theoretically: server 0's pair (k0, k1) is consistent with EVERY key:
    # for any candidate key c, the missing component k2 = c - k0 - k1 completes it.
    lo, hi = open_share(sealed[0], querier.kex_key, 0, IMG)
    for candidate in (bytes(32), b"\xff" * 32, crypto.new_key()):
        k2 = key_to_words(candidate) - lo - hi
        fake = [(lo, hi), (hi, k2), (k2, lo)]
        assert words_to_key(reconstruct(fake)) == candidate
    # Statistically: for a fixed (all-zero) key, each server's pair is uniform: every bit of
    # every word is 1 with probability 1/2 (2000 sharings, 5-sigma band), and the two words differ.
    n = 2000
    for server in range(3):
        words = torch.stack([torch.cat(split_key(bytes(32))[server]) for _ in range(n)])  # [n, 8]
        bits = np.unpackbits(words.numpy().view(np.uint8), axis=1)  # [n, 512]
        freq = bits.mean(axis=0)
        assert np.all(np.abs(freq - 0.5) < 5 * np.sqrt(0.25 / n)), f"server {server}: biased share bits"
        assert (words[:, :4] != words[:, 4:]).any(dim=1).all()


def test_sealed_share_is_bound_to_recipient_image_kind_and_server(querier):
    key = crypto.new_key()
    sealed = _sealed(key, querier)
    other = X25519PrivateKey.generate()
    with pytest.raises(KeyDeliveryError, match="server 1") as e:
        open_share(sealed[1], other, 1, IMG)
    assert e.value.suspects == (1,)
    for args in ((1, IMG + 1, False), (1, IMG, True), (2, IMG, False)):
        with pytest.raises(KeyDeliveryError):
            open_share(sealed[1], querier.kex_key, *args)
    swapped = [sealed[1], sealed[0], sealed[2]]  # a server forwarding another server's share
    with pytest.raises(KeyDeliveryError) as e:
        recover_key(swapped, querier.kex_key, IMG)
    assert e.value.suspects == (0,)
    garbage = list(sealed)
    garbage[2] = b"\x00" * 5
    with pytest.raises(KeyDeliveryError, match="malformed") as e:
        recover_key(garbage, querier.kex_key, IMG)
    assert e.value.suspects == (2,)


@pytest.mark.parametrize("liar", [0, 1, 2])
def test_wrong_share_from_one_server_is_detected_and_attributed(querier, liar):
    key = crypto.new_key()
    pairs = split_key(key)
    lo, hi = pairs[liar]
    pairs[liar] = (lo, hi + 1)  # a correctly sealed but wrong share
    sealed = [seal_share(p, querier.public().kex_pub, i, IMG) for i, p in enumerate(pairs)]
    with pytest.raises(KeyDeliveryError, match="inconsistent key shares") as e:
        recover_key(sealed, querier.kex_key, IMG)
    assert liar in e.value.suspects and len(e.value.suspects) == 2
    # with only two servers there is no redundancy: the wrong key surfaces at AES-GCM
    ct = crypto.encrypt(key, b"image bytes", crypto.image_aad(IMG))
    two = list(sealed)
    two[(liar + 1) % 3] = None  # drop an honest server
    wrong = recover_key(two, querier.kex_key, IMG)
    assert wrong != key
    with pytest.raises(KeyDeliveryError, match="AES-GCM"):
        verify_key(wrong, ct, crypto.image_aad(IMG), crypto.decrypt)
    assert verify_key(key, ct, crypto.image_aad(IMG), crypto.decrypt) == b"image bytes"
