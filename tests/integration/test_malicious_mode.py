"""Malicious mode (issue 14 item 1) across three real server processes (mTLS): the checked query
with one proof before release equals the semi-honest query; a server that corrupts one protocol
message ends the search in ``MaliciousServerError`` naming it, never in a result; servers in
different ``[security]`` modes refuse to run a query together.

Small on purpose (one bucket of 14 records, d = 8, the 16 px tiny CNN): the whole module runs in
about a minute on 2 cores."""

from __future__ import annotations

import threading
import time
import uuid

import grpc
import numpy as np
import pytest
import torch

from client.errors import MaliciousServerError, TriVaultError
from client.identity import Identity
from client.local_cluster import LocalCluster
from client.sdk import Client
from protocols.checked_search import search_rounds
from protocols.dzk import MAX_FOLDS
from protocols.sharing import share_fixed
from wire import bundle as bd

from .conftest import RES, small_images, tiny_model
from .test_acl_access import _restart
from .test_cluster import TOL, assert_matches_plaintext

PICK = [4, 10, 0]  # query rows: the features of these images, shifted by 0.01


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    """Three servers in malicious mode, the tiny model and 12 images (as conftest.make_cluster)."""
    lc = LocalCluster(tmp_path_factory.mktemp("malicious"), txn_timeout_s=8.0, peer_timeout_s=5.0,
                      query_timeout_s=60.0, security="malicious")
    lc.start()
    with Client(lc.client_config, progress=False) as c:
        c.register_model(tiny_model(), resolution=RES)
        imgs = small_images(12)
        ids = c.upload(imgs, labels=[f"img{i}" for i in range(12)])
    lc.images = dict(zip(ids, imgs))  # type: ignore[attr-defined]
    yield lc
    lc.stop()


