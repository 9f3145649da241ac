"""dp_donor: replace a face by a real public face chosen with the exponential mechanism.

Donors: the 100 faces of scikit-image's ``data.lfw_subset()`` (ships with scikit-image, offline)
and their mirror images, 200 public 25x25 grey faces, described in the public eigenface latent
of :mod:`client.deid.latent` (the basis is fitted on the same public faces).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from .detect import Region
from .latent import FaceBasis, load_basis
from .noise import NoiseSource


@dataclass(frozen=True)
class DonorSet:
    """Public donor faces (N, s, s) standardised like ``FaceBasis.decode`` output, and their clipped latents."""

    faces: np.ndarray
    latents: np.ndarray
    source: str


@lru_cache(maxsize=1)
def donor_set() -> DonorSet:
    """The donors in the committed basis (loaded once)."""
    return build_donor_set(load_basis())


def build_donor_set(basis: FaceBasis) -> DonorSet:
    """The 100 lfw_subset faces + mirrors, standardised and encoded in ``basis``."""
    from skimage import data

    lfw = data.lfw_subset()[:100]  # the first 100 are faces, the other 100 are not
    faces = np.concatenate([lfw, lfw[:, :, ::-1]]).astype(np.float64)
    std = np.stack([basis.standardise(f).reshape(basis.size, basis.size) for f in faces])
    latents = np.stack([basis.clip(basis.encode(f)) for f in faces])
    return DonorSet(std, latents, "skimage.data.lfw_subset()[:100] + mirrors (200 public faces)")


def l2_sensitivity(basis: FaceBasis) -> float:
    """L2 diameter of the clipped latent box [-B, B]^k: 2 * B * sqrt(k)."""
    return 2.0 * basis.bound * math.sqrt(basis.k)


def select_donor(u_clipped: np.ndarray, donors: DonorSet, eps: float, noise: NoiseSource, sensitivity: float) -> int:
    """Exponential mechanism: donor d with probability proportional to exp(eps * q(d) / (2 * sensitivity)),
    q(d) = -||u - u_d||_2; sampled exactly by the Gumbel-max trick with uniforms from ``noise``."""
    if eps <= 0:
        raise ValueError("eps must be > 0")
    score = -np.linalg.norm(donors.latents - u_clipped[None, :], axis=1)
    if math.isinf(eps):
        return int(np.argmax(score))
    gumbel = -np.log(-np.log(noise.uniform(len(score))))
    return int(np.argmax(eps * score / (2.0 * sensitivity) + gumbel))


def donor_release(crop: np.ndarray, eps: float, noise: NoiseSource,
                  basis: FaceBasis | None = None) -> tuple[int, np.ndarray]:
    """(index of the released donor, its standardised size x size face) for one face crop."""
    donors = donor_set() if basis is None else build_donor_set(basis)
    basis = basis or load_basis()
    u = basis.clip(basis.encode(crop))
    idx = select_donor(u, donors, eps, noise, l2_sensitivity(basis))
    return idx, donors.faces[idx]


def dp_donor(image: np.ndarray, region: Region, eps: float, noise: NoiseSource,
             basis: FaceBasis | None = None) -> np.ndarray:
    """Replace a face by a real public donor face chosen with the exponential mechanism, Poisson-blended.

    What is released: the index of one donor among the 200 public faces (then rendered).
    Guarantee: eps-DP with respect to ANY two images that differ only inside the region's
    ellipse mask. Mechanism: the face crop is projected to the public eigenface latent and
    clipped to [-B, B]^k; each donor d gets the utility q(d) = -||u - u_d||_2, whose
    sensitivity (over any two crops, for every d) is at most the L2 diameter of the box,
    2*B*sqrt(k) = 2*2*sqrt(8) = 11.3 by default; the donor is drawn with probability
    proportional to exp(eps * q(d) / (2 * 11.3)) (McSherry-Talwar exponential mechanism,
    sampled exactly with Gumbel noise from os.urandom). Lower eps makes the draw closer to
    uniform over the donors, so the released face moves away from the original on average.
    Rendering (public contrast and tint, resize to the box) and Poisson blending use only
    the donor and pixels OUTSIDE the mask, so they are post-processing (no privacy cost).
    Not protected: the position and size of the box and everything outside the ellipse.
    """
    from .mechanisms import _blend, _crop, _render_face, face_mask_geometry

    basis = basis or load_basis()
    H, W = image.shape[:2]
    box, mask = face_mask_geometry(region, W, H)
    _, face = donor_release(_crop(image, region), eps, noise, basis)
    grey_image = bool((image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all())
    patch = _render_face(face, region, box, grey_image)
    return _blend(image, box, patch, mask)


def selection_probabilities(u_clipped: np.ndarray, donors: DonorSet, eps: float, sensitivity: float) -> np.ndarray:
    """Exact probability of each donor under :func:`select_donor` (for accounting checks and tests)."""
    logits = eps * -np.linalg.norm(donors.latents - u_clipped[None, :], axis=1) / (2.0 * sensitivity)
    w = np.exp(logits - logits.max())
    return w / w.sum()
