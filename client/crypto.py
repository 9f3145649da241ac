"""Client-side cryptography: AES-256-GCM for images.

* :func:`encrypt` / :func:`decrypt`: AES-256-GCM with a random 96-bit nonce, the image id
  as associated data (a ciphertext cannot be swapped for another id's).

Key shares are sealed to the querier with HPKE (``wire.key_delivery``).
"""

from __future__ import annotations

import os

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

NONCE = 12
KEY = 32


class DecryptionError(ValueError):
    """A ciphertext failed authentication (wrong key or tampered)."""


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
    except InvalidTag:
        raise DecryptionError("AES-GCM authentication failed (wrong key or tampered ciphertext)") from None


def image_aad(image_id: int, deid: bool = False) -> bytes:
    """Associated data binding a ciphertext to its image id and kind."""
    return f"trivault/v1/image/{image_id}/{'deid' if deid else 'orig'}".encode()
