"""``trivault upload``'s folder scan: images by extension or, without one, by their first bytes."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from client.cli.upload_files import check, scan


def test_scan_takes_images_without_an_image_extension_and_nothing_else(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    face = Image.fromarray(rng.integers(0, 255, (24, 20), dtype=np.uint8))
    face.save(tmp_path / "a.png")
    (tmp_path / "yale").mkdir()
    face.save(tmp_path / "yale" / "subject01.happy", format="GIF")  # the Yale faces' naming
    face.save(tmp_path / "yale" / "subject01.sad", format="PPM")  # a PGM, as ORL ships them
    (tmp_path / "notes.txt").write_text("identity,file\ns01,1.pgm\n")
    (tmp_path / "blob.bin").write_bytes(os.urandom(4096))
    face.save(tmp_path / ".hidden.png")
    images, others = scan(tmp_path)
    assert [p.relative_to(tmp_path).as_posix() for p in images] == ["a.png", "yale/subject01.happy",
                                                                     "yale/subject01.sad"]
    assert sorted(p.name for p in others) == ["blob.bin", "notes.txt"]
    for p in images:
        c = check(p, tmp_path)
        assert c.status == "new" and c.size == p.stat().st_size, c.detail
