"""dp_donor: the shipped SFHQ donor set, exponential-mechanism selection (distribution, DP bound), rendering."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data

from client.deid.api import deidentify
from client.deid.detect import Region, face_detector, iou
from client.deid.donor import (
    DONOR_ASSET,
    DonorSet,
    donor_set,
    dp_donor,
    expected_distance,
    privacy_loss,
    render_donor,
    select_donor,
    selection_probabilities,
    sensitivity,
)
from client.deid.mechanisms import face_mask_geometry
from client.deid.noise import NoiseSource


def _toy() -> DonorSet:
    lat = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [-2.0, -2.0], [2.0, 2.0]])
    return DonorSet(np.zeros((5, 2, 2, 3), np.uint8), np.zeros((5, 4)), np.zeros((5, 5, 2)), lat, None, "toy")


def _astronaut_face() -> tuple[np.ndarray, Region]:
    img = data.astronaut()
    return img, face_detector()(img)[0]


def test_donor_set_loads_colour_faces_with_geometry_and_provenance() -> None:
    d = donor_set()
    n = len(d.faces)
    assert n >= 200 and d.faces.dtype == np.uint8 and d.faces.shape[1:] == (100, 76, 3)
    assert d.boxes.shape == (n, 4) and d.landmarks.shape == (n, 5, 2) and d.latents.shape == (n, d.latent.k)
    # colour, not grey: the channels differ on most donors
    assert np.mean([np.abs(f[..., 0].astype(int) - f[..., 2]).mean() > 3 for f in d.faces]) > 0.8
    assert np.all((d.boxes[:, :2] > 0) & (d.boxes[:, :2] + d.boxes[:, 2:] < 1))  # the box lies inside the crop
    t = d.template  # eyes above the nose above the mouth, left before right
    assert t[0, 0] < t[1, 0] and t[3, 0] < t[4, 0] and t[0, 1] < t[2, 1] < t[3, 1]
    assert np.abs(d.latents).max() <= d.latent.bound
    assert "SelfishGene/SFHQ-dataset" in d.source and "MIT" in d.licence
    assert DONOR_ASSET.stat().st_size < 600_000  # small enough to ship in git


def test_gumbel_sampler_follows_the_exponential_mechanism() -> None:
    donors, u = _toy(), np.array([0.5, 0.0])
    noise = NoiseSource(0)
    n = 20000
    counts = np.bincount([select_donor(u, donors, 2.0, noise, 1.0) for _ in range(n)], minlength=5)
    expected = selection_probabilities(u, donors, 2.0, 1.0)
    assert np.abs(counts / n - expected).max() < 0.015, (counts / n, expected)
    nearest = int(np.argmin(np.linalg.norm(donors.latents - u, axis=1)))
    assert select_donor(u, donors, float("inf"), noise, 1.0) == nearest
    with pytest.raises(ValueError):
        select_donor(u, donors, 0.0, noise, 1.0)


def test_privacy_loss_of_the_selection_is_at_most_eps() -> None:
    donors = donor_set()
    assert sensitivity(donors) == pytest.approx(2.5)
    b, k = donors.latent.bound, donors.latent.k
    rng = np.random.default_rng(0)
    for eps in (0.5, 1.0, 8.0):
        worst = 0.0
        for _ in range(200):  # pairs of faces anywhere in the clipped box, corners included
            u, v = (rng.choice([-b, b], k) * rng.uniform(0.5, 1, k) for _ in range(2))
            worst = max(worst, privacy_loss(donors, eps, u, v))
        assert worst <= eps + 1e-9, (eps, worst)
        # a face on a donor vs a face far from every donor: the accounting is not loose by much
        far = -np.sign(donors.latents[0] + 1e-9) * b
        assert privacy_loss(donors, eps, donors.latents[0], far) > 0.3 * eps


def test_lower_eps_releases_faces_further_from_the_original() -> None:
    img, r = _astronaut_face()
    donors = donor_set()
    u = donors.latent.encode(img, r)
    values = [expected_distance(u, donors, e) for e in (0.5, 1, 2, 4, 8, 64)]
    assert all(a > b for a, b in zip(values, values[1:])), values  # expected distance falls as eps grows


def test_dp_donor_changes_the_ellipse_and_leaves_the_rest_alone() -> None:
    img, r = _astronaut_face()
    out = dp_donor(img, r, 1.0, NoiseSource(3))
    box, mask = face_mask_geometry(r, img.shape[1], img.shape[0])
    inside = np.zeros(img.shape[:2], bool)
    inside[box.y : box.y + box.h, box.x : box.x + box.w] = mask > 0
    assert (np.abs(out[inside].astype(int) - img[inside]).sum(axis=1) > 30).mean() > 0.5  # a different face
    assert np.array_equal(out, dp_donor(img, r, 1.0, NoiseSource(3)))
    changed = (out != img).any(axis=2)
    far = np.ones(img.shape[:2], bool)
    pad = int(round(0.12 * max(r.w, r.h))) + 2
    far[max(0, box.y - pad) : box.y + box.h + pad, max(0, box.x - pad) : box.x + box.w + pad] = False
    assert not (changed & far).any()  # nothing changes beyond the feather band
    assert any(iou(d, r) >= 0.3 for d in face_detector()(out))  # the released face is still found as a face


def test_rendering_never_reads_the_pixels_inside_the_ellipse() -> None:
    img, r = _astronaut_face()
    box, mask = face_mask_geometry(r, img.shape[1], img.shape[0])
    inside = np.zeros(img.shape[:2], bool)
    inside[box.y : box.y + box.h, box.x : box.x + box.w] = mask > 0
    other = img.copy()
    other[inside] = np.random.default_rng(0).integers(0, 256, (int(inside.sum()), 3), dtype=np.uint8)
    latent = donor_set().latent
    assert not np.allclose(latent.encode(img, r), latent.encode(other, r))  # the selection sees the face...
    a = render_donor(img, r, 7, grain=NoiseSource(1))
    b = render_donor(other, r, 7, grain=NoiseSource(1))
    assert np.array_equal(a[inside], b[inside])  # ...the rendering of a given donor does not


def test_outputs_differ_across_eps() -> None:
    img, r = _astronaut_face()
    noise = NoiseSource(5)
    outs = [deidentify(img, e, "dp_donor", boxes=[r], noise=noise).image for e in (0.5, 1, 2, 4, 8)]
    for i in range(len(outs)):
        for j in range(i + 1, len(outs)):
            assert not np.array_equal(outs[i], outs[j])


def test_grey_images_get_grey_faces() -> None:
    img, r = _astronaut_face()
    grey = np.repeat(img.mean(axis=2, keepdims=True).astype(np.uint8), 3, axis=2)
    out = dp_donor(grey, r, 1.0, NoiseSource(2))
    assert (out[..., 0] == out[..., 1]).all() and (out[..., 1] == out[..., 2]).all()
