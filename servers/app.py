"""Build a server (``create_server``) separately from running it (``serve``)."""

from __future__ import annotations

import logging
import signal
import threading
from concurrent import futures
from dataclasses import dataclass

import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from protos.trivault.v1 import trivault_pb2_grpc as pbg
from wire.options import GRPC_OPTIONS
from wire.tls import server_credentials

from .acl import Acl
from .config import ServerConfig
from .node import Node
from .peer import PeerServicer
from .storage import DataDirLock, StorageError
from .vault import VaultServicer

log = logging.getLogger("trivault.server")


@dataclass(frozen=True)
class Components:
    """The classes a server is built from. Production uses the defaults; a test builds a
    corrupted server from a subclass that overrides one step (tests/integration/faulty_server.py)."""

    vault: type[VaultServicer] = VaultServicer
    acl: type[Acl] = Acl


def create_server(cfg: ServerConfig, txn_timeout_s: float = 60.0,
                  components: Components = Components()) -> tuple[grpc.Server, int, Node]:
    """A configured, not yet started server bound with mTLS; returns (server, port, node)."""
    node = Node(cfg, txn_timeout_s, components.acl)
    server = grpc.server(futures.ThreadPoolExecutor(max_workers=8 + 2 * cfg.max_sessions, thread_name_prefix="rpc"),
                         options=GRPC_OPTIONS)
    pbg.add_VaultServicer_to_server(components.vault(node), server)
    pbg.add_PeerServicer_to_server(PeerServicer(node), server)
    hs = health.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(hs, server)
    for name in ("", "trivault.v1.Vault", "trivault.v1.Peer"):
        hs.set(name, health_pb2.HealthCheckResponse.SERVING)
    try:
        port = server.add_secure_port(cfg.listen, server_credentials(cfg.ca, cfg.cert, cfg.key))
    except RuntimeError:  # grpcio raises instead of returning 0 in recent versions
        port = 0
    if port == 0:
        node.stop()
        raise OSError(f"Failed to bind {cfg.listen}: the port is in use (is another server running?)")
    return server, port, node


def serve(cfg: ServerConfig, txn_timeout_s: float = 60.0, components: Components = Components()) -> None:
    """Hold the data folder's lock, run until SIGTERM/SIGINT, then stop gracefully.

    A data folder another server holds, or a port in use (``grpc.so_reuseport`` is off in
    ``wire.options``), stops this process at once with a one-line reason on stderr."""
    lock = DataDirLock(cfg.data_dir)
    try:
        lock.acquire()
        server, port, node = create_server(cfg, txn_timeout_s, components)
    except (StorageError, OSError) as exc:
        lock.release()
        log.error("server %d not started: %s", cfg.server_id, exc)
        raise SystemExit(f"trivault server {cfg.server_id}: {exc}") from None
    try:
        _run(cfg, server, port, node)
    finally:
        lock.release()


def _run(cfg: ServerConfig, server: grpc.Server, port: int, node: Node) -> None:
    """Start ``server`` and ``node``; block until SIGTERM/SIGINT; stop both."""
    server.start()
    node.start()
    log.info("server %d listening on port %d (data %s)", cfg.server_id, port, cfg.data_dir)
    print(f"TRIVAULT_READY server={cfg.server_id} port={port}", flush=True)
    done = threading.Event()

    def stop(signum, frame) -> None:
        done.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    done.wait()
    log.info("server %d stopping", cfg.server_id)
    server.stop(grace=1.0).wait()
    node.stop()
