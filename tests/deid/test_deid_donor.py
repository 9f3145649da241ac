"""dp_donor: exponential-mechanism selection of a public donor face (distribution, DP bound, rendering)."""

from __future__ import annotations

import numpy as np
import pytest
from skimage import data

from client.deid.detect import face_detector
from client.deid.donor import (
    DonorSet,
    donor_set,
    dp_donor,
    l2_sensitivity,
    render_donor,
    select_donor,
    selection_probabilities,
)
from client.deid.latent import load_basis
from client.deid.mechanisms import face_mask_geometry
from client.deid.noise import NoiseSource


def _toy() -> DonorSet:
    lat = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 2.0], [-2.0, -2.0], [2.0, 2.0]])
    return DonorSet(np.zeros((5, 2, 2)), lat, "toy")


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
    basis, donors = load_basis(), donor_set()
    sens = l2_sensitivity(basis)
    rng = np.random.default_rng(0)
    for eps in (0.5, 1.0, 8.0):
        worst = 0.0
        for _ in range(200):  # pairs of crops anywhere in the clipped box, corners included
            u, v = (rng.choice([-basis.bound, basis.bound], basis.k) * rng.uniform(0.5, 1, basis.k) for _ in range(2))
            p, q = selection_probabilities(u, donors, eps, sens), selection_probabilities(v, donors, eps, sens)
            worst = max(worst, float(np.abs(np.log(p) - np.log(q)).max()))
        assert worst <= eps + 1e-9, (eps, worst)


def test_lower_eps_releases_faces_further_from_the_original() -> None:
    basis, donors = load_basis(), donor_set()
    img = data.astronaut()
    r = face_detector()(img)[0]
    u = basis.clip(basis.encode(img[r.y : r.y + r.h, r.x : r.x + r.w]))
    dist = {eps: float(np.mean([selection_probabilities(u, donors, eps, l2_sensitivity(basis))
                                @ np.linalg.norm(donors.latents - u, axis=1)])) for eps in (0.5, 1, 2, 4, 8, 64)}
    values = [dist[e] for e in (0.5, 1, 2, 4, 8, 64)]
    assert all(a > b for a, b in zip(values, values[1:])), dist  # expected distance falls as eps grows


def test_dp_donor_inside_the_ellipse_depends_only_on_the_donor_and_outside_pixels() -> None:
    img = data.astronaut()
    r = face_detector()(img)[0]
    out = dp_donor(img, r, 1.0, NoiseSource(3))
    box, mask = face_mask_geometry(r, img.shape[1], img.shape[0])
    inside = np.zeros(img.shape[:2], bool)
    inside[box.y : box.y + box.h, box.x : box.x + box.w] = mask > 0
    assert (out[inside] != img[inside]).any()
    assert np.array_equal(out, dp_donor(img, r, 1.0, NoiseSource(3)))
    # Other content inside the ellipse: a different latent, but a given donor renders identically.
    other = img.copy()
    other[inside] = np.random.default_rng(0).integers(0, 256, (int(inside.sum()), 3), dtype=np.uint8)
    u, v = (load_basis().clip(load_basis().encode(x[r.y : r.y + r.h, r.x : r.x + r.w])) for x in (img, other))
    assert not np.allclose(u, v)
    same_donor = render_donor(other, r, donor_set().faces[0]), render_donor(img, r, donor_set().faces[0])
    assert np.array_equal(same_donor[0], same_donor[1])  # rendering never reads pixels inside the ellipse
    changed = (out != img).any(axis=2)
    far = np.ones(img.shape[:2], bool)
    pad = int(round(0.12 * max(r.w, r.h))) + 2
    far[max(0, box.y - pad) : box.y + box.h + pad, max(0, box.x - pad) : box.x + box.w + pad] = False
    assert not (changed & far).any()  # nothing changes beyond the feather band
