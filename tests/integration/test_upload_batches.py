"""Uploads in several transactions (``client.upload_batches``) across three real servers: the
first upload fits the PCA on ALL its images although each transaction holds fewer than the
projection's dimension, and a failure part-way leaves exactly the first images stored, named
by ``UploadInterrupted``; uploading the rest completes it."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from client.errors import UploadInterrupted
from client.local_cluster import LocalCluster
from client.recipes import build_model
from client.sdk import Client

from .conftest import small_images


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory):
    lc = LocalCluster(tmp_path_factory.mktemp("batches"), txn_timeout_s=8.0, peer_timeout_s=5.0,
                      query_timeout_s=60.0)
    lc.start()
    c = Client(lc.client_config, progress=False)
    try:
        yield lc, c
    finally:
        c.close()
        lc.stop()


def _files(folder: Path, images: list[np.ndarray], prefix: str) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, a in enumerate(images):
        p = folder / f"{prefix}{i}.png"
        Image.fromarray(a).save(p)
        paths.append(p)
    return paths


def test_a_first_upload_in_batches_fits_the_pca_on_every_image(world, tmp_path):
    _, c = world
    c.register_model(build_model("efficientnet", resolution=32, dim=8, projection="pca_whiten"))
    paths = _files(tmp_path / "first", small_images(12, seed=5), "f")
    ids = c.upload(paths, labels=[p.name for p in paths], batch_images=5)
    assert ids == list(range(12)) and c.last_upload_stats["transactions"] == 3
    recipe = c._owner_ops.owner.load_recipe()
    assert recipe is not None and recipe["kind"] == "efficientnet_pca" and recipe["n_fit"] == 12  # on all 12
    feats, stored = c._owner_ops.owner.load_features()
    assert sorted(stored.tolist()) == ids and feats.shape == (12, 8)
    _, hit = c.search(paths[7], k=1, nprobe=64)
    assert hit[0, 0] == ids[7]


def test_a_failure_part_way_names_the_images_stored(world, tmp_path):
    _, c = world
    good = _files(tmp_path / "more", small_images(6, seed=9), "m")
    bad = tmp_path / "more" / "cut.png"
    bad.write_bytes(good[0].read_bytes()[:200])  # truncated: fails when its batch reads it
    before = len(c.info()["image_ids"])
    with pytest.raises(UploadInterrupted) as e:
        c.upload([*good[:4], bad, *good[4:]], batch_images=2)
    assert len(e.value.uploaded) == 4 and "4 of 7" in str(e.value)
    assert len(c.info()["image_ids"]) == before + 4  # the first two transactions are stored, nothing else
    rest = c.upload(good[4:], batch_images=2)
    assert len(c.info()["image_ids"]) == before + 6 and len(set(rest) | set(e.value.uploaded)) == 6
