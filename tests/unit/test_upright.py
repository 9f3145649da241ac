"""Every decoder of image files shows the pixels upright (EXIF orientation applied), so a phone
photo stored as landscape pixels + an orientation tag gives the same features, de-identified
copy and pixel shares as the upright image."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from client.deid.image_io import load_image
from client.deid.workbench import decode_image
from client.images import load_image_bytes
from client.pixel_release import decode_rgb
from client.preprocess import preprocess, to_pil


def tagged_png(upright_rgb: np.ndarray) -> bytes:
    """What a phone stores for ``upright_rgb``: the pixels turned 90 degrees + orientation 6."""
    stored = Image.fromarray(np.rot90(upright_rgb, 1).copy())  # counter-clockwise; the tag turns it back
    exif = Image.Exif()
    exif[0x0112] = 6  # Orientation: rotate 90 CW to display
    buf = io.BytesIO()
    stored.save(buf, format="PNG", exif=exif)
    return buf.getvalue()


def test_decoders_apply_the_exif_orientation(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    want = rng.integers(0, 255, (30, 50, 3), dtype=np.uint8)  # wide: a turned copy has another shape
    data = tagged_png(want)
    path = tmp_path / "phone.png"
    path.write_bytes(data)
    with Image.open(io.BytesIO(data)) as im:
        assert np.asarray(im.convert("RGB")).shape == (50, 30, 3)  # the stored pixels are turned
    assert np.array_equal(np.asarray(load_image_bytes(path)[1]), want)
    assert load_image_bytes(path)[0] == data  # the stored file keeps its bytes (and its tag)
    assert np.array_equal(np.asarray(to_pil(path)), want)
    assert np.array_equal(load_image(path), want)
    assert np.array_equal(decode_image(data), want)
    assert np.array_equal(decode_rgb(data), want)
    assert torch.equal(preprocess(path, 32), preprocess(want, 32))


def test_untagged_images_are_unchanged(tmp_path: Path) -> None:
    want = np.random.default_rng(1).integers(0, 255, (20, 40, 3), dtype=np.uint8)
    buf = io.BytesIO()
    Image.fromarray(want).save(buf, format="PNG")
    assert np.array_equal(decode_rgb(buf.getvalue()), want)
    assert np.array_equal(np.asarray(load_image_bytes(want)[1]), want)
