"""Utility and privacy metrics: SSIM, dHash, L0, L2, average Lp, plate edit distance, re-identification."""

from __future__ import annotations

import importlib.util
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any

import cv2
import numpy as np
from PIL import Image

from .detect import Region, iou

# --------------------------------------------------------------------------- image similarity


def _ssim_channel(x: np.ndarray, y: np.ndarray, data_range: float, win: int) -> np.ndarray:
    """SSIM map of one channel with a uniform win x win window and sample covariance."""
    def f(a: np.ndarray) -> np.ndarray:
        return cv2.boxFilter(a, cv2.CV_64F, (win, win), normalize=True, borderType=cv2.BORDER_REFLECT)

    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    norm = win * win / (win * win - 1.0)
    ux, uy = f(x), f(y)
    vx = norm * (f(x * x) - ux * ux)
    vy = norm * (f(y * y) - uy * uy)
    vxy = norm * (f(x * y) - ux * uy)
    return ((2 * ux * uy + c1) * (2 * vxy + c2)) / ((ux * ux + uy * uy + c1) * (vx + vy + c2))


def ssim(a: np.ndarray, b: np.ndarray, data_range: float = 255.0, win: int = 7) -> float:
    """Mean SSIM (Wang et al. 2004) over channels; same definition as skimage's defaults."""
    if a.shape != b.shape:
        raise ValueError(f"shape mismatch {a.shape} vs {b.shape}")
    if min(a.shape[:2]) < win:
        raise ValueError(f"images smaller than the {win}x{win} SSIM window")
    a3 = a.reshape(a.shape[0], a.shape[1], -1).astype(np.float64)
    b3 = b.reshape(b.shape[0], b.shape[1], -1).astype(np.float64)
    pad = (win - 1) // 2
    vals = [
        _ssim_channel(a3[..., c], b3[..., c], data_range, win)[pad:-pad, pad:-pad].mean() for c in range(a3.shape[2])
    ]
    return float(np.mean(vals))


def dhash(image: np.ndarray, hash_size: int = 8) -> int:
    """Difference hash (same definition as imagehash.dhash) as a hash_size^2-bit integer."""
    grey = Image.fromarray(np.ascontiguousarray(image)).convert("L")
    small = np.asarray(grey.resize((hash_size + 1, hash_size), Image.Resampling.LANCZOS))
    bits = (small[:, 1:] > small[:, :-1]).reshape(-1)
    return int("".join("1" if v else "0" for v in bits), 2)


def dhash_distance(a: np.ndarray, b: np.ndarray, hash_size: int = 8) -> int:
    """Hamming distance between the dHashes of two images."""
    return int(bin(dhash(a, hash_size) ^ dhash(b, hash_size)).count("1"))


def l0(a: np.ndarray, b: np.ndarray) -> int:
    """Number of pixels that differ in any channel."""
    d = a != b
    return int(d.any(axis=-1).sum() if d.ndim == 3 else d.sum())


def l2(a: np.ndarray, b: np.ndarray) -> float:
    """Euclidean distance over all pixel values (0..255 units)."""
    return float(np.sqrt(((a.astype(np.float64) - b.astype(np.float64)) ** 2).sum()))


def avg_lp(a: np.ndarray, b: np.ndarray, region: Region | None = None, p: float = 2.0) -> float:
    """(mean |a - b|^p over the region's pixel values)^(1/p); the whole image if no region."""
    if region is not None:
        a = a[region.y : region.y + region.h, region.x : region.x + region.w]
        b = b[region.y : region.y + region.h, region.x : region.x + region.w]
    d = np.abs(a.astype(np.float64) - b.astype(np.float64))
    if np.isinf(p):
        return float(d.max(initial=0.0))
    return float((d**p).mean() ** (1.0 / p))


def edit_distance(s: str, t: str) -> int:
    """Levenshtein distance (insertions, deletions, substitutions)."""
    prev = list(range(len(t) + 1))
    for i, cs in enumerate(s, 1):
        cur = [i]
        for j, ct in enumerate(t, 1):
            cur.append(min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (cs != ct)))
        prev = cur
    return prev[-1]


def face_still_detected(image: np.ndarray, region: Region, detector=None, min_iou: float = 0.3) -> bool:
    """Whether a face detector (CenterFace by default) still finds a face on ``region``."""
    if detector is None:
        from .detect import face_detector

        detector = face_detector()
    return any(iou(region, d) >= min_iou for d in detector(image))


# --------------------------------------------------------------------------- re-identification


def dlib_available() -> bool:
    """True if dlib and face-recognition-models' files are installed."""
    return importlib.util.find_spec("dlib") is not None and _models_dir() is not None


def _models_dir() -> Path | None:
    spec = importlib.util.find_spec("face_recognition_models")  # not imported: it needs pkg_resources
    if spec is None or not spec.submodule_search_locations:
        return None
    d = Path(list(spec.submodule_search_locations)[0]) / "models"
    return d if (d / "dlib_face_recognition_resnet_model_v1.dat").is_file() else None


@dataclass
class FaceEmbedder:
    """dlib ResNet face descriptor (128-d; same person if distance <= 0.6)."""

    predictor: Any  # dlib.shape_predictor (dlib ships no stubs)
    resnet: Any  # dlib.face_recognition_model_v1

    def __call__(self, rgb: np.ndarray, region: Region) -> np.ndarray:
        """128-d descriptor of the face in ``region`` (the box is given, not re-detected)."""
        import dlib  # optional (the reid extra), no stubs: pyproject ignore_missing_imports

        rect = dlib.rectangle(int(region.x), int(region.y), int(region.x + region.w), int(region.y + region.h))
        shape = self.predictor(np.ascontiguousarray(rgb), rect)
        return np.asarray(self.resnet.compute_face_descriptor(np.ascontiguousarray(rgb), shape), dtype=np.float64)


@lru_cache(maxsize=1)
def face_embedder() -> FaceEmbedder:
    """Load dlib's 5-point predictor and ResNet from face-recognition-models (offline)."""
    import dlib

    d = _models_dir()
    if d is None:
        raise RuntimeError("re-identification needs dlib-bin and face-recognition-models (pip install '.[reid]')")
    return FaceEmbedder(dlib.shape_predictor(str(d / "shape_predictor_5_face_landmarks.dat")),
                        dlib.face_recognition_model_v1(str(d / "dlib_face_recognition_resnet_model_v1.dat")))


SAME_PERSON = 0.6


def reid_rates(probes: np.ndarray, probe_ids: list[str], probe_keys: list[str], gallery: np.ndarray,
               gallery_ids: list[str], gallery_keys: list[str], originals: np.ndarray) -> tuple[float, float]:
    """(rank-1 identification rate, share within 0.6 of own original).

    Each probe (de-identified face) is matched against the gallery of original faces of
    all identities EXCLUDING the probe's own source image (key); rank-1 is correct if
    the nearest gallery face has the probe's identity. ``originals[i]`` is the
    embedding of probe i's own original face.
    """
    if len(probes) == 0:
        return float("nan"), float("nan")
    dist = np.linalg.norm(probes[:, None, :] - gallery[None, :, :], axis=2)
    same_key = np.array(probe_keys)[:, None] == np.array(gallery_keys)[None, :]
    dist[same_key] = np.inf
    nearest = np.argmin(dist, axis=1)
    rank1 = np.mean([gallery_ids[j] == probe_ids[i] for i, j in enumerate(nearest)])
    self_share = np.mean(np.linalg.norm(probes - originals, axis=1) <= SAME_PERSON)
    return float(rank1), float(self_share)
