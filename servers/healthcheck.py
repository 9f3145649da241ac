"""``python -m servers.healthcheck --config FILE --id N``: gRPC health check over mTLS (exit 0 if serving)."""

from __future__ import annotations

import argparse
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from wire.tls import channel_credentials, secure_channel

from .config import load_config


def main(argv: list[str] | None = None) -> int:
    """Check the server's own health endpoint with its own certificate."""
    ap = argparse.ArgumentParser(prog="python -m servers.healthcheck")
    ap.add_argument("--config", required=True)
    ap.add_argument("--id", type=int, required=True)
    a = ap.parse_args(argv)
    cfg = load_config(a.config, a.id)
    port = cfg.listen.rsplit(":", 1)[1]
    ch = secure_channel(f"localhost:{port}", channel_credentials(cfg.ca, cfg.cert, cfg.key))
    try:
        r = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=4)
    except grpc.RpcError as exc:
        print(f"unhealthy: {exc.code().name}", file=sys.stderr)
        return 1
    return 0 if r.status == health_pb2.HealthCheckResponse.SERVING else 1


if __name__ == "__main__":
    sys.exit(main())
