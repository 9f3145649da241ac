"""Key delivery without a trusted party: each server seals its key-share pair to the requester.

Owner side, at upload: :func:`split_key` turns an AES-256 key into three RSS pairs
(``protocols.sharing.share`` of 4 int64 words); pair ``i`` is stored on server ``i``.

Server side, at retrieval, after *its own* policy check: :func:`seal_share` encrypts its
pair to the requester's X25519 public key with HPKE (RFC 9180, base mode,
DHKEM(X25519, HKDF-SHA256) + HKDF-SHA256 + AES-256-GCM, via ``pyhpke``). The associated
data binds server id, image id and kind (original / de-identified), so a sealed share
cannot be replayed for another image, kind or server slot; only the requester can open it.

Requester side: :func:`recover_key` opens each sealed pair and calls
``protocols.sharing.reconstruct(check=True)``: with all three pairs every replicated
word is compared across the two servers holding it, so a single server sending a wrong
share is detected and the suspects are named (:class:`KeyDeliveryError`). With only two
pairs the key is recovered without a check; :func:`verify_key` (AES-GCM on the image
ciphertext) then catches a wrong key.

One server's pair ``(k_i, k_{i+1})`` is two uniformly random words per key word,
independent of the key: one server alone cannot release a key. Any two servers can,
which is why enforcement needs an honest majority (docs/SECURITY.md).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from pyhpke import AEADId, CipherSuite, KDFId, KEMId, KEMKey

from protocols.sharing import InconsistentSharesError, SharePair, reconstruct, share

KEY_BYTES = 32
WORDS = KEY_BYTES // 8
INFO = b"trivault/v1/key-share"
_SUITE = CipherSuite.new(KEMId.DHKEM_X25519_HKDF_SHA256, KDFId.HKDF_SHA256, AEADId.AES256_GCM)
_ENC_LEN = 32


class KeyDeliveryError(ValueError):
    """Key shares could not be opened or combined; ``suspects`` names the servers involved."""

    def __init__(self, message: str, suspects: tuple[int, ...] = ()) -> None:
        super().__init__(message)
        self.suspects = suspects


def key_to_words(key: bytes) -> torch.Tensor:
    """A 32-byte AES key as an int64 tensor [4] (ring words, shared like any other tensor)."""
    if len(key) != KEY_BYTES:
        raise ValueError("AES-256 key must be 32 bytes")
    return torch.from_numpy(np.frombuffer(key, dtype="<i8").copy())


def words_to_key(words: torch.Tensor) -> bytes:
    """Inverse of :func:`key_to_words`."""
    return np.ascontiguousarray(words.numpy(), dtype="<i8").tobytes()


def split_key(key: bytes) -> list[SharePair]:
    """Owner side: RSS pairs of the key; pair ``i`` goes to server ``i``."""
    return share(key_to_words(key))


def share_aad(server_id: int, image_id: int | str, deid: bool) -> bytes:
    """Associated data a sealed share is bound to."""
    return f"trivault/v1/key-share/server={int(server_id)}/image={image_id}/kind={'deid' if deid else 'orig'}".encode()


def _pair_bytes(pair: SharePair) -> bytes:
    lo, hi = pair
    if lo.dtype != torch.int64 or hi.dtype != torch.int64 or lo.shape != (WORDS,) or hi.shape != (WORDS,):
        raise ValueError(f"a key-share pair is two int64 tensors of shape ({WORDS},)")
    return np.ascontiguousarray(lo.numpy(), "<i8").tobytes() + np.ascontiguousarray(hi.numpy(), "<i8").tobytes()


def _bytes_pair(b: bytes) -> SharePair:
    w = torch.from_numpy(np.frombuffer(b, dtype="<i8").copy())
    return w[:WORDS].clone(), w[WORDS:].clone()


def hpke_seal(plaintext: bytes, recipient_kex_pub: bytes, info: bytes, aad: bytes) -> bytes:
    """HPKE base mode (X25519, HKDF-SHA256, AES-256-GCM) to a raw X25519 key: ``enc || ciphertext``."""
    pk = KEMKey.from_pyca_cryptography_key(X25519PublicKey.from_public_bytes(recipient_kex_pub))
    enc, ctx = _SUITE.create_sender_context(pk, info=info)  # single-shot seal is a stub in pyhpke 0.6
    return enc + ctx.seal(plaintext, aad=aad)


def hpke_open(sealed: bytes, recipient_sk: X25519PrivateKey, info: bytes, aad: bytes) -> bytes | None:
    """Open :func:`hpke_seal`'s output; None if it does not authenticate (wrong recipient, info or aad,
    tampered, malformed ``enc``): the caller names the server that sent it."""
    try:
        ctx = _SUITE.create_recipient_context(sealed[:_ENC_LEN], KEMKey.from_pyca_cryptography_key(recipient_sk),
                                              info=info)
        return ctx.open(sealed[_ENC_LEN:], aad=aad)
    except Exception:  # noqa: BLE001 - any failure to open (OpenError, malformed enc) is an authentication failure
        return None


def seal_share(pair: SharePair, recipient_kex_pub: bytes, server_id: int, image_id: int | str,
               deid: bool = False) -> bytes:
    """Server side: HPKE-seal this server's pair to the requester (``enc || ciphertext``)."""
    if len(recipient_kex_pub) != 32:
        raise ValueError("recipient key must be a raw 32-byte X25519 public key")
    return hpke_seal(_pair_bytes(pair), recipient_kex_pub, INFO, share_aad(server_id, image_id, deid))


