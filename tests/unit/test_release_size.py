"""The copy released to a recipient who is not the owner is capped at ``RELEASE_MAX_SIDE`` on its
longer side (6 bytes per pixel on two servers: a 12-megapixel photo would cost 72 MB per server
and copy), deterministically, so the owner's ``trace`` recomputes the exact released pixels."""

from __future__ import annotations

import io

import numpy as np
from PIL import Image

from client.identity import Identity
from client.pixel_release import RELEASE_MAX_SIDE, decode_rgb, pixel_tensors, released_rgb
from wire.pixel_shares import expand


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
        comps.append(expand(t.tobytes() if t.ndim == 1 else t.view("<u2").reshape(shape), shape))
    assert per_server[1]["pix/5/b"].numel() == 2 * np.prod(shape)  # the one full array: 6 bytes per pixel
    total = (comps[0] + comps[1] + comps[2]).astype(np.uint16)
    assert np.array_equal(total.astype(np.uint8), want)
