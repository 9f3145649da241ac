"""Model owner side: the pretrained EfficientNet-Lite0 loads offline, classifies the sample
photos, BN folding is exact, and the split/architecture description behaves."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from skimage import data

from client.features import extract_features
from client.model import (
    count_layers,
    default_feature_model,
    describe_model,
    efficientnet_classifier,
    load_efficientnet_lite0,
    load_server_shares,
    plain_forward,
    save_split,
    split_model,
)
from client.preprocess import preprocess
from protocols.ring import DEFAULT_FP
from protocols.sharing import reconstruct

CATS = {281, 282, 283, 284, 285}  # ImageNet tabby, tiger cat, Persian, Siamese, Egyptian cat


@pytest.fixture(scope="module")
def net224():
    return load_efficientnet_lite0(224)


def test_pretrained_classifies_sample_photos(net224) -> None:
    x = torch.stack([preprocess(data.chelsea()), preprocess(data.coffee())])
    with torch.no_grad():
        top = net224(x).argmax(1).tolist()
    assert top[0] in CATS  # chelsea is a cat
    assert top[1] in {967, 968}  # coffee: espresso / cup


def test_bn_folding_is_exact_and_description_matches(net224) -> None:
    x = preprocess(data.chelsea()).unsqueeze(0)
    folded = efficientnet_classifier(net224)
    with torch.no_grad():
        ref = net224(x)
        got = folded(x)
    assert (ref - got).abs().max().item() < 1e-3
    assert not any(isinstance(m, torch.nn.BatchNorm2d) for m in folded.modules())
    arch, params = describe_model(net224, (3, 224, 224))
    counts = count_layers(arch)
    assert counts["conv2d"] == 49 and counts["clamp"] == 33 and counts["residual"] == 9
    assert "affine" not in counts  # every BN was folded into its conv
    assert (plain_forward(arch, params, x) - ref.double()).abs().max().item() < 1e-3
    # magnitudes that matter for fixed point (see protocols.ring): folded weights stay small
    assert max(v.abs().max().item() for v in params.values()) < 100


def test_default_feature_model_outputs_unit_rows() -> None:
    model = default_feature_model(64)
    x = torch.stack([preprocess(data.chelsea(), 64), preprocess(data.astronaut(), 64)])
    with torch.no_grad():
        f = model(x)
    assert f.shape == (2, 1280)
    assert torch.allclose(f.norm(dim=1), torch.ones(2), atol=1e-5)
    proj = default_feature_model(64, out_dim=128)
    with torch.no_grad():
        g = proj(x)
    assert g.shape == (2, 128) and torch.allclose(g.norm(dim=1), torch.ones(2), atol=1e-5)


def test_preprocess_inputs_and_extract_features(tmp_path) -> None:
    img = data.coffee()
    p = tmp_path / "coffee.png"
    Image.fromarray(img).save(p)
    a = preprocess(img, 96)
    assert a.shape == (3, 96, 96) and a.dtype == torch.float32
    assert torch.equal(a, preprocess(p, 96))
    assert torch.equal(a, preprocess(Image.fromarray(img), 96))
    assert preprocess(data.camera(), 96).shape == (3, 96, 96)  # grayscale
    assert preprocess(data.logo(), 96).shape == (3, 96, 96)  # RGBA
    assert float(a.abs().max()) <= 1.0
    model = default_feature_model(96)
    f = extract_features(model, [img, p, data.chelsea()], batch_size=2)
    assert f.dtype == np.float32 and f.shape == (3, 1280)
    assert np.allclose(f[0], f[1], atol=1e-6)


def test_split_files_roundtrip(tmp_path) -> None:
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.ReLU6(), torch.nn.Flatten()).eval()
    arch, per_server = split_model(model, (3, 6, 6))
    files = save_split(tmp_path, arch, per_server)
    assert json.loads(files[0].read_text()) == arch
    loaded = [load_server_shares(f) for f in files[1:]]
    for i in range(3):
        for k, (lo, hi) in per_server[i].items():
            assert torch.equal(lo, loaded[i][k][0]) and torch.equal(hi, loaded[i][k][1])
    w = DEFAULT_FP.decode(reconstruct([loaded[0]["conv2d1.weight"], None, loaded[2]["conv2d1.weight"]]))
    assert (w - model[0].weight.double()).abs().max().item() < 2**-16


def test_pca_projection_replaces_the_head() -> None:
    from client.model import L2Normalize, with_pca_projection

    model = default_feature_model(64, out_dim=16)
    rng = np.random.default_rng(0)
    pooled = rng.random((40, 1280)).astype(np.float32)
    pca = with_pca_projection(model, pooled, 8)
    assert isinstance(pca[-1], L2Normalize) and pca[-2].out_features == 8
    assert sum(isinstance(m, torch.nn.Linear) for m in pca) == 1
    with torch.no_grad():
        f = pca(preprocess(data.chelsea(), 64).unsqueeze(0))
    assert f.shape == (1, 8) and abs(float(f.norm()) - 1) < 1e-5
