"""WAN emulation on real sockets: a TCP proxy with one-way delay and a rate limit.

tc/netem is not available on our machines, so benchmarks put this proxy on 127.0.0.1
between the server processes. Every byte that enters a link on one side leaves it on the
other side

* after the sender's **token bucket** let it through (serialisation at ``rate`` bytes/s;
  buckets can be shared, e.g. one per server for its whole egress), and then
* after a fixed **one-way delay** (propagation), measured from the moment it was let
  through.

Both directions of a connection are shaped (the reverse direction carries the HTTP/2
acknowledgements and window updates, which a real network delays too). A ping-pong over
one proxy therefore takes ``2 x delay`` (the round-trip time, RTT); a protocol *round*
in which every party sends to its neighbours and waits for their messages costs one
one-way delay = RTT / 2 plus the serialisation time of the bytes it carries.

Schedule: each read (up to ``READ_BYTES``) is cut into pieces of at most ``PIECE`` bytes
when the bucket has a rate; each piece is reserved in the bucket at read time (FIFO, like
a NIC queue) and released ``delay`` after it is through. Release granularity is thus
``PIECE / rate`` (0.5 ms at 1 Gbit/s); unlimited, a whole read is released at once.

Bounded: each direction holds at most ``max_buffer`` bytes (reading from the sender stops
above that, so TCP back-pressure reaches the sender); each link accepts at most
``max_connections``.

Cost: the proxy must not steal CPU from the servers it sits between (a real network costs
them nothing). :class:`WanEmulator` therefore runs every link in ONE separate process (its
own interpreter and GIL, not a thread of the benchmark), on a plain event loop over
non-blocking sockets (no streams, no per-chunk tasks), and the bytes stay in the kernel:
they are moved socket -> pipe -> socket with ``splice(2)`` (no copy through user space;
only when a direction's pipes are full are bytes read into memory). The caller talks to the
process over its stdin/stdout (one JSON line per call); the process exits when its stdin
closes, so it never outlives the caller. ``benchmarks.wan_cpu`` measures the CPU per GB
relayed: 0.3 s/GB unlimited, 0.5-0.8 s/GB at 1 Gbit/s (64 KB release pieces), against
1.7-2.3 and 1.8-2.6 s/GB for the earlier thread + asyncio-streams proxy (2-core EPYC, busy).

    with WanEmulator() as wan:
        egress = wan.bucket(rate_bps=1e9)
        port = wan.add_link(("127.0.0.1", 50051), delay_s=0.005, bucket=egress)
        ...  # connect to 127.0.0.1:port instead of :50051
"""

from __future__ import annotations

import asyncio
import collections
import fcntl
import itertools
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path
from typing import Any

READ_BYTES = 1 << 20  # at most this much per read
PIECE = 64 * 1024  # release granularity under a rate limit
PIPE_BYTES = 1 << 20  # capacity asked for each kernel pipe
MAX_PIPES = 40  # kernel pipes per direction (max_buffer / PIPE_BYTES + 2 at most); bytes beyond: in memory
SLACK_S = 20e-6  # a release also takes what is due this much later (one wakeup, not two)
_SPLICE = hasattr(os, "splice") and hasattr(os, "pipe2")
_NB = getattr(os, "SPLICE_F_NONBLOCK", 0) | getattr(os, "SPLICE_F_MOVE", 0)
_F_SETPIPE_SZ, _F_GETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031), getattr(fcntl, "F_GETPIPE_SZ", 1032)


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


# ---- the proxy process ----------------------------------------------------------------


class _Pipe:
    """A kernel pipe holding bytes between splice in and splice out (FIFO)."""

    __slots__ = ("r", "w", "cap", "used", "full")

    def __init__(self) -> None:
        self.r, self.w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
        try:
            fcntl.fcntl(self.w, _F_SETPIPE_SZ, PIPE_BYTES)
        except OSError:  # e.g. over the per-user pipe budget: keep the default size
            pass
        self.cap = fcntl.fcntl(self.w, _F_GETPIPE_SZ)
        self.used = 0
        self.full = False  # refused a splice (its slots, not its bytes, ran out): wait until empty

    def close(self) -> None:
        os.close(self.r)
        os.close(self.w)


