"""dp_donor: replace a face by a public synthetic face chosen with the exponential mechanism.

Donors: colour faces of no real person, cut from the sample grids of the MIT-licensed
SFHQ dataset (StyleGAN2 faces; see ``assets/SOURCES.md``) by ``scripts/make_donor_faces.py``
and shipped in ``assets/donor_faces.npz``: 76x100 JPEG crops around each face, the face's
CenterFace box and 5 landmarks, and each donor's coordinates in a public colour latent
(a PCA of the 16x16 CIELAB face box, fitted on the donors themselves). Nothing is downloaded.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from .detect import Region
from .noise import NoiseSource

DONOR_ASSET = Path(__file__).resolve().parent / "assets" / "donor_faces.npz"
#: a stored crop is CROP_SCALE x the face box (it covers the ellipse, 1.2 x 1.24 the box, and its fade)
CROP_SCALE = 1.6
#: the public colour latent: LAB face box at FEATURE_SIZE^2, K_LATENT coordinates clipped to [-BOUND, BOUND]
FEATURE_SIZE = 16
K_LATENT = 3
BOUND = 2.0
#: Public cap C of the utility q(d) = -min(||u - u_d||_2, C); its sensitivity is C. Chosen on the
#: donors alone (leave-one-out) as the cap that maximises the fall of the expected donor distance
#: from eps 0.5 to 8 (``scripts/make_donor_faces.py --choose-cap``: 2.137 -> 1.437; C = 2: 2.145 -> 1.467;
#: C = 4.5: 2.142 -> 1.650; the uncapped diameter 2*B*sqrt(k) = 6.9 would leave the draw nearer uniform).
#: k = 3 rather than 8: the relative fall of the leave-one-out distance from eps 0.5 to 8 is 33% at k = 3
#: (best cap), 25% at k = 4, 17% at 6 and 14% at 8, so eps moves the look (tone, light) more visibly.
UTILITY_CAP = 2.5


@dataclass(frozen=True)
class DonorLatent:
    """Public PCA latent of a face box in CIELAB: ``u = clip(components @ (x - mean) / sigma, -B, B)``."""

    mean: np.ndarray  # (3 * FEATURE_SIZE^2,)
    components: np.ndarray  # (k, 3 * FEATURE_SIZE^2) orthonormal rows
    sigma: np.ndarray  # (k,)
    bound: float = BOUND

    @property
    def k(self) -> int:
        """Latent dimension."""
        return int(self.components.shape[0])

    def encode(self, image: np.ndarray, box: Region) -> np.ndarray:
        """Clipped latent of the face box of an RGB (or grey-as-RGB) uint8 image."""
        return np.clip(self.components @ (box_features(image, box) - self.mean) / self.sigma, -self.bound, self.bound)


def box_features(image: np.ndarray, box: Region) -> np.ndarray:
    """The face box at FEATURE_SIZE x FEATURE_SIZE in CIELAB (L 0-100, a/b about -100..100), flattened."""
    crop = np.ascontiguousarray(image[box.y : box.y + box.h, box.x : box.x + box.w])
    small = cv2.resize(crop, (FEATURE_SIZE, FEATURE_SIZE), interpolation=cv2.INTER_AREA)
    return cv2.cvtColor(small.astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB).reshape(-1).astype(np.float64)


def _box_in(shape: tuple[int, ...], frac: np.ndarray) -> Region:
    """A box given as fractions of a crop's width and height, in that crop's pixels."""
    x, y, w, h = (int(round(v * s)) for v, s in zip(frac, (shape[1], shape[0]) * 2))
    return Region(x, y, max(2, w), max(2, h))


def fit_donor_latent(crops: np.ndarray, boxes: np.ndarray, k: int = K_LATENT) -> DonorLatent:
    """PCA of the donors' LAB face boxes (public data only)."""
    X = np.stack([box_features(c, _box_in(c.shape, b)) for c, b in zip(crops, boxes)])
    mean = X.mean(axis=0)
    _, s, vt = np.linalg.svd(X - mean, full_matrices=False)
    return DonorLatent(mean, vt[:k], s[:k] / np.sqrt(len(X) - 1))


