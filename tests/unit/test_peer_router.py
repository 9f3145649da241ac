"""PeerRouter (servers.peer_comm): bounded bookkeeping and message binding, no servers needed."""

from __future__ import annotations

import pytest
import torch

from protocols.comm import CommError
from protos.trivault.v1 import trivault_pb2 as pb
from servers.peer_comm import PeerRouter, tensor_messages


def test_abort_notices_of_refused_sessions_never_block_new_sessions():
    """The old router kept every abort notice 300 s in the 64-slot buffer: after 64 refused
    sessions every new session was dropped for ~5 minutes."""
    r = PeerRouter(max_buffered_sessions=4)
    for i in range(1000):  # many refused sessions, each announced by a peer's abort notice
        r.deliver(pb.PeerMsg(session_id=f"refused-{i}", sender=2, abort=True))
    assert r.buffered_sessions() == 0
    for i in range(4):  # early messages of 4 sessions not opened here yet: buffered
        r.deliver(tensor_messages(f"s{i}", 0, 1, torch.tensor([i]))[0])
    r.deliver(pb.PeerMsg(session_id="s0", sender=2, abort=True))  # s0 aborted before it started here
    r.deliver(tensor_messages("s9", 0, 1, torch.tensor([9]))[0])  # s0's slot is free again
    assert r.buffered_sessions() == 4
    with pytest.raises(CommError, match="too many"):
        r.deliver(tensor_messages("s10", 0, 1, torch.tensor([10]))[0])
    r.stale_after_s = 0.0  # sessions never opened here, older than the limit, make room
    r.deliver(tensor_messages("s10", 0, 1, torch.tensor([10]))[0])
    r.open_session("s10")
    assert torch.equal(r.wait("s10", 1, 0, 1.0), torch.tensor([10]))
    r.open_session("refused-999")  # an aborted session opened later fails at once
    with pytest.raises(CommError, match="server 2 aborted"):
        r.wait("refused-999", 1, 0, 5.0)


@pytest.mark.parametrize("attack", ["replay", "foreign-retagged", "bad-chunk", "short"])
def test_replayed_or_misplaced_messages_fault_the_session_naming_the_sender(attack):
    r = PeerRouter()
    r.open_session("s")
    big = torch.arange(1000, dtype=torch.int64)
    first = tensor_messages("s", 0, 1, torch.tensor([1, 2]))
    r.deliver(first[0])
    assert torch.equal(r.wait("s", 1, 0, 1.0), torch.tensor([1, 2]))  # consumed
    if attack == "replay":  # the same message again (already consumed)
        bad = first
    elif attack == "foreign-retagged":  # another session's message 0, sent under this session's id
        bad = tensor_messages("s", 0, 1, torch.tensor([5, 6]))
    elif attack == "bad-chunk":  # chunk 1 of message 1 before its chunk 0
        bad = tensor_messages("s", 1, 1, big, chunk_bytes=1000)[1:]
    else:  # a message whose bytes do not fill its declared shape
        bad = tensor_messages("s", 1, 1, big, chunk_bytes=1000)
        bad[-1].data = bad[-1].data[:-8]
    with pytest.raises(CommError, match="server 1"):
        for m in bad:
            r.deliver(m)
    with pytest.raises(CommError, match="session s: server 1"):  # every later receive fails at once
        r.wait("s", 1, 1, 5.0)
    r.close_session("s")
    r.deliver(first[0])  # late messages of a closed session are ignored


def test_tensor_frames_are_the_protobuf_encoding_of_the_chunks():
    """A frame (header serialized by protobuf + the data field written by hand) parses into
    the same PeerMsg protobuf itself would have encoded, for every chunk, large lengths
    (multi-byte varints) and the empty tensor."""
    import numpy as np

    from servers.peer_comm import tensor_frames

    big = torch.arange(-5000, 5000, dtype=torch.int64).reshape(100, 100) * (1 << 40)
    for t, chunk in ((big, 3000), (big, 1 << 20), (torch.zeros(0, 3, dtype=torch.int64), 64),
                     (torch.tensor([7]), 8)):
        frames = tensor_frames("sid", 4, 2, t, chunk_bytes=chunk)
        raw = t.numpy().astype("<i8").tobytes()
        n = max(1, -(-len(raw) // chunk))
        assert len(frames) == n
        for c, f in enumerate(frames):
            want = pb.PeerMsg(session_id="sid", seq=4, sender=2, shape=list(t.shape), chunk=c, n_chunks=n,
                              data=raw[c * chunk:(c + 1) * chunk])
            assert pb.PeerMsg.FromString(f) == want
        got = b"".join(pb.PeerMsg.FromString(f).data for f in frames)
        assert np.array_equal(np.frombuffer(got, dtype="<i8"), t.numpy().reshape(-1))