def open_share(sealed: bytes, recipient_sk: X25519PrivateKey, server_id: int, image_id: int | str,
               deid: bool = False) -> SharePair:
    """Requester side: open one server's sealed pair; KeyDeliveryError names that server if it fails."""
    if len(sealed) != _ENC_LEN + 2 * KEY_BYTES + 16:
        raise KeyDeliveryError(f"server {server_id} sent a malformed sealed share", (server_id,))
    pt = hpke_open(sealed, recipient_sk, INFO, share_aad(server_id, image_id, deid))
    if pt is None:
        raise KeyDeliveryError(f"sealed share from server {server_id} failed authentication "
                               "(wrong recipient, image, kind, or tampered)", (server_id,))
    return _bytes_pair(pt)


def recover_key(sealed: Sequence[bytes | None], recipient_sk: X25519PrivateKey, image_id: int | str,
                deid: bool = False) -> bytes:
    """Requester side: open the sealed pairs (index = server id, None = refused) and combine them."""
    if len(sealed) != 3:
        raise ValueError("recover_key takes one entry per server (None for a server that refused)")
    pairs: list[SharePair | None] = [None if s is None else open_share(s, recipient_sk, i, image_id, deid)
                                     for i, s in enumerate(sealed)]
    if sum(p is not None for p in pairs) < 2:
        refused = [i for i, p in enumerate(pairs) if p is None]
        raise KeyDeliveryError(f"servers {refused} refused: at least two key shares are needed", tuple(refused))
    try:
        return words_to_key(reconstruct(pairs, check=True))
    except InconsistentSharesError as e:
        raise KeyDeliveryError(f"image {image_id}: inconsistent key shares ({e}); one of servers "
                               f"{list(e.suspects)} sent a wrong share", e.suspects) from None


def verify_key(key: bytes, ciphertext: bytes, aad: bytes, decrypt) -> bytes:
    """Decrypt with ``decrypt(key, ciphertext, aad)``; a wrong key surfaces as KeyDeliveryError."""
    try:
        return decrypt(key, ciphertext, aad)
    except ValueError:
        raise KeyDeliveryError("the combined key does not decrypt the image (AES-GCM authentication failed): "
                               "a server sent a wrong share or ciphertext; retry with all three servers to "
                               "identify it") from None