@dataclass(frozen=True)
class DonorSet:
    """Public donor faces: (N, h, w, 3) uint8 RGB crops, face boxes (N, 4) and landmarks (N, 5, 2) as
    fractions of the crop's width and height, clipped latents (N, k)."""

    faces: np.ndarray
    boxes: np.ndarray
    landmarks: np.ndarray
    latents: np.ndarray
    latent: DonorLatent
    source: str
    licence: str = ""

    @property
    def template(self) -> np.ndarray:
        """Mean landmark position relative to the face box, (5, 2) in box fractions (public)."""
        return np.mean((self.landmarks - self.boxes[:, None, :2]) / self.boxes[:, None, 2:], axis=0)


def save_donor_asset(path: Path, crops: np.ndarray, boxes: np.ndarray, landmarks: np.ndarray, latent: DonorLatent,
                     source: str, licence: str, origin: list[str], quality: int = 85) -> None:
    """Write the donors (JPEG bytes, concatenated) with their geometry, latent basis and provenance."""
    blobs = [cv2.imencode(".jpg", cv2.cvtColor(c, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, quality])[1].ravel()
             for c in crops]
    path.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(path, jpeg=np.concatenate(blobs), offsets=np.cumsum([0] + [len(b) for b in blobs]),
                        boxes=boxes.astype(np.float32), landmarks=landmarks.astype(np.float32),
                        mean=latent.mean.astype(np.float32), components=latent.components.astype(np.float32),
                        sigma=latent.sigma.astype(np.float32), bound=latent.bound, source=source, licence=licence,
                        origin=np.array(origin))


def _decode_rgb(buf: np.ndarray, path: Path) -> np.ndarray:
    bgr = cv2.imdecode(buf, cv2.IMREAD_COLOR)
    if bgr is None:
        raise RuntimeError(f"donor faces {path}: a face's JPEG could not be decoded")
    return cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)


def load_donor_set(path: Path = DONOR_ASSET) -> DonorSet:
    """Decode the shipped donors and encode each in the public latent."""
    if not path.is_file():
        raise RuntimeError(f"donor faces {path} missing: run `python scripts/make_donor_faces.py --repo ...`")
    z = np.load(path)
    jpeg, off = z["jpeg"], z["offsets"]
    faces = np.stack([_decode_rgb(jpeg[a:b], path) for a, b in zip(off[:-1], off[1:])])
    latent = DonorLatent(z["mean"].astype(np.float64), z["components"].astype(np.float64),
                         z["sigma"].astype(np.float64), float(z["bound"]))
    boxes = z["boxes"].astype(np.float64)
    latents = np.stack([latent.encode(f, _box_in(f.shape, b)) for f, b in zip(faces, boxes)])
    return DonorSet(faces, boxes, z["landmarks"].astype(np.float64), latents, latent, str(z["source"]),
                    str(z["licence"]))


@lru_cache(maxsize=1)
def donor_set() -> DonorSet:
    """The shipped donors (loaded once)."""
    return load_donor_set()


def sensitivity(donors: DonorSet | None = None) -> float:
    """Sensitivity of the capped utility: min(UTILITY_CAP, L2 diameter 2*B*sqrt(k) of the clipped latent box)."""
    latent = (donors or donor_set()).latent
    return min(UTILITY_CAP, 2.0 * latent.bound * math.sqrt(latent.k))


def _logits(u_clipped: np.ndarray, donors: DonorSet, eps: float, sens: float) -> np.ndarray:
    """eps * q(d) / (2 * sens) with q(d) = -min(||u - u_d||_2, sens)."""
    dist = np.linalg.norm(donors.latents - u_clipped[None, :], axis=1)
    return eps * -np.minimum(dist, sens) / (2.0 * sens)


def select_donor(u_clipped: np.ndarray, donors: DonorSet, eps: float, noise: NoiseSource, sens: float) -> int:
    """Exponential mechanism: donor d with probability proportional to exp(eps * q(d) / (2 * sens)),
    q(d) = -min(||u - u_d||_2, sens); sampled exactly by the Gumbel-max trick with uniforms from ``noise``."""
    if eps <= 0:
        raise ValueError("eps must be > 0")
    if math.isinf(eps):
        return int(np.argmin(np.linalg.norm(donors.latents - u_clipped[None, :], axis=1)))
    gumbel = -np.log(-np.log(noise.uniform(len(donors.latents))))
    return int(np.argmax(_logits(u_clipped, donors, eps, sens) + gumbel))


