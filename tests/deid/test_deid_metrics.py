"""Metrics agree with reference implementations (scikit-image SSIM, imagehash dHash) and by hand."""

from __future__ import annotations

from pathlib import Path

import imagehash
import numpy as np
import pytest
from PIL import Image
from skimage import data
from skimage.metrics import structural_similarity

from client.deid import metrics as Mx
from client.deid.detect import Region


def _pairs():
    rng = np.random.default_rng(0)
    a = data.astronaut()
    noisy = np.clip(a.astype(int) + rng.integers(-40, 41, a.shape), 0, 255).astype(np.uint8)
    cam = data.camera()
    yield a, noisy
    yield a, np.ascontiguousarray(a[:, ::-1])
    yield cam, np.ascontiguousarray(np.flipud(cam))
    yield data.coffee(), np.clip(data.coffee().astype(int) + 25, 0, 255).astype(np.uint8)


@pytest.mark.parametrize("i", range(4))
def test_ssim_matches_skimage(i: int) -> None:
    a, b = list(_pairs())[i]
    ref = structural_similarity(a, b, data_range=255, channel_axis=2 if a.ndim == 3 else None)
    assert Mx.ssim(a, b) == pytest.approx(ref, abs=1e-9)
    assert Mx.ssim(a, a) == pytest.approx(1.0)


@pytest.mark.parametrize("i", range(4))
def test_dhash_matches_imagehash(i: int) -> None:
    a, b = list(_pairs())[i]
    ha, hb = imagehash.dhash(Image.fromarray(a)), imagehash.dhash(Image.fromarray(b))
    assert f"{Mx.dhash(a):016x}" == str(ha)
    assert Mx.dhash_distance(a, b) == ha - hb


def test_l0_l2_lp_by_hand() -> None:
    a = np.zeros((4, 5, 3), np.uint8)
    b = a.copy()
    b[0, 0] = (3, 4, 0)
    b[2, 3, 1] = 12
    assert Mx.l0(a, b) == 2
    assert Mx.l2(a, b) == pytest.approx(13.0)
    r = Region(0, 0, 2, 1)  # 2 pixels x 3 channels = 6 values: |3|, |4|, 0, 0, 0, 0
    assert Mx.avg_lp(a, b, r, p=1) == pytest.approx(7 / 6)
    assert Mx.avg_lp(a, b, r, p=2) == pytest.approx(np.sqrt(25 / 6))
    assert Mx.avg_lp(a, b, None, p=np.inf) == 12


def test_edit_distance() -> None:
    assert Mx.edit_distance("KC4Z3X", "KC4Z3X") == 0
    assert Mx.edit_distance("kitten", "sitting") == 3
    assert Mx.edit_distance("", "ABC") == 3
    assert Mx.edit_distance("AB12", "B12") == 1


def test_reid_rates_on_toy_embeddings() -> None:
    gallery = np.array([[0.0, 0], [1, 0], [0, 1], [1, 1]])
    ids, keys = ["a", "a", "b", "b"], ["a1", "a2", "b1", "b2"]
    probes = np.array([[0.1, 0.0], [0.9, 1.0]])  # de-identified a1 (still near a) and b1 (near b2)
    rank1, self_share = Mx.reid_rates(probes, ["a", "b"], ["a1", "b1"], gallery, ids, keys, gallery[[0, 2]])
    # a1's own image is excluded: nearest is a2 (dist .9) vs b1 (dist 1.005) -> correct; b1 -> b2 correct
    assert rank1 == 1.0
    assert self_share == 0.5  # |(0.1,0)-(0,0)| <= 0.6, |(0.9,1)-(0,1)| > 0.6


def test_dlib_embeddings_separate_identities(deid_data: Path) -> None:
    if not Mx.dlib_available():
        pytest.skip("dlib-bin / face-recognition-models not installed (pip install '.[reid]')")
    from client.deid.detect import face_detector
    from client.deid.image_io import load_image

    emb, det = Mx.face_embedder(), face_detector()

    def embed(rel: str) -> np.ndarray:
        img = load_image(deid_data / "faces" / rel)
        return emb(img, max(det(img), key=lambda r: r.w * r.h))

    obama = sorted((deid_data / "faces" / "fr_obama").iterdir())
    biden = sorted((deid_data / "faces" / "fr_biden").iterdir())
    o1, o2 = embed(f"fr_obama/{obama[0].name}"), embed(f"fr_obama/{obama[1].name}")
    b1 = embed(f"fr_biden/{biden[0].name}")
    assert np.linalg.norm(o1 - o2) <= Mx.SAME_PERSON < np.linalg.norm(o1 - b1)
