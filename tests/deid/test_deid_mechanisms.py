"""DP mechanisms: noise scales match their formulas, eps -> inf gives the noiseless output."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats
from skimage import data

from client.deid import mechanisms as M
from client.deid.detect import Region
from client.deid.latent import fit_default_basis, load_basis
from client.deid.noise import NoiseSource


def test_pixelize_noise_scale_matches_formula_square_cells() -> None:
    """Full b x b cells: Laplace scale 255*m*C/(b^2*eps) (the paper's formula times C channels)."""
    b, m, eps = 4, 2, 20.0
    crop = np.full((64, 64, 3), 128, np.uint8)
    scale = 255.0 * m * 3 / (b * b * eps)  # 4.78
    assert np.allclose(M.pixelize_noise_scales(64, 64, b, m, eps), scale)
    noise = NoiseSource(1234)
    devs = np.concatenate([
        (M.dp_pixelize_crop(crop, eps, noise, b, m)[::b, ::b].astype(np.float64) - 128).ravel() for _ in range(40)
    ])
    # E|X| = scale for Laplace; rounding to integers adds < 2% here
    assert abs(np.abs(devs).mean() / scale - 1) < 0.03
    assert abs(devs.mean()) < 0.1
    # Laplace vs Gaussian of the same variance: kurtosis 6 (excess 3)
    assert 2.5 < stats.kurtosis(devs) < 3.6


def test_pixelize_non_square_region_edge_cells_get_more_noise() -> None:
    """A 30x50 region with b=8: edge cells have fewer pixels and get scale 255*m*C/(n*eps)."""
    b, m, eps = 8, 1, 40.0
    scales = M.pixelize_noise_scales(30, 50, b, m, eps)
    assert scales.shape == (4, 7)  # ceil(30/8) x ceil(50/8)
    assert scales[0, 0] == pytest.approx(255 * 3 / (64 * eps))
    assert scales[-1, -1] == pytest.approx(255 * 3 / (6 * 2 * eps))  # last cell is 6 x 2 pixels
    crop = np.full((30, 50, 3), 128, np.uint8)
    noise = NoiseSource(7)
    edge, full = [], []
    for _ in range(3000):
        out = M.dp_pixelize_crop(crop, eps, noise, b, m).astype(np.float64) - 128
        full.append(out[0, 0]), edge.append(out[-1, -1])
    full, edge = np.abs(np.array(full)).mean(), np.abs(np.array(edge)).mean()
    assert full == pytest.approx(scales[0, 0], rel=0.08, abs=0.1)
    assert edge == pytest.approx(scales[-1, -1], rel=0.05)


def test_pixelize_eps_inf_is_mosaic() -> None:
    img = data.astronaut()
    r = Region(180, 60, 90, 117)
    assert np.array_equal(M.dp_pixelize(img, r, math.inf, NoiseSource(0)), M.mosaic(img, r))


def test_latent_noise_scale_is_l1_sensitivity_over_eps() -> None:
    """Laplace scale on each clipped coordinate is 2*B*k/eps (KS test against Laplace)."""
    basis = load_basis()
    assert basis.l1_sensitivity == pytest.approx(2 * basis.bound * basis.k)
    eps = 2.0
    u = np.zeros(basis.k)
    noise = NoiseSource(99)
    draws = np.concatenate([M.latent_laplace(u, eps, noise, basis) for _ in range(2000)])
    scale = basis.l1_sensitivity / eps
    assert np.abs(draws).mean() == pytest.approx(scale, rel=0.03)
    assert stats.kstest(draws / scale, "laplace").pvalue > 0.01


def test_latent_eps_inf_reproduces_clipped_projection() -> None:
    basis = load_basis()
    face = data.astronaut()[60:180, 180:270]
    released, decoded = M.latent_release(face, math.inf, NoiseSource(0), basis)
    u = np.clip(basis.encode(face), -basis.bound, basis.bound)
    assert np.array_equal(released, u)
    assert np.allclose(decoded, basis.decode(u))
    # finite eps: noise scale 32/eps dominates, the posterior mean shrinks towards the mean face
    small, _ = M.latent_release(face, 0.5, NoiseSource(0), basis)
    assert np.all(np.abs(small) <= basis.bound)


def test_posterior_mean_is_identity_for_tiny_noise_and_shrinks_for_large() -> None:
    y = np.array([-1.5, 0.3, 1.2])
    assert np.allclose(M.posterior_mean(y, 1e-4, 2.0), y, atol=1e-3)
    assert np.all(np.abs(M.posterior_mean(y * 20, 64.0, 2.0)) < 0.3)


def test_committed_basis_matches_fit_script() -> None:
    """The committed asset is what scripts/fit_face_basis.py produces (lfw_subset, offline)."""
    fitted, stored = fit_default_basis(), load_basis()
    assert stored.k == fitted.k and stored.size == 25
    # eigenvectors are defined up to sign
    dots = np.abs(np.sum(fitted.components * stored.components, axis=1))
    assert np.allclose(dots, 1.0, atol=1e-4)
    assert "lfw_subset" in stored.source


def test_dp_latent_changes_only_the_ellipse() -> None:
    img = data.astronaut()
    r = Region(182, 58, 88, 120)
    out = M.dp_latent(img, r, 1.0, NoiseSource(3))
    box, mask = M.face_mask_geometry(r, img.shape[1], img.shape[0])
    inside = np.zeros(img.shape[:2], bool)
    inside[box.y : box.y + box.h, box.x : box.x + box.w] = mask > 0
    changed = (out != img).any(axis=2)
    assert changed.sum() > 0.5 * inside.sum()
    assert not changed[~inside].any()
    # deterministic for a fixed seed (the Poisson solve has no hidden state)
    assert np.array_equal(out, M.dp_latent(img, r, 1.0, NoiseSource(3)))


def test_dp_latent_output_does_not_depend_on_the_face_at_fixed_noise_when_eps_tiny() -> None:
    """At tiny eps the release is (almost) the same whatever face is inside the mask."""
    img = data.astronaut()
    r = Region(182, 58, 88, 120)
    other = img.copy()
    other[r.y : r.y + r.h, r.x : r.x + r.w] = np.flipud(img[r.y : r.y + r.h, r.x : r.x + r.w])
    box, mask = M.face_mask_geometry(r, img.shape[1], img.shape[0])
    inside = np.zeros(img.shape[:2], bool)
    inside[box.y : box.y + box.h, box.x : box.x + box.w] = mask > 0
    other[~inside] = img[~inside]  # the two images differ only inside the private ellipse
    assert (other != img).any()
    a = M.dp_latent(img, r, 1e-3, NoiseSource(5)).astype(int)
    b = M.dp_latent(other, r, 1e-3, NoiseSource(5)).astype(int)
    assert np.abs(a - b).max() <= 2


def test_blur_and_mosaic_change_only_the_box() -> None:
    img = data.astronaut()
    r = Region(100, 120, 50, 31)
    for out in (M.gaussian_blur(img, r), M.mosaic(img, r)):
        changed = (out != img).any(axis=2)
        assert changed[r.y : r.y + r.h, r.x : r.x + r.w].any()
        changed[r.y : r.y + r.h, r.x : r.x + r.w] = False
        assert not changed.any()


def test_plate_codes_and_wrapping() -> None:
    assert M.N_CODES == 34
    assert list(M.encode_plate("09AZ")) == [0, 9, 10, 33]
    assert M.decode_plate(M.encode_plate("AB12CD")) == "AB12CD"
    assert M.decode_plate(M.encode_plate("IO1")) == "101"  # I -> 1, O -> 0
    noise = NoiseSource(11)
    codes = np.full(20000, 33)
    out = M.noisy_codes(codes, 0.2, M.N_CODES, noise)
    assert out.min() >= 0 and out.max() <= 33
    assert (out < 10).mean() > 0.2  # wrapped past 33 back to 0..


def test_plate_noise_probability_matches_laplace() -> None:
    """P(code unchanged) = P(|Lap(1/eps)| < 0.5) (+ negligible wrap-around mass)."""
    eps_each = 1.0
    noise = NoiseSource(2024)
    out = M.noisy_codes(np.full(40000, 17), eps_each, M.N_CODES, noise)
    assert (out == 17).mean() == pytest.approx(1 - math.exp(-0.5 * eps_each), abs=0.01)


def test_dp_plate_text_and_budget() -> None:
    img = np.full((200, 300, 3), 200, np.uint8)
    r = Region(50, 80, 140, 40, "plate")
    out, text, spent = M.dp_plate(img, r, 1.0, NoiseSource(1), text=None, n_chars=7)
    assert len(text) == 7 and set(text) <= set(M.ALPHABET) and spent == 0.0
    assert (out != img).any() and not (out[:80] != img[:80]).any()
    _, same, spent = M.dp_plate(img, r, math.inf, NoiseSource(1), text="AB123CD")
    assert same == "AB123CD" and spent == math.inf
    _, noisy, spent = M.dp_plate(img, r, 1.0, NoiseSource(1), text="AB123CD")
    assert len(noisy) == 7 and spent == 1.0
