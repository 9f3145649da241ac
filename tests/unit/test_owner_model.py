"""client.owner_model: the model is kept pending until the first upload fits its PCA; too few images
fall back to the seeded random projection with a warning; the owner's state rebuilds the fitted
model exactly (same outputs, float32) after a restart."""

import numpy as np
import pytest
import torch
from skimage import data

from client import owner_model
from client.errors import TriVaultWarning
from client.owner_state import OwnerState
from client.preprocess import preprocess
from client.recipes import build_model

PHOTOS = [getattr(data, n)() for n in ("astronaut", "camera", "chelsea", "coffee", "coins", "rocket", "moon",
                                        "page", "text", "clock")]


def test_too_few_images_fall_back_to_the_random_projection():
    m = build_model("efficientnet", 32, 8)
    assert owner_model.wants_fit(m) and m.recipe["projection"] == "pca_whiten"
    with pytest.warns(TriVaultWarning, match="needs more than 8"):
        got, feats = owner_model.fit_first_upload(m, PHOTOS[:5])
    assert feats is None and got.recipe["projection"] == "random" and not owner_model.wants_fit(got)


def test_fitted_model_rebuilt_from_owner_state(tmp_path):
    projection = "pca"  # (pca_whiten: tests/integration/test_real_pipeline.py)
    owner = OwnerState(tmp_path)
    fitted, feats = owner_model.fit_first_upload(build_model("efficientnet", 32, 6, projection), PHOTOS)
    assert fitted.recipe == {"kind": "efficientnet_pca", "resolution": 32, "dim": 6,
                             "whiten": projection == "pca_whiten", "whiten_shrink": 0.0, "n_fit": len(PHOTOS)}
    owner_model.save_projection(owner, fitted.pca)
    again = owner_model.rebuild(owner, fitted.recipe)  # a restarted client
    x = torch.stack([preprocess(p, 32) for p in PHOTOS])
    with torch.no_grad():
        a, b = fitted(x).numpy(), again(x).numpy()
    assert np.array_equal(a, b) and np.abs(a - feats).max() < 1e-4
    assert np.allclose(np.linalg.norm(b, axis=1), 1.0, atol=1e-5)
