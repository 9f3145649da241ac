"""The one list of gRPC channel/server options and transport limits used everywhere.

``GRPC_OPTIONS`` is given to every channel (client and peer links) and every server:

* message size limits and keepalive;
* ``grpc.so_reuseport`` 0: a second server on a port already in use fails to bind
  instead of silently sharing the port with the first;
* gRPC's own retry policy (``grpc.service_config``): a call that fails with a transient
  ``UNAVAILABLE`` (server restarting, connection refused or reset before the server saw
  the call) is retried up to ``RETRY_ATTEMPTS`` times in all, with exponential backoff
  from ``RETRY_INITIAL_BACKOFF_S`` to ``RETRY_MAX_BACKOFF_S`` (jittered by gRPC). Only
  calls that are safe to send again are listed: public reads, the idempotent commit
  phases and the signed single-use calls (a replayed nonce is refused by the server, so
  a retry can never act twice). ``Search`` and ``Prepare`` are not retried: a search
  session id is single-use and its peers abort together, and an upload resends itself
  through the two-phase commit.
"""

from __future__ import annotations

import json

CHUNK_BYTES = 1 << 20  # payload bytes per streamed client Frame
PEER_CHUNK_BYTES = 4 << 20  # payload bytes per server-to-server PeerMsg (fewer, larger messages)
MAX_MESSAGE_BYTES = 8 << 20  # any single gRPC message above this is refused
MAX_BUNDLE_BYTES = 4 << 30  # total declared size of one streamed bundle
MAX_PEER_TENSOR_BYTES = 2 << 30  # largest tensor one protocol message may carry

RETRY_ATTEMPTS = 4  # first call + 3 retries
RETRY_INITIAL_BACKOFF_S = 0.2
RETRY_MAX_BACKOFF_S = 2.0
RETRY_BACKOFF_MULTIPLIER = 2.0
RETRIED_METHODS: dict[str, tuple[str, ...]] = {
    "trivault.v1.Vault": ("Info", "Audit", "Names", "Commit", "Abort", "Retrieve", "Manage"),
    "trivault.v1.Peer": ("TxnStatus",),
}


def retry_service_config() -> str:
    """The service config (JSON) holding the retry policy of :data:`RETRIED_METHODS`."""
    policy = {"maxAttempts": RETRY_ATTEMPTS, "initialBackoff": f"{RETRY_INITIAL_BACKOFF_S}s",
              "maxBackoff": f"{RETRY_MAX_BACKOFF_S}s", "backoffMultiplier": RETRY_BACKOFF_MULTIPLIER,
              "retryableStatusCodes": ["UNAVAILABLE"]}
    names = [{"service": s, "method": m} for s, ms in RETRIED_METHODS.items() for m in ms]
    return json.dumps({"methodConfig": [{"name": names, "retryPolicy": policy}]})


GRPC_OPTIONS: list[tuple[str, int | str]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
    ("grpc.so_reuseport", 0),
    ("grpc.enable_retries", 1),
    ("grpc.service_config", retry_service_config()),
]
