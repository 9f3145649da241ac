"""Data owner: a PCA projection fitted on the owner's own features, as a shared model layer.

The feature model is ``trunk -> global average pool -> [projection] -> L2 normalisation``
(:func:`client.model.default_feature_model`). The projection is one ``nn.Linear``; the
seeded random map has no bias, a PCA has one (it is centred). Fitted on the owner's
pooled 1280-d trunk features, PCA keeps the directions the owner's images vary along,
which a random map does not: ``python -m benchmarks.quality`` measures the difference.
Measured there (442 real photos, 2,210 copies; 2026-12-02, with the 0.875 crop of then): at
the same dim, PCA beats the random map by 0.004-0.035 copy-detection mAP (most at 32-d),
fully whitened PCA by 0.008-0.052 (96 px, 128-d:
random 0.634, PCA 0.638, fully whitened 0.643, shrunk-whitened 0.655, 1280-d unprojected
0.659), but whitening makes the IVF need more probes (n = 1M, 96 px, 128-d, recall@10 vs
exact: plain PCA 0.976 at nprobe 16; fully whitened 0.949 at 32, 0.973 at 64; shrunk 0.945
at 16, 0.974 at 32). ``whiten`` is therefore a choice the caller makes with its nprobe.

Whitening is SHRUNK (:data:`WHITEN_SHRINK`): component ``j`` is divided by
``sqrt(var_j + s * mean(var))`` instead of ``sqrt(var_j)``. Full whitening gives the
weakest components, whose variance a first upload of a few hundred images estimates worst,
the same weight as the strongest: measured on the same set (96 px, 128-d, PCA fitted on
``m`` seeded originals, mean of 3 seeds), full whitening falls BELOW the random map for
small uploads (m = 138: 0.607; 192: 0.627; 442: 0.643; random 0.634), while ``s = 0.5``
gives 0.648 / 0.651 / 0.655 (``s`` = 0.3-1.0 within 0.005 of it at 64, 96, 128 and 224 px,
m = 160 and 442; ``s = 3`` drifts back toward plain PCA). ``s = 0`` is sklearn's whitening exactly.

The product runs these steps at the owner's first upload (``client.owner_model``, with
``build_model(..., projection="pca_whiten")``, the default) and at ``Client.reindex``:

1. ``pooled = pooled_features(model, images)``: trunk + pool outputs [n, 1280] of the
   owner's images (the model's own head, if any, is ignored);
2. ``pca = fit_pca(pooled, out_dim, whiten=...)``;
3. ``projected = with_projection(model, pca)``: the same trunk with ``pca.to_linear()``
   and L2 normalisation; ``split_model`` turns it into the layer spec
   ``{"type": "linear", "bias": true}`` with weights ``linear<k>.weight`` [d, 1280] and
   ``linear<k>.bias`` [d], shared like every other weight.

``fit_owner_projection`` does the three steps. The owner keeps ``pca.to_arrays()`` with
its state, so the model can be rebuilt without refitting (a refit changes every feature,
so it needs a re-index that re-uploads the feature shares).

The fitted layer computes exactly ``sklearn.decomposition.PCA(out_dim, whiten=...)
.transform`` (up to the sign of each component, which PCA leaves free; here the largest
loading of each component is positive) when ``shrink`` is 0, before the L2 normalisation.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm import tqdm  # type: ignore[import-untyped]  # no stubs installed (types-tqdm)

from .features import model_resolution
from .model import L2Normalize
from .preprocess import ImageLike, preprocess


@dataclass(frozen=True)
class PcaProjection:
    """PCA fitted on pooled features: ``components`` [d, D] (orthonormal rows), ``mean`` [D],
    ``explained_variance`` [d] (unbiased, n - 1), ``whiten``, ``n_samples`` (public sizes),
    ``shrink``: the whitening's ``s`` (module docstring; 0 for projections fitted before it)."""

    components: np.ndarray
    mean: np.ndarray
    explained_variance: np.ndarray
    whiten: bool
    n_samples: int
    shrink: float = 0.0

    @property
    def in_dim(self) -> int:
        return int(self.components.shape[1])

    @property
    def out_dim(self) -> int:
        return int(self.components.shape[0])

    @property
    def weight(self) -> np.ndarray:
        """The linear map [d, D] (components; when whitening, divided by
        ``sqrt(var + shrink * mean(var))``, the component's std when ``shrink`` is 0)."""
        if self.whiten:
            var = self.explained_variance
            return self.components / np.sqrt(var + self.shrink * var.mean())[:, None]
        return self.components

    @property
    def bias(self) -> np.ndarray:
        """``-weight @ mean`` [d]: centring folded into the layer's bias."""
        return -(self.weight @ self.mean)

    def transform(self, pooled: np.ndarray) -> np.ndarray:
        """Projected (not yet L2-normalised) features [n, d] float64 of pooled features [n, D]."""
        x = np.asarray(pooled, dtype=np.float64)
        if x.ndim != 2 or x.shape[1] != self.in_dim:
            raise ValueError(f"pooled features must be [n, {self.in_dim}], got shape {x.shape}")
        return x @ self.weight.T + self.bias

    def to_linear(self) -> nn.Linear:
        """The projection as the ``nn.Linear(D, d, bias=True)`` the model pipeline registers."""
        lin = nn.Linear(self.in_dim, self.out_dim, bias=True)
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(self.weight))
            lin.bias.copy_(torch.from_numpy(self.bias))
        return lin.eval()

    def to_arrays(self) -> dict[str, np.ndarray]:
        """Arrays to persist with the owner's state (``np.savez``; no pickle needed)."""
        return {"components": self.components, "mean": self.mean, "explained_variance": self.explained_variance,
                "whiten": np.array(self.whiten), "n_samples": np.array(self.n_samples, dtype=np.int64),
                "shrink": np.array(self.shrink, dtype=np.float64)}

    @classmethod
    def from_arrays(cls, arrays: dict[str, np.ndarray]) -> PcaProjection:
        """Inverse of :meth:`to_arrays` (arrays saved before ``shrink`` existed: 0, as they were fitted)."""
        shrink = float(arrays["shrink"]) if "shrink" in arrays else 0.0
        return cls(np.asarray(arrays["components"], dtype=np.float64), np.asarray(arrays["mean"], dtype=np.float64),
                   np.asarray(arrays["explained_variance"], dtype=np.float64), bool(arrays["whiten"]),
                   int(arrays["n_samples"]), shrink)


