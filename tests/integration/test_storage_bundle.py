"""Bundles (chunked framing) and the store's two-phase commit, without server processes."""

from __future__ import annotations

import os

import pytest
import torch

from servers.storage import StorageError, Store, tensors_to_npz
from wire import bundle as bd


def test_bundle_roundtrip_across_chunks():
    t = {"a.lo": torch.arange(1000, dtype=torch.int64).reshape(10, 100), "img": torch.arange(77, dtype=torch.uint8),
         "s": torch.tensor(5, dtype=torch.int64)}
    frames = list(bd.encode(bd.Bundle("k", "sid", {"x": 1}, t), chunk_bytes=300))
    assert len(frames) > 20
    out = bd.decode(iter(frames))
    assert out.kind == "k" and out.session_id == "sid" and out.meta == {"x": 1}
    for k, v in t.items():
        assert torch.equal(out.tensors[k], v)


def test_bundle_rejects_truncated_oversized_and_bad_dtypes():
    frames = list(bd.encode(bd.Bundle("k", "", {}, {"a": torch.zeros(100, dtype=torch.int64)}), chunk_bytes=256))
    with pytest.raises(bd.BundleError, match="truncated"):
        bd.decode(iter(frames[:-1]))
    with pytest.raises(bd.BundleError, match="limit"):
        bd.decode(iter(frames), max_bytes=100)
    with pytest.raises(bd.BundleError, match="int64 or uint8"):
        list(bd.encode(bd.Bundle("k", "", {}, {"a": torch.zeros(3)})))


def _files(i: int) -> dict[str, bytes]:
    return {
        f"img/{i}.enc": os.urandom(40),
        f"key/{i}.npz": tensors_to_npz(
            {"lo": torch.zeros(4, dtype=torch.int64), "hi": torch.ones(4, dtype=torch.int64)}
        ),
    }


def _meta(i: int) -> dict:
    return {"images": [{"id": i, "label": "x", "nbytes": 40, "deid": False}], "deletes": []}


def test_two_phase_commit_is_idempotent_and_survives_reopen(tmp_path):
    s = Store(tmp_path)
    s.prepare("t1", _meta(1), _files(1))
    assert s.image_ids() == [] and s.pending_txns() == ["t1"]
    with pytest.raises(StorageError, match="pending"):
        s.prepare("t2", _meta(2), _files(2))
    # Crash half-way through commit: one staged file already moved, database not updated.
    os.replace(tmp_path / "staging" / "t1" / "img" / "1.enc", tmp_path / "objects" / "img" / "1.enc")
    s.close()
    s = Store(tmp_path)  # "restart"
    assert s.pending_txns() == ["t1"]
    assert s.commit("t1") == "committed" and s.commit("t1") == "committed"
    assert s.image_ids() == [1]
    ct, key = s.image_files(1)
    assert len(ct) == 40 and key["hi"].tolist() == [1, 1, 1, 1]
    s.prepare("t3", _meta(3), _files(3))
    assert s.abort("t3") == "aborted"
    with pytest.raises(StorageError, match="aborted"):
        s.commit("t3")
    assert s.abort("never-prepared") == "unknown"
    with pytest.raises(StorageError, match="already exists"):
        s.prepare("never-prepared", _meta(4), _files(4))  # a late prepare after abort is refused
    assert s.image_ids() == [1] and not list((tmp_path / "staging").iterdir())
    with pytest.raises(StorageError, match="unknown image id 9"):
        s.image_files(9)


def test_session_ids_cannot_be_reused(tmp_path):
    s = Store(tmp_path)
    s.claim_session("abc")
    with pytest.raises(StorageError, match="already used"):
        s.claim_session("abc")


def test_peer_router_reassembles_chunks_out_of_order_sessions():
    from servers.peer_comm import PeerRouter, tensor_messages

    r = PeerRouter()
    big = torch.arange(10_000, dtype=torch.int64).reshape(100, 100)
    small = torch.tensor([7, 8], dtype=torch.int64)
    for m in tensor_messages("s2", 0, 1, small) + tensor_messages("s1", 1, 1, small) + \
            tensor_messages("s1", 0, 1, big, chunk_bytes=3000):
        r.deliver(m)
    assert torch.equal(r.wait("s1", 1, 0, 1.0), big)
    assert torch.equal(r.wait("s1", 1, 1, 1.0), small)
    assert torch.equal(r.wait("s2", 1, 0, 1.0), small)
    from protocols.comm import CommError

    with pytest.raises(CommError, match="no message from server 1"):
        r.wait("s1", 1, 2, 0.2)
    r.deliver(tensor_messages("s3", 0, 2, small)[0])
    r.peer_down(2, ["s3"])  # a stream that carried s3 broke: s3 fails at once (even its delivered seq)
    with pytest.raises(CommError, match="lost the connection to server 2"):
        r.wait("s3", 2, 1, 5.0)
    r.peer_down(2, ["s2"])  # s2 is still open here (never closed): it fails too
    with pytest.raises(CommError, match="lost the connection to server 2"):
        r.wait("s2", 1, 1, 5.0)
    r.deliver(tensor_messages("s4", 0, 2, small)[0])  # a session the broken stream did not carry
    assert torch.equal(r.wait("s4", 2, 0, 1.0), small)
