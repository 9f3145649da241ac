"""The WAN proxy on real loopback sockets: a ping-pong takes about the configured RTT and a
bulk transfer runs at about the configured rate (loose bounds: the machine is shared)."""

from __future__ import annotations

import os
import random
import socket
import threading
import time

import pytest

from benchmarks.wan import TokenBucket, WanEmulator


class _Echo:
    """A loopback TCP echo server (one thread per connection), or a sink that counts bytes."""

    def __init__(self, sink: bool = False) -> None:
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(4)
        self.sock.settimeout(10)
        self.port = self.sock.getsockname()[1]
        self.sink = sink
        self.received = 0
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        try:
            conn, _ = self.sock.accept()
        except OSError:
            return
        with conn:
            conn.settimeout(10)
            while True:
                try:
                    data = conn.recv(1 << 16)
                except OSError:
                    break
                if not data:
                    break
                self.received += len(data)
                if not self.sink:
                    conn.sendall(data)
        self.done.set()

    def close(self) -> None:
        self.sock.close()
        self.thread.join(5)


def _recv_exactly(s: socket.socket, n: int) -> bytes:
    buf = b""
    while len(buf) < n:
        chunk = s.recv(n - len(buf))
        assert chunk, "connection closed early"
        buf += chunk
    return buf


def test_ping_pong_takes_the_configured_rtt():
    echo = _Echo()
    with WanEmulator() as wan:
        port = wan.add_link(("127.0.0.1", echo.port), delay_s=0.020)  # RTT 40 ms
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            times = []
            for i in range(5):
                t0 = time.perf_counter()
                s.sendall(b"ping%d" % i)
                assert _recv_exactly(s, 5) == b"ping%d" % i
                times.append(time.perf_counter() - t0)
    echo.close()
    best = min(times)
    assert 0.039 <= best <= 0.060, times  # never faster than the RTT, a little slower is scheduling


def test_zero_delay_adds_little():
    echo = _Echo()
    with WanEmulator() as wan:
        port = wan.add_link(("127.0.0.1", echo.port), delay_s=0.0)
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            times = []
            for _ in range(5):
                t0 = time.perf_counter()
                s.sendall(b"x")
                _recv_exactly(s, 1)
                times.append(time.perf_counter() - t0)
    echo.close()
    assert min(times) < 0.010, times


def test_bulk_transfer_is_limited_to_the_rate():
    sink = _Echo(sink=True)
    rate_bps = 40e6  # 5 MB/s
    total = 3 * 1024 * 1024  # ~0.63 s at that rate
    with WanEmulator() as wan:
        port = wan.add_link(("127.0.0.1", sink.port), delay_s=0.005, rate_bps=rate_bps)
        t0 = time.perf_counter()
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            block = b"\0" * (1 << 16)
            for _ in range(total // len(block)):
                s.sendall(block)
            s.shutdown(socket.SHUT_WR)
            assert sink.done.wait(10)
        secs = time.perf_counter() - t0
    sink.close()
    assert sink.received == total
    mbps = total * 8 / secs / 1e6
    assert 0.75 * 40 <= mbps <= 1.1 * 40, (mbps, secs)


def test_shared_bucket_splits_the_rate_between_links():
    a, b = _Echo(sink=True), _Echo(sink=True)
    total = 1024 * 1024
    with WanEmulator() as wan:
        egress = wan.bucket(rate_bps=40e6)
        pa = wan.add_link(("127.0.0.1", a.port), 0.0, bucket=egress)
        pb = wan.add_link(("127.0.0.1", b.port), 0.0, bucket=egress)
        t0 = time.perf_counter()
        socks = [socket.create_connection(("127.0.0.1", p), timeout=10) for p in (pa, pb)]

        def send(s: socket.socket) -> None:
            s.sendall(b"\0" * total)
            s.shutdown(socket.SHUT_WR)

        senders = [threading.Thread(target=send, args=(s,)) for s in socks]
        for t in senders:
            t.start()
        for t in senders:
            t.join(10)
        assert a.done.wait(10) and b.done.wait(10)
        secs = time.perf_counter() - t0
        for s in socks:
            s.close()
    a.close()
    b.close()
    assert a.received == b.received == total
    assert secs >= 0.8 * 2 * total * 8 / 40e6, secs  # both links drew from one 40 Mbit/s bucket


def test_token_bucket_schedule():
    b = TokenBucket(8e6, burst_bytes=0)  # 1 MB/s
    assert b.reserve(500_000, now=0.0) == pytest.approx(0.5)
    assert b.reserve(500_000, now=0.1) == pytest.approx(1.0)  # queued behind the first
    assert b.reserve(100, now=5.0) == pytest.approx(5.0001)  # idle link: starts at once
    assert TokenBucket(None).reserve(10**9, now=2.0) == 2.0
    with pytest.raises(ValueError):
        TokenBucket(0)


def test_stop_closes_the_listening_port():
    wan = WanEmulator().start()
    port = wan.add_link(("127.0.0.1", 9), 0.001)
    wan.stop()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=2).close()


def test_only_loopback():
    with pytest.raises(ValueError):
        WanEmulator("0.0.0.0")


