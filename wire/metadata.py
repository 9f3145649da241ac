"""Sealing of per-image metadata-key shares to a requester (servers seal, clients open).

An image's name, label and other owner metadata travel and rest only as AES-256-GCM
ciphertext under a fresh per-image *metadata key* (``client.metadata``); the key is split
into replicated-share pairs like an image key, pair ``i`` on server ``i``. A user the
policy lets see the image asks for names (a signed ``names`` request); each server seals
the pairs of every image it releases in ONE message to the requester's REGISTERED X25519
key: ephemeral X25519, HKDF-SHA256 (info binds server, both public keys), AES-256-GCM
(associated data binds the server id). The client combines the pairs of two or three
servers (``protocols.sharing.reconstruct(check=True)`` names a server that lies).

Wire form of one sealed message: ``ephemeral public key (32) || nonce (12) || AES-GCM of
the records``; one record per image: id (int64) then lo and hi (4 int64 words each), little
endian.
"""

from __future__ import annotations

import os
from collections.abc import Mapping

import numpy as np
import torch
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

from protocols.sharing import SharePair

WORDS = 4  # a 32-byte key as int64 words
_RECORD_WORDS = 1 + 2 * WORDS
_RAW = serialization.Encoding.Raw, serialization.PublicFormat.Raw


class SealError(ValueError):
    """A sealed message that does not open (wrong recipient, server, or tampered); names the server."""

    def __init__(self, message: str, server_id: int) -> None:
        super().__init__(message)
        self.server_id = server_id


def _key(shared: bytes, eph_pub: bytes, recipient_pub: bytes, server_id: int) -> bytes:
    info = b"trivault/v1/meta-key-shares/server=%d/" % int(server_id) + eph_pub + recipient_pub
    return HKDF(hashes.SHA256(), 32, salt=None, info=info).derive(shared)


def _aad(server_id: int) -> bytes:
    return b"trivault/v1/meta-key-shares/server=%d" % int(server_id)


def seal_pairs(pairs: Mapping[int, SharePair], recipient_kex_pub: bytes, server_id: int) -> bytes:
    """Server side: seal this server's metadata-key pairs ``{image id: (lo, hi)}`` in one message."""
    if len(recipient_kex_pub) != 32:
        raise ValueError("recipient key must be a raw 32-byte X25519 public key")
    rows = []
    for i, (lo, hi) in sorted(pairs.items()):
        if tuple(lo.shape) != (WORDS,) or tuple(hi.shape) != (WORDS,):
            raise ValueError(f"image {i}: a metadata-key pair is two int64 tensors of shape ({WORDS},)")
        rows.append(np.concatenate([[int(i)], lo.numpy(), hi.numpy()]).astype("<i8"))
    body = np.concatenate(rows).tobytes() if rows else b""
    eph = X25519PrivateKey.generate()
    eph_pub = eph.public_key().public_bytes(*_RAW)
    key = _key(eph.exchange(X25519PublicKey.from_public_bytes(recipient_kex_pub)), eph_pub, recipient_kex_pub,
               server_id)
    nonce = os.urandom(12)
    return eph_pub + nonce + AESGCM(key).encrypt(nonce, body, _aad(server_id))


def open_pairs(sealed: bytes, recipient_sk: X25519PrivateKey, server_id: int) -> dict[int, SharePair]:
    """Client side: open one server's sealed message; SealError names the server if it fails."""
    if len(sealed) < 32 + 12 + 16:
        raise SealError(f"server {server_id} sent a malformed sealed message", server_id)
    eph_pub, nonce, ct = sealed[:32], sealed[32:44], sealed[44:]
    me = recipient_sk.public_key().public_bytes(*_RAW)
    try:
        key = _key(recipient_sk.exchange(X25519PublicKey.from_public_bytes(eph_pub)), eph_pub, me, server_id)
        body = AESGCM(key).decrypt(nonce, ct, _aad(server_id))
    except (InvalidTag, ValueError):
        raise SealError(f"sealed metadata keys from server {server_id} failed authentication", server_id) from None
    if len(body) % (8 * _RECORD_WORDS):
        raise SealError(f"server {server_id} sealed a malformed record list", server_id)
    w = torch.from_numpy(np.frombuffer(body, dtype="<i8").copy()).reshape(-1, _RECORD_WORDS)
    return {int(r[0]): (r[1:1 + WORDS].clone(), r[1 + WORDS:].clone()) for r in w}
