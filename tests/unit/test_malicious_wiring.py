"""Malicious mode's plumbing without servers: the ``[security]`` setting, the ABORTED details of a
failed proof and how the client combines the servers' reports, and the router's per-peer abort
(an honest server still receives the other peer's last proof message after one peer aborted)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import grpc
import pytest
import torch
from test_fanout_errors import _fanout

from client.errors import MaliciousServerError, TriVaultError
from protocols.comm import CommError
from protos.trivault.v1 import trivault_pb2 as pb
from servers.config import DEFAULT_SECURITY_MODE, SECURITY_MODES, load_config
from servers.peer_comm import PeerRouter, tensor_messages
from servers.query import LoadedModel
from servers.vault import mode_problem
from wire.proof_abort import combine_reports, parse_proof_abort, proof_abort_details


def _config(tmp_path: Path, extra: str) -> Path:
    lines = ['ca = "ca.pem"']
    for i in range(3):
        lines += [f"[servers.{i}]", f'address = "127.0.0.1:{5000 + i}"', f'cert = "s{i}.pem"', f'key = "s{i}.key"']
    p = tmp_path / "cluster.toml"
    p.write_text("\n".join(lines) + "\n" + extra)
    return p


def test_security_setting_default_validation_and_shards(tmp_path):
    assert DEFAULT_SECURITY_MODE in SECURITY_MODES
    assert load_config(_config(tmp_path, ""), 0).security == DEFAULT_SECURITY_MODE
    for mode in SECURITY_MODES:
        assert load_config(_config(tmp_path, f'[security]\nmode = "{mode}"\n'), 1).security == mode
    with pytest.raises(ValueError, match=r"mode must be one of 'malicious', 'semi_honest', got 'paranoid'"):
        load_config(_config(tmp_path, '[security]\nmode = "paranoid"\n'), 0)
    with pytest.raises(ValueError, match="takes one setting"):
        load_config(_config(tmp_path, '[security]\nmode = "malicious"\nlevel = 3\n'), 0)
    with pytest.raises(ValueError, match="does not run on \\[shards\\] workers"):
        load_config(_config(tmp_path, '[shards]\nworkers = 2\n[security]\nmode = "malicious"\n'), 0)


def test_malicious_mode_refuses_image_models_above_the_checked_cnns_size_and_image_batches():
    def model(side: int) -> LoadedModel:
        return LoadedModel(1, {"input_shape": [3, side, side], "layers": []}, {})

    assert mode_problem("malicious", None) is None  # features
    assert mode_problem("malicious", model(32)) is None
    assert mode_problem("malicious", model(96)) is None  # the default model's size (measured to finish)
    assert mode_problem("semi_honest", model(128)) is None
    assert mode_problem("malicious", model(128)) == (
        "malicious mode runs the checked CNN on model inputs up to 96 px so far (this model takes 128 px; "
        "docs/SECURITY.md): query with features, or deploy in semi_honest mode")
    assert mode_problem("malicious", None, 64) is None  # feature sessions take any batch
    assert mode_problem("semi_honest", model(96), 16) is None
    assert mode_problem("malicious", model(96), 2) == (
        "malicious mode runs 1 image query per session (memory), got 2: send one session per image (the SDK does)")


def test_proof_abort_details_round_trip_and_carry_ids_only():
    reason = "server 0: the check of server 1's messages failed (server 1 or server 2 deviated)"
    d = proof_abort_details(0, reason, (1, 2))
    assert d == ("server 0: proof failed, suspects (1, 2): the check of server 1's messages failed "
                 "(server 1 or server 2 deviated); no result released")
    assert parse_proof_abort(d) == (0, (1, 2))
    assert parse_proof_abort(proof_abort_details(2, "server 2: server 0 sent 7 proof words, not 9", (0,))) == (2, (0,))
    assert parse_proof_abort("server 0: session s: server 2 aborted the query") is None


def test_combining_reports():
    # two honest reporters: their pairs share the deviating server
    assert combine_reports({0: (2, 1), 1: (2, 0)}) == (2,)
    # one reporter: its pair
    assert combine_reports({0: (1, 2)}) == (1, 2)
    # all three report (the deviating server also rejects its victim's messages): the pair whose
    # messages failed a check, i.e. the corrupted link (server 1 corrupted a message to server 0)
    assert combine_reports({0: (1, 2), 1: (0, 2), 2: (0, 1)}) == (0, 1)
    assert combine_reports({}) == ()


class _Aborted(grpc.RpcError):
    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self._code, self._details = code, details

    def code(self) -> grpc.StatusCode:
        return self._code

    def details(self) -> str:
        return self._details


def test_fanout_waits_for_every_proof_report_and_raises_malicious_server_error():
    """Server 0 reports at once, server 1 later (still within the grace), server 2 relays an abort:
    one MaliciousServerError naming server 2, with both reports; no result is returned."""
    def fn(i: int) -> None:
        if i == 2:
            time.sleep(0.1)
            raise _Aborted(grpc.StatusCode.UNAVAILABLE, "server 2: session s: server 1 aborted the query")
        if i == 1:
            time.sleep(0.5)
        why = f"server {i}: the check of server 2's messages failed"
        raise _Aborted(grpc.StatusCode.ABORTED, proof_abort_details(i, why, (2, 1 - i)))

    with pytest.raises(MaliciousServerError) as e:
        _fanout().all(fn)
    assert e.value.suspects == (2,) and e.value.reports == {0: (2, 1), 1: (2, 0)}
    assert str(e.value).startswith("the query was aborted by the servers' check of each other's messages: "
                                   "server 2 deviated (servers 0 and 1 both suspect it); "
                                   "no result was released")
    # a report claiming another server's id is not counted as that server's
    def forged(i: int) -> None:
        raise _Aborted(grpc.StatusCode.ABORTED, proof_abort_details((i + 1) % 3, "x", (0,)))

    with pytest.raises(TriVaultError) as e2:
        _fanout().all(forged)
    assert not isinstance(e2.value, MaliciousServerError)


def test_each_peer_wait_outlives_another_peers_abort():
    """Malicious mode: server 1 aborts the session after its verdict; this server (2) still gets
    server 0's last proof message, sent before. Without ``each_peer`` (semi-honest) it fails at once."""
    for each_peer in (True, False):
        r = PeerRouter()
        r.open_session("s")
        r.deliver(pb.PeerMsg(session_id="s", sender=1, abort=True))

        def late(router: PeerRouter) -> None:
            time.sleep(0.2)
            for m in tensor_messages("s", 0, 0, torch.arange(3)):
                router.deliver(m)

        threading.Thread(target=late, args=(r,)).start()
        if each_peer:
            assert r.wait("s", 0, 0, 5.0, each_peer=True).tolist() == [0, 1, 2]
            with pytest.raises(CommError, match="server 1 aborted"):
                r.wait("s", 1, 0, 5.0, each_peer=True)
            r.deliver(pb.PeerMsg(session_id="s", sender=0, abort=True))
            with pytest.raises(CommError, match="server 0 aborted"):  # its own abort still ends the wait
                r.wait("s", 0, 1, 5.0, each_peer=True)
        else:
            with pytest.raises(CommError, match="server 1 aborted"):
                r.wait("s", 0, 0, 5.0)
            time.sleep(0.3)
