"""Transient UNAVAILABLE is retried by gRPC's retry policy (wire.options service config), a
bounded number of times with backoff; a server that stays down gives ``TriVaultUnavailable``
naming the server and its address."""

from __future__ import annotations

import json
import threading
import time
from concurrent import futures

import grpc
import pytest

from client.config import ClientConfig
from client.errors import TriVaultUnavailable
from client.local_cluster import free_port
from client.sdk import Client
from protos.trivault.v1 import trivault_pb2 as pb
from protos.trivault.v1 import trivault_pb2_grpc as pbg
from wire.options import GRPC_OPTIONS, RETRY_ATTEMPTS
from wire.tls import server_credentials


class FlakyVault(pbg.VaultServicer):
    """A real gRPC Vault on 127.0.0.1 whose Info answers UNAVAILABLE ``fail`` times, then OK."""

    def __init__(self, fail: int) -> None:
        self.fail, self.calls, self.search_calls = fail, 0, 0
        self.lock = threading.Lock()

    def Info(self, request, context):
        with self.lock:
            self.calls += 1
            n = self.calls
        if n <= self.fail:
            context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")
        return pb.Ack(ok=True, meta_json=json.dumps({"flaky": n}))

    def Search(self, request_iterator, context):
        with self.lock:
            self.search_calls += 1
        context.abort(grpc.StatusCode.UNAVAILABLE, "restarting")


@pytest.fixture
def flaky(cluster):
    """(servicer factory) -> (servicer, address) served with server 0's certificate."""
    started = []

    def make(fail: int):
        svc = FlakyVault(fail)
        server = grpc.server(futures.ThreadPoolExecutor(4), options=GRPC_OPTIONS)
        pbg.add_VaultServicer_to_server(svc, server)
        port = server.add_secure_port("127.0.0.1:0", server_credentials(cluster.certs.ca, *cluster.certs.server(0)))
        server.start()
        started.append(server)
        return svc, f"127.0.0.1:{port}"

    yield make
    for s in started:
        s.stop(0)


def _config(cluster, tmp_path, addresses: list[str]) -> ClientConfig:
    c, k = cluster.certs.client("owner")
    return ClientConfig(addresses, cluster.certs.ca, c, k, tmp_path / "owner", timeout_s=10)


def test_transient_unavailable_is_retried_with_backoff(cluster, flaky, tmp_path):
    svc, addr = flaky(fail=2)
    cfg = _config(cluster, tmp_path, [addr] + [f"127.0.0.1:{p}" for p in cluster.ports[1:]])
    with Client(cfg, identity=cluster.owner_identity_dir) as c:
        t0 = time.monotonic()
        reply = c.fan.stubs[0].Info(pb.InfoRequest(), timeout=10)
        assert json.loads(reply.meta_json) == {"flaky": 3} and svc.calls == 3  # two retries, then success
        assert time.monotonic() - t0 >= 0.1  # with backoff (0.2 s initial, jittered)


def test_retries_are_bounded_and_search_is_never_replayed(cluster, flaky, tmp_path):
    svc, addr = flaky(fail=100)
    cfg = _config(cluster, tmp_path, [addr] + [f"127.0.0.1:{p}" for p in cluster.ports[1:]])
    with Client(cfg, identity=cluster.owner_identity_dir) as c:
        with pytest.raises(grpc.RpcError) as e:
            c.fan.stubs[0].Info(pb.InfoRequest(), timeout=20)
        assert e.value.code() == grpc.StatusCode.UNAVAILABLE and svc.calls == RETRY_ATTEMPTS
        with pytest.raises(grpc.RpcError):  # a search session id is single-use: not retried
            list(c.fan.stubs[0].Search(iter([pb.Frame()]), timeout=10))
        assert svc.search_calls == 1


def test_a_server_that_is_down_is_named_with_its_address(cluster, tmp_path):
    dead = f"127.0.0.1:{free_port()}"  # nothing listens here
    addrs = [f"127.0.0.1:{cluster.ports[0]}", dead, f"127.0.0.1:{cluster.ports[2]}"]
    with Client(_config(cluster, tmp_path, addrs), identity=cluster.owner_identity_dir) as c:
        t0 = time.monotonic()
        with pytest.raises(TriVaultUnavailable) as e:
            c.info()
        assert time.monotonic() - t0 < 15  # bounded retries, no hang
        assert e.value.servers == {1: dead}
        assert f"server 1 at {dead}" in str(e.value) and "UNAVAILABLE" in str(e.value)
        with pytest.raises(TriVaultUnavailable, match=f"server 1 at {dead}"):
            c.search(cluster.images[0], k=1)
