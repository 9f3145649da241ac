"""The owner's feature model across uploads and restarts: PCA fitted at the first upload.

A model built with ``projection="pca_whiten"`` or ``"pca"`` (:func:`client.recipes.build_model`'s
default for EfficientNet is ``pca_whiten``) is not registered on the servers at once:
``register_model`` keeps it pending (``model_pending.json`` in the owner directory), and the first upload

1. computes the pooled 1280-d trunk features of its own images on the owner's machine,
2. fits a PCA to ``dim`` on them (:func:`client.projection.fit_pca`, whitened or not),
3. registers trunk + PCA layer (a linear layer with bias, secret-shared like every other
   weight) + L2 normalisation, and keeps ``projection.npz`` (``PcaProjection.to_arrays``)
   and the recipe ``{"kind": "efficientnet_pca", ...}`` so that a restarted client and
   every later upload project with the same PCA.

With ``n <= dim`` images in that first upload a PCA cannot be fitted: the seeded random
projection the model was built with is registered instead (recipe ``"projection":
"random"``), with a :class:`~client.errors.TriVaultWarning`. A refit changes every feature:
``Client.reindex`` (``trivault reindex``) fits the PCA on every stored image and replaces
the model and the whole index in one transaction (``OwnerOps.reindex``).
"""

from __future__ import annotations

import io
import json
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np
from torch import nn

from .errors import TriVaultWarning
from .owner_state import OwnerState, _write
from .projection import PcaProjection, fit_pca, pooled_features, with_projection
from .recipes import FITTED, build_model

PENDING_FILE = "model_pending.json"
PROJECTION_FILE = "projection.npz"
PCA_KIND = "efficientnet_pca"


def wants_fit(model: nn.Module) -> bool:
    """Whether ``model`` asks for its projection to be fitted on the owner's first upload."""
    recipe = getattr(model, "recipe", None) or {}
    return recipe.get("projection") in FITTED and recipe.get("kind") == "efficientnet"


def save_pending(owner: OwnerState, recipe: dict[str, Any]) -> None:
    """Remember the model to fit and register at the first upload (survives a restart)."""
    _write(owner.root / PENDING_FILE, json.dumps(recipe).encode())


def load_pending(owner: OwnerState) -> dict[str, Any] | None:
    p = owner.root / PENDING_FILE
    return json.loads(p.read_text()) if p.exists() else None


def clear_pending(owner: OwnerState) -> None:
    (owner.root / PENDING_FILE).unlink(missing_ok=True)


def save_projection(owner: OwnerState, pca: PcaProjection) -> None:
    """Keep the fitted PCA with the owner's state (``np.savez``, no pickle)."""
    buf = io.BytesIO()
    np.savez(buf, **pca.to_arrays())  # type: ignore[arg-type]  # numpy stub: **kwds could fill allow_pickle
    _write(owner.root / PROJECTION_FILE, buf.getvalue())


def load_projection(owner: OwnerState) -> PcaProjection:
    p = owner.root / PROJECTION_FILE
    if not p.exists():
        raise FileNotFoundError(f"{p} is missing: the owner's fitted projection is needed to extract features")
    with np.load(p, allow_pickle=False) as z:
        return PcaProjection.from_arrays({k: z[k] for k in z.files})


def fitted_recipe(recipe: dict[str, Any], pca: PcaProjection) -> dict[str, Any]:
    """The recipe of the registered model once the PCA is fitted."""
    return {"kind": PCA_KIND, "resolution": int(recipe["resolution"]), "dim": pca.out_dim,
            "whiten": pca.whiten, "whiten_shrink": pca.shrink, "n_fit": pca.n_samples}


def rebuild(owner: OwnerState, recipe: dict[str, Any]) -> nn.Module:
    """The owner's plaintext model from its saved recipe (and projection, for ``efficientnet_pca``)."""
    if recipe["kind"] == PCA_KIND:
        base = build_model("efficientnet", int(recipe["resolution"]), int(recipe["dim"]), projection="random")
        model = with_projection(base, load_projection(owner))  # type: ignore[arg-type]
        model.recipe = dict(recipe)  # type: ignore[assignment]  # torch: attributes typed Tensor | Module
        return model
    return build_model(recipe["kind"], int(recipe["resolution"]), int(recipe["dim"]),
                       projection=recipe.get("projection", "random"))


def fit_first_upload(model: nn.Sequential, images: Sequence[Any],
                     progress: bool = False) -> tuple[nn.Module, np.ndarray | None]:
    """The model to register for a first upload of ``images`` and, when a PCA was fitted, the
    images' features under it ([n, dim] float32, L2-normalised, so the CNN runs once).

    With too few images the model keeps its seeded random projection (recipe ``projection:
    random``) and a :class:`TriVaultWarning` says how to refit later.
    """
    recipe = dict(model.recipe)  # type: ignore[arg-type]  # torch: attributes typed Tensor | Module
    dim = int(recipe["dim"])
    if len(images) <= dim:
        warnings.warn(f"the first upload has {len(images)} images: a PCA to {dim} dims needs more than {dim}; "
                      "using the seeded random projection instead (lower retrieval quality). Once more than "
                      f"{dim} images are stored, Client.reindex() (trivault reindex) fits it.", TriVaultWarning,
                      stacklevel=3)
        model.recipe = {**recipe, "projection": "random"}  # type: ignore[assignment]
        return model, None
    pooled = pooled_features(model, images, progress=progress)
    pca = fit_pca(pooled, dim, whiten=recipe["projection"] == "pca_whiten")
    fitted = with_projection(model, pca)
    fitted.recipe = fitted_recipe(recipe, pca)  # type: ignore[assignment]  # torch: attributes typed Tensor | Module
    fitted.pca = pca  # type: ignore[assignment]  # torch: attributes typed Tensor | Module
    feats = pca.transform(pooled)
    feats /= np.maximum(np.linalg.norm(feats, axis=1, keepdims=True), 1e-12)
    return fitted, feats.astype(np.float32)
