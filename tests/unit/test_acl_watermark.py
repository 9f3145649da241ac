"""Marks on pixel shares (wire.pixel_shares) and the owner's detection (client.watermark)."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey
from skimage import data

from client.watermark import Z_THRESHOLD, detect
from wire import pixel_shares as ps

IMG = np.ascontiguousarray(data.astronaut()[::2, ::2])  # 256 x 256 x 3


def _jpeg(rgb: np.ndarray, q: int) -> np.ndarray:
    ok, buf = cv2.imencode(".jpg", cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, q])
    return cv2.cvtColor(cv2.imdecode(buf, cv2.IMREAD_COLOR), cv2.COLOR_BGR2RGB)


@pytest.fixture(scope="module")
def released():
    """Pixel shares of IMG released by the three 'servers' to one recipient."""
    sk = X25519PrivateKey.generate()
    uid = os.urandom(16).hex()
    pairs, keys = ps.split_pixels(IMG), ps.new_mark_keys()
    sealed = [ps.release(i, pairs[i], (keys[i], keys[(i + 1) % 3]), uid, sk.public_key().public_bytes_raw(), 7,
                         False, IMG.shape) for i in range(3)]
    opened = [ps.open_pair(s, sk, i, 7, False, uid, IMG.shape) for i, s in enumerate(sealed)]
    return pairs, keys, uid, sk, sealed, opened


def test_shares_reconstruct_the_marked_image_and_one_server_holds_no_pixels(released):
    pairs, keys, uid, _, _, opened = released
    marked = ps.reconstruct(opened)
    want = np.clip(IMG.astype(int) + ps.mark(keys, uid, 256, 256)[:, :, None], 0, 255)
    np.testing.assert_array_equal(marked, want)
    assert np.array_equal(ps.reconstruct([opened[0], None, opened[2]]), marked)  # any two servers suffice
    assert all(isinstance(c, bytes) for c in pairs[0])  # server 0: two 16-byte seeds
    assert sum(isinstance(c, bytes) for p in pairs for c in p) == 4  # one packed Z_2^9 array, on two servers
    psnr = 10 * np.log10(255.0**2 / np.mean((marked.astype(float) - IMG) ** 2))
    assert 40 < psnr < 46


def test_a_lying_server_is_named_and_sealing_binds_the_recipient(released):
    _, _, uid, sk, sealed, opened = released
    bad = (opened[1][0], opened[1][1] ^ np.uint16(1))  # server 1 alters component 2
    with pytest.raises(ps.PixelShareError) as e:
        ps.reconstruct([opened[0], bad, opened[2]])
    assert set(e.value.suspects) == {1, 2}
    both = (opened[1][0] ^ np.uint16(1), bad[1])  # server 1 alters both its components: named alone
    with pytest.raises(ps.PixelShareError, match="server 1 is in every disagreeing pair") as e:
        ps.reconstruct([opened[0], both, opened[2]])
    assert e.value.suspects == (1,)
    with pytest.raises(ps.PixelShareError, match="server 0"):
        ps.open_pair(sealed[0], X25519PrivateKey.generate(), 0, 7, False, uid, IMG.shape)
    with pytest.raises(ps.PixelShareError):
        ps.open_pair(sealed[0], sk, 0, 8, False, uid, IMG.shape)  # replayed for another image


def test_detection_names_the_recipient_after_attacks_and_nobody_on_an_unmarked_copy(released):
    _, keys, uid, _, _, opened = released
    marked = ps.reconstruct(opened)
    others = [os.urandom(16).hex() for _ in range(4)]
    half = cv2.resize(marked, (128, 128), interpolation=cv2.INTER_AREA)
    for leak in (_jpeg(half, 75), _jpeg(marked, 50), marked[20:230, 30:240]):
        r = detect(leak, IMG, keys, others + [uid], 7)
        assert r.user_id == uid and r.score >= Z_THRESHOLD
        assert max(v for u, v in r.scores.items() if u != uid) < Z_THRESHOLD
    assert detect(_jpeg(IMG, 75), IMG, keys, others + [uid]).user_id is None
