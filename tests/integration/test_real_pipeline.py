"""The real pipeline once: pretrained EfficientNet-Lite0 with the owner's PCA as shares, secure CNN +
search over gRPC, the same PCA after a client restart, and an explicit re-index.

Plaintext reference: the test fits its own PCA (``client.projection.fit_pca``) on the pooled
features of the first upload's images; stored features match it within 1e-4 (float32 layer),
secure distances within TOL (fixed point, f = 16, as in test_cluster)."""

from __future__ import annotations

import numpy as np
from PIL import Image

from client.local_cluster import LocalCluster
from client.sdk import Client

from .test_cluster import TOL, assert_matches_plaintext

RES, DIM = 32, 8


def _unit(x: np.ndarray) -> np.ndarray:
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def test_efficientnet_pca_end_to_end(tmp_path):
    from client.demo_data import augment, base_images
    from client.model import default_feature_model
    from client.projection import fit_pca, pooled_features
    from client.recipes import build_model

    bases = base_images()[:6]
    imgs = [a for _, a in bases] + [augment(a, 1) for _, a in bases]
    labels = [n for n, _ in bases] * 2
    trunk = default_feature_model(RES, None)
    pooled = pooled_features(trunk, imgs)
    pca = fit_pca(pooled, DIM, whiten=True)  # the plaintext reference (the default: whitened), fitted here
    with LocalCluster(tmp_path, peer_timeout_s=30.0) as lc:
        with Client(lc.client_config, progress=False) as c:
            assert c.register_model(build_model("efficientnet", RES, DIM))["pending"]
            assert not c.info()["arch"]  # registered by the first upload, with the fitted PCA
            ids = c.upload(imgs, labels=labels)
            info = c.info()
            head = [s for s in info["arch"]["layers"] if s["type"] == "linear"][-1]
            assert head["bias"] and head["out_features"] == DIM
            feats, _ = c.owner.load_features()
            assert np.abs(feats - _unit(pca.transform(pooled))).max() < 1e-4
            q = augment(bases[1][1], 77)  # a new variant of the second photo
            r = c.search_results(q, k=3)[0]
            plain = ((_unit(pca.transform(pooled)) - _unit(pca.transform(pooled_features(trunk, [q])))) ** 2).sum(1)
            for i, d in zip(r.ids, r.distances):
                assert abs(d - plain[ids.index(i)]) <= TOL, (i, d, plain[ids.index(i)])
            assert sorted(plain)[2] + TOL >= max(plain[ids.index(i)] for i in r.ids)
            assert_matches_plaintext(c, q, r.ids, r.distances)
            got = c.retrieve(r.ids[0])
            assert got.array().shape == imgs[ids.index(r.ids[0])].shape
            assert np.isfinite(r.distances).all() and isinstance(Image.fromarray(got.array()), Image.Image)
        with Client(lc.client_config, progress=False) as c:  # a restarted client: same PCA, no refit
            more = [augment(bases[0][1], 5), augment(bases[2][1], 6)]
            c.upload(more)
            assert c.info()["model_version"] == info["model_version"]
            assert c.owner.load_recipe()["kind"] == "efficientnet_pca"
            new = c.owner.load_features()[0][-2:]
            assert np.abs(new - _unit(pca.transform(pooled_features(trunk, more)))).max() < 1e-4
            # an explicit re-index refits on all 14 stored images and replaces model + feature shares
            assert c.reindex()["n_fit"] == len(imgs) + len(more)
            assert c.info()["model_version"] > info["model_version"]
            pooled = pooled_features(trunk, imgs + more)
            refit = _unit(fit_pca(pooled, DIM, whiten=True).transform(pooled))
            assert np.abs(c.owner.load_features()[0] - refit).max() < 1e-4
            r = c.search_results(q, k=3)[0]
            assert_matches_plaintext(c, q, r.ids, r.distances)
