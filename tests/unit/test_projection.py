"""client.projection: the owner's PCA equals scikit-learn's, becomes one shared linear layer, and the
secure evaluation of the projected model equals plaintext (three parties in-process).

Tolerances: PCA maths in float64 vs scikit-learn: 1e-8 relative to the feature scale; the
layer in float32: 1e-4; secure vs plaintext: fixed point with 16 fractional bits, as in
tests/unit/test_nn.py (L2-normalised features within 2e-3)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from skimage import data
from sklearn.decomposition import PCA
from torch import nn

from client.model import GlobalAvgPool, L2Normalize, default_feature_model, split_model
from client.preprocess import preprocess
from client.projection import (
    WHITEN_SHRINK,
    PcaProjection,
    feature_trunk,
    fit_owner_projection,
    fit_pca,
    pooled_features,
    with_projection,
)
from protocols.ring import DEFAULT_FP
from protocols.sharing import from_pair, output_pair, reconstruct, share_fixed
from protocols.simulate import run_parties

PHOTOS = ["astronaut", "camera", "chelsea", "coffee", "coins", "rocket", "moon", "page", "text", "clock", "brick",
          "grass"]


def _structured(n: int, dim: int, seed: int) -> np.ndarray:
    """Features with a decaying spectrum (like real pooled features), non-negative, not centred."""
    rng = np.random.default_rng(seed)
    basis = np.linalg.qr(rng.standard_normal((dim, 40)))[0]
    z = rng.standard_normal((n, 40)) * np.geomspace(3.0, 0.05, 40)
    return np.abs(z @ basis.T + 0.02 * rng.standard_normal((n, dim)) + 0.5)


def _align_signs(ours: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """PCA fixes each component up to its sign: flip reference columns to ours."""
    s = np.sign((ours * ref).sum(0))
    return ref * s


@pytest.mark.parametrize("n, dim", [(300, 1280), (1500, 200)])  # SVD branch (n < D), covariance branch (n >= D)
@pytest.mark.parametrize("whiten", [False, True])
def test_pca_transform_equals_sklearn(n: int, dim: int, whiten: bool) -> None:
    x = _structured(n, dim, seed=1)
    pca = fit_pca(x, 32, whiten=whiten, shrink=0.0)
    ref = PCA(n_components=32, whiten=whiten, svd_solver="full").fit(x)
    new = _structured(50, dim, seed=2)  # images projected after the fit
    ours = pca.transform(new)
    theirs = _align_signs(ours, ref.transform(new))
    scale = np.abs(theirs).max()
    assert np.abs(ours - theirs).max() < 1e-8 * scale
    assert np.allclose(pca.explained_variance, ref.explained_variance_, rtol=1e-8)
    assert np.allclose(pca.mean, ref.mean_)
    assert np.allclose(pca.components @ pca.components.T, np.eye(32), atol=1e-10)
    lin = pca.to_linear()
    assert lin.bias is not None and lin.weight.shape == (32, dim)
    with torch.no_grad():
        y = lin(torch.from_numpy(new).float()).double().numpy()
    assert np.abs(y - ours).max() < 1e-4 * max(1.0, scale)


def test_fit_rejects_bad_input() -> None:
    x = _structured(40, 64, seed=3)
    with pytest.raises(ValueError, match="more than 40 images"):
        fit_pca(x, 40)
    with pytest.raises(ValueError, match="out_dim"):
        fit_pca(x, 0)
    with pytest.raises(ValueError, match=r"\[n, D\]"):
        fit_pca(x[0], 4)
    bad = x.copy()
    bad[3, 5] = np.nan
    with pytest.raises(ValueError, match="NaN"):
        fit_pca(bad, 4)
    flat = np.repeat(x[:1], 40, 0) + np.outer(np.arange(40), np.ones(64))  # one direction of variance
    with pytest.raises(ValueError, match="fewer than 4 directions"):
        fit_pca(flat, 4)
    with pytest.raises(ValueError, match=r"\[n, 64\]"):
        fit_pca(x, 4).transform(x[:, :10])


def test_arrays_roundtrip(tmp_path) -> None:
    pca = fit_pca(_structured(100, 64, seed=4), 8, whiten=True)
    np.savez(tmp_path / "pca.npz", **pca.to_arrays())
    with np.load(tmp_path / "pca.npz", allow_pickle=False) as z:
        back = PcaProjection.from_arrays(dict(z))
    x = _structured(5, 64, seed=5)
    assert back.whiten and back.n_samples == 100 and back.out_dim == 8 and back.in_dim == 64
    assert back.shrink == pca.shrink == WHITEN_SHRINK
    assert np.array_equal(back.transform(x), pca.transform(x))
    old = {k: v for k, v in pca.to_arrays().items() if k != "shrink"}  # saved before shrink existed
    assert PcaProjection.from_arrays(old).shrink == 0.0


def test_shrunk_whitening_divides_by_the_shrunk_std() -> None:
    """Whitening divides component j by sqrt(var_j + s mean(var)): s = 0 is full whitening
    (unit variance on the fitted data), larger s moves toward plain PCA; the fit's default s
    is WHITEN_SHRINK; without whitening s is 0 and has no effect."""
    x = _structured(400, 64, seed=6)
    full, plain = fit_pca(x, 8, whiten=True, shrink=0.0), fit_pca(x, 8)
    shrunk = fit_pca(x, 8, whiten=True)
    assert shrunk.shrink == WHITEN_SHRINK and plain.shrink == 0.0 and fit_pca(x, 8, shrink=2.0).shrink == 0.0
    var = full.explained_variance
    assert np.allclose(full.transform(x).var(0, ddof=1), 1.0)
    want = plain.transform(x) / np.sqrt(var + WHITEN_SHRINK * var.mean())
    assert np.allclose(shrunk.transform(x), want, rtol=1e-10, atol=1e-12)
    got_var = shrunk.transform(x).var(0, ddof=1)
    assert np.allclose(got_var, var / (var + WHITEN_SHRINK * var.mean()))
    with pytest.raises(ValueError, match="shrink"):
        fit_pca(x, 8, whiten=True, shrink=-1.0)


@pytest.fixture(scope="module")
def owner_model():
    """The product model at 64 px (random 16-d head, replaced below) and 12 real photos."""
    model = default_feature_model(64, out_dim=16)
    images = [getattr(data, name)() for name in PHOTOS]
    return model, images


def test_projected_model_is_trunk_plus_pca_layer(owner_model) -> None:
    model, images = owner_model
    projected, pca = fit_owner_projection(model, images, out_dim=8, whiten=False, batch_size=5)
    assert projected.resolution == 64
    assert isinstance(projected[-1], L2Normalize) and isinstance(projected[-2], nn.Linear)
    assert sum(isinstance(m, nn.Linear) for m in projected) == 1  # the random head was replaced
    pooled = pooled_features(model, images)
    assert pooled.shape == (12, 1280) and pca.n_samples == 12
    x = torch.stack([preprocess(im, 64) for im in images])
    with torch.no_grad():
        got = projected(x).double().numpy()
        trunk_out = feature_trunk(model)(x).double().numpy()
    assert np.abs(trunk_out - pooled).max() < 1e-5
    ref = pca.transform(pooled)
    ref /= np.linalg.norm(ref, axis=1, keepdims=True)
    assert np.abs(got - ref).max() < 1e-4
    arch, _ = split_model(projected, (3, 64, 64))
    head = arch["layers"][-2:]
    assert head[0]["type"] == "linear" and head[0]["bias"] is True and head[0]["out_features"] == 8
    assert head[1]["type"] == "l2norm" and arch["output_shape"] == [8]


@pytest.mark.parametrize("whiten", [False, True])
def test_secure_projected_head_matches_plaintext(owner_model, whiten: bool) -> None:
    """The layers the PCA adds (pool -> PCA linear with bias -> L2 norm), run on secret shares of the
    real trunk maps of two photos, equal plaintext within 2e-3 (the trunk's own secure evaluation
    is tested in test_nn.py)."""
    from protocols.nn import SecureModel

    model, images = owner_model
    pca = fit_pca(pooled_features(model, images), 8, whiten=whiten)
    x = torch.stack([preprocess(im, 64) for im in images[:2]])
    with torch.no_grad():
        maps = model[0](x).double()  # [2, 1280, 2, 2]
    head = nn.Sequential(GlobalAvgPool(), pca.to_linear(), L2Normalize()).eval()
    with torch.no_grad():
        ref = head(maps.float()).double()
    arch, weights = split_model(head, tuple(maps.shape[1:]))
    xs = share_fixed(maps)

    def party_fn(p, w, xp):
        m = SecureModel.from_shares(p, arch, w)
        return output_pair(m.forward(from_pair(p, xp, DEFAULT_FP.frac_bits)))

    out = run_parties(party_fn, [(weights[i], xs[i]) for i in range(3)])
    y = DEFAULT_FP.decode(reconstruct(out))
    assert y.shape == (2, 8)
    assert (y - ref).abs().max().item() < 2e-3
    with_proj = with_projection(model, pca)
    with torch.no_grad():
        assert (with_proj(x).double() - ref).abs().max().item() < 1e-4  # the same head inside the full model
