"""Red team: bad requests sent straight to a server over gRPC with a valid client certificate.

Each gets its exact status code and reason; afterwards every server is healthy, nothing
stored changed, and search and retrieval still work. (Replayed/forged grants, a user
granting or deleting, a rogue CA, plaintext, the peer service, oversized frames and a
wrong-shaped share are in test_acl_access.py and test_bad_inputs.py; signed commit/abort
of a pending upload in test_faults.py.)
"""

from __future__ import annotations

import time
import uuid

import grpc
import pytest
import torch

import client.commit as commit_mod
from client.identity import Identity
from client.sdk import Client, TriVaultError
from protos.trivault.v1 import trivault_pb2 as pb
from wire import bundle as bd
from wire.signing import SignedRequest, sign_request

from .conftest import small_images
from .test_bad_inputs import _raw_stub, _unchanged

PERM, INVALID = grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.INVALID_ARGUMENT


def _refused(call, code: grpc.StatusCode, reason: str) -> None:
    with pytest.raises(grpc.RpcError) as e:
        out = call()
        if not isinstance(out, (pb.Ack, pb.TxnReply)):
            list(out)  # server-streaming calls fail on iteration
    assert e.value.code() == code and reason in e.value.details(), (e.value.code(), e.value.details())


@pytest.fixture(scope="module")
def before(cluster):
    """The deployment's public state before the attacks, and a registered non-owner user."""
    mallory = Identity.create()
    with Client(cluster.client_config, progress=False) as owner:
        owner.register_user(mallory.public(), {"role": "none"})
        return owner.info(), mallory


def _txn_bundle(client: Client, auth: bytes | None, txn: str | None = None, model: bool = False) -> bd.Bundle:
    """A well-formed one-image upload bundle (structure only; it is refused before staging)."""
    txn = txn or str(uuid.uuid4())
    meta: dict = {"images": [{"id": 900}], "index": {"format": "ivf"}}
    if model:
        meta = {"model": {"arch": {"layers": [], "input_shape": [3, 16, 16]}}}
    tensors = {} if model else {"img/900": torch.zeros(64, dtype=torch.uint8),
                                "key/900.lo": torch.zeros(4, dtype=torch.int64),
                                "key/900.hi": torch.zeros(4, dtype=torch.int64)}
    if auth is None:
        auth = client.sign("upload", {"txn": txn, "images": [] if model else [900], "deletes": [], "model": model})
    return bd.Bundle("txn", txn, meta, tensors, auth)


def test_unsigned_stale_future_and_unregistered_requests(cluster, client, before):
    stub = _raw_stub(cluster, 0)
    _refused(lambda: stub.Prepare(bd.encode(_txn_bundle(client, b"")), timeout=10), PERM, "unsigned")
    txn = str(uuid.uuid4())
    params = {"txn": txn, "images": [900], "deletes": [], "model": False}
    for when, reason in ((time.time() - 3600, "stale"), (time.time() + 3600, "future")):
        auth = sign_request(client.identity, "upload", params, client.audience, now=when).to_bytes()
        _refused(lambda a=auth: stub.Prepare(bd.encode(_txn_bundle(client, a, txn)), timeout=10), PERM, reason)
    stranger = Identity.create()  # a valid client certificate, but a key the owner never registered
    for action, call in (
        ("upload", lambda a: stub.Prepare(bd.encode(_txn_bundle(client, a, txn)), timeout=10)),
        ("commit", lambda a: stub.Commit(pb.TxnRequest(txn_id=txn, auth=a), timeout=10)),
        ("retrieve", lambda a: stub.Retrieve(pb.ImageRequest(image_id=0, auth=a), timeout=10)),
        ("grant", lambda a: stub.Manage(pb.SignedCall(auth=a), timeout=10)),
    ):
        auth = sign_request(stranger, action, {**params, "image_id": 0, "deid": False, "user": stranger.user_id},
                            client.audience).to_bytes()
        _refused(lambda a=auth, c=call: c(a), PERM, "unknown-signer")
    _unchanged(client, before[0])


def test_forged_and_replayed_decisions(cluster, client, before):
    stub = _raw_stub(cluster, 1)
    txn = str(uuid.uuid4())
    req = SignedRequest.from_bytes(client.sign("abort", {"txn": txn, "digests": ["0" * 64] * 3}))
    forged = SignedRequest(req.action, {**req.params, "txn": str(uuid.uuid4())}, req.signer, req.nonce, req.ts_ms,
                           req.audience, req.signature)
    _refused(lambda: stub.Abort(pb.TxnRequest(txn_id=forged.params["txn"], auth=forged.to_bytes()), timeout=10),
             PERM, "forged")
    as_commit = SignedRequest("commit", req.params, req.signer, req.nonce, req.ts_ms, req.audience, req.signature)
    _refused(lambda: stub.Commit(pb.TxnRequest(txn_id=txn, auth=as_commit.to_bytes()), timeout=10), PERM, "forged")
    _refused(lambda: stub.Commit(pb.TxnRequest(txn_id=txn, auth=req.to_bytes()), timeout=10), PERM, "bad-action")
    # the same upload authorisation twice: the first is spent (refused later for its content), the second replayed
    b = _txn_bundle(client, None)
    b.tensors["key/900.lo"] = torch.zeros(3, dtype=torch.int64)
    b.tensors["key/900.hi"] = torch.zeros(3, dtype=torch.int64)
    _refused(lambda: stub.Prepare(bd.encode(b), timeout=10), INVALID, "4 int64 words")
    _refused(lambda: stub.Prepare(bd.encode(b), timeout=10), PERM, "replayed")
    _unchanged(client, before[0])


