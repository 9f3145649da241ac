"""Recipient watermark survives JPEG q75 and a 10% resize; unmarked images trace to None."""

from __future__ import annotations

import os

import cv2
import numpy as np
import pytest
from skimage import data

from client.identity import Identity
from client.watermark import embed, extract, load_rgb, save_rgb, trace

KEY = bytes(range(32))


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    return float(10 * np.log10(255.0**2 / np.mean((a.astype(float) - b.astype(float)) ** 2)))


def _resize(rgb: np.ndarray, f: float) -> np.ndarray:
    h, w = rgb.shape[:2]
    return cv2.resize(rgb, (round(w * f), round(h * f)), interpolation=cv2.INTER_AREA if f < 1 else cv2.INTER_LINEAR)


@pytest.fixture(scope="module")
def marked():
    rid = Identity.create().user_id
    img = data.astronaut()
    return img, rid, embed(img, rid, KEY)


def test_mark_is_invisible_and_traceable_from_png(marked, tmp_path):
    img, rid, wm = marked
    assert wm.shape == img.shape and wm.dtype == np.uint8
    assert _psnr(img, wm) > 40
    save_rgb(tmp_path / "leak.png", wm)
    assert trace(tmp_path / "leak.png", KEY) == rid


def test_survives_jpeg_75(marked, tmp_path):
    _, rid, wm = marked
    save_rgb(tmp_path / "leak.jpg", wm, jpeg_quality=75)
    assert trace(tmp_path / "leak.jpg", KEY) == rid


@pytest.mark.parametrize("factor", [0.9, 1.1])
def test_survives_10_percent_resize_then_jpeg_75(marked, tmp_path, factor):
    _, rid, wm = marked
    small = _resize(wm, factor)
    assert extract(small, KEY) == rid
    save_rgb(tmp_path / "leak.jpg", small, jpeg_quality=75)
    assert trace(tmp_path / "leak.jpg", KEY) == rid
    save_rgb(tmp_path / "first.jpg", wm, jpeg_quality=75)  # the other order: re-compress, then resize
    assert extract(_resize(load_rgb(tmp_path / "first.jpg"), factor), KEY) == rid


def test_non_square_photo_survives_jpeg_and_resize(tmp_path):
    rid = os.urandom(16).hex()
    wm = embed(data.chelsea(), rid, KEY)
    save_rgb(tmp_path / "cat.jpg", _resize(wm, 0.9), jpeg_quality=75)
    assert trace(tmp_path / "cat.jpg", KEY) == rid


def test_unmarked_or_wrong_key_gives_none(marked, tmp_path):
    img, rid, wm = marked
    save_rgb(tmp_path / "clean.jpg", img, jpeg_quality=75)
    assert trace(tmp_path / "clean.jpg", KEY) is None
    assert extract(wm, b"another owner key") is None
    assert extract(wm) is None  # keyed mark: unreadable without the owner's key
    public = embed(img, rid)  # unkeyed mark: anyone can trace it
    assert extract(public) == rid


def test_bad_inputs():
    with pytest.raises(ValueError, match="hex"):
        embed(data.astronaut(), "not-an-id", KEY)
    with pytest.raises(ValueError, match="uint8"):
        embed(data.astronaut().astype(np.float32), os.urandom(16).hex())
    with pytest.raises(ValueError, match="cannot read"):
        trace("/nonexistent.png")
