"""Dealer-free pairwise PRF keys of the three servers: static X25519 keys, exchanged by
``Peer.Hello`` over mutual TLS, and HKDF-SHA256 of each pair's shared secret."""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from protocols.comm import CommError
from protocols.prf import KEY_BYTES, PairwiseKeys
from protos.trivault.v1 import trivault_pb2 as pb

from .storage import write_atomic

if TYPE_CHECKING:
    from .peer_comm import PeerLink, PeerRouter


def load_or_create_x25519(path: Path) -> X25519PrivateKey:
    """This server's static X25519 key (created once, file mode 0600)."""
    if path.exists():
        return X25519PrivateKey.from_private_bytes(path.read_bytes())
    sk = X25519PrivateKey.generate()
    raw = sk.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption())
    write_atomic(path, raw)
    path.chmod(0o600)
    return sk


def public_bytes(sk: X25519PrivateKey) -> bytes:
    """Raw 32-byte public key."""
    return sk.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def pair_key(sk: X25519PrivateKey, peer_public: bytes, a: int, b: int) -> bytes:
    """The key shared by servers ``a`` and ``b``: HKDF-SHA256 of their X25519 secret."""
    shared = sk.exchange(X25519PublicKey.from_public_bytes(peer_public))
    lo, hi = sorted((a, b))
    return HKDF(algorithm=SHA256(), length=KEY_BYTES, salt=None,
                info=f"trivault/v1/pairwise/{lo}-{hi}".encode()).derive(shared)


class PeerKeys:
    """Fetches the peers' public keys (``Hello``) and derives the pairwise keys."""

    def __init__(self, me: int, sk: X25519PrivateKey, links: dict[int, PeerLink], router: PeerRouter,
                 timeout_s: float = 10.0) -> None:
        self.me, self._sk, self._links, self._timeout = me, sk, links, timeout_s
        self._router = router
        self._cache: dict[int, tuple[int, bytes]] = {}  # peer -> (link epoch, public key)
        self._lock = threading.Lock()

    def _peer_public(self, peer: int) -> bytes:
        epoch = self._router.epoch(peer)
        with self._lock:
            hit = self._cache.get(peer)
            if hit is not None and hit[0] == epoch:  # re-fetched after a reconnect (key may have changed)
                return hit[1]
        try:
            rep = self._links[peer].stub.Hello(
                pb.HelloRequest(sender=self.me, x25519_public_key=public_bytes(self._sk)), timeout=self._timeout)
        except grpc.RpcError as exc:
            raise CommError(f"server {peer} unreachable: {exc.code().name}") from None
        if rep.server != peer or len(rep.x25519_public_key) != 32:
            raise CommError(f"server {peer} answered the key handshake with a wrong identity")
        with self._lock:
            self._cache[peer] = (epoch, rep.x25519_public_key)
        return rep.x25519_public_key

    def keys(self) -> PairwiseKeys:
        """``PairwiseKeys(prev, next)`` of this server."""
        prev, nxt = (self.me - 1) % 3, (self.me + 1) % 3
        return PairwiseKeys(prev=pair_key(self._sk, self._peer_public(prev), self.me, prev),
                            next=pair_key(self._sk, self._peer_public(nxt), self.me, nxt))
