"""``client.upload_batches.plan_batches``: consecutive ranges bounded by decoded pixels and count."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from client.upload_batches import pixel_count, plan_batches


def test_batches_are_bounded_by_pixels_and_by_count(tmp_path: Path) -> None:
    big = np.zeros((2000, 3000, 3), np.uint8)  # 6 MP
    small = np.zeros((100, 100, 3), np.uint8)
    assert plan_batches([big] * 5, max_pixels=13_000_000) == [(0, 2), (2, 4), (4, 5)]
    assert plan_batches([small] * 7, max_images=3) == [(0, 3), (3, 6), (6, 7)]
    assert plan_batches([big], max_pixels=1) == [(0, 1)]  # one image over the budget still goes alone
    assert plan_batches([]) == []
    path = tmp_path / "a.png"
    Image.new("RGB", (640, 480)).save(path)
    (tmp_path / "bad.jpg").write_bytes(b"not an image")
    assert pixel_count(path) == 640 * 480 and pixel_count(tmp_path / "bad.jpg") == 0
    assert pixel_count(Image.new("RGB", (5, 4))) == 20
    with pytest.raises(ValueError):
        plan_batches([small], max_images=0)
