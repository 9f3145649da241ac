"""WAN emulation on real sockets: an asyncio TCP proxy with one-way delay and a rate limit.

tc/netem is not available on our machines, so benchmarks put this proxy on 127.0.0.1
between the server processes. Every byte that enters a :class:`LinkProxy` on one side
leaves it on the other side

* after the sender's **token bucket** let it through (serialisation at ``rate`` bytes/s;
  buckets can be shared, e.g. one per server for its whole egress), and then
* after a fixed **one-way delay** (propagation), measured from the moment it was let
  through.

Both directions of a connection are shaped (the reverse direction carries the HTTP/2
acknowledgements and window updates, which a real network delays too). A ping-pong over
one proxy therefore takes ``2 x delay`` (the round-trip time, RTT); a protocol *round*
in which every party sends to its neighbours and waits for their messages costs one
one-way delay = RTT / 2 plus the serialisation time of the bytes it carries.

Bounded: each direction holds at most ``max_buffer`` bytes in flight (reading from the
sender pauses above that, so TCP back-pressure reaches the sender); each proxy accepts at
most ``max_connections``. :class:`WanEmulator` runs the proxies on one event-loop thread,
``start()`` / ``stop()`` (or ``with``) from a benchmark or test; ``stop`` closes every socket.

    with WanEmulator() as wan:
        egress = wan.bucket(rate_bps=1e9)
        port = wan.add_link(("127.0.0.1", 50051), delay_s=0.005, bucket=egress)
        ...  # connect to 127.0.0.1:port instead of :50051
"""

from __future__ import annotations

import asyncio
import collections
import threading
from dataclasses import dataclass, field

READ_BYTES = 64 * 1024


class TokenBucket:
    """A rate limit of ``rate_bps`` bits/s with a burst of ``burst_bytes`` (None rate: unlimited).

    ``reserve(n)`` returns the monotonic time at which ``n`` more bytes have been
    "transmitted"; bytes are served in the order they were reserved (FIFO, like a NIC).
    Use it from one event loop only (it is not thread-safe; the emulator has one loop).
    """

    def __init__(self, rate_bps: float | None, burst_bytes: int = 64 * 1024) -> None:
        self.burst_bytes = burst_bytes
        self.set_rate(rate_bps)
        self._free_at = 0.0  # when the link finishes the bytes reserved so far
        self.bytes = 0

    def set_rate(self, rate_bps: float | None) -> None:
        """Change the rate (bits/s; None: unlimited)."""
        if rate_bps is not None and rate_bps <= 0:
            raise ValueError(f"rate must be positive (bits/s) or None, got {rate_bps}")
        self.rate_Bps = None if rate_bps is None else rate_bps / 8.0
        self.burst_s = 0.0 if self.rate_Bps is None else self.burst_bytes / self.rate_Bps

    def reserve(self, n: int, now: float) -> float:
        """Reserve ``n`` bytes at time ``now``; returns when they are through the bucket."""
        self.bytes += n
        if self.rate_Bps is None:
            return now
        start = max(now - self.burst_s, self._free_at)
        self._free_at = start + n / self.rate_Bps
        return max(now, self._free_at)


@dataclass
class _Stats:
    connections: int = 0
    bytes_forward: int = 0
    bytes_backward: int = 0


@dataclass
class LinkProxy:
    """One listening port forwarding to ``upstream`` with shaping in both directions."""

    upstream: tuple[str, int]
    delay_s: float
    bucket_forward: TokenBucket
    bucket_backward: TokenBucket
    max_buffer: int
    max_connections: int
    port: int = 0
    stats: _Stats = field(default_factory=_Stats)
    server: asyncio.AbstractServer | None = None
    tasks: set[asyncio.Task] = field(default_factory=set)
    writers: set[asyncio.StreamWriter] = field(default_factory=set)

    async def handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        """One client connection: open the upstream and pump both directions until both end."""
        if len(self.writers) >= 2 * self.max_connections:
            writer.close()
            return
        try:
            up_r, up_w = await asyncio.open_connection(*self.upstream)
        except OSError:
            writer.close()
            return
        self.stats.connections += 1
        self.writers.update((writer, up_w))
        pumps = [asyncio.ensure_future(self._pump(reader, up_w, self.bucket_forward, True)),
                 asyncio.ensure_future(self._pump(up_r, writer, self.bucket_backward, False))]
        self.tasks.update(pumps)
        try:
            await asyncio.gather(*pumps, return_exceptions=True)
        finally:
            self.tasks.difference_update(pumps)
            for w in (writer, up_w):
                self.writers.discard(w)
                w.close()

    async def _pump(self, src: asyncio.StreamReader, dst: asyncio.StreamWriter, bucket: TokenBucket,
                    forward: bool) -> None:
        """Read from ``src``, stamp each chunk with its release time, write it to ``dst`` then."""
        loop = asyncio.get_running_loop()
        q: collections.deque[tuple[float, bytes]] = collections.deque()
        room = asyncio.Event()
        room.set()
        ready = asyncio.Event()
        buffered = 0
        done = False

        async def writer_task() -> None:
            nonlocal buffered
            while True:
                while not q:
                    if done:
                        return
                    ready.clear()
                    await ready.wait()
                at, data = q[0]
                wait = at - loop.time()
                if wait > 0:
                    await asyncio.sleep(wait)
                q.popleft()
                dst.write(data)
                await dst.drain()
                buffered -= len(data)
                if buffered <= self.max_buffer:
                    room.set()

        w = asyncio.ensure_future(writer_task())
        try:
            while True:
                await room.wait()
                data = await src.read(READ_BYTES)
                if not data:
                    break
                q.append((bucket.reserve(len(data), loop.time()) + self.delay_s, data))
                buffered += len(data)
                if forward:
                    self.stats.bytes_forward += len(data)
                else:
                    self.stats.bytes_backward += len(data)
                if buffered > self.max_buffer:
                    room.clear()
                ready.set()
        except (ConnectionError, OSError):
            pass
        finally:
            done = True
            ready.set()
            try:
                await w
                if dst.can_write_eof():
                    dst.write_eof()
            except (ConnectionError, OSError):
                pass


