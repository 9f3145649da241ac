"""Issue 8 across three real server processes (mTLS, real signatures): who may search and
retrieve what, expiry, revocation mid-session, replayed/forged requests, a lying server,
one server alone, deletion, and the cross-server audit chain."""

from __future__ import annotations

import sqlite3
import sys
import time
from pathlib import Path

import grpc
import numpy as np
import pytest

from client.identity import Identity
from client.sdk import Client, TriVaultError
from protos.trivault.v1 import trivault_pb2 as pb
from wire import bundle as bd
from wire.key_delivery import KeyDeliveryError, recover_key
from wire.pixel_shares import PixelShareError, open_pair, reconstruct
from wire.signing import SignedRequest

from .conftest import make_cluster

FAULTY_SERVER = [sys.executable, str(Path(__file__).with_name("faulty_server.py"))]


@pytest.fixture(scope="module")
def cluster(tmp_path_factory: pytest.TempPathFactory):
    """A cluster of its own: these tests restart servers with fault hooks, delete and edit logs."""
    yield from make_cluster(tmp_path_factory)


@pytest.fixture(scope="module")
def owner(cluster):
    c = Client(cluster.client_config, progress=False)
    yield c
    c.close()


@pytest.fixture(scope="module")
def users(cluster, owner):
    """Registered users (owner-attested attributes), each with its own SDK client and keys."""
    out = {}
    for name, attrs in (("bob", {"role": "doctor"}), ("carol", {"role": "nurse"}), ("dave", {"role": "auditor"}),
                        ("eve", {"role": "none"})):
        ident = Identity.create()
        owner.register_user(ident.public(), attrs)
        out[name] = Client(cluster.client_config, progress=False, identity=ident)
    yield out
    for c in out.values():
        c.close()


def _restart(cluster, i: int, fault: str | None) -> None:
    """Restart server ``i`` as the normal server (None) or as one corrupted by ``fault``
    (a test-only subclass: tests/integration/faulty_server.py)."""
    cluster.kill(i)
    if fault is None:
        cluster.commands.pop(i, None)
    else:
        cluster.commands[i] = FAULTY_SERVER + [fault]
    cluster.start(i)


def _denied(fn, *a, **kw) -> str:
    with pytest.raises(TriVaultError) as e:
        fn(*a, **kw)
    assert "PERMISSION_DENIED" in str(e.value), e.value
    return str(e.value)


def test_allowed_denied_and_deidentified_only(cluster, owner, users, tmp_path):
    bob, eve = users["bob"], users["eve"]
    # unregistered-by-policy users get nothing: neither search nor keys
    _denied(eve.retrieve, 2)
    _denied(eve.search, cluster.images[2], k=1)
    # original for the purpose "care" only
    owner.grant(bob.identity.user_id, outcome="ORIGINAL", purposes=["care"])
    got = bob.retrieve(2, purpose="care")
    assert got.kind == "orig" and got.label == "img2" and got.watermarked and not got.verified  # marked by servers
    assert np.abs(got.array().astype(int) - cluster.images[2].astype(int)).mean() < 4
    _denied(bob.retrieve, 2, purpose="marketing")
    # de-identified only: asking for the original yields the de-identified copy (or nothing without one)
    from skimage import data

    face = data.astronaut()[:192, 128:320]
    [fid] = owner.upload([face], labels=["face"], deid=True, eps=1.0)
    carol = users["carol"]
    owner.grant(carol.identity.user_id, outcome="DEIDENTIFIED")
    anon = carol.retrieve(fid)
    assert anon.kind == "deid" and anon.watermarked
    assert np.abs(anon.array().astype(int) - face.astype(int)).mean() > 1.0
    _denied(carol.retrieve, 3)  # no de-identified copy of image 3: nothing
    assert owner.retrieve(fid).kind == "orig"
    # the delivered copy was marked for carol by the servers; the owner traces it after JPEG q75
    from client.watermark import save_rgb

    save_rgb(tmp_path / "leak.jpg", anon.array(), jpeg_quality=75)
    found = owner.trace(tmp_path / "leak.jpg", image_id=fid)
    assert found is not None and found.user_id == carol.identity.user_id


def test_expiry(cluster, owner, users):
    dave = users["dave"]
    owner.grant(dave.identity.user_id, outcome="ORIGINAL", expires=time.time() + 2.0)
    assert dave.retrieve(1).label == "img1"
    time.sleep(2.2)
    _denied(dave.retrieve, 1)
    _denied(dave.search, cluster.images[1], k=1)