def test_a_bundle_changed_after_signing_is_refused_and_the_upload_aborted(cluster, client, before, monkeypatch):
    """The owner's signed digests name server 1's bundle wrongly (as if it was swapped on the
    way): server 1 refuses to stage it, the client aborts the others, nothing is stored."""
    real = commit_mod.txn_digests
    monkeypatch.setattr(commit_mod, "txn_digests", lambda bs: [*real(bs)[:1], "f" * 64, *real(bs)[2:]])
    with pytest.raises(TriVaultError, match="nothing stored") as e:
        client.upload(small_images(1, seed=81), labels=["swapped"])
    assert "server 1" in str(e.value) and "not the one the owner signed" in str(e.value)
    _unchanged(client, before[0])


def test_malformed_and_oversized_share_tensors(cluster, client, before):
    info = before[0]
    stub = _raw_stub(cluster, 2)
    good = torch.zeros(1, 3, 16, 16, dtype=torch.int64)
    meta = {"k": 1, "index_version": info["index_version"], "model_version": info["model_version"]}

    def search(tensors: dict, frames=None):
        session = str(uuid.uuid4())
        b = bd.Bundle("search", session, meta, tensors, client.sign("search", {"session": session, "k": 1}))
        return lambda: stub.Search(frames(b) if frames else bd.encode(b), timeout=10)

    _refused(search({"query.lo": good, "query.hi": good[..., :8]}), INVALID, "lo/hi must be int64 of one shape")
    _refused(search({"query.lo": good.to(torch.uint8), "query.hi": good.to(torch.uint8)}), INVALID, "int64")
    _refused(search(bd.pairs_to_tensors("query", (torch.zeros(65, 3, 16, 16, dtype=torch.int64),) * 2)), INVALID,
             "1 to 64 queries")

    def header_only(dtype: str, shape: list[int], nbytes: int):
        def frames(b: bd.Bundle):
            spec = pb.TensorSpec(name="query.lo", dtype=dtype, shape=shape, nbytes=nbytes)
            return iter([pb.Frame(header=pb.BundleHeader(kind="search", session_id=b.session_id, tensors=[spec],
                                                         auth=b.auth)), pb.Frame(chunk=bytes(64))])
        return frames

    _refused(search({}, frames=header_only("float32", [16], 64)), INVALID, "unsupported dtype")
    _refused(search({}, frames=header_only("int64", [16], 64)), INVALID, "does not match")
    _refused(search({}, frames=header_only("int64", [1 << 30], 8 << 30)), INVALID, "limit is")
    _refused(search({}, frames=header_only("int64", [16], 128)), INVALID, "truncated")
    _unchanged(client, info)


def test_non_owner_admin_actions_and_ids_with_path_characters(cluster, client, before):
    info, mallory = before
    with Client(cluster.client_config, progress=False, identity=mallory) as m:
        stub = _raw_stub(cluster, 0)
        txn = str(uuid.uuid4())
        auth = m.sign("upload", {"txn": txn, "images": [], "deletes": [], "model": True})
        _refused(lambda: stub.Prepare(bd.encode(_txn_bundle(m, auth, txn, model=True)), timeout=10), PERM,
                 "only the deployment owner registers the model")
        auth = m.sign("register", {"user": Identity.create().public().to_dict(), "attributes": {"role": "admin"}})
        _refused(lambda: stub.Manage(pb.SignedCall(auth=auth), timeout=10), PERM, "not-owner")
    for bad in ("../../objects", "..", "a/b"):
        auth = client.sign("upload", {"txn": bad, "images": [900], "deletes": [], "model": False})
        _refused(lambda a=auth, t=bad: stub.Prepare(bd.encode(_txn_bundle(client, a, t)), timeout=10), INVALID,
                 "badly formed hexadecimal UUID")
        _refused(lambda t=bad: stub.Commit(pb.TxnRequest(txn_id=t, auth=client.sign("commit", {"txn": t})),
                                           timeout=10), INVALID, "not a UUID")
        q = bd.Bundle("search", bad, {"k": 1}, bd.pairs_to_tensors("query", (torch.zeros(1, 3, 16, 16,
                                                                                      dtype=torch.int64),) * 2),
                      client.sign("search", {"session": bad, "k": 1}))
        _refused(lambda b=q: stub.Search(bd.encode(b), timeout=10), INVALID, "bad search request")
    _refused(lambda: stub.Retrieve(pb.ImageRequest(image_id=-1, auth=client.sign(
        "retrieve", {"image_id": -1, "deid": False, "purpose": None})), timeout=10), grpc.StatusCode.NOT_FOUND,
        "unknown image id")


def test_after_the_attacks_every_server_is_healthy_and_nothing_is_lost(cluster, client, before):
    from servers.healthcheck import main as health

    assert [health(["--config", str(cluster.config_path), "--id", str(i)]) for i in range(3)] == [0, 0, 0]
    _unchanged(client, before[0])
    assert all((cluster.root / "data" / f"server{i}" / "objects" / "img").exists() for i in range(3))
    some = sorted(cluster.images)[2]
    assert client.search_results(cluster.images[some], k=1)[0].ids == [some]
    assert client.retrieve(some).verified
