"""``GrpcComm``: the protocols' ``Comm`` over gRPC streams between the three servers.

Each server keeps one outgoing client stream (``Peer.Link``) to each peer and receives
the peers' streams in its ``Link`` servicer. Every message carries ``(session_id, seq)``
where ``seq`` counts messages on that session's directed link; protocols send in a
deterministic order, so the receiver files early arrivals in a dict until the protocol
asks for them (MPyC's program-counter idea). Tensors above ``PEER_CHUNK_BYTES`` travel as
several chunks. A stream that breaks while it carries a session's messages (in either
direction), or a peer that aborts the session, makes every receive of that session fail
with ``CommError`` at once; a stream break does not touch sessions it did not carry (a
peer that restarted between two queries costs nothing), and any other loss is named by
the receive timeout (in malicious mode only the aborting peer's messages stop being awaited:
:attr:`GrpcComm.wait_for_each_peer`). Pairwise PRF keys come from X25519 (static key per server) + HKDF, with the
public keys exchanged by ``Peer.Hello`` over mutual TLS: no dealer.
"""

from __future__ import annotations

import asyncio
import collections
import collections.abc
import logging
import threading
import time

import grpc
import numpy as np
import torch

from protocols.comm import Comm, CommError
from protos.trivault.v1 import trivault_pb2 as pb
from protos.trivault.v1 import trivault_pb2_grpc as pbg
from wire.options import GRPC_OPTIONS, MAX_PEER_TENSOR_BYTES, PEER_CHUNK_BYTES
from wire.tls import secure_channel

log = logging.getLogger("trivault.peer")
_STOP = object()


