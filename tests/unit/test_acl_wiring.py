"""servers.acl (one server's decisions) without processes: bootstrap, ownership, commit hooks."""

from __future__ import annotations

import pytest

from client.identity import Identity
from servers.acl import Acl, AclDenied
from servers.policy import Outcome
from servers.request_auth import RequestRejected
from wire.signing import audience_for_ca, sign_request

AUD = audience_for_ca(b"test-ca")


def _acl(tmp_path, owner: Identity | None = None) -> Acl:
    path = None
    if owner is not None:
        path = tmp_path / "owner.json"
        path.write_text(owner.public().to_json())
    return Acl(tmp_path, 0, AUD, path)


def test_trust_on_first_use_bootstrap_then_only_the_owner_registers(tmp_path):
    acl = _acl(tmp_path)
    alice, mallory, bob = Identity.create(), Identity.create(), Identity.create()
    boot = sign_request(alice, "register", {"user": alice.public().to_dict(), "bootstrap": True}, AUD).to_bytes()
    assert acl.manage(boot)["admin"] and acl.admin() == alice.user_id
    with pytest.raises(RequestRejected):  # a second bootstrap (another key) is refused
        acl.manage(sign_request(mallory, "register", {"user": mallory.public().to_dict(), "bootstrap": True},
                                AUD).to_bytes())
    with pytest.raises(RequestRejected, match="replayed"):
        acl.manage(boot)
    reg = sign_request(alice, "register", {"user": bob.public().to_dict(), "attributes": {"role": "doctor"}}, AUD)
    acl.manage(reg.to_bytes())
    assert acl.policies.requester(bob.user_id).attributes == {"role": "doctor"}  # the owner's attestation
    with pytest.raises(AclDenied, match="not-owner"):
        acl.manage(sign_request(bob, "register", {"user": mallory.public().to_dict()}, AUD).to_bytes())
    with pytest.raises(RequestRejected, match="wrong-audience"):
        acl.manage(sign_request(alice, "register", {"user": mallory.public().to_dict()}, "other").to_bytes())


def test_uploads_are_bound_to_the_transaction_and_applied_at_commit(tmp_path):
    alice, bob = Identity.create(), Identity.create()
    acl = _acl(tmp_path, alice)
    acl.manage(sign_request(alice, "register", {"user": bob.public().to_dict()}, AUD).to_bytes())
    meta = {"images": [{"id": 3}, {"id": 4}]}
    req = acl.verify(sign_request(alice, "upload", {"txn": "t1", "images": [3, 4], "collection": "scans"},
                                  AUD).to_bytes(), "upload")
    with pytest.raises(AclDenied, match="mismatch"):  # signed for another transaction
        acl.check_txn(req, "t2", meta, False)
    with pytest.raises(AclDenied, match="mismatch"):  # an extra image smuggled into the bundle
        acl.check_txn(req, "t1", {"images": [{"id": 3}, {"id": 4}, {"id": 5}]}, False)
    part = acl.check_txn(req, "t1", meta, False)
    acl.apply_commit({**meta, "acl": part})
    assert acl.policies.collection_of(4) == "scans"
    bobreq = acl.verify(sign_request(bob, "delete", {"txn": "t3", "deletes": [4]}, AUD).to_bytes(), "delete")
    with pytest.raises(AclDenied, match="not-owner"):
        acl.check_txn(bobreq, "t3", {"deletes": [4]}, False)
    with pytest.raises(AclDenied, match="not-owner"):  # only the owner registers the model
        acl.check_txn(acl.verify(sign_request(bob, "upload", {"txn": "t4", "model": True}, AUD).to_bytes(),
                                 "upload"), "t4", {}, True)
    # the release decision reads the store at call time: grant, then revoke
    acl.manage(sign_request(alice, "grant", {"user": bob.user_id, "collection": "scans", "outcome": "ORIGINAL"},
                            AUD).to_bytes())
    r = acl.verify(sign_request(bob, "retrieve", {"image_id": 4}, AUD).to_bytes(), "retrieve")
    assert acl.release(r, 4, False, False).outcome == Outcome.ORIGINAL
    acl.manage(sign_request(alice, "revoke", {"user": bob.user_id, "collection": "scans"}, AUD).to_bytes())
    assert acl.release(r, 4, False, False).outcome == Outcome.NOTHING
    assert acl.audit.verify().ok
    acl.close()