def test_peer_addresses_route_one_server_through_the_proxy(tmp_path):
    """How benchmarks.wan_cluster puts the proxy on a link: ``peer_addresses`` of one server."""
    from servers.config import load_config

    body = 'ca = "ca.pem"\n' + "".join(
        f'[servers.{i}]\naddress = "127.0.0.1:{5000 + i}"\ncert = "s{i}.pem"\nkey = "s{i}.key"\n'
        + ('peer_addresses = { "1" = "127.0.0.1:6001", "2" = "127.0.0.1:6002" }\n' if i == 0 else "")
        for i in range(3))
    (tmp_path / "cluster.toml").write_text(body)
    assert load_config(tmp_path / "cluster.toml", 0).peers == {0: "127.0.0.1:5000", 1: "127.0.0.1:6001",
                                                               2: "127.0.0.1:6002"}
    assert load_config(tmp_path / "cluster.toml", 1).peers == {0: "127.0.0.1:5000", 1: "127.0.0.1:5001",
                                                               2: "127.0.0.1:5002"}


def _duplex(port: int, up: socket.socket, payload_a: bytes, payload_b: bytes) -> tuple[bytes, bytes, float]:
    """Client -> proxy -> ``up`` (accepting) carry ``payload_a`` one way and ``payload_b`` back, at once."""
    got = {}
    t0 = time.perf_counter()
    c = socket.create_connection(("127.0.0.1", port), timeout=10)
    s, _ = up.accept()
    s.settimeout(10)

    def pump(sock: socket.socket, data: bytes) -> None:
        sock.sendall(data)
        sock.shutdown(socket.SHUT_WR)

    def drain(sock: socket.socket, key: str) -> None:
        parts = []
        while chunk := sock.recv(1 << 20):
            parts.append(chunk)
        got[key] = b"".join(parts)

    threads = [threading.Thread(target=pump, args=(c, payload_a)), threading.Thread(target=pump, args=(s, payload_b)),
               threading.Thread(target=drain, args=(s, "a")), threading.Thread(target=drain, args=(c, "b"))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(20)
    secs = time.perf_counter() - t0
    c.close()
    s.close()
    return got.get("a", b""), got.get("b", b""), secs


@pytest.mark.parametrize("pipes", [None, 0])  # bytes held in kernel pipes (spliced), or in memory
@pytest.mark.parametrize("rate_bps", [None, 400e6])
def test_full_duplex_bytes_arrive_intact_and_are_counted(pipes, rate_bps):
    """Every byte, in order, both ways at once; a small ``max_buffer`` makes back-pressure act."""
    up = socket.socket()
    up.bind(("127.0.0.1", 0))
    up.listen(1)
    up.settimeout(10)
    rng = random.Random(7)
    a, b = rng.randbytes(6_000_000), rng.randbytes(3_000_001)
    with WanEmulator() as wan:
        assert wan.pid != os.getpid()  # its own process: its CPU is not the caller's
        port = wan.add_link(up.getsockname(), 0.002, rate_bps=rate_bps, max_buffer=300_000, pipes=pipes)
        got_a, got_b, _ = _duplex(port, up, a, b)
        stats = wan.links[0].stats
        assert wan.links[0].bucket_forward.bytes == len(a) and wan.links[0].bucket_backward.bytes == len(b)
        assert wan.bytes_forwarded() == len(a) + len(b)
    up.close()
    assert got_a == a and got_b == b
    assert stats == {"connections": 1, "bytes_forward": len(a), "bytes_backward": len(b)}


def test_rate_holds_when_the_bytes_in_flight_exceed_a_pipe():
    """Delay x rate (2.5 MB) above one kernel pipe (1 MB): still the rate, not pipe / delay (10 MB/s)."""
    up = socket.socket()
    up.bind(("127.0.0.1", 0))
    up.listen(1)
    up.settimeout(10)
    total, rate_bps, delay = 10_000_000, 200e6, 0.1  # 0.4 s at 25 MB/s, plus the delay
    with WanEmulator() as wan:
        port = wan.add_link(up.getsockname(), delay, rate_bps=rate_bps)
        got, _, secs = _duplex(port, up, b"\1" * total, b"")
    up.close()
    assert len(got) == total
    expect = total * 8 / rate_bps + delay
    assert 0.9 * expect <= secs <= 1.7 * expect, (secs, expect)


def test_ping_pong_with_a_rate_takes_the_rtt_plus_serialisation():
    echo = _Echo()
    with WanEmulator() as wan:
        port = wan.add_link(("127.0.0.1", echo.port), delay_s=0.015, rate_bps=80e6)  # RTT 30 ms, 10 MB/s
        with socket.create_connection(("127.0.0.1", port), timeout=10) as s:
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            times = []
            msg = b"\2" * 50_000  # 5 ms each way at 10 MB/s (the first 64 KB are the bucket's burst)
            for _ in range(4):
                t0 = time.perf_counter()
                s.sendall(msg)
                _recv_exactly(s, len(msg))
                times.append(time.perf_counter() - t0)
    echo.close()
    assert 0.030 <= min(times) <= 0.060, times


def test_stop_closes_open_connections_and_max_connections_holds():
    echo = _Echo()
    wan = WanEmulator().start()
    port = wan.add_link(("127.0.0.1", echo.port), 0.0, max_connections=1)
    first = socket.create_connection(("127.0.0.1", port), timeout=5)
    first.sendall(b"x")
    assert _recv_exactly(first, 1) == b"x"
    second = socket.create_connection(("127.0.0.1", port), timeout=5)
    assert second.recv(1) == b""  # refused: the link has its one connection
    second.close()
    pid = wan.pid
    wan.stop()
    try:
        assert first.recv(1) == b""
    except ConnectionResetError:
        pass
    first.close()
    echo.close()
    with pytest.raises(OSError):
        os.kill(pid, 0)  # the proxy process is gone
