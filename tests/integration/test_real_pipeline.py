"""The real pipeline once: pretrained EfficientNet-Lite0 as shares, secure CNN + search over gRPC."""

from __future__ import annotations

import numpy as np
from PIL import Image

from client.local_cluster import LocalCluster
from client.sdk import Client

from .test_cluster import assert_matches_plaintext


def test_efficientnet_end_to_end(tmp_path):
    from client.demo_data import augment, base_images
    from client.recipes import build_model

    bases = base_images()[:6]
    imgs = [a for _, a in bases] + [augment(a, 1) for _, a in bases]
    labels = [n for n, _ in bases] * 2
    with LocalCluster(tmp_path, peer_timeout_s=30.0) as lc, Client(lc.client_config, progress=False) as c:
        c.register_model(build_model("efficientnet", 32, 16), resolution=32)
        ids = c.upload(imgs, labels=labels)
        q = augment(bases[1][1], 77)  # a new variant of the second photo
        r = c.search_results(q, k=3)[0]
        assert_matches_plaintext(c, q, r.ids, r.distances)
        got = c.retrieve(r.ids[0])
        assert got.label in labels
        assert got.array().shape == imgs[ids.index(r.ids[0])].shape
        assert np.isfinite(r.distances).all() and isinstance(Image.fromarray(got.array()), Image.Image)