def _queries(client: Client) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(feature queries [3, 8], the indexed plaintext features, their ids)."""
    feats, ids = client.owner.load_features()
    q = feats[[list(ids).index(p) for p in PICK]].astype(np.float64) + 0.01
    return q, feats.astype(np.float64), np.asarray(ids)


def _restart_all(cluster: LocalCluster, mode: str) -> None:
    cluster.stop()
    cluster.set_security(mode)
    cluster.start()


def _sessions_done(cluster: LocalCluster) -> list[int]:
    return [cluster.log_path(i).read_text().count(" done: ") for i in range(3)]


def test_malicious_search_equals_semi_honest_and_plaintext(cluster, client):
    """Features input (k = 4, 3 queries in one session), an image through the checked CNN, and a
    requester with a hidden id (checked masking): malicious mode returns the semi-honest results
    (ids equal; distances within TOL of each other and of plaintext torch), and each server's
    feature session costs exactly ``checked_search.search_rounds`` plus one proof (``2 R + 3`` rounds,
    R <= 40)."""
    q, feats, fids = _queries(client)
    meta = client.info()["index_meta"]
    assert client.info()["security"] == "malicious"
    bob_id = Identity.create()
    client.register_user(bob_id.public(), {"role": "doctor"})
    client.grant(bob_id.user_id, outcome="ORIGINAL")
    client.revoke(bob_id.user_id, image_id=PICK[0])

    def run() -> dict[str, object]:
        with Client(cluster.client_config, progress=False) as c, \
                Client(cluster.client_config, progress=False, identity=bob_id) as bob:
            return {"feat": c.search_batch(q, k=4), "image": c.search_batch(cluster.images[3], k=2),
                    "bob": bob.search_batch(q[:1], k=3)}

    mal = run()
    _restart_all(cluster, "semi_honest")
    try:
        semi = run()
    finally:
        _restart_all(cluster, "malicious")
    for name in mal:
        m, s = mal[name], semi[name]
        assert m.security == "malicious" and s.security == "semi_honest"  # type: ignore[attr-defined]
        assert m.ids.tolist() == s.ids.tolist(), name  # type: ignore[attr-defined]
        assert np.allclose(m.distances, s.distances, atol=TOL, rtol=0), name  # type: ignore[attr-defined]
    b = mal["feat"]
    assert b.ids[:, 0].tolist() == PICK  # type: ignore[attr-defined]
    for row in range(len(PICK)):  # against plaintext torch
        plain = ((torch.from_numpy(feats) - torch.from_numpy(q[row])) ** 2).sum(1).tolist()
        expect = dict(zip(fids.tolist(), plain))
        kth = sorted(plain)[3]
        for i, d in zip(b.ids[row].tolist(), b.distances[row].tolist()):  # type: ignore[attr-defined]
            assert abs(d - expect[i]) <= TOL and expect[i] <= kth + TOL
    seen = [i for i in mal["bob"].ids[0].tolist() if i >= 0]  # type: ignore[attr-defined]
    assert seen == [i for i in b.ids[0, :3].tolist() if i != PICK[0]]  # type: ignore[attr-defined]
    img = mal["image"]
    assert img.ids[0, 0] == 3  # type: ignore[attr-defined]
    assert_matches_plaintext(client, cluster.images[3], img.ids[0].tolist(),  # type: ignore[attr-defined]
                             img.distances[0].astype(float).tolist())  # type: ignore[attr-defined]
    base = search_rounds(int(meta["n_centroids"]), int(meta["bucket_size"]), 1, int(meta["dim"]))
    for c_mal, c_semi in zip(b.comm, semi["feat"].comm):  # type: ignore[attr-defined]
        proof = c_mal["proof_rounds"]  # one batch: 2 R + 3 rounds
        assert c_mal["rounds"] == base + proof and proof % 2 == 1 and 5 <= proof <= 2 * MAX_FOLDS + 3, c_mal
        assert "proof_rounds" not in c_semi and c_mal["rounds"] > c_semi["rounds"]


@pytest.mark.parametrize("bad, fault", [(1, "msg-add-topk"), (0, "msg-flip-distances"), (2, "msg-add-cnn")])
def test_a_corrupted_message_aborts_naming_the_server(cluster, client, bad, fault):
    """One corrupted protocol message (tests/integration/faulty_server.py, malicious mode: the checked
    steps are wrapped) is caught by the proof before any result share leaves an honest server: the
    client gets ``MaliciousServerError`` whose suspects contain the faulty server (the corrupted
    link's pair, or the server itself when the two others' reports agree), and no result."""
    q, _, _ = _queries(client)
    _restart(cluster, bad, fault)
    try:
        before = _sessions_done(cluster)
        with pytest.raises(MaliciousServerError) as e:
            client.search_batch(cluster.images[3] if fault.endswith("cnn") else q, k=4)
        err = e.value
        assert bad in err.suspects and 1 <= len(err.suspects) <= 2, (err.suspects, err.reports)
        head = str(err).splitlines()[0]  # the summary the CLI prints
        said = f"server {bad} deviated" if len(err.suspects) == 1 else \
            f"servers {' and '.join(map(str, err.suspects))} disagreed"
        assert said in head and head.endswith("no result was released"), head
        assert len(err.reports) >= 2 and all(r != bad for r in err.reports if len(err.suspects) == 1)
        after = _sessions_done(cluster)
        assert all(after[i] == before[i] for i in range(3) if i != bad)  # no honest server finished a session
    finally:
        _restart(cluster, bad, None)


def _raw_search(client: Client, i: int, security: str | None) -> grpc.RpcError:
    """Server ``i``'s answer to a valid feature search whose meta expects ``security`` (None: no key)."""
    info = client.fan.infos()[i]
    sid = str(uuid.uuid4())
    meta = {"k": 1, "nprobe": 1, "input": "features", "index_version": info["index_version"],
            "model_version": info["model_version"]}
    if security is not None:
        meta["security"] = security
    pair = share_fixed(torch.zeros(1, 8, dtype=torch.float64))[i]
    auth = client.sign("search", {"session": sid, "collection": "default", "purpose": None, "k": 1})
    b = bd.Bundle("search", sid, meta, bd.pairs_to_tensors("query", pair), auth)
    with pytest.raises(grpc.RpcError) as e:
        list(client.fan.stubs[i].Search(bd.encode(b), timeout=30))
    return e.value


