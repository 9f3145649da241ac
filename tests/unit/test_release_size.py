"""The copy released to a recipient who is not the owner is capped at ``RELEASE_MAX_SIDE`` on its
longer side (3.4 bytes per pixel on two servers: a 12-megapixel photo would cost 40 MB per server
and copy), deterministically, so the owner's ``trace`` recomputes the exact released pixels."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from client.identity import Identity
from client.pixel_release import RELEASE_MAX_SIDE, decode_rgb, pixel_tensors, released_rgb
from wire.pixel_shares import expand, packed_size, unpack


def png(rgb: np.ndarray) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(rgb).save(buf, format="PNG", compress_level=1)
    return buf.getvalue()


def test_large_copies_are_released_downscaled_and_small_ones_untouched() -> None:
    rng = np.random.default_rng(0)
    big = png(rng.integers(0, 255, (1200, 2500, 3), dtype=np.uint8))
    small = png(rng.integers(0, 255, (300, 400, 3), dtype=np.uint8))
    r = released_rgb(big)
    assert RELEASE_MAX_SIDE == 2048 and r.shape == (983, 2048, 3) and r.dtype == np.uint8
    assert np.array_equal(released_rgb(big), r)  # deterministic: trace recomputes the same pixels
    assert np.array_equal(released_rgb(small), decode_rgb(small))
    tall = png(rng.integers(0, 255, (2100, 50, 3), dtype=np.uint8))
    assert released_rgb(tall).shape == (2048, 49, 3)


def test_pixel_shares_hold_the_released_form() -> None:
    y, x = np.mgrid[0:1100, 0:2300]
    rgb = np.stack([(x // 9) % 256, (y // 7) % 256, (x + y) % 256], axis=2).astype(np.uint8)
    blob = png(rgb)
    per_server = pixel_tensors(Identity.create(), 5, blob, deid=False)
    shape = tuple(int(d) for d in per_server[0]["pix/5/shape"].tolist())
    want = released_rgb(blob)
    assert shape == want.shape == (979, 2048, 3)
    comps = []
    for server, part in ((0, "a"), (1, "a"), (1, "b")):  # components 0, 1, 2
        t = per_server[server][f"pix/5/{part}"].numpy()
        comps.append(expand(t.tobytes() if t.size == 16 else unpack(t.tobytes(), shape), shape))
    assert per_server[1]["pix/5/b"].numel() == packed_size(shape)  # the one full array: 27/8 bytes per pixel
    assert np.array_equal((comps[0] + comps[1] + comps[2]) & 511, want)


def test_packing_holds_nine_bits_per_value_and_old_shares_are_refused() -> None:
    import pytest
    import torch

    from servers.release import ReleaseError, _component
    from wire.pixel_shares import pack

    rng = np.random.default_rng(3)
    for shape in ((1, 1, 3), (7, 5, 3), (64, 33, 3)):
        v = rng.integers(0, 512, shape).astype(np.uint16)
        raw = pack(v)
        assert len(raw) == packed_size(shape) == v.size + (v.size + 7) // 8
        assert np.array_equal(unpack(raw, shape), v)
        assert np.array_equal(unpack(pack(v + 512 * 3), shape), v)  # reduced mod 2^9
        t = torch.frombuffer(bytearray(raw), dtype=torch.uint8)
        assert np.array_equal(_component(t, 1, shape), v)
    old = torch.zeros((4, 4, 3, 2), dtype=torch.uint8)  # a Z_2^16 component as stored before
    with pytest.raises(ReleaseError, match="rekey"):
        _component(old, 9, (4, 4, 3))
