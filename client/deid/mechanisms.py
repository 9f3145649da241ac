"""De-identification mechanisms: dp_pixelize, dp_latent, dp_plate (DP) and blur/mosaic baselines.

Conventions: ``image`` is HxWx3 uint8 RGB and is never modified in place; every function
returns a new image in which only the pixels of the private region differ. Region geometry
(position and size of the box) is treated as public: it is not protected by any mechanism.
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from .blend import poisson_blend
from .detect import Region
from .latent import FaceBasis, load_basis
from .noise import NoiseSource

# --------------------------------------------------------------------------- helpers


def default_cell(region: Region) -> int:
    """Cell size b shared by dp_pixelize, mosaic and blur: about 8 cells across the short side."""
    return max(4, math.ceil(min(region.w, region.h) / 8))


def _cells(length: int, b: int) -> np.ndarray:
    """Start offsets of b-sized cells covering ``length`` (the last cell may be shorter)."""
    return np.arange(0, length, b)


def cell_means(crop: np.ndarray, b: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean of every b x b cell (edge cells may be smaller) and each cell's pixel count."""
    rs, cs = _cells(crop.shape[0], b), _cells(crop.shape[1], b)
    sums = np.add.reduceat(np.add.reduceat(crop.astype(np.float64), rs, axis=0), cs, axis=1)
    rh = np.diff(np.append(rs, crop.shape[0]))
    cw = np.diff(np.append(cs, crop.shape[1]))
    counts = np.outer(rh, cw).astype(np.float64)
    return sums / counts[:, :, None], counts


def _expand_cells(values: np.ndarray, shape: tuple[int, int], b: int) -> np.ndarray:
    """Paint each cell value over its b x b block (cropped to ``shape``)."""
    return np.repeat(np.repeat(values, b, axis=0), b, axis=1)[: shape[0], : shape[1]]


def _paste(image: np.ndarray, region: Region, patch: np.ndarray) -> np.ndarray:
    """Copy of ``image`` with ``patch`` written over ``region``."""
    out = image.copy()
    out[region.y : region.y + region.h, region.x : region.x + region.w] = patch
    return out


def _crop(image: np.ndarray, region: Region) -> np.ndarray:
    return image[region.y : region.y + region.h, region.x : region.x + region.w]


# --------------------------------------------------------------------------- DP-Pix


def pixelize_noise_scales(h: int, w: int, b: int, m: int, eps: float, channels: int = 3) -> np.ndarray:
    """Laplace scale of each cell: 255 * m * C / (n_cell * eps); n_cell = b^2 for full cells."""
    _, counts = cell_means(np.zeros((h, w, 1)), b)
    return 255.0 * m * channels / (counts * eps)


def dp_pixelize_crop(crop: np.ndarray, eps: float, noise: NoiseSource, b: int, m: int = 16) -> np.ndarray:
    """DP-Pix on one crop (see :func:`dp_pixelize`)."""
    if eps <= 0:
        raise ValueError("eps must be > 0")
    means, _ = cell_means(crop, b)
    if math.isinf(eps):
        noisy = means
    else:
        scales = pixelize_noise_scales(crop.shape[0], crop.shape[1], b, m, eps, crop.shape[2])
        noisy = means + noise.laplace(scales[:, :, None], means.shape)
    cells = np.clip(np.rint(noisy), 0, 255).astype(np.uint8)
    return _expand_cells(cells, crop.shape[:2], b)


def dp_pixelize(image: np.ndarray, region: Region, eps: float, noise: NoiseSource,
                b: int | None = None, m: int = 16) -> np.ndarray:
    """DP-Pix (Fan, DBSec 2018): b x b cell means + Laplace noise, eps-DP for m-pixel changes.

    Guarantee: eps-DP with respect to any two images that differ in at most ``m`` pixels
    inside the region (any values, all channels). It hides small edits, NOT the identity
    of a whole face (that would need m = region area).
    Sensitivity: one pixel moves its cell's mean by at most 255/n_cell per channel, so
    with k_c changed pixels in cell c the L1 change is <= sum_c k_c * C * 255 / n_c.
    Cell c gets Laplace noise of scale 255*m*C/(n_c*eps); the privacy loss is then
    sum_c k_c*eps/m <= eps. For full cells (n_c = b^2) and one channel this is the
    paper's 255*m/(b^2*eps). Non-square regions: the grid covers the box; edge cells
    are smaller and get proportionally more noise (the per-cell n_c above), so no pixel
    is left out and no cell is under-noised.
    """
    b = b or default_cell(region)
    return _paste(image, region, dp_pixelize_crop(_crop(image, region), eps, noise, b, m))