def test_servers_in_different_modes_refuse_to_query_together(cluster, client):
    """A request expecting another mode (or none: a client from before the setting) is refused with
    FAILED_PRECONDITION before any protocol message; a deployment whose servers run different modes
    is refused by the client (Info) and by the odd server itself. Back in one mode (and after the
    faulty servers of the test above), queries work again."""
    for want in ("semi_honest", None):
        err = _raw_search(client, 0, want)
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "server 0 runs in malicious mode" in str(err.details()) and "[security] mode" in str(err.details())
    cluster.kill(2)
    cluster.set_security("semi_honest")
    try:
        cluster.start(2)
        with Client(cluster.client_config, progress=False) as c:
            with pytest.raises(TriVaultError, match="different security modes .*server 2 semi_honest"):
                c.search(np.zeros((1, 8)), k=1)
        err = _raw_search(client, 2, "malicious")
        assert err.code() == grpc.StatusCode.FAILED_PRECONDITION
        assert "server 2 runs in semi_honest mode but the request expects 'malicious'" in str(err.details())
    finally:
        cluster.kill(2)
        cluster.set_security("malicious")
        cluster.start(2)
    q, _, _ = _queries(client)
    with Client(cluster.client_config, progress=False) as c:
        assert c.search_batch(q, k=1).ids[:, 0].tolist() == PICK


def test_a_second_checked_image_query_at_once_is_refused_and_the_servers_recover(cluster):
    """``MALICIOUS_IMAGE_SESSIONS = 1`` (memory): two image queries started together overlap (each runs
    the checked CNN and its proof for seconds), so a server refuses one of them with RESOURCE_EXHAUSTED
    naming the limit, and the refused session's peers abort it; every slot is released after (whatever
    path each session ended on): image queries work again within seconds (a session a peer admitted ends
    when that peer sees the abort, so the first retry may still find its slot taken)."""
    image = cluster.images[4]
    start = threading.Barrier(2)
    ids: list[list[int]] = []
    errors: list[str] = []

    def query() -> None:
        with Client(cluster.client_config, progress=False) as c:
            start.wait()
            try:
                ids.append(c.search_results(image, k=1)[0].ids)
            except TriVaultError as exc:
                errors.append(str(exc))

    threads = [threading.Thread(target=query) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(ids) + len(errors) == 2
    assert any("RESOURCE_EXHAUSTED" in e and "checked image queries" in e for e in errors), errors
    assert all(i == [4] for i in ids)
    with Client(cluster.client_config, progress=False) as c:  # a session admitted elsewhere ends on its own abort
        for _ in range(30):
            try:
                assert c.search_results(image, k=1)[0].ids == [4]
                break
            except TriVaultError as exc:
                assert "checked image queries" in str(exc)
                time.sleep(1)
        else:
            pytest.fail("a checked image query slot was not released within 30 s")


def test_an_image_batch_runs_a_session_per_image_and_a_server_refuses_two_in_one(cluster, client):
    """``MALICIOUS_IMAGE_QUERIES = 1`` (memory): the SDK runs a batch of three images as three sessions,
    one after another (each image's own ids; the counters summed: exactly three sessions' rounds), and a
    server refuses a session of two images with FAILED_PRECONDITION before any protocol message."""
    images = [cluster.images[i] for i in (4, 10, 0)]
    before = _sessions_done(cluster)
    batch = client.search_batch(images, k=1)
    assert batch.ids[:, 0].tolist() == [4, 10, 0]
    assert [a - b for a, b in zip(_sessions_done(cluster), before)] == [3, 3, 3]
    one = client.search_batch(images[0], k=1)
    assert all(batch.comm[i]["rounds"] == 3 * one.comm[i]["rounds"] for i in range(3))
    info = client.fan.infos()[0]
    sid = str(uuid.uuid4())
    meta = {"k": 1, "nprobe": 1, "input": "image", "index_version": info["index_version"],
            "model_version": info["model_version"], "security": "malicious"}
    pair = share_fixed(torch.zeros(2, 3, RES, RES, dtype=torch.float64))[0]
    auth = client.sign("search", {"session": sid, "collection": "default", "purpose": None, "k": 1})
    with pytest.raises(grpc.RpcError) as e:
        list(client.fan.stubs[0].Search(bd.encode(bd.Bundle("search", sid, meta, bd.pairs_to_tensors("query", pair),
                                                            auth)), timeout=30))
    assert e.value.code() == grpc.StatusCode.FAILED_PRECONDITION
    assert "malicious mode runs 1 image query per session (memory), got 2" in str(e.value.details())