def selection_probabilities(u_clipped: np.ndarray, donors: DonorSet, eps: float, sens: float) -> np.ndarray:
    """Exact probability of each donor under :func:`select_donor` (for accounting checks and tests)."""
    logits = _logits(u_clipped, donors, eps, sens)
    w = np.exp(logits - logits.max())
    return w / w.sum()


def privacy_loss(donors: DonorSet, eps: float, u: np.ndarray, v: np.ndarray) -> float:
    """max_d |log P(d | u) - log P(d | v)|: the privacy loss of one release between two faces (<= eps)."""
    sens = sensitivity(donors)
    p, q = selection_probabilities(u, donors, eps, sens), selection_probabilities(v, donors, eps, sens)
    return float(np.abs(np.log(p) - np.log(q)).max())


def expected_distance(u_clipped: np.ndarray, donors: DonorSet, eps: float) -> float:
    """Exact expected latent distance between a face and the donor drawn for it at ``eps``."""
    p = selection_probabilities(u_clipped, donors, eps, sensitivity(donors))
    return float(p @ np.linalg.norm(donors.latents - u_clipped[None, :], axis=1))


def donor_release(image: np.ndarray, region: Region, eps: float, noise: NoiseSource,
                  donors: DonorSet | None = None) -> int:
    """The index of the released donor for one face (the only output that reads the face's pixels)."""
    donors = donors or donor_set()
    u = donors.latent.encode(image, region)
    return select_donor(u, donors, eps, noise, sensitivity(donors))


def dp_donor(image: np.ndarray, region: Region, eps: float, noise: NoiseSource,
             donors: DonorSet | None = None) -> np.ndarray:
    """Replace a face by a public synthetic face chosen with the exponential mechanism.

    What is released: the index of one donor among the N = 240 public faces of
    ``assets/donor_faces.npz``, then rendered. Guarantee: eps-DP with respect to ANY two images
    that differ only inside the region's ellipse mask (any face swapped for any other face).

    Mechanism: the face box is encoded in the public colour latent u (16x16 CIELAB box, PCA fitted
    on the donors only, k = 3 coordinates clipped to [-2, 2]; on the donors the first correlates
    -0.96 with the box's mean lightness, the second 0.67 / 0.82 with its mean a / b (warmth), the
    third 0.53 with top-minus-bottom lightness and -0.56 with contrast): the utility sees the face's
    skin tone, exposure, colour cast and lighting, not fine identity detail. Donor d gets the
    utility q(d) = -min(||u - u_d||_2, C) with the public cap C = UTILITY_CAP = 2.5; q lies in
    [-C, 0] for every input, so its sensitivity is C. The donor is drawn with probability
    proportional to exp(eps * q(d) / (2 * C)) (McSherry-Talwar exponential mechanism, sampled
    exactly by Gumbel-max with uniforms from os.urandom): any two faces give every donor
    probabilities within a factor exp(eps) (``privacy_loss`` computes the exact loss). Lower eps
    makes the draw closer to uniform, so the released face's tone and light move away from the
    original's; higher eps favours donors of similar tone and light (``expected_distance`` per eps
    is printed by ``benchmarks.deid``). eps = inf (tests only) takes the nearest donor: no privacy.

    Everything else is post-processing of (donor index, public data, pixels OUTSIDE the ellipse),
    so it costs no privacy. Precisely, rendering reads: the donor's crop, its own box and 5
    landmarks (public); the region's box (position and size: treated as public, as for every
    mechanism); the public landmark template (mean donor landmarks relative to the box), onto which
    the donor's landmarks are mapped by a similarity transform, i.e. the donor's eyes, nose and mouth
    go where an average face sits in the target box; pixels outside the ellipse: a thin ring just
    outside it (its CIELAB colour minus the donor's there, smoothed inward and clipped to +-30 L,
    +-8 a/b, sets the lighting/colour membrane; the robust noise level of its ring pixels whose 3x3
    neighbourhood lies wholly outside sets the grain), whether the image is grey, and the fade band
    outside the ellipse where donor and original are mixed. The target's own landmarks and the colour
    of the face inside the ellipse are NOT used for rendering: landmarks relative to the box have a
    sensitivity of about one box width and a face's mean colour the whole LAB range, so a Laplace
    release of either on a share of eps <= 8 would be noise wider than the face; the selection's
    latent already favours donors of similar tone and light at high eps. Caveat: if another face's
    box overlaps the ring, its not-yet-replaced pixels enter the membrane and grain. Not protected:
    the position and size of the box and everything outside the ellipse (the image shows it anyway).
    """
    donors = donors or donor_set()
    idx = donor_release(image, region, eps, noise, donors)
    return render_donor(image, region, idx, grain=noise, donors=donors)


