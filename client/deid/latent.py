"""A bounded face latent space: a PCA (eigenface) basis fitted offline on scikit-image's lfw_subset."""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

ASSET = Path(__file__).resolve().parent / "assets" / "face_basis.npz"


@dataclass(frozen=True)
class FaceBasis:
    """Eigenface basis: ``x ~ mean + components.T @ (sigma * u)`` with normalised coordinates u."""

    mean: np.ndarray  # (P,) mean of standardised training faces
    components: np.ndarray  # (k, P) orthonormal rows
    sigma: np.ndarray  # (k,) training std of each coordinate
    size: int  # faces are size x size
    bound: float  # public clipping bound B: every u_i is clipped to [-B, B]
    source: str

    @property
    def k(self) -> int:
        """Latent dimension."""
        return int(self.components.shape[0])

    @property
    def l1_sensitivity(self) -> float:
        """L1 diameter of the clipped latent box [-B, B]^k, i.e. 2*B*k."""
        return 2.0 * self.bound * self.k

    def standardise(self, crop: np.ndarray) -> np.ndarray:
        """RGB or grey crop -> size x size grey, zero mean, unit std, flattened."""
        grey = crop if crop.ndim == 2 else cv2.cvtColor(np.ascontiguousarray(crop), cv2.COLOR_RGB2GRAY)
        small = cv2.resize(grey.astype(np.float32), (self.size, self.size), interpolation=cv2.INTER_AREA)
        v = small.reshape(-1).astype(np.float64)
        v -= v.mean()
        sd = v.std()
        return v / sd if sd > 1e-6 else v

    def encode(self, crop: np.ndarray) -> np.ndarray:
        """Project a face crop to normalised latent coordinates (not yet clipped)."""
        return (self.components @ (self.standardise(crop) - self.mean)) / self.sigma

    def clip(self, u: np.ndarray) -> np.ndarray:
        """Clip every coordinate to the public bound [-B, B]."""
        return np.clip(u, -self.bound, self.bound)

    def decode(self, u: np.ndarray) -> np.ndarray:
        """Latent coordinates -> standardised size x size face image (float)."""
        return (self.mean + self.components.T @ (self.sigma * u)).reshape(self.size, self.size)

    def save(self, path: Path = ASSET) -> None:
        """Write the basis as a compressed npz."""
        path.parent.mkdir(parents=True, exist_ok=True)
        np.savez_compressed(path, mean=self.mean.astype(np.float32), components=self.components.astype(np.float32),
                            sigma=self.sigma.astype(np.float32), size=self.size, bound=self.bound, source=self.source)


def fit_basis(faces: np.ndarray, k: int = 8, bound: float = 2.0, source: str = "") -> FaceBasis:
    """Fit a PCA basis on an (N, s, s) stack of grey faces (adds mirror images)."""
    faces = np.concatenate([faces, faces[:, :, ::-1]], axis=0).astype(np.float64)
    size = faces.shape[1]
    X = faces.reshape(len(faces), -1)
    X = X - X.mean(axis=1, keepdims=True)
    X = X / X.std(axis=1, keepdims=True)
    mean = X.mean(axis=0)
    _, s, vt = np.linalg.svd(X - mean, full_matrices=False)
    comps = vt[:k]
    sigma = s[:k] / np.sqrt(len(X) - 1)
    return FaceBasis(mean, comps, sigma, size, float(bound), source)


def fit_default_basis(k: int = 8, bound: float = 2.0) -> FaceBasis:
    """Fit on the 100 faces of skimage.data.lfw_subset() (ships in scikit-image; offline)."""
    from skimage import data

    lfw = data.lfw_subset()[:100]  # the first 100 are faces, the other 100 are not
    return fit_basis(lfw, k, bound, "skimage.data.lfw_subset()[:100] + mirrors, 25x25 grey")


@lru_cache(maxsize=4)
def load_basis(path: Path = ASSET) -> FaceBasis:
    """Load the committed basis (regenerate with ``python scripts/fit_face_basis.py``)."""
    if not path.is_file():
        raise RuntimeError(f"face basis {path} missing: run `python scripts/fit_face_basis.py`")
    z = np.load(path)
    return FaceBasis(z["mean"].astype(np.float64), z["components"].astype(np.float64), z["sigma"].astype(np.float64),
                     int(z["size"]), float(z["bound"]), str(z["source"]))
