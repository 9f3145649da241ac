"""Crashes: restart keeps committed data; a dead peer fails a query fast; uploads are atomic."""

from __future__ import annotations

import threading
import time

import pytest

from client.sdk import Client, TriVaultError

from .conftest import make_cluster, small_images


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    """A cluster of its own: these tests kill, restart and delete."""
    yield from make_cluster(tmp_path_factory)


def _wait_consistent(c: Client, timeout_s: float = 20.0) -> dict:
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return c.info()
        except TriVaultError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.3)


def test_restart_keeps_committed_data(cluster, client):
    before = client.info()
    cluster.kill(1)  # kill -9
    cluster.start(1)
    with Client(cluster.client_config, progress=False) as c:
        assert c.info()["image_ids"] == before["image_ids"]
        assert c.search_results(cluster.images[7], k=1)[0].ids == [7]
        assert c.retrieve(7).label == "img7"


def test_dead_peer_mid_query_gives_clear_error(cluster, client):
    """Server 2 hangs, then is killed while servers 0 and 1 are inside the protocol."""
    cluster.pause(2)
    err: list[BaseException] = []
    t0 = time.monotonic()

    def run() -> None:
        try:
            with Client(cluster.client_config, progress=False) as c:
                c.search_results(cluster.images[3], k=2)[0]
        except BaseException as exc:  # noqa: BLE001
            err.append(exc)

    th = threading.Thread(target=run)
    th.start()
    time.sleep(1.0)  # servers 0 and 1 are now waiting for server 2's messages
    cluster.kill(2)
    th.join(60)
    elapsed = time.monotonic() - t0
    assert err and isinstance(err[0], TriVaultError)
    assert "server 2" in str(err[0])
    assert elapsed < 20, elapsed  # peer timeout is 5 s; no hang
    cluster.start(2)
    with Client(cluster.client_config, progress=False) as c:
        assert c.search_results(cluster.images[3], k=1)[0].ids == [3]


def test_upload_interrupted_before_commit_completes_on_restart(cluster, client):
    """kill -9 of server 2 after it prepared: servers 0 and 1 commit; server 2 finishes on restart."""
    before = client.info()["image_ids"]
    client.fault_hook = lambda phase: cluster.kill(2) if phase == "after_prepare" else None
    with pytest.raises(TriVaultError, match="committed by server 0"):
        client.upload(small_images(2, seed=5), labels=["n0", "n1"])
    client.fault_hook = None
    cluster.start(2)
    info = _wait_consistent(client)
    new = sorted(set(info["image_ids"]) - set(before))
    assert len(new) == 2
    with Client(cluster.client_config, progress=False) as c:
        assert c.retrieve(new[1]).label == "n1"
        assert c.search_results(small_images(2, seed=5)[0], k=1)[0].ids == [new[0]]


def test_upload_interrupted_during_prepare_is_absent_everywhere(cluster, client):
    """kill -9 of server 1 before it voted: the upload is aborted on all three."""
    before = client.info()
    client.fault_hook = lambda phase: cluster.kill(1) if phase == "before_prepare" else None
    with pytest.raises(TriVaultError, match="nothing stored"):
        client.upload(small_images(1, seed=9), labels=["gone"])
    client.fault_hook = None
    cluster.start(1)
    info = _wait_consistent(client)
    assert info["image_ids"] == before["image_ids"] and info["index_version"] == before["index_version"]
    assert client.upload(small_images(1, seed=9), labels=["back"])  # the next upload works


def test_delete_removes_everything(cluster, client):
    """Delete: ciphertexts, key shares and index entry go on all three servers."""
    victim = 6
    client.delete(victim)
    info = client.info()
    assert victim not in info["image_ids"]
    with pytest.raises(TriVaultError, match="unknown image id 6"):
        client.retrieve(victim)
    r = client.search_results(cluster.images[victim], k=3)[0]
    assert victim not in r.ids
    for i in range(3):
        objects = cluster.root / "data" / f"server{i}" / "objects"
        assert not list(objects.glob(f"img/{victim}.*")) and not list(objects.glob(f"key/{victim}.*"))


def test_incremental_index_updates_send_only_touched_records(cluster, client):
    """With IVF, an upload after the first re-shares only the touched records."""
    info = client.info()
    assert info["index_meta"]["format"] == "ivf"
    imgs = small_images(2, seed=21)
    ids = client.upload(imgs, labels=["u0", "u1"])
    st = client.last_upload_stats
    m = info["index_meta"]
    full = 8 * 2 * m["n_centroids"] * m["bucket_size"] * (m["dim"] + 2)
    assert st["index"] == "update"
    assert st["index_bytes_per_server"] < full / 2  # two records + slots, not the whole index
    assert client.search_results(imgs[1], k=1)[0].ids == [ids[1]]


def test_decision_server_killed_before_commit_aborts_everywhere(cluster, client):
    """kill -9 of server 0 (the decision point) after all voted: nobody commits; after its restart
    and the transaction timeout, the upload is absent on all three and uploads work again."""
    before = client.info()
    client.fault_hook = lambda phase: cluster.kill(0) if phase == "after_prepare" else None
    with pytest.raises(TriVaultError, match="outcome unknown"):
        client.upload(small_images(1, seed=33), labels=["limbo"])
    client.fault_hook = None
    cluster.start(0)
    deadline = time.monotonic() + 30
    while True:  # server 0 aborts after txn_timeout (8 s here); 1 and 2 follow it
        info = _wait_consistent(client)
        if not info["pending"] or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    with Client(cluster.client_config, progress=False) as c:
        infos = [c.info()]
    assert infos[0]["image_ids"] == before["image_ids"] and infos[0]["index_version"] == before["index_version"]
    assert client.upload(small_images(1, seed=33), labels=["again"])


def test_deleting_every_image_leaves_an_empty_ivf_index(cluster, client):
    """An empty index is an IVF index with no items: deleting everything (the last delete
    without the owner's local index, so it is rebuilt empty) leaves format ivf and 0 images;
    search is refused clearly and the next upload is found again."""
    ids = _wait_consistent(client)["image_ids"]
    for i in ids[:-1]:
        client.delete(i)
    client.owner.drop_plain_index()  # the last delete rebuilds the (empty) index from scratch
    client.delete(ids[-1])
    info = client.info()
    assert info["image_ids"] == [] and info["index_meta"]["format"] == "ivf"
    assert info["index_meta"]["n_images"] == 0
    img = small_images(1, seed=44)
    with pytest.raises(TriVaultError, match="no images uploaded yet"):
        client.search_results(img[0], k=1)[0]
    [new] = client.upload(img, labels=["again"])
    assert client.search_results(img[0], k=1)[0].ids == [new]
