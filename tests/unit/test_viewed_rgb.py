"""Every decoder of image files shows the pixels a viewer shows (``client.preprocess.viewed_rgb``):
16-bit and float scans are scaled to 8 bits (Pillow's ``convert`` clips them almost white or
black), transparency is composited onto white, and every decoder (features, de-identification,
pixel shares, retrieval, the upload scan) agrees, so owner and querier see the same pixels."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from client.cli.upload_files import check, scan
from client.deid.image_io import load_image
from client.deid.workbench import decode_image
from client.images import load_image_bytes
from client.pixel_release import decode_rgb
from client.preprocess import BACKGROUND, MAX_PIXELS, ImageInputError, preprocess, to_pil, viewed_rgb


def grey8() -> np.ndarray:
    y, x = np.mgrid[0:40, 0:60]
    return ((x * 4 + y * 2) % 256).astype(np.uint8)


def decoders(path: Path) -> list[np.ndarray]:
    data = path.read_bytes()
    return [np.asarray(load_image_bytes(path)[1]), load_image(path), decode_image(data), decode_rgb(data),
            np.asarray(to_pil(path))]


@pytest.mark.parametrize("kind", ["png16", "tiff_float", "tiff_int32"])
def test_high_depth_grey_is_scaled_not_clipped(tmp_path: Path, kind: str) -> None:
    g = grey8()
    path = tmp_path / ("scan.png" if kind == "png16" else "scan.tiff")
    if kind == "png16":
        Image.fromarray(g.astype(np.uint16) * 257).save(path)  # 16-bit grey PNG: mode I;16
    elif kind == "tiff_float":
        Image.fromarray(g.astype(np.float32) / 255).save(path)  # mode F in [0, 1]
    else:
        Image.fromarray(g.astype(np.int32) * 257).save(path)  # mode I, 16-bit range
    with Image.open(path) as im:
        assert im.mode in ("I;16", "F", "I")
        clipped = np.asarray(im.convert("RGB"))
    assert np.abs(clipped[..., 0].astype(int) - g).mean() > 50  # Pillow's own conversion is far off
    want = np.repeat(g[:, :, None], 3, axis=2)
    for got in decoders(path):
        assert got.shape == want.shape and np.abs(got.astype(int) - want).max() <= 1


def test_transparency_is_composited_onto_white_by_every_decoder(tmp_path: Path) -> None:
    rng = np.random.default_rng(1)
    rgba = rng.integers(0, 255, (30, 40, 4), dtype=np.uint8)
    rgba[:, :20, 3] = 0  # left half fully transparent (its RGB is whatever the editor left there)
    rgba[:, 20:, 3] = 255
    path = tmp_path / "logo.png"
    Image.fromarray(rgba).save(path)
    for got in decoders(path):
        assert np.array_equal(got[:, :20], np.broadcast_to(np.array(BACKGROUND, np.uint8), (30, 20, 3)))
        assert np.array_equal(got[:, 20:], rgba[:, 20:, :3])
    pal = Image.fromarray(rgba[..., :3]).convert("P", palette=Image.Palette.ADAPTIVE, colors=16)
    pal.info["transparency"] = 0  # a GIF/PNG palette with a transparent colour
    seen = viewed_rgb(pal)
    hit = np.asarray(pal) == 0
    assert hit.any() and (np.asarray(seen)[hit] == BACKGROUND).all()


def test_owner_and_querier_features_agree_on_a_16_bit_scan(tmp_path: Path) -> None:
    """The owner's path (file bytes -> load_image_bytes) and the querier's (to_pil of the path)
    give the same tensor, and it matches the 8-bit image's."""
    g = grey8()
    p16, p8 = tmp_path / "a16.png", tmp_path / "a8.png"
    Image.fromarray(g.astype(np.uint16) * 257).save(p16)
    Image.fromarray(g).save(p8)
    owner = preprocess(load_image_bytes(p16)[1], 32)
    assert torch.equal(owner, preprocess(to_pil(p16), 32))
    assert torch.equal(owner, preprocess(to_pil(p8), 32))


def test_too_large_images_fail_before_their_pixels_are_decoded(tmp_path: Path) -> None:
    side = int(MAX_PIXELS ** 0.5) + 10
    path = tmp_path / "huge.png"
    Image.new("1", (side, side)).save(path)  # a few kB on disk, over the limit once decoded
    with pytest.raises(ImageInputError, match="too large"):
        load_image_bytes(path)
    c = check(path, tmp_path)
    assert c.status == "failed" and "too large" in c.detail


def test_heic_files_are_listed_as_failed_with_what_to_do(tmp_path: Path) -> None:
    Image.fromarray(grey8()).save(tmp_path / "ok.png")
    (tmp_path / "IMG_0001.HEIC").write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(64))
    images, others = scan(tmp_path)
    assert [p.name for p in images] == ["IMG_0001.HEIC", "ok.png"] and others == []
    c = check(images[0], tmp_path)
    assert c.status == "failed" and "convert it to JPEG or PNG" in c.detail
    assert check(images[1], tmp_path).status == "new"


def test_bad_bytes_give_clear_errors(tmp_path: Path) -> None:
    buf = io.BytesIO()
    Image.fromarray(grey8()).save(buf, format="JPEG")
    (tmp_path / "cut.jpg").write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    (tmp_path / "empty.png").write_bytes(b"")
    with pytest.raises(ValueError, match="truncated"):
        load_image_bytes(tmp_path / "cut.jpg")
    with pytest.raises(ValueError, match="not an image"):
        load_image_bytes(tmp_path / "empty.png")
    assert check(tmp_path / "cut.jpg", tmp_path).detail == "truncated image"


def test_a_heic_query_says_what_to_do(tmp_path: Path) -> None:
    path = tmp_path / "IMG_0002"  # no extension: recognised by its brand
    path.write_bytes(b"\x00\x00\x00\x18ftypheic" + bytes(64))
    with pytest.raises(ValueError, match="HEIC/HEIF is not supported"):
        load_image_bytes(path)
