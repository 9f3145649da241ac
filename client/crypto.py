"""Client-side cryptography: AES-256-GCM for images, AES keys as ring shares, and sealing.

* :func:`encrypt` / :func:`decrypt`: AES-256-GCM with a random 96-bit nonce, the image id
  as associated data (a ciphertext cannot be swapped for another id's).
* :func:`seal` / :func:`open_sealed`: a server encrypts its key-share pair to the
  querier's X25519 public key (ephemeral X25519 + HKDF-SHA256 + AES-256-GCM, the
  structure of HPKE base mode); only the querier can open it.
"""

from __future__ import annotations

import os

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.hashes import SHA256
from cryptography.hazmat.primitives.kdf.hkdf import HKDF

NONCE = 12
KEY = 32


class DecryptionError(ValueError):
    """A ciphertext or sealed share failed authentication."""


def new_key() -> bytes:
    """A fresh AES-256 key from the OS CSPRNG."""
    return AESGCM.generate_key(bit_length=256)


def encrypt(key: bytes, plaintext: bytes, aad: bytes) -> bytes:
    """nonce || AES-256-GCM(plaintext) with associated data ``aad``."""
    nonce = os.urandom(NONCE)
    return nonce + AESGCM(key).encrypt(nonce, plaintext, aad)


def decrypt(key: bytes, blob: bytes, aad: bytes) -> bytes:
    """Inverse of :func:`encrypt`; raises DecryptionError if tampered or wrong key."""
    if len(blob) < NONCE + 16:
        raise DecryptionError("ciphertext too short")
    try:
        return AESGCM(key).decrypt(blob[:NONCE], blob[NONCE:], aad)
    except Exception:  # cryptography raises InvalidTag
        raise DecryptionError("AES-GCM authentication failed (wrong key or tampered ciphertext)") from None


def image_aad(image_id: int, deid: bool = False) -> bytes:
    """Associated data binding a ciphertext to its image id and kind."""
    return f"trivault/v1/image/{image_id}/{'deid' if deid else 'orig'}".encode()


def new_x25519() -> tuple[X25519PrivateKey, bytes]:
    """A fresh X25519 key pair (private key, raw public bytes)."""
    sk = X25519PrivateKey.generate()
    return sk, sk.public_key().public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _seal_key(shared: bytes, eph_pub: bytes, info: bytes) -> bytes:
    return HKDF(algorithm=SHA256(), length=KEY, salt=eph_pub, info=b"trivault/v1/seal/" + info).derive(shared)


def seal(recipient_pub: bytes, plaintext: bytes, info: bytes) -> bytes:
    """eph_pub(32) || nonce || AES-GCM under HKDF(X25519(eph, recipient)); ``info`` binds context."""
    if len(recipient_pub) != 32:
        raise ValueError("recipient public key must be a raw 32-byte X25519 key")
    eph, eph_pub = new_x25519()
    shared = eph.exchange(X25519PublicKey.from_public_bytes(recipient_pub))
    return eph_pub + encrypt(_seal_key(shared, eph_pub, info), plaintext, info)


def open_sealed(sk: X25519PrivateKey, blob: bytes, info: bytes) -> bytes:
    """Open a :func:`seal` blob with the recipient's private key."""
    if len(blob) < 32 + NONCE + 16:
        raise DecryptionError("sealed blob too short")
    eph_pub = blob[:32]
    shared = sk.exchange(X25519PublicKey.from_public_bytes(eph_pub))
    return decrypt(_seal_key(shared, eph_pub, info), blob[32:], info)


def seal_info(server_id: int, image_id: int, deid: bool) -> bytes:
    """Context string sealed key shares are bound to."""
    return f"{server_id}/{image_id}/{int(deid)}".encode()
