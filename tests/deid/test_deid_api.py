"""deidentify(): regions, accounting metadata, unchanged images, bad input, image I/O."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from skimage import data

from client.deid import DeidResult, deidentify
from client.deid.image_io import ImageInputError, check_size, load_image
from client.deid.noise import NoiseSource
from client.preprocess import rgb_uint8


def test_no_detections_returns_unchanged_and_says_so() -> None:
    img = np.tile(np.linspace(0, 255, 200, dtype=np.uint8), (150, 1))  # grey ramp, no face, no plate
    res = deidentify(img, 1.0)
    assert isinstance(res, DeidResult) and res.unchanged
    assert res.image.shape == (150, 200, 3) and res.image.dtype == np.uint8
    assert np.array_equal(res.image[..., 0], img)
    assert res.metadata["unchanged"] is True
    assert "unchanged" in res.metadata["message"] and res.metadata["eps_total"] == 0.0


def test_detected_face_is_replaced_with_accounting() -> None:
    img = data.astronaut()
    res = deidentify(img, 2.0, "dp_latent", seed=1)
    faces = [r for r in res.regions if r.kind == "face"]
    assert len(faces) == 1 and faces[0].source == "centerface"
    meta = res.metadata
    assert meta["eps_per_region"] == [2.0] * len(res.regions)
    assert meta["eps_total"] == pytest.approx(2.0 * len(res.regions))
    assert meta["noise_source"].startswith("numpy PCG64")
    json.dumps(meta)  # serialisable as stored metadata
    assert (res.image != img).any()


def test_manual_boxes_sequential_composition_and_urandom() -> None:
    img = data.astronaut()
    res = deidentify(img, 0.5, "dp_pixelize", boxes="10,10,40,30;300,300,60,20,plate")
    assert len(res.regions) == 2 and {r.kind for r in res.regions} == {"face", "plate"}
    assert res.metadata["eps_total"] == pytest.approx(1.0)
    assert res.metadata["eps_max_region"] == pytest.approx(0.5)
    assert res.metadata["noise_source"] == "os.urandom"
    again = deidentify(img, 0.5, "dp_pixelize", boxes="10,10,40,30")
    assert not np.array_equal(res.image[10:40, 10:50], again.image[10:40, 10:50])  # fresh noise each call


def test_one_seed_gives_a_reproducible_sequence_with_different_noise_per_image() -> None:
    img = data.astronaut()
    box = "10,10,40,30"

    def sequence(seed: int) -> list[np.ndarray]:
        noise = NoiseSource(seed)
        return [deidentify(img, 0.5, "dp_pixelize", boxes=box, noise=noise).image[10:40, 10:50] for _ in range(3)]

    first, again = sequence(7), sequence(7)
    assert all(np.array_equal(a, b) for a, b in zip(first, again))  # reproducible
    assert not np.array_equal(first[0], first[1]) and not np.array_equal(first[1], first[2])  # per image
    assert not np.array_equal(first[0], sequence(8)[0])
    res = deidentify(img, 0.5, "dp_pixelize", boxes=box, noise=NoiseSource(7))
    assert res.metadata["noise_source"] == "numpy PCG64 seed=7 (test only, NOT private)"
    with pytest.raises(ValueError, match="either seed or noise"):
        deidentify(img, 0.5, "dp_pixelize", boxes=box, seed=1, noise=NoiseSource(1))


def test_plate_box_gets_synthetic_plate_with_zero_eps_without_ocr() -> None:
    img = data.astronaut()
    res = deidentify(img, 1.0, "dp_latent", boxes=[(300, 300, 140, 40, "plate")], seed=0)
    assert res.metadata["eps_total"] == 0.0
    assert len(res.released_texts[0]) == 7


def test_baselines_have_no_guarantee() -> None:
    res = deidentify(data.astronaut(), 1.0, "blur", boxes=[(10, 10, 40, 40)])
    assert res.metadata["eps_total"] is None and res.metadata["dp"] is False


def test_grayscale_and_rgba_arrays() -> None:
    grey = data.camera()
    res = deidentify(grey, 1.0, "mosaic", boxes=[(100, 100, 64, 64)])
    assert res.image.shape == (512, 512, 3)
    assert (res.image[..., 0] == res.image[..., 2]).all()
    rgba = np.dstack([data.astronaut(), np.full((512, 512), 255, np.uint8)])
    assert rgb_uint8(rgba).shape == (512, 512, 3)


def test_bad_arguments() -> None:
    img = data.astronaut()
    with pytest.raises(ValueError, match="mechanism"):
        deidentify(img, 1.0, "pixelate")
    for eps in (0, -1, math.nan):
        with pytest.raises(ValueError, match="eps"):
            deidentify(img, eps)
    with pytest.raises(ImageInputError, match="shape"):
        deidentify(np.zeros((4, 4, 5), np.uint8), 1.0)


def test_load_image_errors(tmp_path: Path) -> None:
    with pytest.raises(ImageInputError, match="no such file"):
        load_image(tmp_path / "missing.jpg")
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"this is not an image")
    with pytest.raises(ImageInputError, match="not a readable image"):
        load_image(bad)
    trunc = tmp_path / "trunc.png"
    Image.fromarray(data.astronaut()).save(trunc)
    trunc.write_bytes(trunc.read_bytes()[:2000])
    with pytest.raises(ImageInputError):
        load_image(trunc)
    big = tmp_path / "big.png"
    Image.fromarray(np.zeros((300, 400), np.uint8)).save(big)
    with pytest.raises(ImageInputError, match="too large: 400x300"):
        load_image(big, max_pixels=100_000)
    with pytest.raises(ImageInputError, match="limit of 50,000,000 pixels"):
        check_size(10_000, 6_000)


def test_load_grey_16bit_and_palette(tmp_path: Path) -> None:
    p = tmp_path / "g.pgm"
    Image.fromarray(data.camera()).save(p)
    img = load_image(p)
    assert img.shape == (512, 512, 3) and (img[..., 0] == img[..., 1]).all()
    p16 = tmp_path / "g16.png"
    Image.fromarray(data.camera().astype(np.uint16) * 256).save(p16)
    assert load_image(p16).shape == (512, 512, 3)
    pal = tmp_path / "p.gif"
    Image.fromarray(data.astronaut()).convert("P").save(pal)
    assert load_image(pal).shape == (512, 512, 3)


def test_unsure_plate_box_on_a_face_is_merged_into_the_face() -> None:
    from client.deid.api import merge_plates_into_faces
    from client.deid.detect import FACE, PLATE, Region

    face = Region(321, 230, 38, 51, FACE, 0.84, "centerface")
    on_face = Region(308, 217, 59, 66, PLATE, 0.22, "yolov8n-plate")  # seen on a VOC scene
    sure = Region(300, 220, 60, 60, PLATE, 0.8, "yolov8n-plate")
    car = Region(10, 300, 80, 20, PLATE, 0.2, "yolov8n-plate")
    out = merge_plates_into_faces([face, on_face, car])
    assert [r.kind for r in out] == [FACE, PLATE] and out[1] == car
    grown = out[0]  # the face box now covers the whole plate box: nothing of it is left unreplaced
    assert (grown.x, grown.y, grown.x + grown.w, grown.y + grown.h) == (308, 217, 367, 283)
    assert merge_plates_into_faces([face, sure]) == [face, sure]  # a confident plate stays a plate