# --------------------------------------------------------------------------- rendering (post-processing)


def _alignment(donors: DonorSet, idx: int, region: Region, x0: int, y0: int) -> np.ndarray:
    """2x3 similarity taking donor crop pixels to patch pixels: the donor's 5 landmarks onto the public
    template placed in the target box (least squares)."""
    size = np.array([donors.faces.shape[2], donors.faces.shape[1]], np.float64)
    src = (donors.landmarks[idx] * size).astype(np.float32)
    dst = (np.array([region.x - x0, region.y - y0]) + donors.template * [region.w, region.h]).astype(np.float32)
    m, _ = cv2.estimateAffinePartial2D(src, dst, method=cv2.LMEDS)
    if m is None:  # degenerate landmarks: map the donor's box onto the region
        bx, by, bw, bh = donors.boxes[idx] * np.tile(size, 2)
        s = float(np.sqrt(region.w * region.h / (bw * bh)))
        m = np.array([[s, 0, region.x - x0 + region.w / 2 - s * (bx + bw / 2)],
                      [0, s, region.y - y0 + region.h / 2 - s * (by + bh / 2)]])
    return m


def _membrane(diff: np.ndarray, ring: np.ndarray, size: float, max_side: int = 48) -> np.ndarray:
    """Smooth fill of the ring's colour offsets ``diff`` (HxWx3, used where ``ring``) over the whole patch: a
    normalised Gaussian of width ``size`` / 3, computed on a grid of at most ``max_side`` px and resized back
    (a cheap stand-in for the harmonic membrane of a Poisson clone)."""
    h, w = ring.shape
    s = min(1.0, max_side / max(h, w))
    weight: np.ndarray = ring.astype(np.float32)
    num: np.ndarray = diff * weight[..., None]
    if s < 1:
        num = cv2.resize(num, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
        weight = cv2.resize(weight, None, fx=s, fy=s, interpolation=cv2.INTER_AREA)
    sigma = max(1.0, size * s / 3.0)
    num = cv2.GaussianBlur(num, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
    den = cv2.GaussianBlur(weight, (0, 0), sigma, borderType=cv2.BORDER_REPLICATE)
    small = num / np.maximum(den, 1e-6)[..., None]
    return cv2.resize(small, (w, h), interpolation=cv2.INTER_LINEAR) if s < 1 else small


def _ring_grain(around: np.ndarray, ring: np.ndarray, inside: np.ndarray) -> float:
    """Robust std (1.4826 MAD) of the ring's fine texture (grey minus its 3x3 median), capped at 8 grey
    levels, over ring pixels whose 3x3 neighbourhood lies wholly outside the ellipse (so no pixel inside
    it enters the figure)."""
    grey = around.mean(axis=2).astype(np.float32)
    fine = grey - cv2.medianBlur(np.clip(grey, 0, 255).astype(np.uint8), 3).astype(np.float32)
    clear = ring & (cv2.dilate(inside.astype(np.uint8), np.ones((3, 3), np.uint8)) == 0)
    if not clear.any():
        return 0.0
    v = fine[clear]
    return float(min(8.0, 1.4826 * np.median(np.abs(v - np.median(v)))))  # robust: edges (hair) do not count


#: Limits of the boundary offset carried into the face, in CIELAB: lightness +-MAX_L, colour (a, b) scaled
#: by CHROMA_GAIN and clipped to +-MAX_AB (a red curtain beside a face should not paint the cheek red).
MAX_L, CHROMA_GAIN, MAX_AB = 30.0, 0.5, 8.0
#: depth (share of the ellipse's short semi-axis) over which the donor fades into the ring's smoothed colours
EDGE_FILL = 0.1


#: Unsharp-mask gain for donors enlarged by 3x or more (less below; none under 1.3x).
SHARPEN = 0.8


def _lab(rgb: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(np.clip(rgb, 0, 255).astype(np.float32) / 255.0, cv2.COLOR_RGB2LAB)


def _rgb(lab: np.ndarray) -> np.ndarray:
    return cv2.cvtColor(lab.astype(np.float32), cv2.COLOR_LAB2RGB) * 255.0


def render_donor(image: np.ndarray, region: Region, idx: int, feather: float = 0.12,
                 grain: NoiseSource | None = None, donors: DonorSet | None = None) -> np.ndarray:
    """Composite donor ``idx`` over ``region``'s ellipse: aligned by landmarks to the public template in
    the box, shifted by the smooth membrane that matches it to the ring around the ellipse (a Poisson
    clone at low resolution), grain at the ring's level, alpha 1 inside the ellipse fading outside."""
    from .mechanisms import face_mask_geometry

    donors = donors or donor_set()
    H, W = image.shape[:2]
    pad = int(round(feather * max(region.w, region.h))) + 2
    box, mask = face_mask_geometry(region, W, H)
    x0, y0 = max(0, box.x - pad), max(0, box.y - pad)
    x1, y1 = min(W, box.x + box.w + pad), min(H, box.y + box.h + pad)
    inside = np.zeros((y1 - y0, x1 - x0), np.uint8)
    inside[box.y - y0 : box.y - y0 + box.h, box.x - x0 : box.x - x0 + box.w] = mask > 0
    dist = cv2.distanceTransform(1 - inside, cv2.DIST_L2, 3)  # 0 inside the ellipse
    alpha = np.clip(1.0 - dist / pad, 0.0, 1.0)[..., None]
    around = image[y0:y1, x0:x1].astype(np.float32)
    ring = (dist > 0) & (dist <= max(2.0, pad / 2))
    m = _alignment(donors, idx, region, x0, y0)
    face = cv2.warpAffine(donors.faces[idx], m, (x1 - x0, y1 - y0), flags=cv2.INTER_CUBIC,
                          borderMode=cv2.BORDER_REFLECT).astype(np.float32)
    scale = float(np.sqrt(abs(np.linalg.det(m[:, :2]))))  # donor pixels per output pixel, inverted
    if scale > 1.3:  # an enlarged donor is soft: unsharp mask at the enlargement's scale
        amount = SHARPEN * min(1.0, (scale - 1.0) / 2.0)
        face = face + amount * (face - cv2.GaussianBlur(face, (0, 0), 0.6 * scale))
    # a grey photo gets a grey face; decided on the pixels outside the ellipse only
    is_grey = (image[..., 0] == image[..., 1]) & (image[..., 1] == image[..., 2])
    is_grey[y0:y1, x0:x1] |= inside > 0
    grey_image = bool(is_grey.all())
    if grey_image:
        face = np.repeat(face @ np.array([0.299, 0.587, 0.114], np.float32)[:, None], 3, axis=2)
    if ring.any():
        # boundary offset: the ring's colour minus the donor's at the same place, carried smoothly inward
        face_lab = _lab(face)
        mem = _membrane(_lab(around) - face_lab, ring, max(region.w, region.h))
        mem[..., 0] = np.clip(mem[..., 0], -MAX_L, MAX_L)
        mem[..., 1:] = np.clip(CHROMA_GAIN * mem[..., 1:], -MAX_AB, MAX_AB)
        face = _rgb(face_lab + mem)
        if EDGE_FILL > 0:  # the donor's own hair/background fades into the ring's colours near the ellipse edge
            fill = _membrane(around, ring, max(region.w, region.h) / 2.0)
            depth = cv2.distanceTransform(inside, cv2.DIST_L2, 3)  # distance inside the ellipse
            wd = np.clip(depth / (EDGE_FILL * 0.6 * min(region.w, region.h)), 0.0, 1.0)[..., None]
            face = wd * face + (1.0 - wd) * fill
        sd = _ring_grain(around, ring, inside > 0)
        if grain is not None and sd > 0:
            g = (sd * np.sqrt(3.0) * (2.0 * grain.uniform(face.shape[:2]) - 1.0)).astype(np.float32)
            face = face + g[..., None]
    if grey_image:
        face = np.repeat(face.mean(axis=2, keepdims=True), 3, axis=2)
    out = image.copy()
    out[y0:y1, x0:x1] = np.rint(alpha * np.clip(face, 0, 255) + (1.0 - alpha) * around).astype(np.uint8)
    return out