class PeerRouter:
    """Incoming peer messages, filed by (session, sender, seq) until a receive asks for them.

    Binding: a message names its session, its sender (checked against the sender's TLS
    certificate by ``servers.peer.PeerServicer.Link``) and its ``seq`` on that directed
    link. A seq that was delivered before (a replayed message, or a message of another
    session re-sent under this session's id), chunks out of place, or a size that does not
    match the declared shape is a protocol violation: the session is marked faulted by that
    sender and every receive of it fails at once with a ``CommError`` naming the sender.
    A dropped message (or a sender that stops) is named by the receive timeout.

    Bookkeeping is bounded: abort notices live in an LRU of ``max_remembered`` entries and
    never count as buffered sessions; only sessions holding early messages count towards
    ``max_buffered_sessions``, and when that is reached the sessions this server never
    opened that are older than ``stale_after_s`` are dropped first.
    """

    def __init__(self, max_buffered_sessions: int = 64, max_remembered: int = 10_000) -> None:
        self._cv = threading.Condition()
        self._boxes: dict[tuple[str, int], dict[int, torch.Tensor]] = {}
        self._partial: dict[tuple[str, int, int], list] = {}
        self._seen: dict[tuple[str, int], set[int]] = {}
        self._aborted: collections.OrderedDict[str, int] = collections.OrderedDict()
        self._aborters: dict[str, set[int]] = {}  # session -> every peer that aborted it (keys: _aborted's)
        self._faulted: collections.OrderedDict[str, str] = collections.OrderedDict()
        self._closed: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._lost: collections.OrderedDict[str, int] = collections.OrderedDict()  # session -> peer
        self._epoch = {0: 0, 1: 0, 2: 0}
        self._max, self._remember = max_buffered_sessions, max_remembered
        self._first_seen: dict[str, float] = {}
        self._active: set[str] = set()
        self.stale_after_s = 300.0

    def open_session(self, sid: str) -> None:
        """Mark ``sid`` as run by this server (its buffered messages are kept)."""
        with self._cv:
            self._active.add(sid)

    def buffered_sessions(self) -> int:
        """Sessions currently holding early messages (what ``max_buffered_sessions`` bounds)."""
        with self._cv:
            return len(self._first_seen)

    def _sweep(self) -> None:
        """Drop messages of sessions this server never ran (e.g. the client did not reach it)."""
        now = time.monotonic()
        for sid, t in list(self._first_seen.items()):
            if sid not in self._active and now - t > self.stale_after_s:
                self._drop(sid)

    def epoch(self, peer: int) -> int:
        """Number of times ``peer``'s link went down so far."""
        with self._cv:
            return self._epoch[peer]

    def peer_down(self, peer: int, sessions: collections.abc.Iterable[str] = ()) -> None:
        """A stream from/to ``peer`` broke while carrying messages of ``sessions``: every
        receive of those sessions (not yet closed here) fails at once. Other sessions, and
        sessions that start later, are not affected: their messages travel on a new stream."""
        with self._cv:
            self._epoch[peer] += 1
            for sid in sessions:
                if sid not in self._closed:
                    self._lost[sid] = peer
                    self._lost.move_to_end(sid)
            while len(self._lost) > self._remember:
                self._lost.popitem(last=False)
            self._cv.notify_all()

    def _note_abort(self, sid: str, frm: int) -> None:
        self._aborted[sid] = frm
        self._aborted.move_to_end(sid)
        self._aborters.setdefault(sid, set()).add(frm)
        while len(self._aborted) > self._remember:
            self._aborters.pop(self._aborted.popitem(last=False)[0], None)
        if sid not in self._active:  # nobody here waits for it: free its early messages now
            self._free(sid)
        self._cv.notify_all()

    def _fault(self, sid: str, frm: int, why: str) -> None:
        self._faulted.setdefault(sid, f"session {sid}: server {frm} {why}")
        while len(self._faulted) > self._remember:
            self._faulted.popitem(last=False)
        self._free(sid)
        self._cv.notify_all()
        raise CommError(self._faulted[sid])

    def deliver(self, msg: pb.PeerMsg) -> None:
        """File one incoming message (or chunk, or abort notice); CommError if it is refused."""
        sid, frm = msg.session_id, int(msg.sender)
        with self._cv:
            if sid in self._closed or sid in self._faulted:
                return
            if msg.abort:
                self._note_abort(sid, frm)
                return
            if sid in self._aborted and sid not in self._active:
                return
            if sid not in self._first_seen:
                if len(self._first_seen) >= self._max:
                    self._sweep()
                if len(self._first_seen) >= self._max:
                    raise CommError("too many concurrent sessions buffered")
                self._first_seen[sid] = time.monotonic()
            t = self._assemble(sid, frm, msg)
            if t is not None:
                self._boxes.setdefault((sid, frm), {})[int(msg.seq)] = t
                self._cv.notify_all()

    def _assemble(self, sid: str, frm: int, msg: pb.PeerMsg) -> torch.Tensor | None:
        """Check the message's place on its link; return the tensor once all its chunks are in."""
        seen, seq = self._seen.setdefault((sid, frm), set()), int(msg.seq)
        if seq in seen or seq < 0:
            self._fault(sid, frm, f"sent message {seq} twice (a replayed or foreign message)")
        shape = tuple(msg.shape)
        n = 8 * int(np.prod(shape, dtype=np.int64))
        key = (sid, frm, seq)
        part = self._partial.get(key)
        if part is None:  # [buffer of the whole tensor, bytes filled so far, chunks so far, n_chunks]
            if not 0 <= n <= MAX_PEER_TENSOR_BYTES or max(1, msg.n_chunks) * PEER_CHUNK_BYTES < n:
                self._fault(sid, frm, f"sent a message of {n} bytes in {msg.n_chunks} chunks")
            part = self._partial[key] = [bytearray(n), 0, 0, max(1, msg.n_chunks)]
        buf, pos, got, total = part
        data = msg.data  # each read of a bytes field copies it (upb): read it once
        if msg.chunk != got or max(1, msg.n_chunks) != total or pos + len(data) > len(buf):
            del self._partial[key]
            self._fault(sid, frm, f"sent chunk {msg.chunk} of message {seq} out of place or too long")
        buf[pos:pos + len(data)] = data
        part[1:3] = [pos + len(data), got + 1]
        if part[2] < total:
            return None
        del self._partial[key]
        if part[1] != len(buf):
            self._fault(sid, frm, f"sent message {seq} shorter than its declared shape")
        seen.add(seq)
        return torch.frombuffer(buf, dtype=torch.int64).view(shape) if n else torch.zeros(shape, dtype=torch.int64)

    def wait(self, sid: str, frm: int, seq: int, timeout_s: float, each_peer: bool = False) -> torch.Tensor:
        """Block until message ``seq`` of ``sid`` from ``frm`` arrives; CommError on timeout/failure.

        A peer's abort fails the wait at once; with ``each_peer``, only ``frm``'s own abort does
        (another peer's abort lets ``frm``'s message, already on its way, still arrive: an honest
        ``frm`` sends it or aborts in turn, since it too waits on the aborting peer)."""
        deadline = time.monotonic() + timeout_s
        with self._cv:
            while True:
                box = self._boxes.get((sid, frm))
                if box is not None and seq in box:
                    return box.pop(seq)
                if sid in self._faulted:
                    raise CommError(self._faulted[sid])
                if sid in self._aborted and (not each_peer or frm in self._aborters.get(sid, ())):
                    raise CommError(f"session {sid}: server {frm if each_peer else self._aborted[sid]} "
                                    "aborted the query")
                if sid in self._lost:
                    raise CommError(f"session {sid}: lost the connection to server {self._lost[sid]}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CommError(f"session {sid}: no message from server {frm} within {timeout_s:.0f} s")
                self._cv.wait(min(left, 1.0))

    def close_session(self, sid: str) -> None:
        """Forget a finished (or refused) session; late messages for it are dropped."""
        with self._cv:
            self._drop(sid)

    def _free(self, sid: str) -> None:
        """Drop ``sid``'s buffered messages (caller holds the lock)."""
        for k in [k for k in self._boxes if k[0] == sid]:
            del self._boxes[k]
        for pk in [pk for pk in self._partial if pk[0] == sid]:
            del self._partial[pk]
        for k in [k for k in self._seen if k[0] == sid]:
            del self._seen[k]
        self._first_seen.pop(sid, None)

    def _drop(self, sid: str) -> None:
        """Forget everything about ``sid`` (caller holds the lock)."""
        self._free(sid)
        self._aborted.pop(sid, None)
        self._aborters.pop(sid, None)
        self._faulted.pop(sid, None)
        self._lost.pop(sid, None)
        self._active.discard(sid)
        self._closed[sid] = None
        while len(self._closed) > self._remember:
            self._closed.popitem(last=False)


_DATA_TAG = bytes([(5 << 3) | 2])  # PeerMsg field 5 (``data``), wire type 2 (length-delimited)


def _varint(n: int) -> bytes:
    """``n >= 0`` as a protobuf base-128 varint."""
    out = bytearray()
    while n >= 0x80:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def tensor_frames(sid: str, seq: int, sender: int, t: torch.Tensor,
                  chunk_bytes: int = PEER_CHUNK_BYTES) -> list[bytes]:
    """The serialized ``PeerMsg`` chunks carrying int64 tensor ``t`` as message ``seq`` of session ``sid``.

    Each frame is the header message (every field but ``data``) serialized by protobuf,
    followed by the ``data`` field written in protobuf's wire format (tag, varint length,
    bytes): a parser merges the two parts into one message (protobuf's concatenation rule).
    The payload is copied once, from the tensor into the frame, instead of three times
    (``bytes`` of the slice, into the message, out by ``SerializeToString``).
    """
    arr = np.ascontiguousarray(t.detach().numpy(), dtype="<i8")
    data = memoryview(arr.reshape(-1)).cast("B")  # type: ignore[arg-type]
    n = max(1, -(-len(data) // chunk_bytes))
    frames = []
    for c in range(n):
        part = data[c * chunk_bytes:(c + 1) * chunk_bytes]
        head = pb.PeerMsg(session_id=sid, seq=seq, sender=sender, shape=list(t.shape), chunk=c, n_chunks=n)
        frames.append(b"".join((head.SerializeToString(), _DATA_TAG, _varint(len(part)), part)))
    return frames


def tensor_messages(sid: str, seq: int, sender: int, t: torch.Tensor,
                    chunk_bytes: int = PEER_CHUNK_BYTES) -> list[pb.PeerMsg]:
    """:func:`tensor_frames` parsed back into ``PeerMsg`` (what a receiving server sees)."""
    return [pb.PeerMsg.FromString(f) for f in tensor_frames(sid, seq, sender, t, chunk_bytes)]


def _serialize(msg: pb.PeerMsg | bytes) -> bytes:
    """The Link stream's request serializer: frames are already serialized."""
    return msg if isinstance(msg, bytes) else msg.SerializeToString()


class SessionSet:
    """The most recent ``limit`` session ids seen on one stream (older sessions have ended:
    at most ``PeerRouter.max_buffered_sessions`` run at once)."""

    def __init__(self, limit: int = 4096) -> None:
        self._ids: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._limit = limit
        self._lock = threading.Lock()

    def add(self, sid: str) -> None:
        """Note that ``sid`` travelled on this stream."""
        with self._lock:
            self._ids[sid] = None
            self._ids.move_to_end(sid)
            while len(self._ids) > self._limit:
                self._ids.popitem(last=False)

    def items(self) -> list[str]:
        """A snapshot of the ids."""
        with self._lock:
            return list(self._ids)


class AioLoop:
    """One asyncio event-loop thread that drives the outgoing peer streams (grpc.aio).

    The sync API's client stream spends a thread hand-off and a completion wait on every
    message; writing from an event loop removes most of that per-round latency.
    """

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, name="peer-aio", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop the loop thread."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(5)


class PeerLink:
    """The outgoing stream to one peer; ``send`` never blocks on the receiver."""

    def __init__(self, me: int, peer: int, address: str, creds: grpc.ChannelCredentials, router: PeerRouter,
                 aio: AioLoop | None = None) -> None:
        self.me, self.peer, self.router = me, peer, router
        self._address, self._creds = address, creds
        self._channel = secure_channel(address, creds)  # sync: Hello and TxnStatus
        self.stub = pbg.PeerStub(self._channel)
        self._aio = aio or AioLoop()
        self._own_loop = aio is None
        self._achannel: grpc.aio.Channel | None = None
        self._q: asyncio.Queue | None = None
        self._writer: asyncio.Task | None = None
        self._sids: SessionSet = SessionSet()  # sessions whose messages the current stream carries

    def send(self, msg: pb.PeerMsg | bytes, session_id: str | None = None) -> None:
        """Queue ``msg`` (a ``PeerMsg``, or one serialized by :func:`tensor_frames` with its
        ``session_id``) on the stream (opened on demand); returns at once."""
        sid = msg.session_id if isinstance(msg, pb.PeerMsg) else session_id
        self._aio.loop.call_soon_threadsafe(self._enqueue, msg, sid)

    def _enqueue(self, msg: object, sid: str | None = None) -> None:
        if self._writer is None or self._writer.done():
            if msg is _STOP:
                return
            self._q = asyncio.Queue()
            self._sids = SessionSet()
            self._writer = self._aio.loop.create_task(self._run(self._q, self._sids))
        if msg is not _STOP and sid is not None:
            self._sids.add(sid)
        assert self._q is not None  # set with the writer
        self._q.put_nowait(msg)

    async def _run(self, q: asyncio.Queue, sids: SessionSet) -> None:
        if self._achannel is None:
            self._achannel = grpc.aio.secure_channel(self._address, self._creds, options=GRPC_OPTIONS)
        call = self._achannel.stream_unary("/trivault.v1.Peer/Link", request_serializer=_serialize,
                                           response_deserializer=pb.Ack.FromString)()
        watcher = asyncio.ensure_future(self._watch(call, sids))
        try:
            while True:
                msg = await q.get()
                if msg is _STOP:
                    await call.done_writing()
                    return
                await call.write(msg)
        except (grpc.RpcError, asyncio.InvalidStateError, grpc.aio.UsageError):
            pass
        finally:
            if not watcher.done():
                await asyncio.wait([watcher], timeout=1.0)

    async def _watch(self, call, sids: SessionSet) -> None:
        """The stream ended: if with an error, the sessions it carried fail (their messages may be lost)."""
        try:
            await call
            return
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.CANCELLED and self._q is None:
                return
        log.info("link %d->%d closed", self.me, self.peer)
        self.router.peer_down(self.peer, sids.items())
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()

    def send_tensor(self, sid: str, seq: int, t: torch.Tensor) -> None:
        """Send one tensor, chunked when large."""
        for frame in tensor_frames(sid, seq, self.me, t):
            self.send(frame, sid)

    def close(self) -> None:
        """End the stream and the channels."""
        self.send(_STOP)  # type: ignore[arg-type]

        async def shut() -> None:
            if self._achannel is not None:
                await self._achannel.close(grace=0.5)

        try:
            asyncio.run_coroutine_threadsafe(shut(), self._aio.loop).result(3)
        except Exception:  # noqa: BLE001 - best effort at shutdown
            pass
        self._channel.close()
        if self._own_loop:
            self._aio.stop()


class GrpcComm(Comm):
    """One protocol session's links to the two peers over gRPC.

    ``wait_for_each_peer`` (set by ``servers.vault`` in malicious mode): a peer's abort fails only
    the receives of that peer's messages (``PeerRouter.wait(each_peer=True)``), so an honest server
    still receives the other peer's last proof messages and reaches its own verdict when the first
    server to reject a proof aborts before them."""

    wait_for_each_peer = False

    def __init__(self, party_id: int, session_id: str, router: PeerRouter, links: dict[int, PeerLink],
                 timeout_s: float = 30.0) -> None:
        super().__init__(party_id)
        self.session_id = session_id
        self._router, self._links, self._timeout = router, links, timeout_s
        self._send_seq = {self.next_id: 0, self.prev_id: 0}
        self._recv_seq = {self.next_id: 0, self.prev_id: 0}
        router.open_session(session_id)

    def _send(self, to: int, tensor: torch.Tensor) -> None:
        seq = self._send_seq[to]
        self._send_seq[to] = seq + 1
        self._links[to].send_tensor(self.session_id, seq, tensor)

    def _recv(self, frm: int) -> torch.Tensor:
        seq = self._recv_seq[frm]
        self._recv_seq[frm] = seq + 1
        return self._router.wait(self.session_id, frm, seq, self._timeout, self.wait_for_each_peer)

    def abort(self) -> None:
        """Tell both peers this session failed here, so they stop waiting."""
        for p in (self.next_id, self.prev_id):
            try:
                self._links[p].send(pb.PeerMsg(session_id=self.session_id, sender=self.party_id, abort=True))
            except Exception:  # noqa: BLE001 - best effort
                pass
        self.close()

    def close(self) -> None:
        """Drop buffered messages of this session."""
        self._router.close_session(self.session_id)