def test_hidden_results_never_surface_and_masking_is_checked(cluster, owner, users):
    """Per-image revocation: the image's id is replaced by -1 on shares before the requester sees it."""
    bob = users["bob"]
    owner.grant(bob.identity.user_id, outcome="ORIGINAL")
    assert bob.search_results(cluster.images[5], k=2)[0].ids[0] == 5
    owner.revoke(bob.identity.user_id, image_id=5)
    r = bob.search_results(cluster.images[5], k=2)[0]
    assert 5 not in r.ids and len(r.ids) >= 1
    assert owner.search_results(cluster.images[5], k=2)[0].ids[0] == 5
    _denied(bob.retrieve, 5)


def test_revocation_during_an_active_session(cluster, owner, users):
    carol = users["carol"]
    owner.grant(carol.identity.user_id, outcome="ORIGINAL")
    r = carol.search_results(cluster.images[8], k=1)[0]  # the session starts while allowed
    assert r.ids == [8]
    owner.revoke(carol.identity.user_id)
    _denied(carol.retrieve, r.ids[0])  # key release re-checks the policy on every server
    _denied(carol.search, cluster.images[8], k=1)


def test_replayed_forged_and_foreign_requests(cluster, owner, users):
    eve = users["eve"]
    uid = eve.identity.user_id
    auth = owner.sign("grant", {"user": uid, "collection": "default", "outcome": "DEIDENTIFIED"})
    for i in range(3):
        owner._stubs[i].Manage(pb.SignedCall(auth=auth), timeout=10)
    for i in range(3):  # the same bytes again: replay
        with pytest.raises(grpc.RpcError) as e:
            owner._stubs[i].Manage(pb.SignedCall(auth=auth), timeout=10)
        assert e.value.code() == grpc.StatusCode.PERMISSION_DENIED and "replayed" in e.value.details()
    req = SignedRequest.from_bytes(owner.sign("grant", {"user": uid, "collection": "default", "outcome": "NOTHING"}))
    forged = SignedRequest(req.action, {**req.params, "outcome": "ORIGINAL"}, req.signer, req.nonce, req.ts_ms,
                           req.audience, req.signature)  # params changed after signing
    for i in range(3):  # (sent to all three so the audit logs stay comparable)
        with pytest.raises(grpc.RpcError) as e:
            owner._stubs[i].Manage(pb.SignedCall(auth=forged.to_bytes()), timeout=10)
        assert "forged" in e.value.details()
    with pytest.raises(TriVaultError, match="not-owner"):  # a user cannot grant itself anything
        eve._manage("grant", {"user": uid, "collection": "default", "outcome": "ORIGINAL"})
    with pytest.raises(TriVaultError, match="unknown-signer"):  # an unregistered key
        Client(cluster.client_config, progress=False, identity=Identity.create()).register_user(
            Identity.create().public())
    with pytest.raises(TriVaultError, match="not-owner"):  # a user cannot delete the owner's images
        eve._transact([bd.Bundle("txn", "00000000-0000-4000-8000-000000000001", {"deletes": [0]}, {})
                       for _ in range(3)], "delete")
    assert 0 in owner.info()["image_ids"]


