"""Upload, secure search and retrieval against three real server processes, vs plaintext."""

from __future__ import annotations

import io
import threading

import numpy as np
import pytest
from PIL import Image

from client.sdk import Client

TOL = 1e-2  # absolute tolerance on squared distances (fixed point, f = 16, a few truncations)


def plain_distances(c: Client, image: np.ndarray) -> dict[int, float]:
    """The owner's plaintext pipeline: same model, same preprocessing, float64."""
    q = c.extract_features([Image.fromarray(image)])[0].astype(np.float64)
    feats, ids = c.owner.load_features()
    return dict(zip(ids.tolist(), ((feats.astype(np.float64) - q) ** 2).sum(1).tolist()))


def assert_matches_plaintext(c: Client, image: np.ndarray, ids: list[int], dists: list[float]) -> None:
    """Secure top-k = plaintext top-k up to ties within TOL, distances within TOL."""
    plain = plain_distances(c, image)
    kth = sorted(plain.values())[len(ids) - 1]
    for i, d in zip(ids, dists):
        assert abs(d - plain[i]) <= TOL, (i, d, plain[i])
        assert plain[i] <= kth + TOL
    assert dists == sorted(dists)


def test_upload_search_retrieve_matches_plaintext(cluster, client):
    """Search for a stored image: it ranks first; the ranking matches plaintext; retrieval decrypts."""
    info = client.info()
    assert info["image_ids"] == sorted(cluster.images)
    target = 5
    r = client.search_results(cluster.images[target], k=4)[0]
    assert r.ids[0] == target and abs(r.distances[0]) <= TOL
    assert_matches_plaintext(client, cluster.images[target], r.ids, r.distances)
    assert all(c["rounds"] > 0 and c["bytes_sent"] > 0 for c in r.comm)
    got = client.retrieve(target)
    assert got.label == f"img{target}"
    np.testing.assert_array_equal(got.array(), cluster.images[target])
    with Image.open(io.BytesIO(got.data)) as im:
        assert im.format == "PNG"


def test_concurrent_queries_are_separate_sessions(cluster):
    """Three queries at once from three clients: each gets its own correct answer."""
    results: dict[int, list[int]] = {}
    errors: list[BaseException] = []

    def run(t: int) -> None:
        try:
            with Client(cluster.client_config, progress=False) as c:
                results[t] = c.search_results(cluster.images[t], k=2)[0].ids
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(t,)) for t in (1, 2, 3)]
    for th in threads:
        th.start()
    for th in threads:
        th.join(120)
    assert not errors, errors
    assert {t: ids[0] for t, ids in results.items()} == {1: 1, 2: 2, 3: 3}


def test_logs_carry_no_secrets(cluster, client):
    """Server logs hold ids, sizes and timings: no share values, keys or pixels."""
    r = client.search_results(cluster.images[0], k=1)[0]
    text = "".join(cluster.log_path(i).read_text() for i in range(3))
    assert "session" in text and "bytes" in text
    feats, _ = client.owner.load_features()
    for v in feats[0][:3]:
        assert f"{v:.6f}" not in text
    assert r.ids[0] == 0


def test_deidentified_copy_is_stored_and_retrievable(cluster, client):
    """upload --deid stores a de-identified copy under its own key beside the original."""
    from skimage import data

    face = data.astronaut()[:256, 96:352]
    before = client.info()["index_version"]
    [i] = client.upload([face], labels=["face"], deid=True, eps=1.0)
    orig = client.retrieve(i)
    anon = client.retrieve(i, deid=True)
    np.testing.assert_array_equal(orig.array(), face)
    assert anon.array().shape == face.shape
    assert np.abs(anon.array().astype(int) - face.astype(int)).mean() > 1.0  # the face region was changed
    # the privacy accounting travels inside the encrypted copy (never in server metadata)
    import io
    import json

    from PIL import Image

    from client.encryption import DEID_METADATA_KEY

    acct = json.loads(Image.open(io.BytesIO(anon.data)).text[DEID_METADATA_KEY])
    assert acct["eps_per_region"] and all(e == 1.0 for e in acct["eps_per_region"])
    assert acct["eps_total"] == sum(acct["eps_per_region"])  # sequential composition
    assert client.last_upload_stats["deid"] == {i: acct}  # the upload itself returns the accounting
    assert client.info()["index_version"] == before + 1
    plain = client.retrieve(0)
    with pytest.raises(Exception, match="no de-identified copy"):
        client.retrieve(plain.image_id, deid=True)
