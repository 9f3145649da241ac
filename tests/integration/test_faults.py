"""Crashes: restart keeps committed data; a dead peer fails a query fast; uploads are atomic."""

from __future__ import annotations

import json
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


def _raw_vault(cluster, i: int):
    """A raw Vault stub with a valid deployment client certificate (red-team calls)."""
    import grpc

    from protos.trivault.v1 import trivault_pb2_grpc as pbg
    from wire.tls import channel_credentials

    c, k = cluster.certs.client("owner")
    return pbg.VaultStub(grpc.secure_channel(f"127.0.0.1:{cluster.ports[i]}",
                                             channel_credentials(cluster.certs.ca, c, k)))


def test_commit_and_abort_need_the_owners_signature(cluster, client):
    """Between prepare and commit, anything holding a client certificate tries to commit or
    abort the pending upload: unsigned, signed by another registered user, signed by the owner
    but for other content, replayed, or with a path as transaction id. Each is refused with its
    exact status, the upload stays pending, and the owner's own signed commit then lands it."""
    import grpc

    from client.identity import Identity
    from protos.trivault.v1 import trivault_pb2 as pb

    mallory = Identity.create()
    client.register_user(mallory.public(), {"role": "none"})
    with Client(cluster.client_config, progress=False, identity=mallory) as m:
        seen: dict[str, object] = {}

        def attacks(phase: str) -> None:
            if phase != "after_prepare":
                return
            [txn] = client.info()["pending"]
            stubs = [_raw_vault(cluster, i) for i in range(3)]
            digests = ["0" * 64] * 3
            cases = {
                "unsigned": (stubs[1].Commit, pb.TxnRequest(txn_id=txn)),
                "not-owner": (stubs[2].Abort, pb.TxnRequest(txn_id=txn, auth=m.sign(
                    "abort", {"txn": txn, "digests": digests}))),
                "mismatch": (stubs[0].Commit, pb.TxnRequest(txn_id=txn, auth=client.sign(
                    "commit", {"txn": txn, "digests": digests}))),
            }
            for reason, (call, req) in cases.items():
                with pytest.raises(grpc.RpcError) as e:
                    call(req, timeout=10)
                assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED and reason in e.value.details(), reason
            traversal = pb.TxnRequest(txn_id="../objects", auth=client.sign("abort", {"txn": "../objects"}))
            with pytest.raises(grpc.RpcError) as e:
                stubs[0].Abort(traversal, timeout=10)
            assert e.value.code() == grpc.StatusCode.INVALID_ARGUMENT and "not a UUID" in e.value.details()
            assert client.info()["pending"] == [txn]  # nothing above changed the pending upload
            seen["txn"] = txn

        client.fault_hook = attacks
        try:
            [new] = client.upload(small_images(1, seed=61), labels=["signed"])
        finally:
            client.fault_hook = None
    assert seen and _wait_consistent(client)["pending"] == []
    assert client.search_results(small_images(1, seed=61)[0], k=1)[0].ids == [new]
    for i in range(3):  # an owner-signed abort naming another transaction changes nothing
        stub = _raw_vault(cluster, i)
        with pytest.raises(grpc.RpcError) as e:
            stub.Abort(pb.TxnRequest(txn_id=str(seen["txn"]), auth=client.sign("abort", {"txn": "x"})), timeout=10)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED and "another transaction" in e.value.details()
    assert new in client.info()["image_ids"]


def test_a_server_that_missed_the_commit_gets_the_signed_commit_from_any_peer(cluster, client):
    """Server 2 dies after voting; 0 and 1 commit; server 0 hangs when 2 comes back: server 2
    commits on the owner's signed commit that server 1 hands over (all-or-nothing)."""
    import signal

    from protos.trivault.v1 import trivault_pb2 as pb

    client.fault_hook = lambda phase: cluster.kill(2) if phase == "after_prepare" else None
    imgs = small_images(1, seed=71)
    with pytest.raises(TriVaultError, match="committed by server 0"):
        client.upload(imgs, labels=["relay"])
    client.fault_hook = None
    cluster.pause(0)
    try:
        cluster.start(2)
        deadline = time.monotonic() + 30
        pending = True
        while pending and time.monotonic() < deadline:  # server 2 alone: its own Info
            pending = bool(json.loads(_raw_vault(cluster, 2).Info(pb.InfoRequest(), timeout=10).meta_json)["pending"])
            time.sleep(0.3)
    finally:
        cluster.procs[0].send_signal(signal.SIGCONT)
    assert not pending
    info = _wait_consistent(client)
    assert info["pending"] == []
    deadline = time.monotonic() + 20
    while True:  # (server 2's channel to server 0 may still be in reconnect backoff)
        try:
            assert client.search_results(imgs[0], k=1)[0].ids == [max(info["image_ids"])]
            break
        except TriVaultError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


def test_a_replayed_peer_message_aborts_the_query_naming_the_sender(cluster, client):
    """Server 1 sends one protocol message of the secure CNN twice (tests/integration/
    faulty_server.py, ``msg-replay-cnn``): its peers fault the session at once and the
    client's error names server 1; no result is released. (Every message fault class and
    step: ``python -m benchmarks.security``.)"""
    import sys
    from pathlib import Path

    cluster.kill(1)
    cluster.commands[1] = [sys.executable, str(Path(__file__).with_name("faulty_server.py")), "msg-replay-cnn"]
    cluster.start(1)
    try:
        t0 = time.monotonic()
        with pytest.raises(TriVaultError, match="server 1 sent message .* twice") as e:
            client.search_results(small_images(1, seed=5)[0], k=1)
        assert time.monotonic() - t0 < 5.0, e.value  # detected, not a timeout (the peer timeout is 5 s)
    finally:
        cluster.kill(1)
        cluster.commands.pop(1, None)
        cluster.start(1)


def test_first_query_after_a_peer_restart_succeeds(cluster, client):
    """kill -9 of server 1 and an immediate restart: its peers' streams to the old process are
    stale; the first query must not fail with 'lost the connection to server 1'."""
    before = client.search_results(cluster.images[3], k=2)[0].ids
    for _ in range(2):
        cluster.kill(1)
        cluster.start(1)
        with Client(cluster.client_config, progress=False) as c:
            assert c.search_results(cluster.images[3], k=2)[0].ids == before
