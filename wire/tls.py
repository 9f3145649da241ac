"""Mutual TLS: credentials for the server and its peer channels, and caller identity.

Every certificate is issued by the deployment CA (``trivault certs``). Server
certificates have CN ``trivault-server-<i>`` and both serverAuth and clientAuth EKUs (a
server is a TLS client of its peers); client certificates have CN ``trivault-client-*``
and clientAuth only. The server requires a client certificate on every connection, so
plaintext and unknown certificates are refused during the handshake.
"""

from __future__ import annotations

from pathlib import Path

import grpc

from .options import GRPC_OPTIONS

SERVER_CN_PREFIX = "trivault-server-"
CLIENT_CN_PREFIX = "trivault-client-"


def server_credentials(ca: Path, cert: Path, key: Path) -> grpc.ServerCredentials:
    """mTLS server credentials: client certificates required and checked against ``ca``."""
    return grpc.ssl_server_credentials(
        [(key.read_bytes(), cert.read_bytes())], root_certificates=ca.read_bytes(), require_client_auth=True
    )


def channel_credentials(ca: Path, cert: Path, key: Path) -> grpc.ChannelCredentials:
    """mTLS channel credentials presenting ``cert`` and trusting only ``ca``."""
    return grpc.ssl_channel_credentials(ca.read_bytes(), key.read_bytes(), cert.read_bytes())


def secure_channel(address: str, creds: grpc.ChannelCredentials) -> grpc.Channel:
    """A TLS channel with the shared option list."""
    return grpc.secure_channel(address, creds, options=GRPC_OPTIONS)


def caller_cn(context: grpc.ServicerContext) -> str:
    """The verified common name of the caller's certificate ('' if none)."""
    vals = context.auth_context().get("x509_common_name", [])
    return vals[0].decode() if vals else ""


def caller_server_id(context: grpc.ServicerContext) -> int | None:
    """Server id if the caller presented a server certificate, else None."""
    cn = caller_cn(context)
    if cn.startswith(SERVER_CN_PREFIX) and cn[len(SERVER_CN_PREFIX):] in ("0", "1", "2"):
        return int(cn[len(SERVER_CN_PREFIX):])
    return None
