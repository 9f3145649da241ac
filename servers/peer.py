"""The peer service: key handshake, protocol message streams, transaction status."""

from __future__ import annotations

import logging

import grpc

from protocols.comm import CommError
from protos.trivault.v1 import trivault_pb2 as pb
from protos.trivault.v1 import trivault_pb2_grpc as pbg
from wire.tls import caller_server_id

from .node import Node
from .peer_comm import SessionSet
from .peer_keys import public_bytes

log = logging.getLogger("trivault.peer")


class PeerServicer(pbg.PeerServicer):
    """Accepts only the other servers' certificates."""

    def __init__(self, node: Node) -> None:
        self.node = node

    def _peer(self, context: grpc.ServicerContext) -> int:
        sid = caller_server_id(context)
        if sid is None or sid == self.node.id:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "peer service is for the other servers only")
            raise AssertionError("context.abort returns only by raising")
        return sid

    def Hello(self, request: pb.HelloRequest, context: grpc.ServicerContext) -> pb.HelloReply:
        """Return this server's X25519 public key (over mutual TLS)."""
        peer = self._peer(context)
        if request.sender != peer:
            context.abort(grpc.StatusCode.PERMISSION_DENIED, "sender id does not match the certificate")
        return pb.HelloReply(server=self.node.id, x25519_public_key=public_bytes(self.node.sk))

    def Link(self, request_iterator, context: grpc.ServicerContext) -> pb.Ack:
        """Receive one peer's protocol messages until its stream ends."""
        peer = self._peer(context)
        log.info("link %d->%d open", peer, self.node.id)
        carried = SessionSet()  # sessions this stream delivered: they fail if it breaks
        try:
            for msg in request_iterator:
                if msg.sender != peer:
                    context.abort(grpc.StatusCode.PERMISSION_DENIED, "sender id does not match the certificate")
                carried.add(msg.session_id)
                try:
                    self.node.router.deliver(msg)
                except CommError as exc:
                    log.warning("dropped message of session %s: %s", msg.session_id, exc)
        except grpc.RpcError:
            pass
        finally:
            log.info("link %d->%d closed", peer, self.node.id)
            self.node.router.peer_down(peer, carried.items())
        return pb.Ack(ok=True)

    def TxnStatus(self, request: pb.TxnRequest, context: grpc.ServicerContext) -> pb.TxnReply:
        """State of a transaction on this server, with the owner's signed commit once committed
        (the evidence a peer that missed the commit needs: ``servers.txn_auth``)."""
        self._peer(context)
        state = self.node.store.txn_state(request.txn_id)
        auth = self.node.decisions.get(request.txn_id) if state == "committed" else b""
        return pb.TxnReply(txn_id=request.txn_id, state=state, auth=auth)
