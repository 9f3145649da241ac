"""The one list of gRPC channel/server options and transport limits used everywhere."""

from __future__ import annotations

CHUNK_BYTES = 1 << 20  # payload bytes per streamed client Frame
PEER_CHUNK_BYTES = 4 << 20  # payload bytes per server-to-server PeerMsg (fewer, larger messages)
MAX_MESSAGE_BYTES = 8 << 20  # any single gRPC message above this is refused
MAX_BUNDLE_BYTES = 4 << 30
MAX_PEER_TENSOR_BYTES = 2 << 30  # largest tensor one protocol message may carry  # total declared size of one streamed bundle

GRPC_OPTIONS: list[tuple[str, int]] = [
    ("grpc.max_send_message_length", MAX_MESSAGE_BYTES),
    ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES),
    ("grpc.keepalive_time_ms", 10_000),
    ("grpc.keepalive_timeout_ms", 5_000),
    ("grpc.keepalive_permit_without_calls", 1),
    ("grpc.http2.max_pings_without_data", 0),
    ("grpc.http2.min_ping_interval_without_data_ms", 5_000),
]