# --------------------------------------------------------------------------- baselines


def mosaic(image: np.ndarray, region: Region, b: int | None = None) -> np.ndarray:
    """Mosaic baseline: b x b cell means, no noise. No privacy guarantee (eps = infinity)."""
    b = b or default_cell(region)
    crop = _crop(image, region)
    means, _ = cell_means(crop, b)
    return _paste(image, region, _expand_cells(np.clip(np.rint(means), 0, 255).astype(np.uint8), crop.shape[:2], b))


def gaussian_blur(image: np.ndarray, region: Region, b: int | None = None) -> np.ndarray:
    """Gaussian-blur baseline at the mosaic's strength (sigma = b/2). No privacy guarantee."""
    b = b or default_cell(region)
    sigma = b / 2.0
    pad = int(math.ceil(3 * sigma))
    H, W = image.shape[:2]
    x0, y0 = max(0, region.x - pad), max(0, region.y - pad)
    x1, y1 = min(W, region.x + region.w + pad), min(H, region.y + region.h + pad)
    blurred = cv2.GaussianBlur(image[y0:y1, x0:x1], (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
    patch = blurred[region.y - y0 : region.y - y0 + region.h, region.x - x0 : region.x - x0 + region.w]
    return _paste(image, region, patch)


# --------------------------------------------------------------------------- DP latent


def latent_laplace(u_clipped: np.ndarray, eps: float, noise: NoiseSource, basis: FaceBasis) -> np.ndarray:
    """Add Laplace(2*B*k/eps) to each clipped latent coordinate (identity when eps is infinite)."""
    if eps <= 0:
        raise ValueError("eps must be > 0")
    if math.isinf(eps):
        return u_clipped.copy()
    return u_clipped + noise.laplace(basis.l1_sensitivity / eps, u_clipped.shape)


def posterior_mean(y: np.ndarray, scale: float, bound: float, grid: int = 401) -> np.ndarray:
    """E[u | u + Laplace(scale) = y] under a public N(0,1) prior truncated to [-B, B] (post-processing)."""
    t = np.linspace(-bound, bound, grid)
    logw = -0.5 * t[None, :] ** 2 - np.abs(y[:, None] - t[None, :]) / scale
    w = np.exp(logw - logw.max(axis=1, keepdims=True))
    return (w * t).sum(axis=1) / w.sum(axis=1)


def latent_release(crop: np.ndarray, eps: float, noise: NoiseSource,
                   basis: FaceBasis | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Return (released latent, decoded standardised face) for one face crop.

    Steps: project -> clip to [-B, B]^k -> add Laplace(2Bk/eps) -> post-process with the
    public prior's posterior mean (no privacy cost) -> decode. With eps = inf the output
    is exactly the clipped projection.
    """
    basis = basis or load_basis()
    u = basis.clip(basis.encode(crop))
    noisy = latent_laplace(u, eps, noise, basis)
    released = noisy if math.isinf(eps) else posterior_mean(noisy, basis.l1_sensitivity / eps, basis.bound)
    return released, basis.decode(released)


#: Public rendering constants for decoded faces (not derived from the protected image).
FACE_CONTRAST = 45.0
SKIN_TINT = np.array([1.0, 0.86, 0.76])
MASK_SCALE = (0.6, 0.62)  # ellipse semi-axes as fractions of the box width / height


def face_mask_geometry(region: Region, width: int, height: int) -> tuple[Region, np.ndarray]:
    """The ellipse mask (private area of a face) and its bounding box, clipped to the image."""
    ax, ay = MASK_SCALE[0] * region.w, MASK_SCALE[1] * region.h
    cx, cy = region.x + region.w / 2.0, region.y + region.h / 2.0
    x0, y0 = max(0, int(math.floor(cx - ax))), max(0, int(math.floor(cy - ay)))
    x1, y1 = min(width, int(math.ceil(cx + ax))), min(height, int(math.ceil(cy + ay)))
    box = Region(x0, y0, x1 - x0, y1 - y0, region.kind, region.score, region.source)
    mask = np.zeros((box.h, box.w), np.uint8)
    cv2.ellipse(mask, (int(round(cx - x0)), int(round(cy - y0))), (max(1, int(ax) - 1), max(1, int(ay) - 1)),
                0, 0, 360, 255, -1)
    return box, mask


def _render_face(face: np.ndarray, region: Region, box: Region, grey_image: bool) -> np.ndarray:
    """Standardised face -> RGB uint8 patch over ``box`` with the face filling ``region``."""
    face_px = cv2.resize((128.0 + FACE_CONTRAST * face).astype(np.float32), (region.w, region.h),
                         interpolation=cv2.INTER_CUBIC)
    top, left = region.y - box.y, region.x - box.x
    bottom, right = box.h - top - region.h, box.w - left - region.w
    # The face box may stick out of the (clipped) mask box: crop, then pad by replication.
    face_px = face_px[max(0, -top) : region.h - max(0, -bottom), max(0, -left) : region.w - max(0, -right)]
    patch = cv2.copyMakeBorder(face_px, max(0, top), max(0, bottom), max(0, left), max(0, right), cv2.BORDER_REPLICATE)
    tint = np.ones(3) if grey_image else SKIN_TINT
    return np.clip(patch[:, :, None] * tint[None, None, :], 0, 255).astype(np.uint8)


def _blend(image: np.ndarray, box: Region, patch: np.ndarray, mask: np.ndarray) -> np.ndarray:
    """Poisson-blend ``patch`` into ``image`` over ``mask`` (see blend.py); only masked pixels change."""
    out = image.copy()
    # one extra pixel of context around the box supplies the Dirichlet boundary
    H, W = image.shape[:2]
    x0, y0 = max(0, box.x - 1), max(0, box.y - 1)
    x1, y1 = min(W, box.x + box.w + 1), min(H, box.y + box.h + 1)
    dst = image[y0:y1, x0:x1]
    src = dst.copy()
    src[box.y - y0 : box.y - y0 + box.h, box.x - x0 : box.x - x0 + box.w] = patch
    m = np.zeros(dst.shape[:2], np.uint8)
    m[box.y - y0 : box.y - y0 + box.h, box.x - x0 : box.x - x0 + box.w] = mask
    out[y0:y1, x0:x1] = poisson_blend(dst, src, m)
    return out


def dp_latent(image: np.ndarray, region: Region, eps: float, noise: NoiseSource,
              basis: FaceBasis | None = None) -> np.ndarray:
    """Replace a face with a decoded noisy eigenface, blended by Poisson (seamless) cloning over an ellipse.

    Guarantee: eps-DP with respect to ANY two images that differ only inside the
    region's ellipse mask (any face can be swapped for any other face): the output
    depends on the masked pixels only through the noisy latent vector.
    Sensitivity: the projection is clipped to the public box [-B, B]^k, whose L1
    diameter is 2*B*k (B and k from the basis; 2*2*8 = 32 by default), so Laplace noise
    of scale 2Bk/eps per coordinate gives eps-DP. Posterior-mean shrinkage under a
    public prior, decoding, public contrast/tint and Poisson blending are
    post-processing: they use only the noisy vector, public constants and pixels
    OUTSIDE the mask (the Poisson boundary, see blend.py), so they cost no privacy. Not protected: the
    position and size of the box, and everything outside the ellipse.
    """
    basis = basis or load_basis()
    H, W = image.shape[:2]
    box, mask = face_mask_geometry(region, W, H)
    _, face = latent_release(_crop(image, region), eps, noise, basis)
    grey_image = bool((image[..., 0] == image[..., 1]).all() and (image[..., 1] == image[..., 2]).all())
    patch = _render_face(face, region, box, grey_image)
    return _blend(image, box, patch, mask)


# --------------------------------------------------------------------------- DP plate

DIGITS = "0123456789"
LETTERS = "ABCDEFGHJKLMNPQRSTUVWXYZ"  # 24 letters (no I, O): codes 10..33
ALPHABET = DIGITS + LETTERS
N_CODES = len(ALPHABET)  # 34
N_REGION_CODES = 31  # region codes 00..30, ordered so that neighbouring regions have neighbouring codes


def encode_plate(text: str) -> np.ndarray:
    """Plate text -> two-digit codes (digits 00-09, letters 10-33; I->1, O->0; others dropped)."""
    t = text.upper().replace("I", "1").replace("O", "0")
    return np.array([ALPHABET.index(c) for c in t if c in ALPHABET], dtype=np.int64)


def decode_plate(codes: np.ndarray) -> str:
    """Two-digit codes -> plate text."""
    return "".join(ALPHABET[int(c) % N_CODES] for c in codes)


def noisy_codes(codes: np.ndarray, eps_each: float, modulus: int, noise: NoiseSource) -> np.ndarray:
    """codes + Laplace(1/eps_each), rounded and wrapped cyclically into [0, modulus)."""
    if math.isinf(eps_each):
        return codes % modulus
    return np.rint(codes + noise.laplace(1.0 / eps_each, codes.shape)).astype(np.int64) % modulus


def plate_release(eps: float, noise: NoiseSource, text: str | None = None, n_chars: int = 7,
                  region_code: int | None = None) -> tuple[str, float, int | None]:
    """Released plate text, the eps actually spent, and the released region code (see dp_plate)."""
    if text is None:
        codes = noise.integers(N_CODES, n_chars)
        return decode_plate(codes), 0.0, (None if region_code is None else int(noise.integers(N_REGION_CODES, 1)[0]))
    codes = encode_plate(text)
    n_items = len(codes) + (region_code is not None)
    eps_each = eps / max(1, n_items)
    released = decode_plate(noisy_codes(codes, eps_each, N_CODES, noise))
    reg = None
    if region_code is not None:
        reg = int(noisy_codes(np.array([region_code]), eps_each, N_REGION_CODES, noise)[0])
    return released, float(eps), reg


def render_plate(image: np.ndarray, region: Region, text: str) -> np.ndarray:
    """Draw a synthetic plate with ``text`` over ``region`` in the plate's own median colour."""
    crop = _crop(image, region)
    bg = np.median(crop.reshape(-1, 3), axis=0)
    lum = 0.299 * bg[0] + 0.587 * bg[1] + 0.114 * bg[2]
    fg = (20, 20, 20) if lum > 110 else (235, 235, 235)
    patch = np.empty_like(crop)
    patch[:] = bg.astype(np.uint8)
    h, w = crop.shape[:2]
    cv2.rectangle(patch, (0, 0), (w - 1, h - 1), fg, max(1, h // 20))
    font, thick = cv2.FONT_HERSHEY_SIMPLEX, max(1, h // 12)
    (tw, th), _ = cv2.getTextSize(text, font, 1.0, thick)
    scale = min(0.86 * w / max(tw, 1), 0.6 * h / max(th, 1))
    (tw, th), _ = cv2.getTextSize(text, font, scale, thick)
    cv2.putText(patch, text, ((w - tw) // 2, (h + th) // 2), font, scale, fg, thick, cv2.LINE_AA)
    patch = cv2.GaussianBlur(patch, (3, 3), 0) if min(h, w) > 12 else patch
    return _paste(image, region, patch)


def dp_plate(image: np.ndarray, region: Region, eps: float, noise: NoiseSource, text: str | None = None,
             n_chars: int = 7, region_code: int | None = None) -> tuple[np.ndarray, str, float]:
    """Replace a plate by a synthetic one with noisy characters; returns (image, released text, eps spent).

    With ``text`` (from an OCR engine; none ships offline, so the product path passes
    None): each character is coded 00-33 (region 00-30), the plate's eps is split evenly
    over its n codes (sequential composition), and each code gets Laplace noise of scale
    n/eps with sensitivity 1, is rounded and wrapped cyclically. Guarantee: metric
    (d_X-)privacy: for two plates of the same length, the privacy loss is at most
    (eps/n) * sum_i d_cyc(a_i, b_i), i.e. eps-DP between plates that differ by one code
    step in every position; plates further apart are protected proportionally less.
    The number of characters is released. Without ``text``: ``n_chars`` characters are
    drawn uniformly; the output ignores the plate's characters, so the text is 0-DP.
    Not protected in either case: the plate's box and its median colour (rendered as is).
    """
    released, spent, _ = plate_release(eps, noise, text, n_chars, region_code)
    return render_plate(image, region, released), released, spent