def test_a_lying_server_is_named_and_one_server_alone_releases_nothing(cluster, owner, users):
    # server 2 seals a wrong key share: the client cross-checks all three pairs and names the suspects
    _restart(cluster, 2, "key-share")
    try:
        with pytest.raises(KeyDeliveryError) as e:
            owner.retrieve(4)
        assert 2 in e.value.suspects and 0 not in e.value.suspects
    finally:
        _restart(cluster, 2, None)
    assert owner.retrieve(4).verified
    # one server's sealed share, even handed to the right user, does not give the key
    auth = owner.sign("retrieve", {"image_id": 4, "deid": False, "purpose": None})
    b = [bd.decode(owner._stubs[i].Retrieve(pb.ImageRequest(image_id=4, auth=auth), timeout=10)) for i in range(3)]
    sealed = bytes(b[0].tensors["sealed"].numpy().tobytes())
    with pytest.raises(KeyDeliveryError, match="at least two"):
        recover_key([sealed, None, None], owner.identity.kex_key, 4)
    # a revoked user, with server 2 corrupted to release to anyone: the two honest servers refuse,
    # and server 2's share alone does not give the key
    eve = users["eve"]
    owner.revoke(eve.identity.user_id)
    _restart(cluster, 2, "ignore-policy")
    try:
        msg = _denied(eve.retrieve, 4)
        assert "fewer than two servers" in msg and "server 2" not in msg  # 0 and 1 refused; 2 released
        auth = eve.sign("retrieve", {"image_id": 4, "deid": False, "purpose": None})
        b2 = bd.decode(eve._stubs[2].Retrieve(pb.ImageRequest(image_id=4, auth=auth), timeout=10))
        for i in (0, 1):  # (the same request to the honest ones, which refuse it)
            with pytest.raises(grpc.RpcError):
                list(eve._stubs[i].Retrieve(pb.ImageRequest(image_id=4, auth=auth), timeout=10))
        assert b2.meta["form"] == "marked" and "sealed" not in b2.tensors  # a non-owner never gets a key share
        pair = open_pair(bytes(b2.tensors["sealed_pixels"].numpy().tobytes()), eve.identity.kex_key, 2, 4, False,
                         eve.identity.user_id, tuple(b2.meta["shape"]))
        with pytest.raises(PixelShareError, match="at least two"):  # its pixel-share pair alone is no image
            reconstruct([None, None, pair])
    finally:
        _restart(cluster, 2, None)


def test_a_server_skipping_the_result_mask_is_detected(cluster, owner, users):
    """Server 1 runs the masking protocol but outputs its unmasked shares: the client's checked
    reconstruction sees the two copies of a component disagree and names server 1."""
    from protocols.sharing import InconsistentSharesError

    bob = users["bob"]  # image 5 is hidden from bob (test_hidden_results_...)
    _restart(cluster, 1, "skip-mask")
    try:
        with pytest.raises(InconsistentSharesError) as e:
            bob.search_results(cluster.images[5], k=2)[0]
        assert 1 in e.value.suspects
    finally:
        _restart(cluster, 1, None)
    assert 5 not in bob.search_results(cluster.images[5], k=2)[0].ids


def test_deletion_end_to_end(cluster, owner, users):
    bob = users["bob"]
    victim = 9
    owner.delete(victim)
    assert victim not in owner.info()["image_ids"]
    assert victim not in owner.search_results(cluster.images[victim], k=3)[0].ids
    assert victim not in bob.search_results(cluster.images[victim], k=3)[0].ids
    with pytest.raises(TriVaultError):
        owner.retrieve(victim)
    for i in range(3):
        d = cluster.root / "data" / f"server{i}"
        assert not [f for kind in ("img", "key", "pix") for f in (d / "objects").glob(f"{kind}/{victim}.*")]
        with sqlite3.connect(d / "acl.db") as db:
            assert db.execute("SELECT COUNT(*) FROM acl_images WHERE image_id=?", (victim,)).fetchone()[0] == 0


def test_audit_chains_agree_and_an_edited_line_is_detected(cluster, owner, users):
    div = owner.audit()
    # the only disagreement: server 2, corrupted earlier to release keys to a revoked user, logged
    # those releases as ORIGINAL where the honest servers logged NOTHING; the audit names it
    assert div.suspects() == [2] and all(c.ok for c in div.chains.values()), div.summary()
    assert all(ln.startswith("server 2: unmatched retrieve") or ln.startswith("server 2: missing retrieve")
               for ln in div.summary().splitlines()), div.summary()
    assert "on '4'" in div.summary()
    events = {e["event"] for e in owner.audit_exports()[0]}
    assert {"register", "upload", "grant", "revoke", "search", "retrieve", "delete", "reject"} <= events
    # no query content, keys or pixels in any entry
    for e in owner.audit_exports()[1]:
        assert set(e["detail"]) <= {"k", "collection", "outcome", "kind", "expires", "purposes", "image", "reason",
                                    "attributes", "n_images", "images", "version", "allowed", "action", "bytes"}
    # an operator edits one line of server 1's log (dropping the append-only trigger first)
    with sqlite3.connect(cluster.root / "data" / "server1" / "audit.db") as db:
        db.execute("DROP TRIGGER audit_no_update")
        db.execute("UPDATE audit_log SET detail='{\"kind\":\"orig\",\"outcome\":\"ORIGINAL\"}' "
                   "WHERE seq=(SELECT MIN(seq) FROM audit_log WHERE event='retrieve')")
    div = owner.audit()
    assert not div.chains[1].ok and 1 in div.suspects() and "server 1: chain broken" in div.summary()