class _Direction:
    """One direction of one connection: ``src`` -> bucket -> delay -> ``dst``.

    ``queue`` holds ``[release_at, n, store]`` in arrival order; ``store`` is the
    :class:`_Pipe` the ``n`` bytes sit in, or the bytes themselves (a memoryview)."""

    def __init__(self, conn: _Conn, src: socket.socket, dst: socket.socket, bucket: TokenBucket,
                 forward: bool) -> None:
        self.conn, self.link, self.loop = conn, conn.link, conn.link.loop
        self.src, self.dst, self.sfd, self.dfd = src, dst, src.fileno(), dst.fileno()
        self.bucket, self.forward = bucket, forward
        self.queue: collections.deque[list] = collections.deque()
        self.pipes: list[_Pipe] = []
        self.buffered = 0
        self.reading = self.writing = self.eof = self.done = False
        self.timer: asyncio.TimerHandle | None = None

    def start(self) -> None:
        self._read_on()

    def _read_on(self) -> None:
        if not self.reading and not self.eof:
            self.loop.add_reader(self.sfd, self._readable)
            self.reading = True

    def _read_off(self) -> None:
        if self.reading:
            self.loop.remove_reader(self.sfd)
            self.reading = False

    def _pipe(self) -> _Pipe | None:
        if not _SPLICE:
            return None
        for p in self.pipes:
            if not p.full and p.used < p.cap:
                return p
        if len(self.pipes) < self.link.pipes:
            try:
                self.pipes.append(_Pipe())
            except OSError:
                return None
            return self.pipes[-1]
        return None

    def _readable(self) -> None:
        room = self.link.max_buffer - self.buffered
        if room <= 0:
            self._read_off()
            return
        want = min(room, READ_BYTES)
        p = self._pipe()
        store: Any = p
        try:
            if p is not None:
                n = os.splice(self.sfd, p.w, min(want, p.cap - p.used), flags=_NB)
            else:
                data = self.src.recv(want)
                n, store = len(data), memoryview(data)
        except (BlockingIOError, InterruptedError):
            if p is not None and p.used:  # the pipe has no free slot left: fill another one
                p.full = True
            return
        except OSError:  # reset by the sender: what we hold still goes out, then EOF
            n = 0
        if n == 0:
            self._read_off()
            self.eof = True
            if not self.queue:
                self._finish()
            return
        self._enqueue(n, store)
        if p is not None:
            p.used += n
            p.full = p.used >= p.cap  # filled once, then drained to empty before it is filled again
        if self.buffered >= self.link.max_buffer:
            self._read_off()
        if not self.writing and self.timer is None:
            self._release()

    def _enqueue(self, n: int, store: Any) -> None:
        now, delay, b, q = self.loop.time(), self.link.delay_s, self.bucket, self.queue
        self.buffered += n
        if self.forward:
            self.link.stats["bytes_forward"] += n
        else:
            self.link.stats["bytes_backward"] += n
        if b.rate_Bps is None:
            at = b.reserve(n, now) + delay
            if isinstance(store, _Pipe) and q and q[-1][2] is store and q[-1][0] == at:
                q[-1][1] += n
            else:
                q.append([at, n, store])
            return
        for off in range(0, n, PIECE):
            k = min(PIECE, n - off)
            q.append([b.reserve(k, now) + delay, k, store if isinstance(store, _Pipe) else store[off:off + k]])

    def _release(self) -> None:
        """Write every due byte to ``dst`` (in order), then wait for the next due time or for room."""
        self.timer = None
        q = self.queue
        due = self.loop.time() + SLACK_S
        while q and q[0][0] <= due:
            at, n, store = q[0]
            if isinstance(store, _Pipe):
                m = n
                for e in itertools.islice(q, 1, None):  # the following due bytes in the same pipe: one splice
                    if e[2] is not store or e[0] > due:
                        break
                    m += e[1]
            else:
                m = n
            try:
                w = os.splice(store.r, self.dfd, m, flags=_NB) if isinstance(store, _Pipe) else self.dst.send(store)
            except (BlockingIOError, InterruptedError):
                w = 0
            except OSError:  # the receiver is gone: so is the connection
                self.conn.close()
                return
            self.buffered -= w
            if isinstance(store, _Pipe):
                store.used -= w
                if store.used == 0:
                    store.full = False
            left = w
            while left:
                e = q[0]
                if e[1] <= left:
                    left -= e[1]
                    q.popleft()
                else:
                    e[1] -= left
                    if not isinstance(store, _Pipe):
                        e[2] = e[2][left:]
                    left = 0
            if w < m:  # dst's socket buffer is full: go on when it drains
                self.loop.add_writer(self.dfd, self._writable)
                self.writing = True
                break
        if not self.reading and self.buffered <= self.link.max_buffer - min(READ_BYTES, self.link.max_buffer // 2):
            self._read_on()  # (when a whole read fits again: not one wakeup per release while the buffer is full)
        if not q:
            if self.eof:
                self._finish()
        elif not self.writing:
            self.timer = self.loop.call_at(q[0][0], self._release)

    def _writable(self) -> None:
        self.loop.remove_writer(self.dfd)
        self.writing = False
        self._release()

    def _finish(self) -> None:
        """Everything read has been written: pass the EOF on."""
        if self.done:
            return
        self.done = True
        try:
            self.dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass
        self.conn.maybe_close()

    def close(self) -> None:
        self._read_off()
        if self.writing:
            self.loop.remove_writer(self.dfd)
            self.writing = False
        if self.timer is not None:
            self.timer.cancel()
            self.timer = None
        for p in self.pipes:
            p.close()
        self.pipes, self.done = [], True
        self.queue.clear()


class _Conn:
    """One proxied connection: the client's socket and the upstream socket, two directions."""

    def __init__(self, link: _Link, client: socket.socket, up: socket.socket) -> None:
        self.link, self.socks = link, (client, up)
        self.dirs = (_Direction(self, client, up, link.bucket_forward, True),
                     _Direction(self, up, client, link.bucket_backward, False))
        self.closed = False

    def maybe_close(self) -> None:
        if all(d.done for d in self.dirs):
            self.close()

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        for d in self.dirs:
            d.close()
        for s in self.socks:
            s.close()
        self.link.conns.discard(self)


class _Link:
    """One listening port forwarding to ``upstream`` with shaping in both directions."""

    def __init__(self, loop: asyncio.AbstractEventLoop, host: str, port: int, upstream: tuple[str, int],
                 delay_s: float, fwd: TokenBucket, back: TokenBucket, max_buffer: int, max_connections: int,
                 pipes: int | None):
        self.loop, self.upstream, self.delay_s = loop, upstream, delay_s
        self.pipes = min(MAX_PIPES, max_buffer // PIPE_BYTES + 2) if pipes is None else pipes
        self.bucket_forward, self.bucket_backward = fwd, back
        self.max_buffer, self.max_connections = max_buffer, max_connections
        self.stats = {"connections": 0, "bytes_forward": 0, "bytes_backward": 0}
        self.conns: set[_Conn] = set()
        self.listener = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        self.listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.listener.bind((host, port))
        self.listener.listen(64)
        self.listener.setblocking(False)
        self.port = self.listener.getsockname()[1]
        loop.add_reader(self.listener.fileno(), self._accept)

    def _accept(self) -> None:
        try:
            client, _ = self.listener.accept()
        except OSError:
            return
        if len(self.conns) >= self.max_connections:
            client.close()
            return
        try:  # loopback: connects (or is refused) at once
            up = socket.create_connection(tuple(self.upstream), timeout=2.0)
        except OSError:
            client.close()
            return
        for s in (client, up):
            s.setblocking(False)
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.stats["connections"] += 1
        conn = _Conn(self, client, up)
        self.conns.add(conn)
        for d in conn.dirs:
            d.start()

    def close(self) -> None:
        self.loop.remove_reader(self.listener.fileno())
        self.listener.close()
        for c in list(self.conns):
            c.close()


class _Server:
    """The proxy process: links and buckets, driven by JSON lines on stdin (one reply each)."""

    def __init__(self, host: str) -> None:
        self.host = host
        self.loop = asyncio.new_event_loop()
        self.buckets: list[TokenBucket] = []
        self.links: list[_Link] = []
        self.inbuf = b""

    def run(self) -> None:
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C is the caller's: it stops us (stdin closes)
        os.set_blocking(0, False)
        self.loop.add_reader(0, self._command)
        self._reply({"ready": os.getpid()})
        try:
            self.loop.run_forever()
        finally:
            for link in self.links:
                link.close()
            self.loop.close()

    def _reply(self, obj: dict) -> None:
        data = (json.dumps(obj) + "\n").encode()
        while data:
            data = data[os.write(1, data):]

    def _command(self) -> None:
        try:
            chunk = os.read(0, 1 << 16)
        except BlockingIOError:
            return
        if not chunk:  # the caller is gone
            self.loop.stop()
            return
        self.inbuf += chunk
        while b"\n" in self.inbuf:
            line, self.inbuf = self.inbuf.split(b"\n", 1)
            cmd = json.loads(line)
            try:
                self._reply({"ok": getattr(self, "_op_" + cmd.pop("op"))(**cmd)})
            except Exception as exc:  # noqa: BLE001 - reported to the caller, who raises it
                self._reply({"error": f"{type(exc).__name__}: {exc}", "type": type(exc).__name__})

    def _op_bucket(self, rate_bps: float | None, burst_bytes: int) -> int:
        self.buckets.append(TokenBucket(rate_bps, burst_bytes))
        return len(self.buckets) - 1

    def _op_add_link(self, upstream: list, delay_s: float, fwd: int, back: int, max_buffer: int,
                     max_connections: int, port: int, pipes: int | None) -> int:
        link = _Link(self.loop, self.host, port, (upstream[0], int(upstream[1])), delay_s, self.buckets[fwd],
                     self.buckets[back], max_buffer, max_connections, pipes)
        self.links.append(link)
        return link.port

    def _op_set_upstream(self, link: int, upstream: list) -> None:
        self.links[link].upstream = (upstream[0], int(upstream[1]))

    def _op_set_delay(self, delay_s: float) -> None:
        for link in self.links:
            link.delay_s = delay_s

    def _op_set_rate(self, rate_bps: float | None, buckets: list[int] | None) -> None:
        for i in buckets if buckets is not None else range(len(self.buckets)):
            self.buckets[i].set_rate(rate_bps)

    def _op_stats(self) -> dict:
        return {"buckets": [b.bytes for b in self.buckets], "links": [dict(lk.stats) for lk in self.links]}

    def _op_stop(self) -> None:
        for link in self.links:
            link.close()
        self.links = []
        self.loop.call_soon(self.loop.stop)


# ---- the caller's side ----------------------------------------------------------------


class Bucket:
    """A token bucket living in the proxy process (from :meth:`WanEmulator.bucket`)."""

    def __init__(self, wan: WanEmulator, index: int) -> None:
        self.wan, self.index = wan, index

    @property
    def bytes(self) -> int:
        """Bytes reserved in this bucket so far (every byte its links carried)."""
        return self.wan._call("stats")["buckets"][self.index]

    def set_rate(self, rate_bps: float | None) -> None:
        """Change this bucket's rate (bits/s; None: unlimited)."""
        self.wan._call("set_rate", rate_bps=rate_bps, buckets=[self.index])


class Link:
    """A link of the proxy process (``wan.links``): its port, upstream, buckets and byte counts."""

    def __init__(self, wan: WanEmulator, index: int, port: int, upstream: tuple[str, int],
                 fwd: Bucket, back: Bucket) -> None:
        self.wan, self.index, self.port, self._upstream = wan, index, port, upstream
        self.bucket_forward, self.bucket_backward = fwd, back

    @property
    def upstream(self) -> tuple[str, int]:
        return self._upstream

    @upstream.setter
    def upstream(self, address: tuple[str, int]) -> None:
        """Where new connections go (connections already open keep theirs)."""
        self.wan._call("set_upstream", link=self.index, upstream=list(address))
        self._upstream = (address[0], int(address[1]))

    @property
    def stats(self) -> dict:
        """``connections``, ``bytes_forward`` (client -> upstream) and ``bytes_backward`` so far."""
        return self.wan._call("stats")["links"][self.index]


class WanEmulator:
    """Runs any number of links in one separate proxy process (see the module docstring)."""

    def __init__(self, host: str = "127.0.0.1") -> None:
        if host not in ("127.0.0.1", "localhost", "::1"):
            raise ValueError("the WAN proxy only listens on the loopback interface")
        self.host = "127.0.0.1" if host == "localhost" else host
        self.links: list[Link] = []
        self.buckets: list[Bucket] = []
        self._proc: subprocess.Popen | None = None
        self._lock = threading.Lock()
        self.pid: int | None = None

    # ---- lifecycle --------------------------------------------------------------------
    def start(self) -> WanEmulator:
        """Start the proxy process (idempotent)."""
        if self._proc is None:
            root = str(Path(__file__).resolve().parents[1])
            env = dict(os.environ, PYTHONPATH=os.pathsep.join([root, *filter(None, [os.environ.get("PYTHONPATH")])]))
            self._proc = subprocess.Popen([sys.executable, "-S", "-m", "benchmarks.wan", self.host], env=env,
                                          stdin=subprocess.PIPE, stdout=subprocess.PIPE)
            line = self._proc.stdout.readline()
            if not line:
                self._proc.wait(5)
                self._proc = None
                raise RuntimeError("the WAN proxy process did not start")
            self.pid = json.loads(line)["ready"]
        return self

    def _call(self, op: str, **kw: Any) -> Any:
        if self._proc is None:
            raise RuntimeError("WanEmulator not started")
        with self._lock:
            self._proc.stdin.write((json.dumps({"op": op, **kw}) + "\n").encode())
            self._proc.stdin.flush()
            line = self._proc.stdout.readline()
        if not line:
            raise RuntimeError("the WAN proxy process is gone")
        out = json.loads(line)
        if "error" in out:
            raise (ValueError if out["type"] == "ValueError" else RuntimeError)(out["error"])
        return out["ok"]

    def stop(self) -> None:
        """Close every listening socket and connection, then end the proxy process."""
        if self._proc is None:
            return
        proc, self._proc = self._proc, None
        try:
            with self._lock:
                proc.stdin.write(b'{"op": "stop"}\n')
                proc.stdin.close()
        except OSError:
            pass
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)
        proc.stdout.close()
        self.pid = None

    def __enter__(self) -> WanEmulator:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- links ------------------------------------------------------------------------
    def bucket(self, rate_bps: float | None, burst_bytes: int = 64 * 1024) -> Bucket:
        """A token bucket that several links may share (e.g. one server's egress)."""
        TokenBucket(rate_bps, burst_bytes)  # same checks here
        b = Bucket(self, self._call("bucket", rate_bps=rate_bps, burst_bytes=burst_bytes))
        self.buckets.append(b)
        return b

    def add_link(self, upstream: tuple[str, int], delay_s: float, rate_bps: float | None = None,
                 bucket: Bucket | None = None, reverse_bucket: Bucket | None = None,
                 max_buffer: int = 32 << 20, max_connections: int = 16, port: int = 0,
                 pipes: int | None = None) -> int:
        """Listen on ``host:port`` (0: any free port) forwarding to ``upstream``; returns the port.

        ``delay_s``: one-way delay applied in both directions. ``bucket`` shapes the forward
        direction (default: a private bucket at ``rate_bps``), ``reverse_bucket`` the way back.
        ``max_buffer``: bytes held per direction at most. ``pipes``: kernel pipes per direction
        for the held bytes (None: enough for ``max_buffer``; 0: every byte through memory).
        """
        if delay_s < 0 or max_buffer < 1 or (pipes is not None and pipes < 0):
            raise ValueError("need delay >= 0, max_buffer >= 1, pipes >= 0")
        fwd = bucket or self.bucket(rate_bps)
        back = reverse_bucket or self.bucket(rate_bps)
        port = self._call("add_link", upstream=list(upstream), delay_s=delay_s, fwd=fwd.index, back=back.index,
                          max_buffer=max_buffer, max_connections=max_connections, port=port, pipes=pipes)
        self.links.append(Link(self, len(self.links), port, (upstream[0], int(upstream[1])), fwd, back))
        return port

    def set_delay(self, delay_s: float) -> None:
        """Change the one-way delay of every link (applies to bytes read from now on)."""
        if delay_s < 0:
            raise ValueError("delay must be >= 0")
        self._call("set_delay", delay_s=delay_s)

    def set_rate(self, rate_bps: float | None) -> None:
        """Change the rate of every bucket in use."""
        TokenBucket(rate_bps)  # same checks here
        used = sorted({b.index for lk in self.links for b in (lk.bucket_forward, lk.bucket_backward)})
        self._call("set_rate", rate_bps=rate_bps, buckets=used)

    def bytes_forwarded(self) -> int:
        """Bytes carried by all links so far, both directions."""
        return sum(s["bytes_forward"] + s["bytes_backward"] for s in self._call("stats")["links"])


if __name__ == "__main__":  # the proxy process (started by WanEmulator.start)
    _Server(sys.argv[1] if len(sys.argv) > 1 else "127.0.0.1").run()
    sys.exit(0)