WHITEN_SHRINK = 0.5
"""The whitening's shrinkage ``s`` (module docstring): within 0.003 copy-detection mAP of the best
``s`` measured in {0, 0.3, 0.5, 1, 3} (and 0.1 at 96 px) at 64, 96, 128 and 224 px for every first-upload
size tried (96 px: 138-442 photos; others: 160 and 442)."""


def fit_pca(pooled: np.ndarray, out_dim: int, whiten: bool = False, shrink: float | None = None) -> PcaProjection:
    """Fit a centred PCA with ``out_dim`` components on pooled features [n, D] (float64 maths).
    ``shrink``: the whitening's ``s`` (default :data:`WHITEN_SHRINK` when whitening; 0 is
    sklearn's ``whiten=True``); ignored without whitening.

    Needs ``n > out_dim`` samples (centring uses one degree of freedom) and components with
    non-zero variance. Uses the D x D covariance when ``n >= D`` (cheap for many images),
    the SVD of the centred data otherwise.
    """
    x = np.asarray(pooled, dtype=np.float64)
    if x.ndim != 2:
        raise ValueError(f"pooled features must be [n, D], got shape {x.shape}")
    n, dim = x.shape
    if not 1 <= out_dim <= dim:
        raise ValueError(f"out_dim must be in [1, {dim}], got {out_dim}")
    if n <= out_dim:
        raise ValueError(f"PCA to {out_dim} dims needs more than {out_dim} images, got {n}")
    if not np.isfinite(x).all():
        raise ValueError("pooled features contain NaN or infinity")
    mean = x.mean(0)
    xc = x - mean
    if n >= dim:
        evals, evecs = np.linalg.eigh(xc.T @ xc / (n - 1))
        order = np.argsort(evals)[::-1][:out_dim]
        var, comp = evals[order], evecs[:, order].T
    else:
        _, s, vh = np.linalg.svd(xc, full_matrices=False)
        var, comp = s[:out_dim] ** 2 / (n - 1), vh[:out_dim]
    if var.min() <= 1e-12 * max(var.max(), 1e-300):
        raise ValueError(f"the features span fewer than {out_dim} directions: choose a smaller out_dim")
    signs = np.sign(comp[np.arange(out_dim), np.abs(comp).argmax(1)])
    shrink_s = (WHITEN_SHRINK if shrink is None else float(shrink)) if whiten else 0.0
    if not (np.isfinite(shrink_s) and shrink_s >= 0):
        raise ValueError(f"shrink must be a finite number >= 0, got {shrink}")
    return PcaProjection(np.ascontiguousarray(comp * signs[:, None]), mean, var, bool(whiten), n, shrink_s)


def feature_trunk(model: nn.Sequential) -> nn.Sequential:
    """The model without its projection and normalisation head (trunk + pool): what PCA is fitted on."""
    if not isinstance(model, nn.Sequential):
        raise TypeError(f"expected the nn.Sequential feature model, got {type(model).__name__}")
    mods = list(model)
    while mods and isinstance(mods[-1], (nn.Linear, L2Normalize)):
        mods.pop()
    if not mods:
        raise ValueError("the model has no trunk before its projection head")
    trunk = nn.Sequential(*mods).eval()
    trunk.resolution = getattr(model, "resolution", None)  # type: ignore[assignment]
    return trunk


@torch.no_grad()
def pooled_features(model: nn.Sequential, images: Sequence[ImageLike], batch_size: int = 16,
                    progress: bool = False) -> np.ndarray:
    """Trunk + pool outputs [n, D] float64 of the owner's images, preprocessed as the product does
    (paths are read one batch at a time)."""
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    trunk = feature_trunk(model)
    res = model_resolution(model)
    out = [trunk(torch.stack([preprocess(im, res) for im in images[i:i + batch_size]])).double().numpy()
           for i in tqdm(range(0, len(images), batch_size), desc="fit projection", unit="batch",
                         disable=not progress)]
    if not out:
        raise ValueError("no images to fit the projection on")
    return np.concatenate(out)


def with_projection(model: nn.Sequential, projection: PcaProjection) -> nn.Sequential:
    """``model``'s trunk + pool, then ``projection.to_linear()``, then L2 normalisation (eval mode)."""
    trunk = feature_trunk(model)
    out = nn.Sequential(*trunk, projection.to_linear(), L2Normalize()).eval()
    out.resolution = getattr(model, "resolution", None)  # type: ignore[assignment]
    return out


def fit_owner_projection(model: nn.Sequential, images: Sequence[ImageLike], out_dim: int, whiten: bool = False,
                         batch_size: int = 16) -> tuple[nn.Sequential, PcaProjection]:
    """Pooled features of the owner's images -> PCA -> the projected model to register, and the PCA."""
    pca = fit_pca(pooled_features(model, images, batch_size), out_dim, whiten)
    return with_projection(model, pca), pca