class WanEmulator:
    """Hosts any number of :class:`LinkProxy` on one background event-loop thread."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the WAN proxy only listens on the loopback interface")
        self.host = host
        self.links: list[LinkProxy] = []
        self.loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None

    # ---- lifecycle --------------------------------------------------------------------
    def start(self) -> WanEmulator:
        """Start the event-loop thread (idempotent)."""
        if self._thread is None:
            self.loop = asyncio.new_event_loop()
            self._thread = threading.Thread(target=self.loop.run_forever, name="wan-proxy", daemon=True)
            self._thread.start()
        return self

    def _call(self, coro, timeout_s: float = 10.0):
        if self.loop is None:
            raise RuntimeError("WanEmulator not started")
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout_s)

    def stop(self) -> None:
        """Close every listening socket and connection, then stop the thread."""
        if self._thread is None:
            return

        async def shut() -> None:
            for link in self.links:
                if link.server is not None:
                    link.server.close()
                for w in list(link.writers):
                    w.close()
                for t in list(link.tasks):
                    t.cancel()
            await asyncio.sleep(0)
            for link in self.links:
                if link.server is not None:
                    try:
                        await asyncio.wait_for(link.server.wait_closed(), 2.0)
                    except (asyncio.TimeoutError, Exception):  # noqa: BLE001 - best effort
                        pass

        try:
            self._call(shut(), 5.0)
        finally:
            self.loop.call_soon_threadsafe(self.loop.stop)
            self._thread.join(5.0)
            self.loop.close()
            self._thread, self.loop = None, None

    def __enter__(self) -> WanEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- links ------------------------------------------------------------------------
    def bucket(self, rate_bps: float | None, burst_bytes: int = 64 * 1024) -> TokenBucket:
        """A token bucket that several links may share (e.g. one server's egress)."""
        return TokenBucket(rate_bps, burst_bytes)

    def add_link(self, upstream: tuple[str, int], delay_s: float, rate_bps: float | None = None,
                 bucket: TokenBucket | None = None, reverse_bucket: TokenBucket | None = None,
                 max_buffer: int = 32 << 20, max_connections: int = 16, port: int = 0) -> int:
        """Listen on ``host:port`` (0: any free port) forwarding to ``upstream``; returns the port.

        ``delay_s``: one-way delay applied in both directions. ``bucket`` shapes the forward
        direction (default: a private bucket at ``rate_bps``), ``reverse_bucket`` the way back.
        """
        if delay_s < 0:
            raise ValueError("delay must be >= 0")
        fwd = bucket or TokenBucket(rate_bps)
        back = reverse_bucket or TokenBucket(rate_bps)
        link = LinkProxy(upstream, delay_s, fwd, back, max_buffer, max_connections)

        async def listen() -> int:
            link.server = await asyncio.start_server(link.handle, self.host, port)
            return link.server.sockets[0].getsockname()[1]

        link.port = self._call(listen())
        self.links.append(link)
        return link.port

    def set_delay(self, delay_s: float) -> None:
        """Change the one-way delay of every link (applies to bytes read from now on)."""
        for link in self.links:
            link.delay_s = delay_s

    def set_rate(self, rate_bps: float | None) -> None:
        """Change the rate of every bucket in use."""
        for b in {id(x): x for link in self.links for x in (link.bucket_forward, link.bucket_backward)}.values():
            b.set_rate(rate_bps)

    def bytes_forwarded(self) -> int:
        """Bytes carried by all links so far, both directions."""
        return sum(link.stats.bytes_forward + link.stats.bytes_backward for link in self.links)
