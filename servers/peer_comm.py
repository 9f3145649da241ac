"""``GrpcComm``: the protocols' ``Comm`` over gRPC streams between the three servers.

Each server keeps one outgoing client stream (``Peer.Link``) to each peer and receives
the peers' streams in its ``Link`` servicer. Every message carries ``(session_id, seq)``
where ``seq`` counts messages on that session's directed link; protocols send in a
deterministic order, so the receiver files early arrivals in a dict until the protocol
asks for them (MPyC's program-counter idea). Tensors above ``PEER_CHUNK_BYTES`` travel as
several chunks. A peer whose stream breaks, or that aborts the session, makes every
waiting receive fail with ``CommError`` at once; otherwise a receive fails after the
timeout. Pairwise PRF keys come from X25519 (static key per server) + HKDF, with the
public keys exchanged by ``Peer.Hello`` over mutual TLS: no dealer.
"""

from __future__ import annotations

import asyncio
import collections
import logging
import threading
import time
from pathlib import Path

import grpc
import numpy as np
import torch
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from protocols.comm import Comm, CommError
from protocols.prf import KEY_BYTES, PairwiseKeys
from protos.trivault.v1 import trivault_pb2 as pb
from protos.trivault.v1 import trivault_pb2_grpc as pbg
from wire.options import GRPC_OPTIONS, MAX_PEER_TENSOR_BYTES, PEER_CHUNK_BYTES
from wire.tls import secure_channel

from .storage import write_atomic

log = logging.getLogger("trivault.peer")
_STOP = object()


class PeerRouter:
    """Incoming peer messages, filed by (session, sender, seq) until a receive asks for them."""

    def __init__(self, max_buffered_sessions: int = 64) -> None:
        self._cv = threading.Condition()
        self._boxes: dict[tuple[str, int], dict[int, torch.Tensor]] = {}
        self._partial: dict[tuple[str, int, int], list[bytes]] = {}
        self._aborted: dict[str, int] = {}
        self._closed: collections.OrderedDict[str, None] = collections.OrderedDict()
        self._epoch = {0: 0, 1: 0, 2: 0}
        self._max = max_buffered_sessions
        self._first_seen: dict[str, float] = {}
        self._active: set[str] = set()
        self._delivered = 0
        self.stale_after_s = 300.0

    def open_session(self, sid: str) -> None:
        """Mark ``sid`` as run by this server (its buffered messages are kept)."""
        with self._cv:
            self._active.add(sid)

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

    def peer_down(self, peer: int) -> None:
        """A stream from/to ``peer`` broke: waiting receives from it fail."""
        with self._cv:
            self._epoch[peer] += 1
            self._cv.notify_all()

    def deliver(self, msg: pb.PeerMsg) -> None:
        """File one incoming message (or chunk, or abort notice)."""
        sid, frm = msg.session_id, int(msg.sender)
        with self._cv:
            if sid in self._closed:
                return
            if msg.abort:
                self._aborted[sid] = frm
                self._first_seen.setdefault(sid, time.monotonic())
                self._cv.notify_all()
                return
            self._delivered += 1
            if self._delivered % 256 == 0:
                self._sweep()
            if sid not in self._first_seen:
                if len(self._first_seen) >= self._max:
                    raise CommError("too many concurrent sessions buffered")
                self._first_seen[sid] = time.monotonic()
            shape = tuple(msg.shape)
            if msg.n_chunks > 1:
                key = (sid, frm, int(msg.seq))
                part = self._partial.get(key)
                if part is None:  # [buffer of the whole tensor, bytes filled so far]
                    n = 8 * int(np.prod(shape, dtype=np.int64))
                    if not 0 < n <= MAX_PEER_TENSOR_BYTES or msg.n_chunks * PEER_CHUNK_BYTES < n:
                        raise CommError(f"peer message of {n} bytes in {msg.n_chunks} chunks refused")
                    part = self._partial[key] = [bytearray(n), 0]
                buf, pos = part
                if pos + len(msg.data) > len(buf):
                    del self._partial[key]
                    raise CommError("peer message longer than its declared shape")
                buf[pos:pos + len(msg.data)] = msg.data
                part[1] = pos + len(msg.data)
                if part[1] < len(buf):
                    return
                del self._partial[key]
                t = torch.frombuffer(buf, dtype=torch.int64).view(shape)
            else:
                t = torch.from_numpy(np.frombuffer(msg.data, dtype="<i8").copy()).view(shape)
            self._boxes.setdefault((sid, frm), {})[int(msg.seq)] = t
            self._cv.notify_all()

    def wait(self, sid: str, frm: int, seq: int, timeout_s: float, epoch: int) -> torch.Tensor:
        """Block until message ``seq`` of ``sid`` from ``frm`` arrives; CommError on timeout/failure."""
        deadline = time.monotonic() + timeout_s
        with self._cv:
            while True:
                box = self._boxes.get((sid, frm))
                if box is not None and seq in box:
                    return box.pop(seq)
                if sid in self._aborted:
                    raise CommError(f"session {sid}: server {self._aborted[sid]} aborted the query")
                if self._epoch[frm] != epoch:
                    raise CommError(f"session {sid}: lost the connection to server {frm}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CommError(f"session {sid}: no message from server {frm} within {timeout_s:.0f} s")
                self._cv.wait(min(left, 1.0))

    def close_session(self, sid: str) -> None:
        """Forget a finished session; late messages for it are dropped."""
        with self._cv:
            self._drop(sid)

    def _drop(self, sid: str) -> None:
        """Forget everything about ``sid`` (caller holds the lock)."""
        for k in [k for k in self._boxes if k[0] == sid]:
            del self._boxes[k]
        for k in [k for k in self._partial if k[0] == sid]:
            del self._partial[k]
        self._aborted.pop(sid, None)
        self._first_seen.pop(sid, None)
        self._active.discard(sid)
        self._closed[sid] = None
        while len(self._closed) > 10_000:
            self._closed.popitem(last=False)


def tensor_messages(sid: str, seq: int, sender: int, t: torch.Tensor,
                    chunk_bytes: int = PEER_CHUNK_BYTES) -> list[pb.PeerMsg]:
    """The PeerMsg chunks carrying int64 tensor ``t`` as message ``seq`` of session ``sid``."""
    arr = np.ascontiguousarray(t.detach().numpy(), dtype="<i8")
    data = memoryview(arr.reshape(-1)).cast("B")
    n = max(1, -(-len(data) // chunk_bytes))
    return [pb.PeerMsg(session_id=sid, seq=seq, sender=sender, shape=list(t.shape),
                       data=bytes(data[c * chunk_bytes:(c + 1) * chunk_bytes]), chunk=c, n_chunks=n)
            for c in range(n)]


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

    def send(self, msg: pb.PeerMsg) -> None:
        """Queue ``msg`` on the stream (opened on demand); returns at once."""
        self._aio.loop.call_soon_threadsafe(self._enqueue, msg)

    def _enqueue(self, msg: object) -> None:
        if self._writer is None or self._writer.done():
            if msg is _STOP:
                return
            self._q = asyncio.Queue()
            self._writer = self._aio.loop.create_task(self._run(self._q))
        self._q.put_nowait(msg)

    async def _run(self, q: asyncio.Queue) -> None:
        if self._achannel is None:
            self._achannel = grpc.aio.secure_channel(self._address, self._creds, options=GRPC_OPTIONS)
        call = pbg.PeerStub(self._achannel).Link()
        watcher = asyncio.ensure_future(self._watch(call))
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

    async def _watch(self, call) -> None:
        """The stream ended: if with an error, the peer is down (waiting receives fail)."""
        try:
            await call
            return
        except grpc.RpcError as exc:
            if exc.code() == grpc.StatusCode.CANCELLED and self._q is None:
                return
        log.info("link %d->%d closed", self.me, self.peer)
        self.router.peer_down(self.peer)
        if self._writer is not None and not self._writer.done():
            self._writer.cancel()

    def send_tensor(self, sid: str, seq: int, t: torch.Tensor) -> None:
        """Send one tensor, chunked when large."""
        for msg in tensor_messages(sid, seq, self.me, t):
            self.send(msg)

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
    """One protocol session's links to the two peers over gRPC."""

    def __init__(self, party_id: int, session_id: str, router: PeerRouter, links: dict[int, PeerLink],
                 timeout_s: float = 30.0) -> None:
        super().__init__(party_id)
        self.session_id = session_id
        self._router, self._links, self._timeout = router, links, timeout_s
        self._send_seq = {self.next_id: 0, self.prev_id: 0}
        self._recv_seq = {self.next_id: 0, self.prev_id: 0}
        self._epochs = {p: router.epoch(p) for p in (self.next_id, self.prev_id)}
        router.open_session(session_id)

    def _send(self, to: int, tensor: torch.Tensor) -> None:
        seq = self._send_seq[to]
        self._send_seq[to] = seq + 1
        self._links[to].send_tensor(self.session_id, seq, tensor)

    def _recv(self, frm: int) -> torch.Tensor:
        seq = self._recv_seq[frm]
        self._recv_seq[frm] = seq + 1
        return self._router.wait(self.session_id, frm, seq, self._timeout, self._epochs[frm])

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


# ---- dealer-free pairwise keys --------------------------------------------------------


def load_or_create_x25519(path: Path) -> X25519PrivateKey:
    """This server's static X25519 key (created once, file mode 0600)."""
    if path.exists():
        return X25519PrivateKey.from_private_bytes(path.read_bytes())
    sk = X25519PrivateKey.generate()
    raw = sk.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    write_atomic(path, raw)
    path.chmod(0o600)
    return sk


def public_bytes(sk: X25519PrivateKey) -> bytes:
    """Raw 32-byte public key."""
    return sk.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def pair_key(sk: X25519PrivateKey, peer_public: bytes, a: int, b: int) -> bytes:
    """The key shared by servers ``a`` and ``b``: HKDF-SHA256 of their X25519 secret."""
    shared = sk.exchange(X25519PublicKey.from_public_bytes(peer_public))
    lo, hi = sorted((a, b))
    return HKDF(algorithm=SHA256(), length=KEY_BYTES, salt=None,
                info=f"trivault/v1/pairwise/{lo}-{hi}".encode()).derive(shared)


class PeerKeys:
    """Fetches the peers' public keys (``Hello``) and derives the pairwise keys."""

    def __init__(self, me: int, sk: X25519PrivateKey, links: dict[int, PeerLink], router: PeerRouter,
                 timeout_s: float = 10.0) -> None:
        self.me, self._sk, self._links, self._timeout = me, sk, links, timeout_s
        self._router = router
        self._cache: dict[int, tuple[int, bytes]] = {}  # peer -> (link epoch, public key)
        self._lock = threading.Lock()

    def _peer_public(self, peer: int) -> bytes:
        epoch = self._router.epoch(peer)
        with self._lock:
            hit = self._cache.get(peer)
            if hit is not None and hit[0] == epoch:  # re-fetched after a reconnect (key may have changed)
                return hit[1]
        try:
            rep = self._links[peer].stub.Hello(
                pb.HelloRequest(sender=self.me, x25519_public_key=public_bytes(self._sk)), timeout=self._timeout)
        except grpc.RpcError as exc:
            raise CommError(f"server {peer} unreachable: {exc.code().name}") from None
        if rep.server != peer or len(rep.x25519_public_key) != 32:
            raise CommError(f"server {peer} answered the key handshake with a wrong identity")
        with self._lock:
            self._cache[peer] = (epoch, rep.x25519_public_key)
        return rep.x25519_public_key

    def keys(self) -> PairwiseKeys:
        """``PairwiseKeys(prev, next)`` of this server."""
        prev, nxt = (self.me - 1) % 3, (self.me + 1) % 3
        return PairwiseKeys(prev=pair_key(self._sk, self._peer_public(prev), self.me, prev),
                            next=pair_key(self._sk, self._peer_public(nxt), self.me, nxt))
